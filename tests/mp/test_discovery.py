# Discovery: findings, slot assignment, identity tracking.  The unit tests feed
# mpy-heapsize: 256k
# the Discovery object directly; the end-to-end tests run the real poller and
# RS485 driver on the fake wire with BMS stubs answering (tests/support/bms_stub.py).
import mptest

from bankgate import config
from bankgate import discovery as dsc
from bankgate.events import EV_DISCOVERY, EventLog
from bankgate.model import Bank


def _cfg(addresses=(2, 3, 4), **bank):
    b = {"addresses": list(addresses), "expected_modules": len(addresses)}
    b.update(bank)
    outs = ["k%d" % i for i in range(len(addresses))]
    return config.validate({"bank": b, "contactors": {"outputs": outs}})


def _setup(addresses=(2, 3, 4), **bank):
    cfg = _cfg(addresses, **bank)
    b = Bank()
    for i, a in enumerate(cfg["bank"]["addresses"]):
        b.modules[i].addr = a
    b.n_used = len(cfg["bank"]["addresses"])
    ev = EventLog(64)
    return dsc.Discovery(cfg, b, ev), b, ev


def _codes(d):
    return sorted((d.f_code[i], d.f_addr[i]) for i in range(d.count))


def _events(ev):
    out = []
    rec = [0] * 5
    for s in range(ev.oldest(), ev.seq + 1):
        if ev.get(s, rec) and rec[1] == EV_DISCOVERY:
            out.append((rec[2], rec[3], rec[4]))
    return out


def test_scan_missing_unexpected_count():
    d, b, ev = _setup((2, 3, 4))
    d.begin_scan(0)
    for a in range(2, 18):
        if a in (2, 4, 9):
            d.probe_result(a, dsc.R_GOOD)
        else:
            d.probe_result(a, dsc.R_TIMEOUT)
    d.end_scan(100, 2, 17)
    # 3 missing, 9 unexpected (gets slot 3), count 3 found == 3 expected -> no COUNT
    assert _codes(d) == [(dsc.F_MISSING, 3), (dsc.F_UNEXPECTED, 9)], _codes(d)
    assert b.n_used == 4 and b.modules[3].addr == 9
    assert d.slot_fault_mask() == (1 << 1) | (1 << 3)
    assert not d.bank_fault()
    evs = _events(ev)
    assert (3, dsc.F_MISSING, 1) in evs and (9, dsc.F_UNEXPECTED, 3) in evs, evs
    snap = d.snapshot()
    names = sorted(f["name"] for f in snap)
    assert names == ["missing", "unexpected"]
    # the missing module answers later: MISSING clears with a negative-code event
    d.note(1, dsc.R_GOOD, 200)
    assert _codes(d) == [(dsc.F_UNEXPECTED, 9), (dsc.F_COUNT, -1)], _codes(d)
    assert d.f_a[d._find(dsc.F_COUNT, -1)] == 4     # 4 found, 3 expected
    assert (3, -dsc.F_MISSING, 0) in _events(ev)
    assert d.bank_fault()


def test_count_and_above_max_parallel():
    d, b, ev = _setup((2, 3), max_parallel=3)
    d.begin_scan(0)
    for a in (2, 3, 5, 6):
        d.probe_result(a, dsc.R_GOOD)
    d.end_scan(10, 2, 17)
    c = _codes(d)
    assert (dsc.F_COUNT, -1) in c and (dsc.F_TOO_MANY, -1) in c, c
    i = d._find(dsc.F_TOO_MANY, -1)
    assert d.f_a[i] == 4 and d.f_b[i] == 3
    i = d._find(dsc.F_COUNT, -1)
    assert d.f_a[i] == 4 and d.f_b[i] == 2
    # the group count disagreeing with the scan shows in COUNT evidence
    d2, b2, _ = _setup((2, 3))
    d2.begin_scan(0)
    d2.probe_result(2, dsc.R_GOOD)
    d2.probe_result(3, dsc.R_GOOD)
    d2.set_group_count(3)
    d2.end_scan(10, 2, 17)
    i = d2._find(dsc.F_COUNT, -1)
    assert i >= 0 and d2.f_a[i] == 3 and d2.f_b[i] == 2


def test_scan_corrupt_probes_open_the_collision_window():
    d, b, ev = _setup((2, 3, 4))
    d.begin_scan(0)
    d.probe_result(2, dsc.R_GOOD)
    d.probe_result(4, dsc.R_GOOD)
    for t in range(3):
        d.probe_result(3, dsc.R_CORRUPT)
        if t < 2:
            assert d.probe_needs_retry(3, t + 1)
    assert not d.probe_needs_retry(3, 3)
    d.end_scan(10, 2, 17)
    # three corrupt probes alone are no verdict...
    assert not d.has_code(dsc.F_DUPLICATE) and d.answered(3)
    assert d._nhist[1] == 3 and d._hist[1] == 7
    # ...but they count toward the 16-reply window
    for k in range(16):
        d.note(0, dsc.R_GOOD, 20 + k)
        d.note(2, dsc.R_GOOD, 20 + k)
    for k in range(12):
        d.note(1, dsc.R_CORRUPT, 40 + k)
    assert not d.has_code(dsc.F_DUPLICATE)         # 15 replies: window not full
    d.note(1, dsc.R_CORRUPT, 60)
    i = d._find(dsc.F_DUPLICATE, 3)
    assert i >= 0 and d.f_a[i] == 16 and d.f_b[i] == 0, _codes(d)
    assert d.slot_fault_mask() == 1 << 1


def test_collision_window_duplicate_and_clear():
    d, b, ev = _setup((2, 3, 4))
    d.begin_scan(0)
    for a in (2, 3, 4):
        d.probe_result(a, dsc.R_GOOD)
    d.end_scan(0, 2, 17)
    t = 0
    # slot 1: 3 of 4 replies corrupt (11 in the first 15: not yet), others clean
    for k in range(16):
        for s in range(3):
            t += 10
            d.note(s, dsc.R_CORRUPT if (s == 1 and k % 4 != 0) else dsc.R_GOOD, t)
        if k == 14:
            assert not d.has(dsc.F_DUPLICATE, 3)
    i = d._find(dsc.F_DUPLICATE, 3)
    assert i >= 0, _codes(d)
    assert d.f_a[i] == 12 and d.f_b[i] == 0
    # spread errors (all addresses equally bad) do not make a duplicate
    d2, _, _ = _setup((2, 3, 4))
    for k in range(32):
        for s in range(3):
            d2.note(s, dsc.R_CORRUPT if k % 2 else dsc.R_GOOD, k)
    assert not d2.has_code(dsc.F_DUPLICATE)
    # DUP_CLEAR_GOOD clean replies in a row clear it
    for k in range(dsc.DUP_CLEAR_GOOD):
        d.note(1, dsc.R_GOOD, t + k)
    assert not d.has(dsc.F_DUPLICATE, 3)


def _serial(b, slot, text):
    m = b.modules[slot]
    for i, c in enumerate(text.encode()):
        m.serial[i] = c
    m.serial_len = len(text)


def test_swap_confirmed_and_cleared():
    d, b, ev = _setup((2, 3))
    _serial(b, 0, "AAAA000000000001")
    d.identity(0, 0)
    d.identity(0, 1)
    assert d.count == 0
    _serial(b, 0, "BBBB000000000002")
    d.identity(0, 2)
    i = d._find(dsc.F_SWAPPED, 2)
    assert i >= 0
    assert d.f_a[i] == dsc.serial_hash(b"AAAA000000000001", 16)
    assert d.f_b[i] == dsc.serial_hash(b"BBBB000000000002", 16)
    assert d.slot_fault_mask() == 1
    assert d.id_fast_mask == 1
    snap = d.snapshot()
    assert snap[0]["old_serial"] == "AAAA000000000001" and snap[0]["new_serial"] == "BBBB000000000002"
    for k in range(dsc.SWAP_CONFIRM):
        d.identity(0, 10 + k)
    assert d.count == 0 and d.id_fast_mask == 0
    assert (2, -dsc.F_SWAPPED, 0) in _events(ev)


def test_alternating_serial_is_duplicate():
    d, b, ev = _setup((2, 3))
    for k in range(4):
        _serial(b, 1, "AAAA000000000001" if k % 2 == 0 else "CCCC000000000003")
        d.identity(1, k)
    i = d._find(dsc.F_DUPLICATE, 3)
    assert i >= 0 and d.f_b[i] == dsc.DUP_BY_SERIAL and d.f_a[i] >= 1, _codes(d)
    assert not d.has(dsc.F_SWAPPED, 3)
    assert d.slot_fault_mask() == 2


def test_findings_calls_do_not_allocate():
    d, b, ev = _setup((2, 3, 4))
    d.begin_scan(0)
    for a in (2, 3, 4):
        d.probe_result(a, dsc.R_GOOD)
    d.end_scan(0, 2, 17)
    _serial(b, 0, "AAAA000000000001")
    d.identity(0, 0)
    for k in range(40):
        mptest.no_alloc(d.note, k % 3, dsc.R_GOOD if k % 5 else dsc.R_CORRUPT, k)
    mptest.no_alloc(d.identity, 0, 50)
    assert mptest.no_alloc(d.slot_fault_mask) == 0
    mptest.no_alloc(d.can_frame, 0, 0x351, 60)


def test_vanished_unexpected_address_is_dropped_and_count_reevaluated():
    # ts_one_module_stays_offline: module 3's switch says 6 instead of 4, then is corrected
    d, b, ev = _setup((2, 3, 4))
    d.begin_scan(0)
    for a in range(2, 18):
        d.probe_result(a, dsc.R_GOOD if a in (2, 3, 6) else dsc.R_TIMEOUT)
    d.end_scan(100, 2, 17)
    for s in range(4):
        b.modules[s].seen = b.modules[s].addr != 4
        b.modules[s].analog_valid = b.modules[s].seen
    assert _codes(d) == [(dsc.F_MISSING, 4), (dsc.F_UNEXPECTED, 6)], _codes(d)
    assert b.modules[3].addr == 6
    # the switch is corrected: 4 answers (4 found, 3 expected -> COUNT), 6 goes silent
    d.note(2, dsc.R_GOOD, 200)
    assert _codes(d) == [(dsc.F_UNEXPECTED, 6), (dsc.F_COUNT, -1)], _codes(d)
    for k in range(dsc.DROP_AFTER - 1):
        d.note(3, dsc.R_TIMEOUT, 300 + k)
    assert d.has(dsc.F_UNEXPECTED, 6) and d.bank_fault() and b.modules[3].seen
    d.note(3, dsc.R_TIMEOUT, 400)
    # dropped: finding cleared (event), slot no longer counts, record forgotten
    assert _codes(d) == [], _codes(d)
    assert (6, -dsc.F_UNEXPECTED, 0) in _events(ev) and (-1, -dsc.F_COUNT, 0) in _events(ev)
    assert not b.modules[3].seen and not b.modules[3].analog_valid
    assert d.found == 3 and not d.bank_fault() and d.slot_fault_mask() == 0
    assert d.dropped_mask == 1 << 3
    # more timeouts change nothing (no repeated events)
    n_ev = len(_events(ev))
    for k in range(20):
        d.note(3, dsc.R_TIMEOUT, 500 + k)
    assert len(_events(ev)) == n_ev and _codes(d) == []
    # configured addresses are never dropped (they are MISSING / offline instead)
    for k in range(20):
        d.note(0, dsc.R_TIMEOUT, 600 + k)
    assert b.modules[0].seen and d.dropped_mask == 1 << 3
    # the old address answers again: un-dropped, UNEXPECTED and COUNT come back
    d.note(3, dsc.R_GOOD, 700)
    assert _codes(d) == [(dsc.F_UNEXPECTED, 6), (dsc.F_COUNT, -1)], _codes(d)
    assert d.dropped_mask == 0 and b.modules[3].seen


def test_dropped_slot_is_reused_when_the_bank_is_full():
    d, b, ev = _setup((2, 3, 4))
    n = len(b.modules)
    for s in range(3, n):
        b.modules[s].addr = 100 + s
    b.n_used = n
    assert d.assign(99) == -1
    for k in range(dsc.DROP_AFTER):
        d.note(5, dsc.R_TIMEOUT, k)
    assert d.dropped_mask == 1 << 5
    assert d.assign(99) == 5 and b.modules[5].addr == 99 and d.dropped_mask == 0
    assert d.slot_of(105) == -1


def test_duplicate_finding_constants_match_what_the_gateway_uses():
    # app.py blocks every join on a duplicate finding using these two codes
    from bankgate import bushealth, discovery
    assert discovery.F_DUPLICATE == 1 and bushealth.DUPLICATE_ADDRESS == 3
    assert bushealth.TERMINATION_SUSPECT == 1 and bushealth.WIRING_NOISE == 2


def test_rescan_keeps_verdicts_until_the_new_scan_replaces_them():
    # MISSING 3, UNEXPECTED 9 and DUPLICATE 2 are in force; a rescan must not drop any
    # of them while it runs (slot_fault_mask unchanged), and at its end replace them
    # with what it found: 3 answers now (MISSING clears), 9 is gone (UNEXPECTED
    # clears), DUPLICATE stays until its own clear rule (clean replies in a row)
    d, b, ev = _setup((2, 3, 4))
    d.begin_scan(0)
    for a in (2, 4, 9):
        d.probe_result(a, dsc.R_GOOD)
    d.end_scan(10, 2, 17)
    t = 10
    for k in range(16):
        for s in (0, 2, 3):
            t += 10
            d.note(s, dsc.R_CORRUPT if (s == 0 and k % 4 != 0) else dsc.R_GOOD, t)
    before = _codes(d)
    assert before == [(dsc.F_DUPLICATE, 2), (dsc.F_MISSING, 3), (dsc.F_UNEXPECTED, 9)], before
    mask = d.slot_fault_mask()
    assert mask == 0b1011
    d.begin_scan(t)
    assert _codes(d) == before and d.slot_fault_mask() == mask
    for a in range(2, 18):
        d.probe_result(a, dsc.R_GOOD if a in (2, 3, 4) else dsc.R_TIMEOUT)
        assert _codes(d) == before and d.slot_fault_mask() == mask     # during the scan
    d.end_scan(t + 100, 2, 17)
    # (COUNT: slot 3 keeps the record of 9, seen before; re-evaluated by recount as before)
    assert [c for c in _codes(d) if c[0] <= dsc.F_UNEXPECTED] == [(dsc.F_DUPLICATE, 2)], _codes(d)
    assert d.slot_fault_mask() == 1
    evs = _events(ev)
    assert (3, -dsc.F_MISSING, 0) in evs and (9, -dsc.F_UNEXPECTED, 0) in evs
    assert (2, -dsc.F_DUPLICATE, 0) not in evs
    # the scan heard 2 cleanly: it stands for all but DUP_CLEAR_RESCAN of the clean run,
    # and one corrupt reply on the way restarts the whole DUP_CLEAR_GOOD run
    for k in range(dsc.DUP_CLEAR_RESCAN - 1):
        d.note(0, dsc.R_GOOD, t + 200 + k)
    assert d.has(dsc.F_DUPLICATE, 2)
    d.note(0, dsc.R_CORRUPT, t + 250)
    for k in range(dsc.DUP_CLEAR_GOOD - 1):
        d.note(0, dsc.R_GOOD, t + 300 + k)
    assert d.has(dsc.F_DUPLICATE, 2)
    d.note(0, dsc.R_GOOD, t + 600)
    assert not d.has(dsc.F_DUPLICATE, 2)
    # a rescan that finds the same MISSING / UNEXPECTED keeps them (no clear, no new raise)
    d2, b2, ev2 = _setup((2, 3, 4))
    d2.begin_scan(0)
    for a in (2, 4, 9):
        d2.probe_result(a, dsc.R_GOOD)
    d2.end_scan(10, 2, 17)
    n_ev = ev2.seq
    d2.begin_scan(20)
    for a in (2, 4, 9):
        d2.probe_result(a, dsc.R_GOOD)
    d2.end_scan(30, 2, 17)
    assert _codes(d2) == [(dsc.F_MISSING, 3), (dsc.F_UNEXPECTED, 9)]
    assert ev2.seq == n_ev, _events(ev2)
