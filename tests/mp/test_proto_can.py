# Pylontech low-voltage CAN frames (bankgate.proto.pylon_can) under MicroPython:
# decode into a Module, encoders with rounding/clamping, round trips, rejections,
# zero allocation.
import array

import mptest

from bankgate import model
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV)
from bankgate.proto import errors
from bankgate.proto import pylon_can as C
from bankgate.proto.errors import E_OK


def snap(m):
    out = {}
    for k, v in m.__dict__.items():
        out[k] = bytes(v) if isinstance(v, (bytearray, array.array)) else v
    return out


def hx(s):
    return bytearray(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def dec(can_id, data, m=None, now=7):
    if m is None:
        m = model.Module(0)
    buf = bytearray(8)
    for i, b in enumerate(data):
        buf[i] = b
    return C.decode(can_id, buf, len(data), m, now), m


def test_decode_351_example():
    r, m = dec(0x351, hx("1402B0044006C201"))
    assert r == E_OK and m.mgmt_valid and m.t_mgmt == 7
    assert (m.chg_v_mv, m.chg_limit_ma, m.dsg_limit_ma, m.dsg_v_mv) == (53200, 120000, 160000, 45000)
    r, m = dec(0x351, hx("1402B0044006"))          # 6-byte form: no discharge voltage
    assert r == E_OK and m.dsg_v_mv == 0


def test_decode_355_356_35c_35e():
    r, m = dec(0x355, hx("4B006200"))
    assert r == E_OK and m.soc_pm == 750 and m.soh_pm == 980
    r, m = dec(0x356, hx("6C14ECFFFA00"))          # 52.28 V, -2.0 A, 25.0 degC
    assert r == E_OK and (m.voltage_mv, m.current_ma, m.temp_dc[0], m.n_temps) == (52280, -2000, 250, 1)
    assert m.analog_valid and m.t_analog == 7
    r, m = dec(0x35C, hx("C000"))
    assert r == E_OK and m.mgmt_flags == 0xC0
    r, m = dec(0x35E, bytearray(b"PYLON   "))
    assert r == E_OK and bytes(m.manufacturer[:m.manufacturer_len]) == b"PYLON" and m.id_valid


def test_decode_359_bits_and_system_error_positions():
    r, m = dec(0x359, bytearray([0x02 | 0x08 | 0x80, 0x01, 0x04 | 0x10, 0x01 | 0x08, 3, 0x50, 0x4E]))
    assert r == E_OK and m.alarm_valid
    assert m.protections == ALM_MOD_OV | ALM_CHG_OT | ALM_DSG_OT | ALM_DSG_OC | ALM_CHG_OC
    assert m.alarms == ALM_MOD_UV | ALM_CHG_UT | ALM_DSG_UT | ALM_CHG_OC | ALM_INTERNAL
    assert m.status[4] == 3
    for b1 in (0x08, 0x80):
        r, m = dec(0x359, bytearray([0, b1, 0, 0, 1, 0x50, 0x4E]))
        assert r == E_OK and m.protections == ALM_INTERNAL


def test_rejections_change_nothing():
    m = model.Module(0)
    assert dec(0x356, hx("6C14ECFFFA00"), m)[0] == E_OK
    assert dec(0x351, hx("1402B0044006C201"), m)[0] == E_OK
    before = snap(m)
    for can_id, data, code in ((0x351, hx("1402B004"), errors.E_TRUNCATED),
                               (0x351, hx("0000B0044006"), errors.E_PLAUSIBLE),
                               (0x355, hx("6500"), errors.E_TRUNCATED),
                               (0x355, hx("65006400"), errors.E_PLAUSIBLE),      # SOC 101 %
                               (0x356, hx("0000ECFFFA00"), errors.E_PLAUSIBLE),
                               (0x359, hx("00000000"), errors.E_TRUNCATED),
                               (0x35E, bytearray(b"PY\x01LON"), errors.E_PLAUSIBLE),
                               (0x35C, bytearray(), errors.E_TRUNCATED),
                               (0x305, bytearray(8), errors.E_UNSUPPORTED),
                               (0x123, hx("00"), errors.E_UNSUPPORTED)):
        r, _ = dec(can_id, data, m)
        assert r == code, (hex(can_id), r)
        assert snap(m) == before
    buf = bytearray(8)
    assert C.decode(0x351, buf, 9, m, 0) == errors.E_TRUNCATED
    assert C.decode(0x351, buf, -1, m, 0) == errors.E_TRUNCATED
    assert snap(m) == before


def test_rounding_half_away_from_zero():
    assert [C.rdiv(v, 100) for v in (149, 150, 151, -149, -150, -151, 0)] == [1, 2, 2, -1, -2, -2, 0]
    buf = bytearray(8)
    C.encode_356(buf, 52285, -150, 251)
    assert buf[:6] == bytearray([0x6D, 0x14, 0xFE, 0xFF, 0xFB, 0x00])    # 52.29 V, -0.2 A
    C.encode_351(buf, 53250, 120049, 160050, 44950)
    assert buf == bytearray([0x15, 0x02, 0xB0, 0x04, 0x41, 0x06, 0xC2, 0x01])
    C.encode_355(buf, 745, 995)
    assert buf[:4] == bytearray([75, 0, 100, 0])


def test_clamping():
    buf = bytearray(8)
    C.encode_351(buf, 10000000, -5000, 5000000, -1)
    assert buf == bytearray([0xFF, 0xFF, 0, 0, 0xFF, 0x7F, 0, 0])
    C.encode_355(buf, 1200, -30)
    assert buf[:4] == bytearray([100, 0, 0, 0])
    C.encode_356(buf, 400000, -4000000, -40000)
    assert buf[:6] == bytearray([0xFF, 0x7F, 0x00, 0x80, 0x00, 0x80])


def test_encode_decode_round_trip():
    buf = bytearray(8)
    m = model.Module(0)
    assert C.encode_351(buf, 56800, 100000, 150000, 48000) == 8
    assert C.decode(0x351, buf, 8, m, 1) == E_OK
    assert (m.chg_v_mv, m.chg_limit_ma, m.dsg_limit_ma, m.dsg_v_mv) == (56800, 100000, 150000, 48000)
    assert C.encode_355(buf, 870, 1000) == 4
    assert C.decode(0x355, buf, 4, m, 1) == E_OK and (m.soc_pm, m.soh_pm) == (870, 1000)
    assert C.encode_356(buf, 53120, -25300, -55) == 6
    assert C.decode(0x356, buf, 6, m, 1) == E_OK
    assert (m.voltage_mv, m.current_ma, m.temp_dc[0]) == (53120, -25300, -55)
    prot = ALM_MOD_OV | ALM_CHG_OT | ALM_DSG_OT | ALM_DSG_OC | ALM_CHG_OC | ALM_INTERNAL
    alarm = ALM_MOD_UV | ALM_CHG_UT | ALM_DSG_UT | ALM_CHG_OC | ALM_INTERNAL
    assert C.encode_359(buf, prot, alarm, 4, False) == 7
    assert buf[5:7] == b"PN"
    assert C.decode(0x359, buf, 7, m, 1) == E_OK
    assert m.protections == prot and m.alarms == alarm and m.status[4] == 4
    C.encode_359(buf, ALM_CELL_OV | ALM_CELL_UV, 0, 1, True)
    assert buf[0] == 0x06 and buf[1] == 0x08
    assert C.encode_35c(buf, 0xC8) == 2 and C.decode(0x35C, buf, 2, m, 1) == E_OK and m.mgmt_flags == 0xC8
    assert C.encode_35e(buf, b"PYLON") == 8 and buf == bytearray(b"PYLON   ")
    assert C.encode_35e(buf, "BANKGATE1") == 8 and buf == bytearray(b"BANKGATE")


def test_decode_and_encode_allocate_nothing():
    m = model.Module(0)
    frames = ((0x351, hx("1402B0044006C201")), (0x355, hx("4B006200")), (0x356, hx("6C14ECFFFA00")),
              (0x359, bytearray([2, 8, 4, 1, 3, 0x50, 0x4E, 0])), (0x35C, hx("C000")),
              (0x35E, bytearray(b"PYLON   ")))
    for can_id, data in frames:
        buf = bytearray(8)
        buf[:len(data)] = data
        dlc = len(data)

        def run():
            return C.decode(can_id, buf, dlc, m, 3)
        assert mptest.no_alloc(run) == E_OK
    out = bytearray(8)
    name = b"PYLON"

    def enc():
        return (C.encode_351(out, 53200, 100000, 100000, 45000) + C.encode_355(out, 500, 990)
                + C.encode_356(out, 52000, -1500, 250) + C.encode_359(out, 0x7FF, 0x7FF, 3, True)
                + C.encode_35c(out, 0xC0) + C.encode_35e(out, name))
    assert mptest.no_alloc(enc) == 8 + 4 + 6 + 7 + 2 + 8


def test_out_of_range_values_are_implausible_and_change_nothing():
    from bankgate.model import Module
    from bankgate.proto import pylon_can as pc
    from bankgate.proto.errors import E_PLAUSIBLE
    m = Module(0)
    buf = bytearray(8)
    pc.encode_356(buf, 52000, 1000, 250)
    assert pc.decode(0x356, buf, 6, m, 1) == 0 and m.temp_dc[0] == 250
    for mv, t in ((66000, 250), (52000, 1300), (52000, -450)):
        b = bytearray(8)
        pc.encode_356(b, mv, 1000, t)
        assert pc.decode(0x356, b, 6, m, 2) == E_PLAUSIBLE, (mv, t)
    assert (m.voltage_mv, m.temp_dc[0], m.t_analog) == (52000, 250, 1)
    pc.encode_351(buf, 66000, 1000, 1000, 45000)
    assert pc.decode(0x351, buf, 8, m, 3) == E_PLAUSIBLE
    pc.encode_351(buf, 53200, 1000, 1000, 70000)
    assert pc.decode(0x351, buf, 8, m, 3) == E_PLAUSIBLE
    assert not m.mgmt_valid
