# PACE BMS RS485 protocol V2.5 ("paceic", PBmsTools 2.4): the BMS inside many
# low-cost rack modules.  Same framing as Pylontech (bankgate.proto.frame), VER
# 0x25, CID1 0x46 (LiFePO4) or 0x4F (Li-ion), but its own INFO layouts and units.
#
# Sources (see docs/protocols.md): the PACE V2.5 layouts and real captured frames
# documented in nkinnan/esphome-pace-bms (pace_bms_protocol_v25.h), the constant
# tables of Tertiush/bmspace, and the Seplos V2 telemetry layout for comparison.
#
# Commands: 0x42 analog, 0x44 status/alarms, 0x4F protocol version, 0xC1 hardware
# version string (-> model/manufacturer), 0xC2 serial number string.  PACE has
# no equivalent of Pylontech 0x47/0x92/0x51/0x93 and no whole-group query:
# CMD_PARAMS/CMD_MGMT are kept for the common API but decode()/encode_request()
# return E_UNSUPPORTED for them (a real PACE BMS answers RTN 04).
#
# Decoded units:
#   cell_mv      u16 mV (1..5000)
#   temp_dc      wire 0.1 K with offset 2730 (PBmsTools; Pylontech uses 2731).  Wire
#                order is cells..., MOSFET, environment; the record puts the MOSFET
#                (board) sensor first: [MOSFET, cell temps..., environment].
#   current_ma   s16 in 10 mA steps * 10 (+ = charging)
#   voltage_mv   u16 mV
#   remaining_mah, total_mah (full capacity), design: u16 in 10 mAh * 10
#   soh_pm       full * 1000 // design, capped at 1000 (only when design is sent)
from micropython import const

from bankgate import model
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV, MAX_CELLS, MAX_TEMPS)
from bankgate import familycaps as _fc
from bankgate.proto import alarmbits as _ab
from bankgate.proto import frame
from bankgate.proto import pylontech as _py
from bankgate.proto.errors import E_OK, E_PLAUSIBLE, E_TRUNCATED, E_UNSUPPORTED

NAME = "pace"
CMD_ANALOG = const(0x42)
CMD_ALARM = const(0x44)
CMD_PARAMS = const(0x47)           # not implemented by PACE: E_UNSUPPORTED
CMD_VERSION = const(0x4F)
CMD_MFR = const(0xC1)              # "hardware version" string, e.g. "P16S100A-1812-1.00  "
CMD_MGMT = const(0x92)             # not implemented by PACE: E_UNSUPPORTED
CMD_SERIAL = const(0xC2)           # serial number string (20 or 40 characters)
POLL_CMDS = (CMD_ANALOG, CMD_ALARM)
IDENT_CMDS = (CMD_VERSION, CMD_MFR, CMD_SERIAL)
SUPPORTS_GROUP = False
VER_REQUEST = const(0x25)
CID1 = const(0x46)
_CID1_LI_ION = const(0x4F)
TEMP_OFFSET = const(2730)
CELL_MAX_MV = const(5000)
TEMP_MIN_DC = const(-500)
TEMP_MAX_DC = const(1500)
MAX_FRAME = const(338)             # frame.OVERHEAD + 2 * 160 INFO bytes (a 24-cell 0x42 is 97)

_S = model.scratch()               # decode scratch (shared: bankgate.model.scratch)
_REQ = bytearray(1)


def encode_request(cmd, addr, buf):
    """Request for the BMS at `addr` into buf (>= 20 bytes); returns its length.
    0x42/0x44 carry the address as INFO; 0x4F/0xC1/0xC2 have no INFO."""
    a = addr & 0xFF
    if cmd == CMD_ANALOG or cmd == CMD_ALARM:
        _REQ[0] = a
        return frame.encode(buf, VER_REQUEST, a, CID1, cmd, _REQ, 1)
    if cmd == CMD_VERSION or cmd == CMD_MFR or cmd == CMD_SERIAL:
        return frame.encode(buf, VER_REQUEST, a, CID1, cmd, None, 0)
    return E_UNSUPPORTED


def _analog(ln, s):
    info = frame.INFO
    pos = 2                         # data flag, responding address
    if ln < 3:
        return E_TRUNCATED
    nc = info[pos]
    pos = frame.cells(pos, ln, s.cell_mv, CELL_MAX_MV)
    if pos < 0:
        return pos
    nt = info[pos]
    pos += 1
    if nt == 0 or nt > MAX_TEMPS:
        return E_PLAUSIBLE
    if pos + 2 * nt + 11 > ln:
        return E_TRUNCATED
    # wire order: cell sensors..., MOSFET, environment -> record: MOSFET first
    for k in range(nt):
        t = frame.s16(pos + 2 * k) - TEMP_OFFSET
        if t < TEMP_MIN_DC or t > TEMP_MAX_DC:
            return E_PLAUSIBLE
        if nt >= 3:
            if k == nt - 2:
                j = 0
            elif k == nt - 1:
                j = k
            else:
                j = k + 1
        else:
            j = k
        s.temp_dc[j] = t
    pos += 2 * nt
    cur = frame.s16(pos) * 10
    mv = frame.u16(pos + 2)
    rem = frame.u16(pos + 4) * 10
    udi = info[pos + 6]
    tot = frame.u16(pos + 7) * 10
    cyc = frame.u16(pos + 9)
    pos += 11
    design = 0
    if udi >= 3 and pos + 2 <= ln:
        design = frame.u16(pos) * 10
    if mv == 0 or mv == 0xFFFF or tot == 0 or tot == 655350 or rem > tot:
        return E_PLAUSIBLE
    s.n_cells = nc
    s.n_temps = nt
    s.current_ma = cur
    s.voltage_mv = mv
    s.remaining_mah = rem
    s.total_mah = tot
    s.cycles = cyc
    s.soc_pm = _py.soc_of(rem, tot)
    if design > 0:
        h = tot * 1000 // design    # tot <= 655340: product < 2**30
        s.soh_pm = 1000 if h > 1000 else h
    else:
        s.soh_pm = -1
    return E_OK


def _alarm(ln, s):
    info = frame.INFO
    pos = 2
    if ln < 3:
        return E_TRUNCATED
    nc = info[pos]
    pos += 1
    if nc == 0 or nc > MAX_CELLS:
        return E_PLAUSIBLE
    if pos + nc + 1 > ln:
        return E_TRUNCATED
    al = 0
    for k in range(nc):
        al |= _py.flag_bits(info[pos + k], ALM_CELL_UV, ALM_CELL_OV)
    pos += nc
    nt = info[pos]
    pos += 1
    if nt == 0 or nt > MAX_TEMPS:
        return E_PLAUSIBLE
    if pos + nt + 12 > ln:
        return E_TRUNCATED
    for k in range(nt):
        al |= _py.flag_bits(info[pos + k], ALM_CHG_UT | ALM_DSG_UT, ALM_CHG_OT | ALM_DSG_OT)
    pos += nt
    al |= _py.flag_bits(info[pos], 0, ALM_CHG_OC)
    al |= _py.flag_bits(info[pos + 1], ALM_MOD_UV, ALM_MOD_OV)
    al |= _py.flag_bits(info[pos + 2], 0, ALM_DSG_OC)
    pos += 3
    p1 = info[pos]
    p2 = info[pos + 1]
    sysb = info[pos + 2]
    cfg = info[pos + 3]
    fault = info[pos + 4]
    w1 = info[pos + 7]
    w2 = info[pos + 8]
    pr = _bits1(p1)
    if p1 & 0x40:                   # short circuit
        pr |= ALM_DSG_OC
    pr |= _bits2(p2)
    if fault & 0x37:                # charge/discharge MOSFET, NTC, cell, sampling fault
        pr |= ALM_INTERNAL
    al |= _bits1(w1) | _warn2(w2)
    s.status[0] = p1
    s.status[1] = p2
    s.status[2] = sysb
    s.status[3] = cfg
    s.status[4] = fault
    s.alarms = al
    s.protections = pr
    return E_OK


def _bits1(b):
    # protection 1 / warning 1 (alarmbits.PACE_BITS1)
    return _ab.decode(b, _ab.PACE_BITS1)


def _warn2(b):
    # warning 2 (alarmbits.PACE_WARN2)
    return _ab.decode(b, _ab.PACE_WARN2)


def _bits2(b):
    # protection 2 (alarmbits.PACE_PROT2)
    return _ab.decode(b, _ab.PACE_PROT2)


def _hwver(ln, s):
    if ln < 1:
        return E_TRUNCATED
    # model: the part before the first '-' or ' ' (max 10); manufacturer field:
    # the whole hardware version string (max 20)
    n = _py.text_field(s.manufacturer, 0, ln, 20)
    if n <= 0:
        return E_PLAUSIBLE
    s.manufacturer_len = n
    m = 0
    while m < n and m < 10 and s.manufacturer[m] != 0x2D and s.manufacturer[m] != 0x20:
        s.model[m] = s.manufacturer[m]
        m += 1
    s.model_len = m
    return E_OK


def _commit_hwver(d, s, now):
    _py.copy_bytes(d.model, s.model, s.model_len)
    d.model_len = s.model_len
    _py.copy_bytes(d.manufacturer, s.manufacturer, s.manufacturer_len)
    d.manufacturer_len = s.manufacturer_len
    d.id_valid = True
    d.t_id = now


def decode(cmd, buf, n, addr, mod, now):
    """Decode the response buf[0:n] to `cmd` from BMS `addr` into `mod`.
    E_OK or a negative code (mod untouched).  Never raises; allocates nothing."""
    if cmd != CMD_ANALOG and cmd != CMD_ALARM and cmd != CMD_VERSION and cmd != CMD_MFR \
            and cmd != CMD_SERIAL:
        return E_UNSUPPORTED
    ln = frame.parse(buf, n)
    if ln < 0:
        return ln
    r = _py.check_reply(addr, _CID1_LI_ION, cmd != CMD_VERSION)
    if r:
        return r
    s = _S
    if cmd == CMD_ANALOG:
        r = _analog(ln, s)
        if r:
            return r
        _py.commit_analog(mod, s, now)
        if s.soh_pm >= 0:
            mod.soh_pm = s.soh_pm
        _fc.pace_standin(mod, now)     # no limits on the bus: stand-in from the cells
        return E_OK
    if cmd == CMD_ALARM:
        r = _alarm(ln, s)
        if r:
            return r
        _py.commit_alarm(mod, s, now)
        return E_OK
    if cmd == CMD_MFR:
        r = _hwver(ln, s)
        if r:
            return r
        _commit_hwver(mod, s, now)
        return E_OK
    if cmd == CMD_SERIAL:
        r = _py.parse_serial(ln, s, 0, ln)
        if r:
            return r
        _py.commit_serial(mod, s, now)
        return E_OK
    _py.commit_version(mod, frame.HDR[frame.VER], now)
    return E_OK


def decode_group(cmd, buf, n, bank, first_addr, now):
    return E_UNSUPPORTED


def group_count():
    """No whole-group query on PACE (SUPPORTS_GROUP False)."""
    return 0
