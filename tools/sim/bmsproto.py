# Response frames of the emulated BMSes (bank simulator), built from integer
# values with the same units and key names the decoders and `bankgate decode`
# use.  Plain MicroPython (also runs under CPython); allocates freely.  The
# framing and checksums come from bankgate.proto.frame, so a bug there shows up
# against the independent oracle (python-pylontech) in tests/host.
#
# Values are dicts (JSON-friendly, so CPython tests can pass them through the
# MpWorker):
#   pack   (0x42): cells_mv [..], temps_dc [board, ...], current_ma, voltage_mv,
#                  remaining_mah, total_mah, cycles; optional udi (Pylontech: 2 = u16
#                  capacities, 4 = u24 capacities; default 4 when a capacity > 65535 mAh),
#                  design_mah (PACE, default total_mah), flag (data flag byte, default 0)
#   alarm  (0x44): cell_flags [..], temp_flags [..], charge_current_flag, voltage_flag,
#                  discharge_current_flag, status [5 bytes Pylontech | 9 bytes PACE:
#                  prot1, prot2, system, config, fault, balance hi, balance lo, warn1, warn2],
#                  extra (Pylontech: append the undocumented trailing byte real packs send
#                  to a single-pack answer; group answers: see alarm_group_response)
#   params (0x47): cell_hi_mv, cell_lo_mv, cell_uv_mv, chg_hi_dc, chg_lo_dc, chg_ma,
#                  mod_hi_mv, mod_lo_mv, mod_uv_mv, dsg_hi_dc, dsg_lo_dc, dsg_ma
#   mgmt   (0x92): chg_v_mv, dsg_v_mv, chg_limit_ma, dsg_limit_ma, mgmt_flags
#   mfr    (0x51): model, sw_version ((major << 8) | minor), manufacturer
#                  (PACE 0xC1: hw_version string, default model)
#   serial (0x93 / PACE 0xC2): serial
# Currents are converted to the wire step (Pylontech 100 mA, PACE 10 mA) and
# capacities (PACE 10 mAh) rounding half away from zero.
from bankgate.proto import frame

FAMILY_VER = {"pylontech": 0x20, "pace": 0x25}
CID1 = 0x46
PACE_TEMP_OFFSET = 2730
PYLON_TEMP_OFFSET = 2731


def rdiv(v, d):
    if v >= 0:
        return (v + d // 2) // d
    return -((-v + d // 2) // d)


def _u8(out, v):
    out.append(v & 0xFF)


def _u16(out, v):
    v &= 0xFFFF
    out.append(v >> 8)
    out.append(v & 0xFF)


def _u24(out, v):
    v &= 0xFFFFFF
    out.append(v >> 16)
    out.append((v >> 8) & 0xFF)
    out.append(v & 0xFF)


def _text(out, s, size, pad=0x20):
    b = s.encode() if isinstance(s, str) else bytes(s)
    b = b[:size]
    for c in b:
        out.append(c)
    for _ in range(size - len(b)):
        out.append(pad)


def build(ver, adr, rtn, info, cid1=CID1):
    """A complete frame (bytes) with the given header and INFO bytes."""
    info = bytes(info)
    if len(info) > 2047:
        raise ValueError("INFO too long for a 12-bit LENID")
    buf = bytearray(frame.OVERHEAD + 2 * len(info))
    n = frame.encode(buf, ver, adr & 0xFF, cid1, rtn & 0xFF, info, len(info))
    return bytes(buf[:n])


def _ver(family, ver):
    if ver is not None:
        return ver
    if family not in FAMILY_VER:
        raise ValueError("no RS485 family %r" % family)
    return FAMILY_VER[family]


# ---------------------------------------------------------------- INFO builders
def pylontech_pack_info(p):
    out = bytearray()
    cells = p["cells_mv"]
    temps = p["temps_dc"]
    _u8(out, len(cells))
    for v in cells:
        _u16(out, v)
    _u8(out, len(temps))
    for t in temps:
        _u16(out, t + PYLON_TEMP_OFFSET)
    _u16(out, rdiv(p["current_ma"], 100))
    _u16(out, p["voltage_mv"])
    rem = p["remaining_mah"]
    tot = p["total_mah"]
    udi = p.get("udi", 4 if (rem > 0xFFFF or tot > 0xFFFF) else 2)
    _u16(out, 0xFFFF if udi >= 4 else rem)
    _u8(out, udi)
    _u16(out, 0xFFFF if udi >= 4 else tot)
    _u16(out, p["cycles"])
    if udi >= 4:
        _u24(out, rem)
        _u24(out, tot)
    return out


def pace_pack_info(p):
    out = bytearray()
    cells = p["cells_mv"]
    temps = list(p["temps_dc"])
    if len(temps) >= 3:             # record order [MOSFET, cells..., env] -> wire [cells..., MOSFET, env]
        temps = temps[1:-1] + [temps[0], temps[-1]]
    _u8(out, len(cells))
    for v in cells:
        _u16(out, v)
    _u8(out, len(temps))
    for t in temps:
        _u16(out, t + PACE_TEMP_OFFSET)
    _u16(out, rdiv(p["current_ma"], 10))
    _u16(out, p["voltage_mv"])
    _u16(out, rdiv(p["remaining_mah"], 10))
    _u8(out, p.get("udi", 3))
    _u16(out, rdiv(p["total_mah"], 10))
    _u16(out, p["cycles"])
    if p.get("udi", 3) >= 3:
        _u16(out, rdiv(p.get("design_mah", p["total_mah"]), 10))
    return out


def alarm_pack_info(family, a):
    out = bytearray()
    _u8(out, len(a["cell_flags"]))
    for f in a["cell_flags"]:
        _u8(out, f)
    _u8(out, len(a["temp_flags"]))
    for f in a["temp_flags"]:
        _u8(out, f)
    _u8(out, a.get("charge_current_flag", 0))
    _u8(out, a.get("voltage_flag", 0))
    _u8(out, a.get("discharge_current_flag", 0))
    n_status = 9 if family == "pace" else 5
    status = list(a.get("status", [])) + [0] * n_status
    for b in status[:n_status]:
        _u8(out, b)
    if family == "pylontech" and a.get("extra"):
        _u8(out, 0)
    return out


# ---------------------------------------------------------------- responses
def analog_response(family, adr, pack, ver=None):
    info = bytearray([pack.get("flag", 0), adr & 0xFF])
    info += pace_pack_info(pack) if family == "pace" else pylontech_pack_info(pack)
    return build(_ver(family, ver), adr, 0, info)


def analog_group_response(adr, packs, ver=None):
    """Pylontech whole-group 0x42 answer of the master at `adr`."""
    info = bytearray([0, len(packs)])
    for p in packs:
        info += pylontech_pack_info(p)
    return build(_ver("pylontech", ver), adr, 0, info)


def alarm_response(family, adr, alarm, ver=None):
    info = bytearray([alarm.get("flag", 0), adr & 0xFF]) + alarm_pack_info(family, alarm)
    return build(_ver(family, ver), adr, 0, info)


def alarm_group_response(adr, alarms, ver=None, extra=False):
    """Pylontech whole-group 0x44 answer of the master at `adr`: per pack the documented
    block (spec V3.3 table: M, flags, N, flags, three flags, status 1..5), without the
    trailing byte real single answers carry (an alarm's own "extra" is ignored here);
    extra=True appends that byte to every pack (the layout the decoder also accepts)."""
    info = bytearray([0, len(alarms)])
    for a in alarms:
        info += alarm_pack_info("pylontech", dict(a, extra=extra))
    return build(_ver("pylontech", ver), adr, 0, info)


def params_response(family, adr, p, ver=None):
    if family == "pace":
        return error_response(family, adr, 0x04, ver)
    out = bytearray([p.get("flag", 0)])
    _u16(out, p["cell_hi_mv"])
    _u16(out, p["cell_lo_mv"])
    _u16(out, p["cell_uv_mv"])
    _u16(out, p.get("chg_hi_dc", 450) + PYLON_TEMP_OFFSET)
    _u16(out, p.get("chg_lo_dc", 0) + PYLON_TEMP_OFFSET)
    _u16(out, rdiv(p["chg_ma"], 100))
    _u16(out, p["mod_hi_mv"])
    _u16(out, p["mod_lo_mv"])
    _u16(out, p["mod_uv_mv"])
    _u16(out, p.get("dsg_hi_dc", 550) + PYLON_TEMP_OFFSET)
    _u16(out, p.get("dsg_lo_dc", -100) + PYLON_TEMP_OFFSET)
    _u16(out, -rdiv(abs(p["dsg_ma"]), 100))          # negative on the wire
    return build(_ver(family, ver), adr, 0, out)


def mgmt_response(family, adr, m, ver=None):
    if family == "pace":
        return error_response(family, adr, 0x04, ver)
    out = bytearray([adr & 0xFF])
    _u16(out, m["chg_v_mv"])
    _u16(out, m["dsg_v_mv"])
    _u16(out, rdiv(m["chg_limit_ma"], 100))
    _u16(out, -rdiv(abs(m["dsg_limit_ma"]), 100))    # negative on the wire
    _u8(out, m.get("mgmt_flags", 0xC0))
    return build(_ver(family, ver), adr, 0, out)


def version_response(family, adr, proto_version=None):
    """0x4F: the answer is the VER byte itself; INFO is empty."""
    return build(_ver(family, proto_version), adr, 0, b"")


def mfr_response(family, adr, m, ver=None):
    out = bytearray()
    if family == "pace":             # 0xC1 hardware version string, 20 characters
        _text(out, m.get("hw_version", m.get("model", "")), 20)
    else:
        _text(out, m["model"], 10)
        _u16(out, m.get("sw_version", 0))
        _text(out, m.get("manufacturer", ""), 20)
    return build(_ver(family, ver), adr, 0, out)


def serial_response(family, adr, s, ver=None):
    out = bytearray()
    if family == "pace":             # 0xC2: 20 characters, space padded
        _text(out, s["serial"], 20)
    else:
        _u8(out, adr)
        _text(out, s["serial"], 16)
    return build(_ver(family, ver), adr, 0, out)


def error_response(family, adr, rtn, ver=None):
    """Error return: CID2 = rtn (01..06, 90, 91 ...), empty INFO."""
    return build(_ver(family, ver), adr, rtn, b"")


# command byte -> builder, per family
def response(family, cmd, adr, data=None, ver=None):
    """Dispatch by command: the emulated BMS's answer to `cmd` (bytes)."""
    if cmd == 0x42:
        return analog_response(family, adr, data, ver)
    if cmd == 0x44:
        return alarm_response(family, adr, data, ver)
    if cmd == 0x4F:
        return version_response(family, adr, ver)
    if family == "pace":
        if cmd == 0xC1:
            return mfr_response(family, adr, data, ver)
        if cmd == 0xC2:
            return serial_response(family, adr, data, ver)
        return error_response(family, adr, 0x04, ver)
    if cmd == 0x47:
        return params_response(family, adr, data, ver)
    if cmd == 0x51:
        return mfr_response(family, adr, data, ver)
    if cmd == 0x92:
        return mgmt_response(family, adr, data, ver)
    if cmd == 0x93:
        return serial_response(family, adr, data, ver)
    return error_response(family, adr, 0x04, ver)


def text(fname, *args):
    """For MpWorker callers: call builder `fname` and return the frame as str."""
    return globals()[fname](*args).decode()
