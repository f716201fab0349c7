# Pylontech low-voltage CAN protocol (battery -> inverter), 500 kbit/s, 11-bit ids,
# little-endian.  Decoders fill a Module record (a CAN-speaking module, or the
# inverter-side view in tests); encoders build the frames the inverter link and
# the simulator send.  Nothing here allocates; every value stays inside +-2**30.
#
#   id     dlc  layout (LE)                                           record
#   0x351  6/8  charge V u16 0.1 V, charge I s16 0.1 A,                chg_v_mv, chg_limit_ma,
#               discharge I s16 0.1 A (sent positive), [discharge V]   dsg_limit_ma, [dsg_v_mv]
#   0x355  4    SOC u16 %, SOH u16 %                                  soc_pm, soh_pm
#   0x356  6    voltage s16 0.01 V, current s16 0.1 A (+ charging),   voltage_mv, current_ma,
#               temperature s16 0.1 degC                              temp_dc[0] (n_temps = 1)
#   0x359  7    protection/alarm bytes, module count, "PN"            protections, alarms, status
#   0x35C  2    b7 charge en, b6 discharge en, b5/b4 force charge,    mgmt_flags
#               b3 full-charge request
#   0x35E  8    manufacturer name (ASCII, space padded)               manufacturer
#
# 0x359 bit mapping (both directions):
#   byte0 protections / byte2 alarms: b1 over-voltage   <-> ALM_MOD_OV (| ALM_CELL_OV when encoding)
#                                     b2 under-voltage  <-> ALM_MOD_UV (| ALM_CELL_UV when encoding)
#                                     b3 over-temp      <-> ALM_CHG_OT | ALM_DSG_OT
#                                     b4 under-temp     <-> ALM_CHG_UT | ALM_DSG_UT
#                                     b7 discharge OC   <-> ALM_DSG_OC
#   byte1 (protection): b0 charge OC <-> ALM_CHG_OC; b3 system error -> ALM_INTERNAL
#                       (decoding accepts b3 or b7, encoding sets b3)
#   byte3 (alarm):      b0 charge high current <-> ALM_CHG_OC; b3 internal comm failure <-> ALM_INTERNAL
#   byte4 module count; bytes 5-6 'P' 'N'.  Module.status[0..4] keep bytes 0..4 raw.
#
# Encoder rounding: a value in mV/mA/permille goes to the wire unit rounding half
# away from zero (+150 mA -> 2 = 0.2 A, -150 mA -> -2), then is clamped to the
# field: u16 fields 0..65535, s16 fields -32768..32767, SOC/SOH 0..100 %.  Limits
# (0x351 currents) are magnitudes: negative inputs clamp to 0.
from micropython import const

from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV)
from bankgate.proto.errors import E_OK, E_PLAUSIBLE, E_TRUNCATED, E_UNSUPPORTED
from bankgate.model import note_analog

NAME = "pylontech-can"
ID_LIMITS = const(0x351)
ID_SOC = const(0x355)
ID_MEASURE = const(0x356)
ID_ALARMS = const(0x359)
ID_REQUEST = const(0x35C)
ID_NAME = const(0x35E)
ID_KEEPALIVE = const(0x305)        # inverter -> battery, eight zero bytes
IDS = (ID_LIMITS, ID_SOC, ID_MEASURE, ID_ALARMS, ID_REQUEST, ID_NAME)

# Plausibility (the firmware's documented input ranges): a low-voltage module or
# its limits above 65 V, or a temperature outside -40..+125 degC, is rejected.
_MAX_MV = const(65000)
_MIN_DC = const(-400)
_MAX_DC = const(1250)


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def _put16(b, i, v):
    b[i] = v & 0xFF
    b[i + 1] = (v >> 8) & 0xFF


def rdiv(v, d):
    """v / d rounded half away from zero (d > 0)."""
    if v >= 0:
        return (v + (d >> 1)) // d
    return -((-v + (d >> 1)) // d)


def _clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


# ---------------------------------------------------------------- decode
def _bits_v_t(b):
    r = 0
    if b & 0x02:
        r |= ALM_MOD_OV
    if b & 0x04:
        r |= ALM_MOD_UV
    if b & 0x08:
        r |= ALM_CHG_OT | ALM_DSG_OT
    if b & 0x10:
        r |= ALM_CHG_UT | ALM_DSG_UT
    if b & 0x80:
        r |= ALM_DSG_OC
    return r


def _decode_alarms(buf, dlc, mod, now):
    """0x359: protection and alarm flags -> ALM_* bits (status bytes kept)."""
    if dlc < 5:
        return E_TRUNCATED
    pr = _bits_v_t(buf[0])
    if buf[1] & 0x01:
        pr |= ALM_CHG_OC
    if buf[1] & 0x88:           # system error: b3 (spec) or b7 (some implementations)
        pr |= ALM_INTERNAL
    al = _bits_v_t(buf[2])
    if buf[3] & 0x01:
        al |= ALM_CHG_OC
    if buf[3] & 0x08:
        al |= ALM_INTERNAL
    mod.protections = pr
    mod.alarms = al
    for k in range(5):
        mod.status[k] = buf[k]
    mod.alarm_valid = True
    mod.t_alarm = now
    return E_OK


def _decode_name(buf, dlc, mod, now):
    """0x35E: the manufacturer name (printable ASCII, trailing blanks trimmed)."""
    if dlc < 1:
        return E_TRUNCATED
    end = dlc
    while end > 0 and (buf[end - 1] == 0x20 or buf[end - 1] == 0):
        end -= 1
    for k in range(end):
        if buf[k] < 0x20 or buf[k] > 0x7E:
            return E_PLAUSIBLE
    for k in range(end):
        mod.manufacturer[k] = buf[k]
    mod.manufacturer_len = end
    mod.id_valid = True
    mod.t_id = now
    return E_OK


def decode(can_id, buf, dlc, mod, now):
    """Decode one CAN frame (data buf[0:dlc]) into `mod`.  E_OK or a negative
    code with mod untouched.  Never raises; allocates nothing."""
    if dlc < 0 or dlc > 8 or dlc > len(buf):
        return E_TRUNCATED
    if can_id == ID_LIMITS:
        if dlc < 6:
            return E_TRUNCATED
        cv = _u16(buf, 0) * 100
        if cv == 0 or cv > _MAX_MV:
            return E_PLAUSIBLE
        if dlc >= 8 and _u16(buf, 6) * 100 > _MAX_MV:
            return E_PLAUSIBLE
        mod.chg_v_mv = cv
        mod.chg_limit_ma = abs(_s16(buf, 2)) * 100
        mod.dsg_limit_ma = abs(_s16(buf, 4)) * 100
        if dlc >= 8:
            mod.dsg_v_mv = _u16(buf, 6) * 100
        mod.mgmt_valid = True
        mod.t_mgmt = now
        return E_OK
    if can_id == ID_SOC:
        if dlc < 4:
            return E_TRUNCATED
        soc = _u16(buf, 0)
        soh = _u16(buf, 2)
        if soc > 100 or soh > 100:
            return E_PLAUSIBLE
        mod.soc_pm = soc * 10
        mod.soh_pm = soh * 10
        note_analog(mod)
        return E_OK
    if can_id == ID_MEASURE:
        if dlc < 6:
            return E_TRUNCATED
        mv = _s16(buf, 0) * 10
        t = _s16(buf, 4)
        if mv <= 0 or mv > _MAX_MV or t < _MIN_DC or t > _MAX_DC:
            return E_PLAUSIBLE
        mod.voltage_mv = mv
        mod.current_ma = _s16(buf, 2) * 100
        mod.temp_dc[0] = t
        mod.n_temps = 1
        note_analog(mod)
        mod.analog_valid = True
        mod.t_analog = now
        return E_OK
    if can_id == ID_ALARMS:
        return _decode_alarms(buf, dlc, mod, now)
    if can_id == ID_REQUEST:
        if dlc < 1:
            return E_TRUNCATED
        mod.mgmt_flags = buf[0]
        return E_OK
    if can_id == ID_NAME:
        return _decode_name(buf, dlc, mod, now)
    return E_UNSUPPORTED


# ---------------------------------------------------------------- encode
def encode_351(buf, chg_v_mv, chg_ma, dsg_ma, dsg_v_mv):
    """Charge/discharge limits; returns dlc 8 (discharge voltage included)."""
    _put16(buf, 0, _clamp(rdiv(chg_v_mv, 100), 0, 65535))
    _put16(buf, 2, _clamp(rdiv(chg_ma, 100), 0, 32767))
    _put16(buf, 4, _clamp(rdiv(dsg_ma, 100), 0, 32767))
    _put16(buf, 6, _clamp(rdiv(dsg_v_mv, 100), 0, 65535))
    return 8


def encode_355(buf, soc_pm, soh_pm):
    _put16(buf, 0, _clamp(rdiv(soc_pm, 10), 0, 100))
    _put16(buf, 2, _clamp(rdiv(soh_pm, 10), 0, 100))
    return 4


def encode_356(buf, mv, ma, temp_dc):
    _put16(buf, 0, _clamp(rdiv(mv, 10), -32768, 32767))
    _put16(buf, 2, _clamp(rdiv(ma, 100), -32768, 32767))
    _put16(buf, 4, _clamp(temp_dc, -32768, 32767))
    return 6


def _enc_v_t(bits):
    b = 0
    if bits & (ALM_MOD_OV | ALM_CELL_OV):
        b |= 0x02
    if bits & (ALM_MOD_UV | ALM_CELL_UV):
        b |= 0x04
    if bits & (ALM_CHG_OT | ALM_DSG_OT):
        b |= 0x08
    if bits & (ALM_CHG_UT | ALM_DSG_UT):
        b |= 0x10
    if bits & ALM_DSG_OC:
        b |= 0x80
    return b


def encode_359(buf, prot_bits, alarm_bits, n_modules, sys_error):
    """Protection/alarm flags from ALM_* bitmasks; sys_error (or ALM_INTERNAL in
    prot_bits) sets byte1 b3.  Returns dlc 7."""
    buf[0] = _enc_v_t(prot_bits)
    b1 = 0
    if prot_bits & ALM_CHG_OC:
        b1 |= 0x01
    if sys_error or prot_bits & ALM_INTERNAL:
        b1 |= 0x08
    buf[1] = b1
    buf[2] = _enc_v_t(alarm_bits)
    b3 = 0
    if alarm_bits & ALM_CHG_OC:
        b3 |= 0x01
    if alarm_bits & ALM_INTERNAL:
        b3 |= 0x08
    buf[3] = b3
    buf[4] = _clamp(n_modules, 0, 255)
    buf[5] = 0x50                   # 'P'
    buf[6] = 0x4E                   # 'N'
    buf[7] = 0
    return 7


def encode_35c(buf, flags):
    buf[0] = flags & 0xF8
    buf[1] = 0
    return 2


def encode_35e(buf, name):
    """Manufacturer name (bytes/bytearray for zero allocation), space padded to 8."""
    n = len(name)
    text = isinstance(name, str)
    for k in range(8):
        if k < n:
            buf[k] = ord(name[k]) if text else name[k]
        else:
            buf[k] = 0x20
    return 8
