# PACE BMS RS485 V2.5 decoder (bankgate.proto.pace) under MicroPython: the real
# frames captured in nkinnan/esphome-pace-bms, frames built by tools/sim/bmsproto.py,
# rejections (record untouched), fuzzing and zero allocation.
import array

import bmsproto
import mptest

from bankgate import model
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV)
from bankgate.proto import errors, frame
from bankgate.proto import pace as P
from bankgate.proto.errors import E_OK

REAL_42 = (b"~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC6"
           b"0CC7060B9B0B990B990B990BB30BBCFF1FCCCD12D303286A008C2710E1E4\r")
REAL_44 = (b"~25014600004C00011000000000000000000000000000000000060000000000000000000000"
           b"0E000000000000EF3A\r")
REAL_C1 = b"~25014600602850313653313030412D313831322D312E30302000F58E\r"
REAL_C2 = (b"~25014600B05031383132313031333830333039442020202020202020202020202020202020202020"
           b"202020202020EE0F\r")

PACK = {"cells_mv": [3300 + i for i in range(16)], "temps_dc": [301, 250, 251, 252, 253, 220],
        "current_ma": -2250, "voltage_mv": 52429, "remaining_mah": 48190, "total_mah": 103460,
        "cycles": 140, "design_mah": 100000}
ALARM = {"cell_flags": [0] * 16, "temp_flags": [0] * 6, "status": [0, 0, 0x0E, 0, 0, 0, 0, 0, 0]}


def snap(m):
    out = {}
    for k, v in m.__dict__.items():
        out[k] = bytes(v) if isinstance(v, (bytearray, array.array)) else v
    return out


def dec(cmd, f, addr=1, m=None, now=10):
    if m is None:
        m = model.Module(0)
    b = bytearray(f)
    return P.decode(cmd, b, len(b), addr, m, now), m


def assert_rejected(cmd, f, code, addr=1):
    m = model.Module(0)
    assert dec(P.CMD_ANALOG, REAL_42, 1, m)[0] == E_OK
    before = snap(m)
    b = bytearray(f)
    got = P.decode(cmd, b, len(b), addr, m, 999)
    assert got == code, "expected %s got %s" % (errors.name(code), errors.name(got))
    assert snap(m) == before


def test_api_constants():
    assert P.NAME == "pace" and not P.SUPPORTS_GROUP
    assert P.POLL_CMDS == (0x42, 0x44) and P.IDENT_CMDS == (0x4F, 0xC1, 0xC2)
    assert P.MAX_FRAME >= len(REAL_42) and P.MAX_FRAME >= len(REAL_C2)


def test_real_analog_frame():
    r, m = dec(P.CMD_ANALOG, REAL_42, now=44)
    assert r == E_OK and m.analog_valid and m.t_analog == 44
    assert m.n_cells == 16 and m.cell_mv[0] == 3271 and m.cell_mv[1] == 3272 and m.cell_mv[15] == 3271
    # wire: 0B9B 0B99 0B99 0B99 (cells) 0BB3 (MOSFET) 0BBC (environment), offset 2730
    assert list(m.temp_dc[:6]) == [0xBB3 - 2730, 0xB9B - 2730, 239, 239, 239, 0xBBC - 2730]
    assert m.current_ma == -2250                     # FF1F = -225 * 10 mA
    assert m.voltage_mv == 52429
    assert m.remaining_mah == 48190 and m.total_mah == 103460 and m.cycles == 140
    assert m.soc_pm == 48190 * 1000 // 103460
    assert m.soh_pm == 1000                          # full 103.46 Ah > design 100 Ah: capped


def test_real_status_hwversion_serial_frames():
    r, m = dec(P.CMD_ALARM, REAL_44, now=3)
    assert r == E_OK and m.alarms == 0 and m.protections == 0
    assert list(m.status) == [0, 0, 0x0E, 0, 0] and m.alarm_valid and m.t_alarm == 3
    r, m = dec(P.CMD_MFR, REAL_C1)
    assert r == E_OK and m.model_str() == "P16S100A"
    assert bytes(m.manufacturer[:m.manufacturer_len]) == b"P16S100A-1812-1.00"
    r, m = dec(P.CMD_SERIAL, REAL_C2)
    assert r == E_OK and m.serial_str() == "1812101380309D" and m.id_valid


def test_requests_match_captured_ones():
    buf = bytearray(32)
    for cmd, want in ((0x42, b"~25014642E00201FD30\r"), (0x44, b"~25014644E00201FD2E\r"),
                      (0xC1, b"~250146C10000FD9A\r"), (0xC2, b"~250146C20000FD99\r")):
        n = P.encode_request(cmd, 1, buf)
        assert bytes(buf[:n]) == want
    n = P.encode_request(0x4F, 3, buf)
    f = bytes(buf[:n])
    assert f[:13] == b"~2503464F0000" and frame.parse(bytearray(f), n) == 0
    assert P.encode_request(0x92, 1, buf) == errors.E_UNSUPPORTED
    assert P.encode_request(0x47, 1, buf) == errors.E_UNSUPPORTED


def test_built_analog_round_trip_10ma_steps():
    r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pace", 1, PACK))
    assert r == E_OK
    assert list(m.cell_mv[:16]) == PACK["cells_mv"]
    assert list(m.temp_dc[:6]) == PACK["temps_dc"]
    assert m.current_ma == -2250 and m.total_mah == 103460 and m.soh_pm == 1000
    for ma, want in ((15, 20), (-15, -20), (14, 10), (123456, 123460), (0, 0)):
        r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pace", 1, dict(PACK, current_ma=ma)))
        assert r == E_OK and m.current_ma == want
    r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pace", 1, dict(PACK, design_mah=120000)))
    assert m.soh_pm == 103460 * 1000 // 120000
    # without the design capacity (count 2) soh is left as it was
    r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pace", 1, dict(PACK, udi=2)))
    assert r == E_OK and m.soh_pm == 1000 and m.total_mah == 103460
    # two temperatures: no reordering
    r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pace", 1, dict(PACK, temps_dc=[100, 200])))
    assert list(m.temp_dc[:2]) == [100, 200]


def test_alarm_mapping():
    st = [0x01 | 0x40, 0x01 | 0x08 | 0x80, 0, 0, 0x04, 0, 0, 0x04 | 0x20, 0x02 | 0x80]
    a = {"cell_flags": [1] + [0] * 15, "temp_flags": [0, 0, 0, 0, 2, 0], "voltage_flag": 2,
         "charge_current_flag": 0, "discharge_current_flag": 0, "status": st}
    r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pace", 1, a))
    assert r == E_OK
    assert m.protections == ALM_CELL_OV | ALM_DSG_OC | ALM_CHG_OT | ALM_DSG_UT | ALM_INTERNAL
    assert m.alarms == ALM_CELL_UV | ALM_CHG_OT | ALM_DSG_OT | ALM_MOD_OV | ALM_DSG_OC
    assert list(m.status) == [0x41, 0x89, 0, 0, 0x04]
    for bit, alm in ((0x02, ALM_CELL_UV), (0x04, ALM_MOD_OV), (0x08, ALM_MOD_UV), (0x10, ALM_CHG_OC),
                     (0x20, ALM_DSG_OC)):
        r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pace", 1, dict(ALARM, status=[bit] + [0] * 8)))
        assert m.protections == alm
    for bit, alm in ((0x04, ALM_CHG_UT), (0x10, ALM_CHG_OT | ALM_DSG_OT), (0x40, ALM_CHG_UT | ALM_DSG_UT),
                     (0x80, 0)):
        r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pace", 1, dict(ALARM, status=[0, bit] + [0] * 7)))
        assert m.protections == alm


def test_unsupported_commands_and_simulated_rtn04():
    assert_rejected(P.CMD_MGMT, REAL_42, errors.E_UNSUPPORTED)
    assert_rejected(P.CMD_PARAMS, REAL_42, errors.E_UNSUPPORTED)
    assert_rejected(P.CMD_ANALOG, bmsproto.response("pace", 0x92, 1, {}), errors.E_RTN_CID2)
    assert P.decode_group(0x42, bytearray(REAL_42), len(REAL_42), model.Bank(1), 1, 0) == errors.E_UNSUPPORTED


def test_rejections_leave_record_unchanged():
    assert_rejected(P.CMD_ANALOG, REAL_42, errors.E_ADDR, addr=2)
    bad = bytearray(REAL_42)
    bad[50] = ord("0") if bad[50] != ord("0") else ord("1")
    assert_rejected(P.CMD_ANALOG, bad, errors.E_CHKSUM)
    assert_rejected(P.CMD_ANALOG, REAL_42[:-1], errors.E_EOI)
    for p in (dict(PACK, voltage_mv=0), dict(PACK, remaining_mah=200000), dict(PACK, cells_mv=[]),
              dict(PACK, temps_dc=[200, 3000]), dict(PACK, total_mah=0)):
        assert_rejected(P.CMD_ANALOG, bmsproto.analog_response("pace", 1, p), errors.E_PLAUSIBLE)
    info = bmsproto.pace_pack_info(PACK)
    for cut in (0, 10, len(info) - 12):
        f = bmsproto.build(0x25, 1, 0, bytes([0, 1]) + bytes(info[:cut]))
        assert_rejected(P.CMD_ANALOG, f, errors.E_TRUNCATED)
    assert_rejected(P.CMD_ALARM, bmsproto.build(0x25, 1, 0, b"\x00\x01" +
                    bytes(bmsproto.alarm_pack_info("pace", ALARM))[:-1]), errors.E_TRUNCATED)
    assert_rejected(P.CMD_SERIAL, bmsproto.build(0x25, 1, 0, b" " * 20), errors.E_PLAUSIBLE)
    assert_rejected(P.CMD_ANALOG, bmsproto.error_response("pace", 1, 0x91), errors.E_RTN_INTERNAL)
    # Li-ion CID1 0x4F accepted, other CID1 rejected
    ok = bmsproto.build(0x25, 1, 0, b"\x00\x01" + bytes(bmsproto.pace_pack_info(PACK)), cid1=0x4F)
    assert dec(P.CMD_ANALOG, ok)[0] == E_OK
    bad = bmsproto.build(0x25, 1, 0, b"\x00\x01" + bytes(bmsproto.pace_pack_info(PACK)), cid1=0x47)
    assert_rejected(P.CMD_ANALOG, bad, errors.E_CID1)


def test_random_mutations_never_raise():
    x = [0x9E3779B9]

    def rnd(n):
        v = x[0]
        v ^= (v << 13) & 0xFFFFFFFF
        v ^= v >> 17
        v ^= (v << 5) & 0xFFFFFFFF
        x[0] = v
        return v % n
    seeds = ((P.CMD_ANALOG, REAL_42), (P.CMD_ALARM, REAL_44), (P.CMD_MFR, REAL_C1), (P.CMD_SERIAL, REAL_C2))
    m = model.Module(0)
    rejected = 0
    for it in range(2500):
        cmd, f0 = seeds[rnd(len(seeds))]
        f = bytearray(f0)
        if rnd(2):
            f[rnd(len(f))] = b"0123456789ABCDEF~\r"[rnd(18)]
        else:
            ln = frame.parse(f, len(f))
            j = rnd(ln)
            frame.INFO[j] = rnd(256)
            f = bytearray(bmsproto.build(0x25, 1, 0, bytes(frame.INFO[:ln])))
        before = snap(m)
        r = P.decode(cmd, f, len(f), 1, m, it)
        assert isinstance(r, int) and r <= 0
        if r < 0:
            rejected += 1
            assert snap(m) == before
    assert rejected > 500


def test_decoding_allocates_nothing():
    m = model.Module(0)
    for cmd, f in ((P.CMD_ANALOG, REAL_42), (P.CMD_ALARM, REAL_44), (P.CMD_MFR, REAL_C1),
                   (P.CMD_SERIAL, REAL_C2), (P.CMD_VERSION, bmsproto.version_response("pace", 1)),
                   (P.CMD_ANALOG, bmsproto.analog_response("pace", 1, PACK))):
        b = bytearray(f)
        n = len(b)

        def run():
            return P.decode(cmd, b, n, 1, m, 5)
        assert mptest.no_alloc(run) == E_OK
    out = bytearray(P.MAX_FRAME)

    def req():
        return P.encode_request(P.CMD_ANALOG, 1, out) + P.encode_request(P.CMD_SERIAL, 1, out)
    assert mptest.no_alloc(req) == 38


def test_warning2_bit_order_differs_from_protection2():
    for bit, alm in ((0x10, ALM_CHG_OT | ALM_DSG_OT), (0x20, ALM_CHG_UT | ALM_DSG_UT),
                     (0x40, ALM_CHG_OT | ALM_DSG_OT), (0x80, 0), (0x08, ALM_DSG_UT)):
        st = [0] * 8 + [bit]
        r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pace", 1, dict(ALARM, status=st)))
        assert r == E_OK and m.alarms == alm and m.protections == 0, (bit, m.alarms)


def test_shares_pylontech_helpers_through_public_names():
    # issue 20: pace.py called pylontech's private _serial; the serial-number parser is
    # public now (parse_serial) and the private name is gone; no group query on PACE
    from bankgate.proto import pylontech
    assert hasattr(pylontech, "parse_serial") and not hasattr(pylontech, "_serial")
    assert P.group_count() == 0 and not P.SUPPORTS_GROUP
