# Pylontech RS485 decoder/encoder (bankgate.proto.pylontech) under MicroPython:
# real frames, frames built by the simulator's encoders (tools/sim/bmsproto.py),
# every rejection class with the record left untouched, fuzzing, zero allocation.
# mpy-timeout: 300
import array

import bmsproto
import mptest

from bankgate import model
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV)
from bankgate.proto import errors, frame
from bankgate.proto import pylontech as P
from bankgate.proto.errors import E_OK

UP2500_42 = (b"~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73"
             b"FFFA680EFFFF04FFFF00000174E401B198E906\r")
PYLON_4F = b"~200246000000FDB2\r"

PACK = {"cells_mv": [3301, 3302, 3299, 3310, 3305, 3300, 3298, 3301, 3302, 3303, 3304, 3305,
                     3306, 3307, 3308],
        "temps_dc": [251, 230, 229, -45, 300], "current_ma": -12300, "voltage_mv": 49612,
        "remaining_mah": 37000, "total_mah": 50000, "cycles": 321}
BIG = {"cells_mv": [3400] * 16, "temps_dc": [200, 210], "current_ma": 45600, "voltage_mv": 54400,
       "remaining_mah": 150000, "total_mah": 200000, "cycles": 12}


def snap(m):
    out = {}
    for k, v in m.__dict__.items():
        out[k] = bytes(v) if isinstance(v, (bytearray, array.array)) else v
    return out


def dec(cmd, f, addr=2, m=None, now=1234):
    if m is None:
        m = model.Module(0)
        m.addr = addr
    b = bytearray(f)
    return P.decode(cmd, b, len(b), addr, m, now), m


def assert_rejected(cmd, f, code, addr=2):
    m = model.Module(0)
    m.addr = addr
    # give the record prior content so "unchanged" is meaningful
    ok, _ = dec(P.CMD_ANALOG, bmsproto.analog_response("pylontech", addr, PACK), addr, m, 5)
    assert ok == E_OK
    before = snap(m)
    b = bytearray(f)
    got = P.decode(cmd, b, len(b), addr, m, 999)
    assert got == code, "expected %s got %s" % (errors.name(code), errors.name(got))
    assert snap(m) == before


# ---------------------------------------------------------------- real frames
def test_real_up2500_analog_frame():
    r, m = dec(P.CMD_ANALOG, UP2500_42, now=77)
    assert r == E_OK
    assert m.n_cells == 8
    assert list(m.cell_mv[:8]) == [3330, 3330, 3330, 3331, 3328, 3329, 3329, 3331]
    assert m.n_temps == 5 and list(m.temp_dc[:5]) == [0xB7D - 2731, 190, 190, 190, 200]
    assert m.current_ma == -600 and m.voltage_mv == 26638
    assert m.remaining_mah == 95460 and m.total_mah == 111000     # u24 fields (count 4)
    assert m.soc_pm == 95460 * 1000 // 111000 and m.cycles == 0
    assert m.analog_valid and m.t_analog == 77


def test_real_protocol_version_frame():
    r, m = dec(P.CMD_VERSION, PYLON_4F, now=9)
    assert r == E_OK and m.proto_version == 0x20 and m.id_valid and m.t_id == 9


# ---------------------------------------------------------------- built frames
def test_analog_u16_capacity_format():
    f = bmsproto.analog_response("pylontech", 2, PACK)
    assert b"02" in f[13:20]            # user-defined count 2
    r, m = dec(P.CMD_ANALOG, f)
    assert r == E_OK
    assert list(m.cell_mv[:m.n_cells]) == PACK["cells_mv"]
    assert list(m.temp_dc[:m.n_temps]) == PACK["temps_dc"]
    assert m.current_ma == -12300 and m.voltage_mv == 49612
    assert m.remaining_mah == 37000 and m.total_mah == 50000 and m.soc_pm == 740 and m.cycles == 321
    # cells beyond n_cells are cleared on commit
    assert m.cell_mv[15] == 0 and m.cell_mv[23] == 0


def test_analog_u24_capacity_format():
    r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pylontech", 3, BIG), addr=3)
    assert r == E_OK
    assert m.remaining_mah == 150000 and m.total_mah == 200000 and m.soc_pm == 750
    assert m.current_ma == 45600 and m.n_cells == 16
    # forcing count 4 for a small pack also works (u16 fields FFFF)
    small = dict(PACK)
    small["udi"] = 4
    r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pylontech", 2, small))
    assert r == E_OK and m.remaining_mah == 37000 and m.total_mah == 50000


def test_current_rounds_to_100ma_steps():
    p = dict(PACK)
    for ma, want in ((150, 200), (-150, -200), (149, 100), (-50, -100), (0, 0), (3276700, 3276700)):
        p["current_ma"] = ma
        r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pylontech", 2, p))
        assert r == E_OK and m.current_ma == want, (ma, m.current_ma)


def test_soc_large_capacity_stays_small_int():
    p = dict(BIG)
    p["remaining_mah"] = 16777000
    p["total_mah"] = 16777215
    r, m = dec(P.CMD_ANALOG, bmsproto.analog_response("pylontech", 2, p))
    assert r == E_OK and m.soc_pm == 999
    assert P.soc_of(16777215, 16777215) == 1000
    assert P.soc_of(999999, 1000000) == 999


def test_group_analog_three_packs():
    packs = [PACK, BIG, dict(PACK, current_ma=500, cycles=1)]
    f = bmsproto.analog_group_response(2, packs)
    bank = model.Bank(4)
    for i, a in enumerate((2, 3, 4, 9)):
        bank.modules[i].addr = a
    untouched = snap(bank.modules[3])
    b = bytearray(f)
    assert P.decode_group(P.CMD_ANALOG, b, len(b), bank, 2, 55) == 3
    assert list(bank.modules[0].cell_mv[:15]) == PACK["cells_mv"]
    assert bank.modules[1].total_mah == 200000 and bank.modules[1].n_cells == 16
    assert bank.modules[2].current_ma == 500 and bank.modules[2].t_analog == 55
    assert snap(bank.modules[3]) == untouched


def test_group_with_missing_slot_skips_it():
    f = bytearray(bmsproto.analog_group_response(2, [PACK, PACK]))
    bank = model.Bank(2)
    bank.modules[0].addr = 2            # address 3 has no slot
    assert P.decode_group(P.CMD_ANALOG, f, len(f), bank, 2, 1) == 1


def test_group_rejected_as_a_whole():
    bad = dict(BIG, voltage_mv=0)
    f = bytearray(bmsproto.analog_group_response(2, [PACK, bad]))
    bank = model.Bank(2)
    bank.modules[0].addr = 2
    bank.modules[1].addr = 3
    before = [snap(m) for m in bank.modules]
    assert P.decode_group(P.CMD_ANALOG, f, len(f), bank, 2, 1) == errors.E_PLAUSIBLE
    assert [snap(m) for m in bank.modules] == before
    # wrong master address, and commands without a group answer
    f = bytearray(bmsproto.analog_group_response(2, [PACK]))
    assert P.decode_group(P.CMD_ANALOG, f, len(f), bank, 3, 1) == errors.E_ADDR
    assert P.decode_group(P.CMD_MGMT, f, len(f), bank, 2, 1) == errors.E_UNSUPPORTED
    assert [snap(m) for m in bank.modules] == before


def test_group_count_is_the_masters_count_of_the_last_accepted_answer():
    # the poller takes the count through this function, not from the parser's INFO buffer
    bank = model.Bank(2)
    bank.modules[0].addr = 2
    f = bytearray(bmsproto.analog_group_response(2, [PACK, PACK, PACK]))
    assert P.decode_group(P.CMD_ANALOG, f, len(f), bank, 2, 1) == 1   # one pack has a slot
    assert P.group_count() == 3
    bad = bytearray(bmsproto.analog_group_response(2, [PACK, dict(BIG, voltage_mv=0)]))
    assert P.decode_group(P.CMD_ANALOG, bad, len(bad), bank, 2, 1) == errors.E_PLAUSIBLE
    assert P.group_count() == 3                 # a rejected answer leaves it
    one = bytearray(bmsproto.analog_group_response(2, [PACK]))
    assert P.decode_group(P.CMD_ANALOG, one, len(one), bank, 2, 1) == 1
    assert P.group_count() == 1


ALARM = {"cell_flags": [0] * 15, "temp_flags": [0] * 5, "status": [0, 0x06, 0x40, 0, 0]}


def test_alarm_normal():
    r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, ALARM), now=8)
    assert r == E_OK and m.alarms == 0 and m.protections == 0
    assert list(m.status) == [0, 0x06, 0x40, 0, 0] and m.alarm_valid and m.t_alarm == 8


def test_alarm_flag_mapping():
    a = {"cell_flags": [0, 2, 0, 1] + [0] * 11, "temp_flags": [0, 2, 1, 0, 0],
         "charge_current_flag": 2, "voltage_flag": 1, "discharge_current_flag": 2,
         "status": [0, 0, 0, 0, 0]}
    r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, a))
    assert r == E_OK
    assert m.alarms == (ALM_CELL_OV | ALM_CELL_UV | ALM_CHG_OT | ALM_DSG_OT | ALM_CHG_UT
                        | ALM_DSG_UT | ALM_CHG_OC | ALM_MOD_UV | ALM_DSG_OC)
    assert m.protections == 0
    a = dict(ALARM, voltage_flag=2, cell_flags=[0xF0] + [0] * 14)
    r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, a))
    assert m.alarms == ALM_MOD_OV | ALM_INTERNAL


def test_alarm_status1_protections_and_cell_faults():
    for bit, alm in ((0x80, ALM_MOD_UV), (0x40, ALM_CHG_OT), (0x20, ALM_DSG_OT), (0x10, ALM_DSG_OC),
                     (0x04, ALM_CHG_OC), (0x02, ALM_CELL_UV), (0x01, ALM_MOD_OV), (0x08, 0)):
        a = dict(ALARM, status=[bit, 0, 0, 0, 0])
        r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, a))
        assert r == E_OK and m.protections == alm and m.alarms == 0
    a = dict(ALARM, status=[0, 0, 0, 0, 0x04])
    r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, a))
    assert m.alarms == ALM_INTERNAL and m.protections == 0


def test_alarm_with_undocumented_trailing_byte_and_group():
    r, m = dec(P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, dict(ALARM, extra=True)))
    assert r == E_OK
    f = bytearray(bmsproto.alarm_group_response(2, [ALARM, dict(ALARM, status=[0x01, 0, 0, 0, 0])]))
    bank = model.Bank(2)
    bank.modules[0].addr = 2
    bank.modules[1].addr = 3
    assert P.decode_group(P.CMD_ALARM, f, len(f), bank, 2, 4) == 2
    assert bank.modules[0].protections == 0 and bank.modules[1].protections == ALM_MOD_OV


PARAMS = {"cell_hi_mv": 3650, "cell_lo_mv": 2900, "cell_uv_mv": 2700, "chg_hi_dc": 500,
          "chg_lo_dc": 0, "chg_ma": 102000, "mod_hi_mv": 54000, "mod_lo_mv": 45000,
          "mod_uv_mv": 42000, "dsg_hi_dc": 600, "dsg_lo_dc": -200, "dsg_ma": 150000}


def test_params_0x47():
    r, m = dec(P.CMD_PARAMS, bmsproto.params_response("pylontech", 2, PARAMS))
    assert r == E_OK and m.params_valid
    assert (m.cell_hi_mv, m.cell_lo_mv, m.cell_uv_mv) == (3650, 2900, 2700)
    assert (m.mod_hi_mv, m.mod_lo_mv, m.mod_uv_mv) == (54000, 45000, 42000)
    assert m.params_chg_ma == 102000 and m.params_dsg_ma == 150000     # positive magnitudes
    assert_rejected(P.CMD_PARAMS, bmsproto.params_response("pylontech", 2, dict(PARAMS, cell_lo_mv=3700)),
                    errors.E_PLAUSIBLE)


MGMT = {"chg_v_mv": 53250, "dsg_v_mv": 47000, "chg_limit_ma": 25000, "dsg_limit_ma": 50000,
        "mgmt_flags": 0xC8}


def test_mgmt_0x92():
    r, m = dec(P.CMD_MGMT, bmsproto.mgmt_response("pylontech", 2, MGMT), now=3)
    assert r == E_OK and m.mgmt_valid and m.t_mgmt == 3
    assert (m.chg_v_mv, m.dsg_v_mv, m.chg_limit_ma, m.dsg_limit_ma, m.mgmt_flags) == \
        (53250, 47000, 25000, 50000, 0xC8)
    assert_rejected(P.CMD_MGMT, bmsproto.mgmt_response("pylontech", 2, dict(MGMT, chg_v_mv=0xFFFF)),
                    errors.E_PLAUSIBLE)


def test_mfr_0x51_and_serial_0x93():
    f = bmsproto.mfr_response("pylontech", 2, {"model": "US3000C", "sw_version": 0x0210,
                                               "manufacturer": "PYLON"})
    r, m = dec(P.CMD_MFR, f, now=6)
    assert r == E_OK and m.model_str() == "US3000C" and m.sw_version == 0x0210
    assert bytes(m.manufacturer[:m.manufacturer_len]) == b"PYLON" and m.id_valid and m.t_id == 6
    r, m = dec(P.CMD_SERIAL, bmsproto.serial_response("pylontech", 2, {"serial": "PPTAP0123456789A"}))
    assert r == E_OK and m.serial_str() == "PPTAP0123456789A"
    r, m = dec(P.CMD_SERIAL, bmsproto.serial_response("pylontech", 2, {"serial": "SHORT"}))
    assert r == E_OK and m.serial_str() == "SHORT"
    bad = bmsproto.build(0x20, 2, 0, b"\x02" + b"ABC\x01DEF" + b" " * 9)
    assert_rejected(P.CMD_SERIAL, bad, errors.E_PLAUSIBLE)
    assert_rejected(P.CMD_SERIAL, bmsproto.build(0x20, 2, 0, b"\x02" + b" " * 16), errors.E_PLAUSIBLE)


def test_version_built():
    r, m = dec(P.CMD_VERSION, bmsproto.version_response("pylontech", 2, 0x35))
    assert r == E_OK and m.proto_version == 0x35


# ---------------------------------------------------------------- requests
def test_requests_for_every_command():
    buf = bytearray(32)
    for cmd, info in ((0x42, b"02"), (0x44, b"02"), (0x47, b"02"), (0x92, b"02"), (0x93, b"02"),
                      (0x4F, b""), (0x51, b"")):
        n = P.encode_request(cmd, 2, buf)
        f = bytes(buf[:n])
        assert f[:9] == b"~200246%02X" % cmd
        assert f[9:13] == (b"E002" if info else b"0000")
        assert f[13:13 + len(info)] == info
        assert frame.parse(bytearray(f), n) == len(info) // 2
        assert int(f[n - 5:n - 1], 16) == frame.chksum(f, 1, n - 5)
    n = P.encode_request(0x42, 2, buf)
    assert bytes(buf[:n]) == b"~20024642E00202FD33\r"          # PROTOCOLS.md example
    n = P.encode_group_request(0x42, 2, buf)
    assert bytes(buf[:13 + 2]) == b"~20024642E002FF"
    assert P.encode_request(0x99, 2, buf) == errors.E_UNSUPPORTED
    assert P.encode_group_request(0x92, 2, buf) == errors.E_UNSUPPORTED
    assert n <= P.MAX_FRAME


# ---------------------------------------------------------------- rejections
def test_header_rejections_leave_record_unchanged():
    good = bmsproto.analog_response("pylontech", 2, PACK)
    assert_rejected(P.CMD_ANALOG, good, errors.E_ADDR, addr=3)
    body = bmsproto.build(0x20, 2, 0, b"\x00\x02", cid1=0x4A)
    assert_rejected(P.CMD_ANALOG, body, errors.E_CID1)
    ver_bad = bmsproto.build(0x10, 2, 0, b"")                         # VER 0x10
    assert_rejected(P.CMD_MGMT, ver_bad, errors.E_VER)
    for rtn, code in ((1, errors.E_RTN_VER), (2, errors.E_RTN_CHKSUM), (3, errors.E_RTN_LCHKSUM),
                      (4, errors.E_RTN_CID2), (5, errors.E_RTN_FORMAT), (6, errors.E_RTN_DATA),
                      (0x90, errors.E_RTN_ADDR), (0x91, errors.E_RTN_INTERNAL),
                      (0x33, errors.E_RTN_UNKNOWN)):
        assert_rejected(P.CMD_ANALOG, bmsproto.error_response("pylontech", 2, rtn), code)
    assert_rejected(0x99, good, errors.E_UNSUPPORTED)


def test_framing_rejections_leave_record_unchanged():
    good = bytearray(bmsproto.analog_response("pylontech", 2, PACK))
    n = len(good)
    bad = bytearray(good); bad[0] = 0x21
    assert_rejected(P.CMD_ANALOG, bad, errors.E_SOI)
    assert_rejected(P.CMD_ANALOG, good[:-1], errors.E_EOI)
    bad = bytearray(good); bad[40] = ord("Z")
    assert_rejected(P.CMD_ANALOG, bad, errors.E_HEX)
    bad = bytearray(good); bad[40] = ord("0") if bad[40] != ord("0") else ord("1")
    assert_rejected(P.CMD_ANALOG, bad, errors.E_CHKSUM)
    bad = bytearray(good); bad[9] = ord("0") if bad[9] != ord("0") else ord("1")
    assert_rejected(P.CMD_ANALOG, bad, errors.E_LCHKSUM)
    assert_rejected(P.CMD_ANALOG, good[:20] + b"\r", errors.E_TRUNCATED)
    assert_rejected(P.CMD_ANALOG, good[:n - 9] + good[n - 5:], errors.E_TRUNCATED)


def _analog_info_frame(info):
    return bmsproto.build(0x20, 2, 0, bytes([0x10, 2]) + bytes(info))


def test_layout_truncation_and_implausible_values():
    full = bmsproto.pylontech_pack_info(PACK)
    # INFO cut anywhere inside the pack layout: truncated (checksums still correct)
    for cut in (0, 1, 5, 31, 32, len(full) - 1):
        assert_rejected(P.CMD_ANALOG, _analog_info_frame(full[:cut]), errors.E_TRUNCATED)
    big = bmsproto.pylontech_pack_info(BIG)
    assert_rejected(P.CMD_ANALOG, _analog_info_frame(big[:-1]), errors.E_TRUNCATED)
    cases = [dict(PACK, voltage_mv=0), dict(PACK, voltage_mv=0xFFFF), dict(PACK, total_mah=0),
             dict(PACK, remaining_mah=50001), dict(PACK, cells_mv=[3300, 0xFFFF, 3300]),
             dict(PACK, cells_mv=[3300, 0, 3300]), dict(PACK, cells_mv=[]),
             dict(PACK, cells_mv=[3300] * (model.MAX_CELLS + 1)), dict(PACK, temps_dc=[]),
             dict(PACK, temps_dc=[200] * (model.MAX_TEMPS + 1)), dict(PACK, temps_dc=[200, -2731]),
             dict(PACK, temps_dc=[200, 1600]), dict(PACK, udi=2, total_mah=0xFFFF, remaining_mah=100)]
    for p in cases:
        assert_rejected(P.CMD_ANALOG, bmsproto.analog_response("pylontech", 2, p), errors.E_PLAUSIBLE)
    for cmd in (P.CMD_ALARM, P.CMD_PARAMS, P.CMD_MGMT, P.CMD_MFR, P.CMD_SERIAL):
        assert_rejected(cmd, bmsproto.build(0x20, 2, 0, b"\x00\x02\x05"), errors.E_TRUNCATED)
    assert_rejected(P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, dict(ALARM, cell_flags=[])),
                    errors.E_PLAUSIBLE)


def test_categories_of_rejections():
    assert errors.category(errors.E_ADDR) == errors.CAT_INVALID
    assert errors.category(errors.E_RTN_DATA) == errors.CAT_RTN
    assert errors.category(errors.E_TRUNCATED) == errors.CAT_FRAMING


# ---------------------------------------------------------------- fuzz
def _rng(seed):
    state = [seed]

    def nxt(n):
        # xorshift32, deterministic
        x = state[0]
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        state[0] = x
        return x % n
    return nxt


def test_random_mutations_never_raise_and_rejections_change_nothing():
    rnd = _rng(0x1234567)
    seeds = [bytearray(UP2500_42), bytearray(bmsproto.analog_response("pylontech", 2, PACK)),
             bytearray(bmsproto.alarm_response("pylontech", 2, ALARM)),
             bytearray(bmsproto.mgmt_response("pylontech", 2, MGMT)),
             bytearray(bmsproto.analog_group_response(2, [PACK, BIG]))]
    cmds = (P.CMD_ANALOG, P.CMD_ANALOG, P.CMD_ALARM, P.CMD_MGMT, P.CMD_ANALOG)
    alphabet = b"0123456789ABCDEF~\r\x00\xffG"
    m = model.Module(0)
    bank = model.Bank(3)
    for i, a in enumerate((2, 3, 4)):
        bank.modules[i].addr = a
    accepted = rejected = 0
    for it in range(3000):
        k = rnd(len(seeds))
        f = bytearray(seeds[k])
        for _ in range(1 + rnd(3)):
            op = rnd(4)
            if op == 0:
                f[rnd(len(f))] = alphabet[rnd(len(alphabet))]
            elif op == 1 and len(f) > 2:
                f = f[:rnd(len(f))] + f[-1:]
            elif op == 2:
                f[rnd(len(f))] = rnd(256)
            else:
                # a consistent frame with a corrupted INFO: re-checksummed so the
                # decoder's layout checks (not just CHKSUM) get exercised
                ln = frame.parse(f, len(f))
                if ln > 2:
                    j = 2 + rnd(ln - 2)
                    frame.INFO[j] = rnd(256)
                    f = bytearray(bmsproto.build(frame.HDR[0], frame.HDR[1], frame.HDR[3],
                                                 bytes(frame.INFO[:ln]), frame.HDR[2]))
        before = snap(m)
        r = P.decode(cmds[k], f, len(f), 2, m, it)
        assert isinstance(r, int) and r <= 0
        if r < 0:
            rejected += 1
            assert snap(m) == before
            assert errors.category(r) != errors.CAT_NONE
        else:
            accepted += 1
        g = P.decode_group(P.CMD_ANALOG, f, len(f), bank, 2, it)
        assert isinstance(g, int)
    assert rejected > 1000 and accepted > 50, (accepted, rejected)


# ---------------------------------------------------------------- allocation
def test_decoding_every_command_allocates_nothing():
    frames = ((P.CMD_ANALOG, bmsproto.analog_response("pylontech", 2, PACK)),  # (cmd, frame[, code])
              (P.CMD_ANALOG, bmsproto.analog_response("pylontech", 2, BIG)),
              (P.CMD_ANALOG, UP2500_42),
              (P.CMD_ALARM, bmsproto.alarm_response("pylontech", 2, ALARM)),
              (P.CMD_PARAMS, bmsproto.params_response("pylontech", 2, PARAMS)),
              (P.CMD_MGMT, bmsproto.mgmt_response("pylontech", 2, MGMT)),
              (P.CMD_MFR, bmsproto.mfr_response("pylontech", 2, {"model": "US2000", "sw_version": 3,
                                                                 "manufacturer": "PYLON"})),
              (P.CMD_SERIAL, bmsproto.serial_response("pylontech", 2, {"serial": "ABCDEFGH12345678"})),
              (P.CMD_VERSION, PYLON_4F),
              (P.CMD_ANALOG, bmsproto.error_response("pylontech", 2, 4), errors.E_RTN_CID2),
              (P.CMD_ANALOG, UP2500_42[:-2] + b"0\r", errors.E_CHKSUM))
    m = model.Module(0)
    for case in frames:
        cmd, f = case[0], case[1]
        want = case[2] if len(case) > 2 else E_OK
        b = bytearray(f)
        n = len(b)

        def run():
            return P.decode(cmd, b, n, 2, m, 100)
        assert mptest.no_alloc(run) == want
    g = bytearray(bmsproto.analog_group_response(2, [PACK, BIG, PACK]))
    bank = model.Bank(3)
    for i in range(3):
        bank.modules[i].addr = 2 + i

    def group():
        return P.decode_group(P.CMD_ANALOG, g, len(g), bank, 2, 5)
    assert mptest.no_alloc(group) == 3
    out = bytearray(P.MAX_FRAME)

    def req():
        return P.encode_request(P.CMD_ANALOG, 2, out) + P.encode_group_request(P.CMD_ALARM, 2, out)
    assert mptest.no_alloc(req) == 40
