# Whole-group 0x44 answers (Pylontech INFO FF): the documented per-pack block (spec V3.3)
# and the same with the trailing byte real single answers carry (a public capture,
# bankgate.proto.pylontech._alarm_trail) both decode, from 1 to 16 packs, including the
# simulator's emulation; any other layout is refused with E_LAYOUT and nothing changes.
import array

import bmsproto
import mptest
from bgsim import emu
from bgsim.bms import Bms
from bgsim.physics import SimModule

from bankgate import model
from bankgate.model import ALM_CELL_OV, ALM_CHG_OC, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV
from bankgate.proto import errors
from bankgate.proto import pylontech as P

# a real single 0x44 answer (martiby/ess pylontech.py, read_alarm_info docstring): 15 cells,
# 5 sensors, status 2 = 0x0E, and one byte after status 5
REAL_44 = b"~20024600A04210020F000000000000000000000000000000050000000000000000000E00000000F108\r"


def _alarm(i, n_cells=15, n_temps=5):
    """Pack i's alarm block with values that differ per pack (a mix-up is caught)."""
    cf = [0] * n_cells
    cf[i % n_cells] = 2 if i % 2 else 0
    return {"cell_flags": cf, "temp_flags": [0] * n_temps,
            "charge_current_flag": 2 if i % 3 == 1 else 0, "voltage_flag": 0,
            "discharge_current_flag": 0,
            "status": [0x01 if i % 4 == 2 else 0, 0x0E, 0, 0x01 if i % 5 == 3 else 0, i & 0xFF]}


def _bank(n, first=2):
    bank = model.Bank(16)
    for i in range(16):
        bank.modules[i].addr = first + i
    bank.n_used = 16
    return bank


def _snap(bank):
    out = []
    for m in bank.modules:
        d = {}
        for k, v in m.__dict__.items():
            d[k] = bytes(v) if isinstance(v, (bytearray, array.array)) else v
        out.append(d)
    return out


def _check(bank, alarms):
    for i, a in enumerate(alarms):
        m = bank.modules[i]
        assert m.alarm_valid, i
        assert m.status[4] == a["status"][4] and m.status[1] == 0x0E, (i, list(m.status))
        want_al = (ALM_CELL_OV if 2 in a["cell_flags"] else 0) | \
            (ALM_CHG_OC if a["charge_current_flag"] == 2 else 0) | \
            (ALM_INTERNAL if a["status"][3] or a["status"][4] else 0)
        assert m.alarms == want_al, (i, m.alarms, want_al)
        assert m.protections == (ALM_MOD_OV if a["status"][0] & 1 else 0), (i, m.protections)


def test_real_single_answer_has_one_byte_more_than_the_table():
    b = bytearray(REAL_44)
    m = model.Module(0)
    assert P.decode(P.CMD_ALARM, b, len(b), 2, m, 5) == errors.E_OK
    assert m.status[1] == 0x0E and m.alarms == 0 and m.protections == 0


def test_group_44_documented_and_trailing_byte_layouts_decode_1_to_16_packs():
    for n in (1, 2, 3, 8, 15, 16):
        alarms = [_alarm(i) for i in range(n)]
        for extra in (False, True):
            f = bytearray(bmsproto.alarm_group_response(2, alarms, extra=extra))
            bank = _bank(n)
            r = P.decode_group(P.CMD_ALARM, f, len(f), bank, 2, 7)
            assert r == n, (n, extra, errors.name(r) if r < 0 else r)
            assert P.group_count() == n
            _check(bank, alarms)
            assert not bank.modules[n].alarm_valid if n < 16 else True


def test_group_44_packs_of_different_sizes():
    alarms = [_alarm(0, 15, 5), _alarm(1, 16, 4), _alarm(2, 24, 8), _alarm(3, 8, 2)]
    for extra in (False, True):
        f = bytearray(bmsproto.alarm_group_response(2, alarms, extra=extra))
        bank = _bank(4)
        assert P.decode_group(P.CMD_ALARM, f, len(f), bank, 2, 7) == 4
        _check(bank, alarms)


def _info_frame(info, adr=2):
    return bytearray(bmsproto.build(0x20, adr, 0, bytearray(info)))


def test_other_layouts_are_refused_and_change_nothing():
    alarms = [_alarm(i) for i in range(4)]
    doc = bytes(bmsproto.alarm_group_response(2, alarms))
    # the INFO of the documented answer, re-framed with 2 or 3 spare bytes after each
    # pack, or one spare byte after only some packs
    info = bytearray([0, 4])
    blocks = [bmsproto.alarm_pack_info("pylontech", a) for a in alarms]
    cases = []
    for spare in (2, 3):
        x = bytearray(info)
        for blk in blocks:
            x += blk + bytes(spare)
        cases.append(x)
    x = bytearray(info)
    for k, blk in enumerate(blocks):
        x += blk + (b"\x00" if k == 1 else b"")
    cases.append(x)
    x = bytearray(info)                      # one byte short of the documented layout
    for blk in blocks:
        x += blk
    cases.append(x[:-1])
    x = bytearray(info)                      # the documented layout plus junk at the end
    for blk in blocks:
        x += blk
    cases.append(x + b"\x00\x00")
    for k, c in enumerate(cases):
        f = _info_frame(c)
        bank = _bank(4)
        P.decode_group(P.CMD_ALARM, bytearray(doc), len(doc), bank, 2, 1)   # prior content
        before = _snap(bank)
        r = P.decode_group(P.CMD_ALARM, f, len(f), bank, 2, 9)
        assert r < 0, (k, r)
        assert r in (errors.E_LAYOUT, errors.E_TRUNCATED), (k, errors.name(r))
        assert _snap(bank) == before, k
    assert errors.name(errors.E_LAYOUT) == "layout" and errors.E_LAYOUT in errors.ERROR_TEXT
    assert errors.category(errors.E_LAYOUT) == errors.CAT_INVALID


def test_first_pack_implausible_is_reported_as_such():
    a = _alarm(0)
    f = bytearray(bmsproto.alarm_group_response(2, [dict(a, temp_flags=[]), a]))
    bank = _bank(2)
    assert P.decode_group(P.CMD_ALARM, f, len(f), bank, 2, 9) == errors.E_PLAUSIBLE


def test_emulated_16_pack_group_answer_decodes():
    peers = []
    for i in range(16):
        m = SimModule(i, cells=15, soc=0.2 + 0.04 * i)
        b = Bms(m, 2 + i, model="US3000C")
        b.update(0.0, 0.1)
        peers.append(emu.Rs485Bms(b, "pylontech", peers))
    peers[5].bms.protections = ALM_MOD_UV
    req = bytearray(32)
    k = P.encode_group_request(P.CMD_ALARM, 2, req)
    resp = bytearray(peers[0](bytes(req[:k])))
    bank = _bank(16)
    r = P.decode_group(P.CMD_ALARM, resp, len(resp), bank, 2, 3)
    assert r == 16, errors.name(r) if r < 0 else r
    for i in range(16):
        m = bank.modules[i]
        assert m.alarm_valid and m.protections == (ALM_MOD_UV if i == 5 else 0), (i, m.protections)


def test_group_decode_allocates_nothing():
    alarms = [_alarm(i) for i in range(16)]
    f = bytearray(bmsproto.alarm_group_response(2, alarms, extra=True))
    bank = _bank(16)
    n = len(f)
    P.decode_group(P.CMD_ALARM, f, n, bank, 2, 1)

    def run(f, n, bank):
        return P.decode_group(P.CMD_ALARM, f, n, bank, 2, 2)
    assert mptest.no_alloc(run, f, n, bank) == 16
