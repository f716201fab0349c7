# The group query's pack count is re-read while a count mismatch stands (pollslow
# _group_recheck): the real poller and discovery on the fake RS485 wire, the simulator's BMS
# emulation answering the group query for every plugged module at the master's address
# or above (tests/support/pollrig.py).
# mpy-heapsize: 1m
# mpy-timeout: 600
from pollrig import Rig

from bankgate import discovery as dsc
from bankgate.pollslow import GROUP_RECHECK_MS


def _count(r):
    d = r.poller.discovery
    i = d._find(dsc.F_COUNT, -1)
    return None if i < 0 else (d.f_a[i], d.f_b[i])


def _run_until(r, cond, ms):
    end = r.clock.ms() + ms
    while r.clock.ms() < end:
        r.step()
        if cond():
            return True
    return False


def _count_group_reads(r):
    """Simulated ms of every group query (INFO FF) the master's emulation answers."""
    master = r.stubs[2][0]
    reads = []

    def seen(cmd, info, reply):
        if len(info) and info[0] == 0xFF:
            reads.append((r.clock.ms(), cmd))
        return reply
    master.filter = seen
    return reads


def test_pack_added_to_the_group_clears_the_mismatch():
    # module 4 is asleep during the scan: the group reports 2 packs, the scan finds 2
    r = Rig(addresses=(2, 3, 4))
    r.stubs[4][0].online = False
    reads = _count_group_reads(r)
    r.run_sweeps(3)
    d = r.poller.discovery
    assert d.group_count == 2 and _count(r) == (2, 3), (d.group_count, _count(r))
    assert [c for _, c in reads] == [0x42]       # the scan's group query
    r.stubs[4][0].online = True                 # it wakes: answers its re-probe, joins the group
    assert _run_until(r, lambda: d.found == 3, 20000)
    assert _count(r) == (2, 3)                  # the old group count still disagrees ...
    assert _run_until(r, lambda: _count(r) is None, 2 * GROUP_RECHECK_MS), (d.group_count, _count(r))
    assert d.group_count == 3                   # ... until the group is asked again
    assert reads[-1][1] == 0x44 and len(reads) >= 2
    # the count-only reads wrote no slot: each slot's data is its own module's
    for s in range(3):
        assert r.bank.modules[s].addr == 2 + s and r.bank.modules[s].alarm_valid


def test_pack_removed_from_the_group_clears_the_mismatch_and_reads_stop():
    # a fourth pack at address 5 is in the master's group but outside the scan range:
    # the group counts 4 against 3 expected
    r = Rig(addresses=(2, 3, 4), stubs=(2, 3, 4, 5), scan=(2, 4))
    reads = _count_group_reads(r)
    r.run_sweeps(3)
    d = r.poller.discovery
    assert d.group_count == 4 and _count(r) == (4, 3), (d.group_count, _count(r))
    # while the group disagrees: re-read every GROUP_RECHECK_MS (not more often), still 4
    t0 = r.clock.ms()
    r.run_ms(5 * GROUP_RECHECK_MS)
    again = [t for t, c in reads if c == 0x44 and t >= t0]
    assert 4 <= len(again) <= 6, again
    assert all(b - a >= GROUP_RECHECK_MS for a, b in zip(again, again[1:])), again
    assert _count(r) == (4, 3)
    r.stubs[5][0].online = False                # the extra pack is taken out
    assert _run_until(r, lambda: _count(r) is None, 2 * GROUP_RECHECK_MS), (d.group_count, _count(r))
    assert d.group_count == 3
    k = len(reads)
    r.run_ms(5 * GROUP_RECHECK_MS)              # counts agree: no more group reads
    assert len(reads) == k and _count(r) is None


def test_no_group_reads_on_an_agreeing_bank():
    r = Rig(addresses=(2, 3, 4))
    reads = _count_group_reads(r)
    r.run_ms(6 * GROUP_RECHECK_MS)
    assert [c for _, c in reads] == [0x42] and _count(r) is None


def test_count_only_decode_and_cost_allocate_nothing():
    import bmsproto
    import mptest
    from bankgate import pollplan
    from bankgate.pollslow import NoSlots
    from bankgate.proto import pylontech as P
    a = {"cell_flags": [0] * 15, "temp_flags": [0] * 5, "status": [0, 0x0E, 0, 0, 0]}
    f = bytearray(bmsproto.alarm_group_response(2, [a] * 16))
    n = len(f)

    def count_only(f, n):
        return P.decode_group(P.CMD_ALARM, f, n, NoSlots, 2, 5)
    assert mptest.no_alloc(count_only, f, n) == 0 and P.group_count() == 16

    def cost(k):
        return pollplan.group_tx_us("pylontech", 0x44, 9600, 15, 20, k)
    c16 = mptest.no_alloc(cost, 16)
    assert c16 > mptest.no_alloc(cost, 3) > 0
    # 16 packs of 15 cells (8 sensors budgeted): 36 + 2 * (3 + 16 * 34) characters at 9600 baud
    assert c16 == (36 + 2 * (3 + 16 * 34)) * (10000000 // 9600) + pollplan.TURNAROUND_US + 2000 + 20000


def test_count_reads_do_not_set_the_single_answer_length():
    # bushealth judges the error rate by reply length (cmd_len per command): a 0x44 group
    # answer must not stand for the length of a module's own 0x44 answer
    r = Rig(addresses=(2, 3, 4), stubs=(2, 3, 4, 5), scan=(2, 4))
    reads = _count_group_reads(r)
    r.run_sweeps(3)
    p = r.poller
    i = p._cmd_index(0x44)
    single = p.cmd_len[i]
    assert single > 0
    d = p.discovery
    orig = d.set_group_count
    seen = []

    def at_group_answer(n):          # the poller's _finish, right after a group answer
        seen.append(p.cmd_len[i])
        orig(n)
    d.set_group_count = at_group_answer
    r.run_ms(3 * GROUP_RECHECK_MS)
    assert len(seen) >= 2 and len([1 for _, c in reads if c == 0x44]) >= 2
    assert seen == [single] * len(seen), (seen, single)
