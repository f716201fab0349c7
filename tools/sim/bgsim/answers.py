# Allocation-light answers of an emulated BMS to the commands a gateway polls all
# the time (0x42 analog, 0x44 alarm, Pylontech 0x92 management), straight from the
# integers of bgsim.bms.Bms.refresh() into preallocated buffers.  Host only (bank
# simulator, unix port).
#
# The reference is tools/sim/bmsproto.py fed with emu's data dicts (pack_data,
# alarm_data, mgmt_data of Bms.report()): the bytes must be identical, which
# tests/mp/test_bgsim_emu.py checks over random module states for both families.
# That path stays what the protocol tests, group queries and rare commands use.
#
#   ans = Answers()                  one per responder (holds its buffers and cache)
#   ans.get(family, cmd, bms, adr)   -> bytes, or None when cmd has no fast path here
#
# Cost: one frame is built per call into a reused bytearray (hex encoding in viper,
# bgsim._native); when it equals the last answer to the same command, that bytes
# object is returned again (no allocation: a module idling between physics steps
# answers the same bytes), else one bytes object is allocated.
import micropython
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV)

from bankgate.proto import alarmbits as _ab

import bmsproto

try:
    from bgsim._native import hexenc, same, unhex
except (ImportError, SyntaxError, ValueError, NotImplementedError):   # no native emitter
    _HEX = b"0123456789ABCDEF"

    def hexenc(dst, pos, src, n):
        h = _HEX
        tot = 0
        for i in range(n):
            b = src[i]
            c1 = h[b >> 4]
            c2 = h[b & 15]
            dst[pos] = c1
            dst[pos + 1] = c2
            tot += c1 + c2
            pos += 2
        return tot

    def unhex(dst, src, start, n):
        tot = 0
        hi = 0
        for i in range(n):
            c = src[start + i]
            if 0x30 <= c <= 0x39:
                v = c - 0x30
            elif 0x41 <= c <= 0x46:
                v = c - 0x37
            else:
                return -1
            tot += c
            if i & 1:
                dst[i >> 1] = (hi << 4) | v
            else:
                hi = v
        return tot

    def same(a, b, n):
        for i in range(n):
            if a[i] != b[i]:
                return False
        return True

_CID1 = bmsproto.CID1
_PYLON_T = bmsproto.PYLON_TEMP_OFFSET
_PACE_T = bmsproto.PACE_TEMP_OFFSET
_HDR = 6                     # VER ADR CID1 RTN LENGTH(2) ahead of INFO in the raw buffer
_RAW = 1024                  # raw bytes: header + INFO (a 24-cell 0x42 is ~80)


@micropython.native
def _rdiv(v, d):
    # bmsproto.rdiv: round half away from zero
    if v >= 0:
        return (v + d // 2) // d
    return -((-v + d // 2) // d)


class Answers:
    def __init__(self):
        self.raw = bytearray(_RAW)
        self.out = bytearray(2 * _RAW + 8)
        self.last = {}       # cmd -> bytes of the last answer

    @micropython.native
    def get(self, family, cmd, b, adr):
        o = self.raw
        pace = family == "pace"
        if cmd == 0x42:
            n = _analog_pace(o, b, adr) if pace else _analog_pylon(o, b, adr)
        elif cmd == 0x44:
            n = _alarm(o, b, adr, pace)
        elif cmd == 0x92 and not pace:
            n = _mgmt(o, b, adr)
        else:
            return None
        # header: VER ADR CID1 RTN LENGTH (LCHKSUM << 12 | LENID), LENID = 2 * INFO bytes
        ln = n - _HDR
        if ln > 2047:
            return None
        o[0] = bmsproto.FAMILY_VER[family]
        o[1] = adr & 0xFF
        o[2] = _CID1
        o[3] = 0
        lenid = 2 * ln
        lc = (-((lenid & 0xF) + ((lenid >> 4) & 0xF) + ((lenid >> 8) & 0xF))) & 0xF
        o[4] = (lc << 4) | (lenid >> 8)
        o[5] = lenid & 0xFF
        f = self.out
        f[0] = 0x7E
        cs = (-hexenc(f, 1, o, n)) & 0xFFFF
        p = 1 + 2 * n
        o[0] = cs >> 8
        o[1] = cs & 0xFF
        hexenc(f, p, o, 2)
        f[p + 4] = 0x0D
        size = p + 5
        prev = self.last.get(cmd)
        if prev is not None and len(prev) == size and same(prev, f, size):
            return prev
        ans = bytes(memoryview(f)[:size])
        self.last[cmd] = ans
        return ans


@micropython.native
def _put16(o, i, v):
    # big-endian u16 at o[i], o[i + 1] (v taken modulo 2**16: negative values wrap)
    v &= 0xFFFF
    o[i] = v >> 8
    o[i + 1] = v & 0xFF


@micropython.native
def _put_cells(o, p, cells):
    n = len(cells)
    o[p] = n & 0xFF
    p += 1
    for k in range(n):
        _put16(o, p, cells[k])
        p += 2
    return p


@micropython.native
def _analog_pylon(o, b, adr):
    # bmsproto.analog_response("pylontech", adr, emu.pack_data(report))
    o[6] = 0
    o[7] = adr & 0xFF
    p = _put_cells(o, 8, b.v_cells)
    t = b.v_temps
    o[p] = len(t)
    p += 1
    for k in range(len(t)):
        _put16(o, p, t[k] + _PYLON_T)
        p += 2
    _put16(o, p, _rdiv(b.v_current_ma, 100))
    _put16(o, p + 2, b.v_voltage_mv)
    rem = b.v_remaining_mah
    tot = b.v_total_mah
    big = rem > 0xFFFF or tot > 0xFFFF        # udi 4: u24 capacities after the cycles
    _put16(o, p + 4, 0xFFFF if big else rem)
    o[p + 6] = 4 if big else 2
    _put16(o, p + 7, 0xFFFF if big else tot)
    _put16(o, p + 9, b.v_cycles)
    p += 11
    if big:
        rem &= 0xFFFFFF
        tot &= 0xFFFFFF
        o[p] = rem >> 16
        o[p + 1] = (rem >> 8) & 0xFF
        o[p + 2] = rem & 0xFF
        o[p + 3] = tot >> 16
        o[p + 4] = (tot >> 8) & 0xFF
        o[p + 5] = tot & 0xFF
        p += 6
    return p


@micropython.native
def _analog_pace(o, b, adr):
    # bmsproto.analog_response("pace", adr, emu.pack_data(report)): temperatures
    # reordered [cells..., MOSFET, env], 10 mA / 10 mAh steps, udi 3 with design
    o[6] = 0
    o[7] = adr & 0xFF
    p = _put_cells(o, 8, b.v_cells)
    t = b.v_temps
    nt = len(t)
    o[p] = nt
    p += 1
    for j in range(nt):
        if nt >= 3:
            k = j + 1 if j < nt - 2 else (0 if j == nt - 2 else nt - 1)
        else:
            k = j
        _put16(o, p, t[k] + _PACE_T)
        p += 2
    _put16(o, p, _rdiv(b.v_current_ma, 10))
    _put16(o, p + 2, b.v_voltage_mv)
    _put16(o, p + 4, _rdiv(b.v_remaining_mah, 10))
    o[p + 6] = 3
    _put16(o, p + 7, _rdiv(b.v_total_mah, 10))
    _put16(o, p + 9, b.v_cycles)
    _put16(o, p + 11, _rdiv(b.v_design_mah, 10))
    return p + 13


@micropython.native
def _encode(alm, table):
    # ALM_* bits -> status byte by the decoder's own table (bankgate.proto.alarmbits):
    # every entry of one wire bit and one ALM bit, set when that ALM bit is; entries
    # of several bits ("any of them") are the decoder's alone
    r = 0
    for i in range(0, len(table), 2):
        w = table[i]
        v = table[i + 1]
        if alm & v and w & (w - 1) == 0 and v & (v - 1) == 0:
            r |= w
    return r


def _pace_bits1(b):
    # PACE protection 1 / warning 1
    return _encode(b, _ab.PACE_BITS1)


def _pylon_s1(pr):
    # Pylontech 0x44 status 1 from the protection bits: no cell OV bit there, a
    # cell OV protection shows as module OV
    if pr & ALM_CELL_OV:
        pr |= ALM_MOD_OV
    return _encode(pr, _ab.PYLON_STATUS1)


def _pace_bits2(b):
    # PACE protection 2 / warning 2 (b0..b3)
    return _encode(b, _ab.PACE_PROT2)


@micropython.native
def _flags(o, p, vals, lo, hi):
    # per-value flag bytes at o[p:p+n]: 2 at/above hi, 1 at/below lo; returns
    # (seen2, seen1) as a 2-bit mask
    seen = 0
    for k in range(len(vals)):
        v = vals[k]
        if v >= hi:
            o[p + k] = 2
            seen |= 2
        elif v <= lo:
            o[p + k] = 1
            seen |= 1
        else:
            o[p + k] = 0
    return seen


@micropython.native
def _has(o, p, n, f):
    for k in range(n):
        if o[p + k] == f:
            return True
    return False


@micropython.native
def _alarm(o, b, adr, pace):
    # bmsproto.alarm_response(family, adr, emu.alarm_data(family, report, bms))
    cl = b.cell
    al = b.alarms
    pr = b.protections
    o[6] = 0
    o[7] = adr & 0xFF
    cells = b.v_cells
    nc = len(cells)
    o[8] = nc & 0xFF
    pc = 9
    _flags(o, pc, cells, int(cl["uv_alarm"] * 1000), int(cl["ov_alarm"] * 1000))
    # an injected cell alarm without a cell beyond the level: flag the highest /
    # lowest cell (its first occurrence), in this order, as alarm_data does
    if al & ALM_CELL_OV and not _has(o, pc, nc, 2):
        o[pc + cells.index(max(cells))] = 2
    if al & ALM_CELL_UV and not _has(o, pc, nc, 1):
        o[pc + cells.index(min(cells))] = 1
    p = pc + nc
    t = b.v_temps
    nt = len(t)
    o[p] = nt & 0xFF
    pt = p + 1
    _flags(o, pt, t, int(b.ut_alarm_c * 10), int(b.ot_alarm_c * 10))
    if al & (ALM_CHG_OT | ALM_DSG_OT) and not _has(o, pt, nt, 2):
        o[pt + 1] = 2
    if al & (ALM_CHG_UT | ALM_DSG_UT) and not _has(o, pt, nt, 1):
        o[pt + 1] = 1
    p = pt + nt
    o[p] = 2 if al & ALM_CHG_OC else 0
    o[p + 1] = 2 if al & ALM_MOD_OV else (1 if al & ALM_MOD_UV else 0)
    o[p + 2] = 2 if al & ALM_DSG_OC else 0
    p += 3
    if pace:
        o[p] = _pace_bits1(pr)
        o[p + 1] = _pace_bits2(pr)
        o[p + 2] = (0x01 if b.v_charging else 0) | (0x02 if b.v_discharging else 0)
        o[p + 3] = 0
        o[p + 4] = 0x08 if (al | pr) & ALM_INTERNAL else 0
        o[p + 5] = 0
        o[p + 6] = 0
        o[p + 7] = _pace_bits1(al)
        o[p + 8] = _pace_bits2(al)
        return p + 9
    s1 = _pylon_s1(pr)
    o[p] = s1
    o[p + 1] = 0x08 | (0 if b.mod.bms_open else 0x06)
    o[p + 2] = (0x80 if b.v_charging else 0) | (0x40 if b.v_discharging else 0) | \
        (0x08 if b.v_soc_pm >= 1000 else 0)
    o[p + 3] = 0x01 if (al | pr) & ALM_INTERNAL else 0
    o[p + 4] = 0
    o[p + 5] = 0                 # the trailing byte real packs send ("extra")
    return p + 6


@micropython.native
def _mgmt(o, b, adr):
    # bmsproto.mgmt_response("pylontech", adr, emu.mgmt_data(report))
    o[6] = adr & 0xFF
    _put16(o, 7, b.v_chg_v_mv)
    _put16(o, 9, b.v_dsg_v_mv)
    _put16(o, 11, _rdiv(b.v_chg_limit_ma, 100))
    _put16(o, 13, -_rdiv(abs(b.v_dsg_limit_ma), 100))
    o[15] = b.v_flags & 0xFF
    return 16
