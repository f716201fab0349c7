# The poller on the fake RS485 wire with the simulator's emulated BMSes answering:
# schedule, slot assignment, statistics, malformed replies, zero allocation in steady state.
# mpy-heapsize: 768k
# (768k: at 512k, once the poller grew by its group count re-read, a 4 KB allocation in the
# fake UART's write failed late in this file's run: heap fragmentation of the test process)
import gc

import mptest
from pollrig import Rig

from bankgate import poller as pl
from bankgate.proto import errors as perr


def _stats_consistent(m):
    return m.st_requests == (m.st_good + m.st_timeouts + m.st_checksum + m.st_framing
                             + m.st_rtn + m.st_invalid)


def test_discovery_ident_and_cycle():
    r = Rig(addresses=(2, 3, 4), health=False)
    r.run_sweeps(6)            # limits + 4 identity reads: one slow read per slot and sweep
    p = r.poller
    b = r.bank
    assert b.n_used == 3
    for i, a in enumerate((2, 3, 4)):
        m = b.modules[i]
        bms = r.stubs[a][0].bms            # the emulated module at that address
        assert m.addr == a and m.seen
        assert m.serial_str() == "STUBSERIAL%06d" % a, m.serial_str()
        assert m.model_str() == "US3000C"
        assert m.sw_version == 0x0102 and m.proto_version == 0x20
        assert m.analog_valid and m.n_cells == 15 and m.voltage_mv == bms.v_voltage_mv
        assert [m.cell_mv[k] for k in range(15)] == bms.v_cells
        assert m.alarm_valid and m.mgmt_valid and m.params_valid
        assert m.total_mah == 74000 and m.soc_pm == 500
        assert m.st_good > 0 and m.st_timeouts == 0 and _stats_consistent(m)
        assert 0 < m.st_lat_max_ms < 20
    # the master at 2 answered the group query for all three
    assert p.discovery.group_count == 3
    assert p.discovery.count == 0, p.discovery.snapshot()
    assert p.sweep_count >= 3


def test_group_query_refused_gives_no_count():
    import bmsproto
    r = Rig(addresses=(2, 3, 4), health=False)

    def refuse_group(cmd, info, out):
        if info == b"\xff":                # RTN 90: this BMS has no group answer
            return bmsproto.error_response("pylontech", 2, 0x90)
        return out
    r.stubs[2][0].filter = refuse_group
    r.run_sweeps(3)
    assert r.poller.discovery.group_count == -1
    assert r.poller.discovery.count == 0
    assert r.bank.modules[2].analog_valid


def test_group_query_counts_plugged_packs():
    r = Rig(addresses=(2, 3, 4), stubs=(2, 3), health=False)
    r.run_sweeps(1)
    assert r.poller.discovery.group_count == 2


def _data(m):
    return (m.n_cells, bytes(m.cell_mv), m.n_temps, bytes(m.temp_dc), m.current_ma, m.voltage_mv,
            m.remaining_mah, m.total_mah, m.cycles, m.soc_pm, m.analog_valid, m.t_analog,
            m.alarms, m.protections, bytes(m.status), m.alarm_valid, m.chg_v_mv, m.dsg_v_mv,
            m.chg_limit_ma, m.dsg_limit_ma, m.mgmt_flags, m.mgmt_valid, bytes(m.serial),
            m.serial_len, bytes(m.model), m.model_len, m.sw_version, m.proto_version,
            m.id_valid, m.cell_hi_mv, m.params_valid)


def _bad_frames(addr):
    import bmsproto
    good = bmsproto.analog_response("pylontech", addr, {
        "cells_mv": [3300] * 15, "temps_dc": [250] * 5, "current_ma": 0, "voltage_mv": 49500,
        "remaining_mah": 100, "total_mah": 74000, "cycles": 1})
    zero_v = bmsproto.analog_response("pylontech", addr, {
        "cells_mv": [3300] * 15, "temps_dc": [250] * 5, "current_ma": 0, "voltage_mv": 0,
        "remaining_mah": 100, "total_mah": 74000, "cycles": 1})
    bad_ck = good[:-5] + (b"0000" if good[-5:-1] != b"0000" else b"1111") + b"\r"
    return [
        ("checksum", bad_ck, perr.E_CHKSUM),
        ("non_hex", good[:20] + b"G" + good[21:], perr.E_HEX),
        ("truncated_cr", good[:40] + b"\r", None),
        ("wrong_addr", bmsproto.analog_response("pylontech", addr + 1, {
            "cells_mv": [3300] * 15, "temps_dc": [250] * 5, "current_ma": 0,
            "voltage_mv": 49500, "remaining_mah": 100, "total_mah": 74000, "cycles": 1}),
         perr.E_ADDR),
        ("rtn", bmsproto.error_response("pylontech", addr, 0x02), perr.E_RTN_CHKSUM),
        ("implausible", zero_v, perr.E_PLAUSIBLE),
        ("no_sof", b"0123456789ABCDEF" * 3, pl.E_BUS_NOISE),
        ("empty_frame", b"~\r", perr.E_TRUNCATED),
        ("cut", good[:30], None),
    ]


def test_malformed_replies_change_nothing():
    r = Rig(addresses=(2, 3), health=False)
    r.run_sweeps(2)
    stub = r.stubs[3][0]
    m = r.bank.modules[1]
    for name, frame, code in _bad_frames(3):
        before = _data(m)
        req0 = m.st_requests
        good0 = m.st_good
        stub.override = frame
        stub.override_count = -1
        stub.override_cmd = 0x42 if name == "implausible" else None
        r.run_tx(12)                   # covers every poll command of slot 1
        only = stub.override_cmd
        stub.override = None
        stub.override_cmd = None
        assert _data(m) == before, name
        assert m.st_requests > req0, name
        if only is None:
            assert m.st_good == good0, name
        assert _stats_consistent(m), (name, m.st_requests, m.st_good, m.st_timeouts, m.st_checksum, m.st_framing, m.st_rtn, m.st_invalid)
        if code is not None:
            assert m.last_error == code, (name, m.last_error, code)
        assert m.last_error < 0, name
        # the clean module keeps working
        assert r.bank.modules[0].st_good > 0
    print("errors at slot 1:", m.st_checksum, m.st_framing, m.st_rtn, m.st_invalid, m.st_timeouts)
    assert m.st_checksum > 0 and m.st_framing > 0 and m.st_rtn > 0 and m.st_invalid > 0
    # and it recovers: good data again once the module answers properly
    g = m.st_good
    r.run_sweeps(2)
    assert m.st_good > g and m.analog_valid


def _replay_rig(n=3):
    """Poller on a ReplayUart whose table the emulated modules fill (all commands, all slots)."""
    from pollrig import EmuModule, ReplayUart
    from fakehw import SimClock, FakeHardware
    from bankgate import config
    from bankgate.events import EventLog
    from bankgate.model import Bank
    from bankgate.poller import Poller
    from bankgate.bushealth import BusHealth
    from bankgate.proto import pylontech as py
    clock = SimClock()
    hw = FakeHardware(clock)
    uart = ReplayUart()
    hw.uart = uart
    addrs = list(range(2, 2 + n))
    cfg = config.validate({"bank": {"addresses": addrs, "expected_modules": n, "scan_from": 2,
                                    "scan_to": 1 + n},
                           "contactors": {"outputs": ["k%d" % i for i in range(n)]}})
    buf = bytearray(64)
    peers = []
    stubs = [EmuModule("pylontech", a, peers=peers) for a in addrs]
    for s in stubs:
        for cmd in py.POLL_CMDS + py.IDENT_CMDS:
            k = py.encode_request(cmd, s.addr, buf)
            uart.learn(bytes(buf[:k]), s(bytes(buf[:k])))
    k = py.encode_group_request(0x42, 2, buf)
    uart.learn(bytes(buf[:k]), stubs[0](bytes(buf[:k])))
    bank = Bank()
    ev = EventLog(64)
    p = Poller(hw, cfg, bank, ev)
    h = BusHealth(hw, cfg, bank, p, ev)
    return clock, p, h, bank, uart


def test_zero_allocation_per_transaction():
    clock, p, h, bank, uart = _replay_rig(3)
    # warm up: discovery, identity, a few sweeps (memoryview cache, first samples)
    for _ in range(400):
        now = clock.ticks_ms()
        p.service(now)
        h.update(now)
        clock.advance_us(1000)
    assert p.sweep_count >= 3 and bank.modules[2].analog_valid
    t0 = p.transactions
    gc.collect()
    for _ in range(2000):
        now = clock.ticks_ms()
        mptest.no_alloc(p.service, now)
        mptest.no_alloc(h.update, now)
        clock.advance_us(1000)
    done = p.transactions - t0
    print("transactions under heap lock:", done, "unknown requests:", uart.unknown)
    assert done >= 500
    assert uart.unknown == 0 and p.discovery.group_count == 3
    for i in range(3):
        assert bank.modules[i].st_timeouts == 0 and bank.modules[i].st_good > 100


def test_overflow_and_exceptions_counted_as_framing():
    # a reply longer than the receive buffer (OVERFLOW), on the replay UART
    from bankgate.proto import pylontech as py
    clock, p, h, bank, uart = _replay_rig(2)
    for _ in range(200):
        p.service(clock.ticks_ms())
        clock.advance_us(1000)
    buf = bytearray(64)
    k = py.encode_request(0x42, 3, buf)
    uart.learn(bytes(buf[:k]), b"~" + b"2" * (len(p.rs.rx) + 10))
    m = bank.modules[1]
    f0 = m.st_framing
    before = _data(m)
    for _ in range(200):
        p.service(clock.ticks_ms())
        clock.advance_us(1000)
    assert m.st_framing > f0 and m.last_error == pl.E_BUS_OVERFLOW
    assert _data(m)[:12] == before[:12]
    assert _stats_consistent(m)


def test_one_outcome_classification_for_rs485_and_can():
    # issue 20: the outcome of a decoded frame was classified twice (RS485 _finish and
    # CAN reception); both use pollcan.outcome_of now
    from bankgate import discovery as dsc
    from bankgate import pollcan
    from bankgate import poller as pl
    from bankgate.proto import errors as perr
    rx = pollcan.CanReception(None, 2, pl.outcome_of, pl.can_id_to_addr)
    assert rx.outcome_of is pl.outcome_of
    f = pl.outcome_of
    assert f(0, perr.CAT_NONE) == dsc.R_GOOD and f(3, perr.CAT_NONE) == dsc.R_GOOD
    for code, want in ((perr.E_CHKSUM, dsc.R_CORRUPT), (perr.E_EOI, dsc.R_CORRUPT),
                       (perr.E_RTN_CID2, dsc.R_REJECT), (perr.E_PLAUSIBLE, dsc.R_REJECT),
                       (perr.E_ADDR, dsc.R_REJECT), (perr.E_TRUNCATED, None)):
        cat = perr.category(code)
        got = f(code, cat)
        if want is None:        # framing-class codes are corruption, the rest rejections
            want = dsc.R_CORRUPT if cat in (perr.CAT_CHECKSUM, perr.CAT_FRAMING) else dsc.R_REJECT
        assert got == want, (code, cat, got)


def test_an_unassigned_address_decodes_into_the_shared_scratch_never_a_bank_record():
    # heap: one scratch Module for the family's decode and the poller's unassigned addresses
    # (bankgate.model.scratch); a reply committed into it reaches no bank record
    import bmsproto
    from bankgate import model
    from bankgate.proto import pylontech as pyl
    r = Rig(addresses=[2, 3])
    assert r.poller._scratch is model.scratch() is pyl._S
    r.run_sweeps(2)
    before = [(m.addr, m.voltage_mv, m.analog_valid, bytes(m.cell_mv)) for m in r.bank.modules]
    s = model.scratch()
    reply = bytearray(bmsproto.response("pylontech", 0x42, 2, {
        "cells_mv": [3333] * 15, "temps_dc": [250] * 6, "current_ma": 0, "voltage_mv": 49995,
        "remaining_mah": 1000, "total_mah": 100000, "cycles": 1}))
    assert pyl.decode(0x42, reply, len(reply), 2, s, 0) == 0       # the family decodes into itself
    assert s.voltage_mv == 49995 and s.analog_valid and s.slot == -1 and s.cell_mv[14] == 3333
    assert [(m.addr, m.voltage_mv, m.analog_valid, bytes(m.cell_mv)) for m in r.bank.modules] == before
