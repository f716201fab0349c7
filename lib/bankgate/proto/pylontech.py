# Pylontech RS485 protocol (spec "RS485 protocol" V3.3; US2000/US3000/UP2500 ...).
#
# Framing and checksums: bankgate.proto.frame.  Requests: VER 0x20, CID1 0x46,
# CID2 = command, INFO = the pack address (one byte) for 0x42/0x44/0x47/0x92/0x93,
# empty for 0x4F/0x51; INFO 0xFF asks the group master for every pack (0x42/0x44).
#
# Decoded units (see docs/protocols.md for the wire layouts and sources):
#   cell_mv        u16 mV, 1..5000 accepted
#   temp_dc        0.1 degC = wire (0.1 K) - 2731, -50.0..+150.0 degC accepted; [0] = BMS board
#   current_ma     wire s16 in 100 mA steps * 100 (+ = charging): |I| <= 3 276 800
#   voltage_mv     u16 mV (0 and 0xFFFF rejected)
#   remaining/total_mah  u16 mAh, or the trailing u24 fields when the user-defined count >= 4
#   soc_pm         remaining * 1000 // total (computed with both halved until < 10**6, so no
#                  intermediate exceeds 2**30); remaining > total or total == 0 -> E_PLAUSIBLE
# Every intermediate stays far inside +-2**30.
#
# decode() parses into a module-level scratch Module first and copies into the
# caller's record only when the whole frame is accepted: a rejected frame
# changes nothing.  Nothing here allocates after import.
from micropython import const

from bankgate import model
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV, MAX_CELLS, MAX_TEMPS)
from bankgate.proto import alarmbits as _ab
from bankgate.proto import frame
from bankgate.proto.errors import (
    E_ADDR, E_CID1, E_LAYOUT, E_OK, E_PLAUSIBLE, E_TRUNCATED, E_UNSUPPORTED, E_VER, rtn_code)

NAME = "pylontech"
CMD_ANALOG = const(0x42)
CMD_ALARM = const(0x44)
CMD_PARAMS = const(0x47)
CMD_VERSION = const(0x4F)
CMD_MFR = const(0x51)
CMD_MGMT = const(0x92)
CMD_SERIAL = const(0x93)
POLL_CMDS = (CMD_ANALOG, CMD_ALARM, CMD_MGMT)
IDENT_CMDS = (CMD_VERSION, CMD_MFR, CMD_SERIAL, CMD_PARAMS)
SUPPORTS_GROUP = True
_GROUP_ADDR = const(0xFF)           # INFO of a whole-group query
VER_REQUEST = const(0x20)
_VER_MIN = const(0x20)              # replies with VER outside 0x20..0x3F are rejected (E_VER)
_VER_MAX = const(0x3F)
CID1 = const(0x46)
TEMP_OFFSET = const(2731)          # wire 0.1 K -> 0.1 degC
CELL_MAX_MV = const(5000)
TEMP_MIN_DC = const(-500)
TEMP_MAX_DC = const(1500)
MAX_FRAME = const(2818)            # frame.OVERHEAD + 2 * frame.MAX_INFO

_S = model.scratch()               # decode scratch (shared: bankgate.model.scratch)
_REQ = bytearray(1)


# ---------------------------------------------------------------- requests
def _encode(cmd, adr, info_byte, buf, ver):
    if cmd == CMD_VERSION or cmd == CMD_MFR:
        return frame.encode(buf, ver, adr, CID1, cmd, None, 0)
    _REQ[0] = info_byte
    return frame.encode(buf, ver, adr, CID1, cmd, _REQ, 1)


def encode_request(cmd, addr, buf):
    """Request for pack `addr` into buf (>= 20 bytes); returns its length."""
    if cmd != CMD_ANALOG and cmd != CMD_ALARM and cmd != CMD_PARAMS and cmd != CMD_VERSION \
            and cmd != CMD_MFR and cmd != CMD_MGMT and cmd != CMD_SERIAL:
        return E_UNSUPPORTED
    return _encode(cmd, addr & 0xFF, addr & 0xFF, buf, VER_REQUEST)


def encode_group_request(cmd, master_addr, buf):
    """Whole-group query (INFO 0xFF) to the group master; 0x42 and 0x44 only."""
    if cmd != CMD_ANALOG and cmd != CMD_ALARM:
        return E_UNSUPPORTED
    return _encode(cmd, master_addr & 0xFF, _GROUP_ADDR, buf, VER_REQUEST)


# ---------------------------------------------------------------- shared helpers
# (pace.py reuses these: same framing, same Module commit rules)
def check_reply(addr, cid1_alt, check_ver):
    """Header checks after frame.parse(): CID1, ADR, RTN, then VER."""
    h = frame.HDR
    if h[frame.CID1] != CID1 and h[frame.CID1] != cid1_alt:
        return E_CID1
    if h[frame.ADR] != (addr & 0xFF):
        return E_ADDR
    r = rtn_code(h[frame.CID2])
    if r:
        return r
    if check_ver and (h[frame.VER] < _VER_MIN or h[frame.VER] > _VER_MAX):
        return E_VER
    return E_OK


def soc_of(rem, tot):
    """rem * 1000 // tot without intermediates above 2**30 (rem <= tot < 2**24)."""
    while rem > 1000000:
        rem >>= 1
        tot >>= 1
    if tot <= 0:
        return 0
    return rem * 1000 // tot


def flag_bits(f, below, above):
    """0x44 flag byte -> ALM_* bits: 00 normal, 01 below limit, 02 above limit,
    anything else (F0 'other fault', 80..EF user-defined) -> ALM_INTERNAL."""
    if f == 0:
        return 0
    if f == 1:
        return below
    if f == 2:
        return above
    return ALM_INTERNAL


def text_field(dst, start, count, cap):
    """Copy INFO[start:start+count] (ASCII, trailing NUL/space trimmed) into the
    bytearray dst (at most cap bytes); returns the length, or E_PLAUSIBLE when a
    kept character is not printable ASCII."""
    info = frame.INFO
    end = start + count
    while end > start and (info[end - 1] == 0 or info[end - 1] == 0x20):
        end -= 1
    n = end - start
    if n > cap:
        n = cap
    for k in range(n):
        c = info[start + k]
        if c < 0x20 or c > 0x7E:
            return E_PLAUSIBLE
    for k in range(n):
        dst[k] = info[start + k]
    return n


def commit_analog(d, s, now):
    n = s.n_cells
    for k in range(MAX_CELLS):
        d.cell_mv[k] = s.cell_mv[k] if k < n else 0
    n = s.n_temps
    for k in range(MAX_TEMPS):
        d.temp_dc[k] = s.temp_dc[k] if k < n else 0
    d.n_cells = s.n_cells
    d.n_temps = s.n_temps
    d.current_ma = s.current_ma
    d.voltage_mv = s.voltage_mv
    d.remaining_mah = s.remaining_mah
    d.total_mah = s.total_mah
    d.cycles = s.cycles
    d.soc_pm = s.soc_pm
    model.note_analog(d)
    d.analog_valid = True
    d.t_analog = now


def commit_alarm(d, s, now):
    d.alarms = s.alarms
    d.protections = s.protections
    for k in range(5):
        d.status[k] = s.status[k]
    d.alarm_valid = True
    d.t_alarm = now


def copy_bytes(dst, src, n):
    for k in range(n):
        dst[k] = src[k]


# ---------------------------------------------------------------- 0x42
def _analog_pack(ln, pos, s):
    """One pack's analog block at INFO[pos]; fills scratch s; returns the next
    position or an error code."""
    info = frame.INFO
    if pos >= ln:
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
    for k in range(nt):
        t = frame.s16(pos) - TEMP_OFFSET
        pos += 2
        if t < TEMP_MIN_DC or t > TEMP_MAX_DC:
            return E_PLAUSIBLE
        s.temp_dc[k] = t
    cur = frame.s16(pos) * 100
    mv = frame.u16(pos + 2)
    rem = frame.u16(pos + 4)
    udi = info[pos + 6]
    tot = frame.u16(pos + 7)
    cyc = frame.u16(pos + 9)
    pos += 11
    if udi >= 4:                   # packs over 65 Ah: u24 remaining + total follow
        if pos + 6 > ln:
            return E_TRUNCATED
        rem = frame.u24(pos)
        tot = frame.u24(pos + 3)
        pos += 6
    elif tot == 0xFFFF:            # u16 placeholder without the u24 fields
        return E_PLAUSIBLE
    if mv == 0 or mv == 0xFFFF or tot == 0 or rem > tot:
        return E_PLAUSIBLE
    s.n_cells = nc
    s.n_temps = nt
    s.current_ma = cur
    s.voltage_mv = mv
    s.remaining_mah = rem
    s.total_mah = tot
    s.cycles = cyc
    s.soc_pm = soc_of(rem, tot)
    return pos


# ---------------------------------------------------------------- 0x44
def _alarm_pack(ln, pos, s):
    """One pack's alarm block: flags -> s.alarms, status 1 -> s.protections."""
    info = frame.INFO
    if pos >= ln:
        return E_TRUNCATED
    nc = info[pos]
    pos += 1
    if nc == 0 or nc > MAX_CELLS:
        return E_PLAUSIBLE
    if pos + nc + 1 > ln:
        return E_TRUNCATED
    al = 0
    for k in range(nc):
        al |= flag_bits(info[pos + k], ALM_CELL_UV, ALM_CELL_OV)
    pos += nc
    nt = info[pos]
    pos += 1
    if nt == 0 or nt > MAX_TEMPS:
        return E_PLAUSIBLE
    if pos + nt + 8 > ln:
        return E_TRUNCATED
    for k in range(nt):
        al |= flag_bits(info[pos + k], ALM_CHG_UT | ALM_DSG_UT, ALM_CHG_OT | ALM_DSG_OT)
    pos += nt
    al |= flag_bits(info[pos], 0, ALM_CHG_OC)
    al |= flag_bits(info[pos + 1], ALM_MOD_UV, ALM_MOD_OV)
    al |= flag_bits(info[pos + 2], 0, ALM_DSG_OC)
    pos += 3
    st1 = info[pos]
    pr = _ab.decode(st1, _ab.PYLON_STATUS1)
    if info[pos + 3] or info[pos + 4]:     # status 4/5: per-cell fault bits
        al |= ALM_INTERNAL
    for k in range(5):
        s.status[k] = info[pos + k]
    s.alarms = al
    s.protections = pr
    return pos + 5


# ---------------------------------------------------------------- 0x47, 0x92, 0x51, 0x93
def _params(ln, s):
    if ln < 25:
        return E_TRUNCATED
    cell_hi = frame.u16(1)
    cell_lo = frame.u16(3)
    cell_uv = frame.s16(5)
    mod_hi = frame.u16(13)
    mod_lo = frame.u16(15)
    mod_uv = frame.u16(17)
    if cell_lo <= 0 or cell_lo >= cell_hi or cell_hi > CELL_MAX_MV or \
            mod_lo <= 0 or mod_lo >= mod_hi or mod_hi == 0xFFFF:
        return E_PLAUSIBLE
    s.cell_hi_mv = cell_hi
    s.cell_lo_mv = cell_lo
    s.cell_uv_mv = cell_uv
    s.mod_hi_mv = mod_hi
    s.mod_lo_mv = mod_lo
    s.mod_uv_mv = mod_uv
    s.params_chg_ma = abs(frame.s16(11)) * 100
    s.params_dsg_ma = abs(frame.s16(23)) * 100
    return E_OK


def commit_params(d, s):
    d.cell_hi_mv = s.cell_hi_mv
    d.cell_lo_mv = s.cell_lo_mv
    d.cell_uv_mv = s.cell_uv_mv
    d.mod_hi_mv = s.mod_hi_mv
    d.mod_lo_mv = s.mod_lo_mv
    d.mod_uv_mv = s.mod_uv_mv
    d.params_chg_ma = s.params_chg_ma
    d.params_dsg_ma = s.params_dsg_ma
    d.params_valid = True


def _mgmt(ln, s):
    if ln < 10:
        return E_TRUNCATED
    cv = frame.u16(1)
    dv = frame.u16(3)
    if cv == 0 or cv == 0xFFFF or dv == 0xFFFF:
        return E_PLAUSIBLE
    s.chg_v_mv = cv
    s.dsg_v_mv = dv
    s.chg_limit_ma = abs(frame.s16(5)) * 100
    s.dsg_limit_ma = abs(frame.s16(7)) * 100
    s.mgmt_flags = frame.u8(9)
    return E_OK


def commit_mgmt(d, s, now):
    d.chg_v_mv = s.chg_v_mv
    d.dsg_v_mv = s.dsg_v_mv
    d.chg_limit_ma = s.chg_limit_ma
    d.dsg_limit_ma = s.dsg_limit_ma
    d.mgmt_flags = s.mgmt_flags
    d.mgmt_valid = True
    d.t_mgmt = now


def _mfr(ln, s):
    # device name 10, software version 2, manufacturer name up to 20 (no data flag)
    if ln < 12:
        return E_TRUNCATED
    n = text_field(s.model, 0, 10, 10)
    if n < 0:
        return n
    s.model_len = n
    m = ln - 12
    if m > 20:
        m = 20
    n = text_field(s.manufacturer, 12, m, 20)
    if n < 0:
        return n
    s.manufacturer_len = n
    s.sw_version = (frame.u8(10) << 8) | frame.u8(11)
    return E_OK


def commit_mfr(d, s, now):
    copy_bytes(d.model, s.model, s.model_len)
    d.model_len = s.model_len
    copy_bytes(d.manufacturer, s.manufacturer, s.manufacturer_len)
    d.manufacturer_len = s.manufacturer_len
    d.sw_version = s.sw_version
    d.id_valid = True
    d.t_id = now


def parse_serial(ln, s, start, count):
    """Serial number text INFO[start:start+count] into scratch s (s.serial,
    s.serial_len); E_OK or an error code.  Shared with the other families that use
    this frame format (bankgate.proto.pace)."""
    if ln < start + count:
        return E_TRUNCATED
    n = text_field(s.serial, start, count, 16)
    if n <= 0:
        return E_PLAUSIBLE
    s.serial_len = n
    return E_OK


def commit_serial(d, s, now):
    copy_bytes(d.serial, s.serial, s.serial_len)
    d.serial_len = s.serial_len
    d.id_valid = True
    d.t_id = now


def commit_version(d, ver, now):
    d.proto_version = ver
    d.id_valid = True
    d.t_id = now


# ---------------------------------------------------------------- decode
def decode(cmd, buf, n, addr, mod, now):
    """Decode the response buf[0:n] to `cmd` from pack `addr` into `mod`.
    E_OK or a negative code (mod untouched).  Never raises; allocates nothing."""
    ln = frame.parse(buf, n)
    if ln < 0:
        return ln
    r = check_reply(addr, CID1, cmd != CMD_VERSION)
    if r:
        return r
    s = _S
    if cmd == CMD_ANALOG:
        r = _analog_pack(ln, 2, s)     # data flag, command value (pack address), pack
        if r < 0:
            return r
        commit_analog(mod, s, now)
        return E_OK
    if cmd == CMD_ALARM:
        r = _alarm_pack(ln, 2, s)
        if r < 0:
            return r
        commit_alarm(mod, s, now)
        return E_OK
    if cmd == CMD_MGMT:
        r = _mgmt(ln, s)
        if r:
            return r
        commit_mgmt(mod, s, now)
        return E_OK
    if cmd == CMD_PARAMS:
        r = _params(ln, s)
        if r:
            return r
        commit_params(mod, s)
        return E_OK
    if cmd == CMD_MFR:
        r = _mfr(ln, s)
        if r:
            return r
        commit_mfr(mod, s, now)
        return E_OK
    if cmd == CMD_SERIAL:
        r = parse_serial(ln, s, 1, 16)      # command value, 16 ASCII characters
        if r:
            return r
        commit_serial(mod, s, now)
        return E_OK
    if cmd == CMD_VERSION:
        commit_version(mod, frame.HDR[frame.VER], now)
        return E_OK
    return E_UNSUPPORTED


_group_n = 0                          # packs in the last accepted group answer (group_count)


def _group_walk(cmd, ln, count, bank, first_addr, now, commit, trail=0):
    # Pass 1 (commit False) validates every pack; pass 2 parses again and writes.
    # trail: bytes after each pack's block (0x44: _alarm_trail)
    s = _S
    pos = 2
    written = 0
    for i in range(count):
        if cmd == CMD_ANALOG:
            pos = _analog_pack(ln, pos, s)
        else:
            pos = _alarm_pack(ln, pos, s)
        if pos < 0:
            return pos
        pos += trail
        if commit:
            d = bank.slot_for(first_addr + i)
            if d is not None:
                if cmd == CMD_ANALOG:
                    commit_analog(d, s, now)
                else:
                    commit_alarm(d, s, now)
                written += 1
    return written


def _alarm_end(ln, count, trail):
    """Where a walk over `count` 0x44 pack blocks, each followed by `trail` bytes, ends
    (INFO position), or the error of the first block that does not parse."""
    s = _S
    pos = 2
    for i in range(count):
        pos = _alarm_pack(ln, pos, s)
        if pos < 0:
            return pos
        pos += trail
    return pos


def _alarm_trail(ln, count):
    """Per-pack layout of a whole-group 0x44 answer: the bytes after each pack's block
    (0 or 1), or an error code.
    Sources disagree on what a pack carries:
      * the spec (RS485 protocol V3.3, table of 0x44; docs/protocols.md): M, M cell
        flags, N, N temperature flags, charge-current, module-voltage and discharge-current
        flags, status 1..5 -- M + N + 10 bytes, repeated per pack in the FF answer;
      * real single-pack answers carry one byte more (public capture in martiby/ess
        pylontech.py, read_alarm_info: INFO of 33 bytes for 15 cells and 5 sensors, where
        the table gives 32; python-pylontech 0.3.3 decodes no 0x44 to compare with);
        no public group capture says whether each pack repeats it.
    So both are accepted where the layout accounts for the INFO exactly (for packs of one
    size: the per-pack length is (INFO length - 2) / count, the table's or one more);
    anything else is E_LAYOUT (or the first pack's own error: it is where both layouts
    agree), never a guess.  Allocation-free."""
    r = _alarm_pack(ln, 2, _S)
    if r < 0:
        return r
    if _alarm_end(ln, count, 0) == ln:
        return 0
    if _alarm_end(ln, count, 1) == ln:
        return 1
    return E_LAYOUT


def decode_group(cmd, buf, n, bank, first_addr, now):
    """Response to a whole-group (INFO FF) query of 0x42/0x44 from the master at
    `first_addr`.  Pack i goes to the bank slot whose .addr == first_addr + i
    (packs without a slot are validated and skipped).  Returns the number of
    packs written, or a negative code with no slot changed."""
    if cmd != CMD_ANALOG and cmd != CMD_ALARM:
        return E_UNSUPPORTED
    ln = frame.parse(buf, n)
    if ln < 0:
        return ln
    r = check_reply(first_addr, CID1, True)
    if r:
        return r
    if ln < 2:
        return E_TRUNCATED
    count = frame.INFO[1]             # command value = number of packs
    if count == 0 or count > model.MAX_MODULES:
        return E_PLAUSIBLE
    trail = 0
    if cmd == CMD_ALARM:
        trail = _alarm_trail(ln, count)
        if trail < 0:
            return trail
    r = _group_walk(cmd, ln, count, bank, first_addr, now, False, trail)
    if r < 0:
        return r
    global _group_n
    _group_n = count
    return _group_walk(cmd, ln, count, bank, first_addr, now, True, trail)


def group_count():
    """Packs the master reported in the last group answer decode_group accepted
    (its command value), 0 before the first."""
    return _group_n
