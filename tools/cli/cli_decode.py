# MicroPython back end of `bankgate decode` (tools/bankgate_host/decode_cmd.py).
#
#   micropython cli_decode.py FAMILY COMMAND MODE ADDR PAYLOAD
#     FAMILY   registry name (pylontech, pace, pylontech-can)
#     COMMAND  RS485: the command the frame answers (int); CAN: the CAN id
#     MODE     auto | single | group   (whole-group 0x42/0x44 answers, Pylontech)
#     ADDR     expected reply address, -1 = take it from the frame header
#     PAYLOAD  RS485: the frame text ('~...', CR appended if missing); CAN: data as hex
#
# Prints one JSON object: {"ok": true, ...} (exit 0) or {"ok": false, "error":
# "<name>: <detail>"} (exit 1; 2 for usage errors).  The decoding is the device
# code itself (bankgate.proto.*); this script only formats the record.
# Importable too: decode_json(family, command, mode, addr, payload) returns the
# object (used by the CPython oracle tests through the MpWorker).
import json
import sys

from bankgate import model
from bankgate.proto import errors, frame, registry


class _Done(Exception):
    def __init__(self, obj, rc):
        super().__init__("done")
        self.obj = obj
        self.rc = rc


def _out(obj, rc):
    raise _Done(obj, rc)


def _fail(code, detail=None):
    text = errors.ERROR_TEXT.get(code, "rejected")
    if detail:
        text = "%s (%s)" % (text, detail)
    _out({"ok": False, "error": "%s: %s" % (errors.name(code), text), "code": code}, 1)


def _usage(msg):
    _out({"ok": False, "error": "usage: %s" % msg}, 2)


def _frame_detail(code):
    a, b = frame.DIAG[0], frame.DIAG[1]
    if code == errors.E_CHKSUM and a >= 0:
        return "computed %04X, frame has %04X" % (a, b)
    if code == errors.E_LCHKSUM and a >= 0:
        return "computed %X, frame has %X" % (a, b)
    if (code == errors.E_LENGTH or code == errors.E_TRUNCATED) and a >= 0:
        return "LENID %d, frame carries %d INFO characters" % (a, b)
    if code <= errors.E_RTN_VER and code >= errors.E_RTN_UNKNOWN:
        return "RTN 0x%02X" % frame.HDR[frame.CID2]
    return None


def _str(buf, n):
    return bytes(buf[:n]).decode()


def analog(m, fam):
    d = {
        "cells_mv": list(m.cell_mv[:m.n_cells]),
        "temps_dc": list(m.temp_dc[:m.n_temps]),
        "current_ma": m.current_ma,
        "voltage_mv": m.voltage_mv,
        "remaining_mah": m.remaining_mah,
        "total_mah": m.total_mah,
        "cycles": m.cycles,
        "soc_pm": m.soc_pm,
    }
    if fam.NAME == "pace":
        d["soh_pm"] = m.soh_pm
    return d


def alarm(m):
    return {
        "alarms": m.alarms,
        "protections": m.protections,
        "alarm_names": model.alarm_names(m.alarms),
        "protection_names": model.alarm_names(m.protections),
        "status": list(m.status),
    }


def rs485(fam, cmd, mode, addr, payload):
    text = payload.strip()
    if not text.endswith("\r"):
        text = text + "\r"
    buf = bytearray(text.encode())
    n = len(buf)
    r = frame.parse(buf, n)
    if r < 0:
        _fail(r, _frame_detail(r))
    if addr < 0:
        addr = frame.HDR[frame.ADR]
    hdr = {"ok": True, "family": fam.NAME, "command": "0x%02X" % cmd,
           "ver": frame.HDR[frame.VER], "adr": frame.HDR[frame.ADR], "rtn": frame.HDR[frame.CID2]}
    group_cmd = cmd == fam.CMD_ANALOG or cmd == fam.CMD_ALARM
    if group_cmd and fam.SUPPORTS_GROUP and mode != "single":
        bank = model.Bank()
        for i, m in enumerate(bank.modules):
            m.addr = addr + i
        g = fam.decode_group(cmd, buf, n, bank, addr, 0)
        if g > 0:
            hdr["group"] = True
            mods = bank.modules[:g]
            hdr["modules"] = [analog(m, fam) if cmd == fam.CMD_ANALOG else alarm(m) for m in mods]
            _out(hdr, 0)
        if mode == "group":
            _fail(g, _frame_detail(g))
    elif mode == "group":
        _usage("--group: %s command 0x%02X has no whole-group answer" % (fam.NAME, cmd))
    m = model.Module(0)
    m.addr = addr
    r = fam.decode(cmd, buf, n, addr, m, 0)
    if r < 0:
        _fail(r, _frame_detail(r))
    if group_cmd:
        hdr["group"] = False
        hdr["modules"] = [analog(m, fam) if cmd == fam.CMD_ANALOG else alarm(m)]
    elif cmd == fam.CMD_VERSION:
        hdr["proto_version"] = m.proto_version
    elif cmd == fam.CMD_MFR:
        hdr["model"] = _str(m.model, m.model_len)
        hdr["manufacturer"] = _str(m.manufacturer, m.manufacturer_len)
        hdr["sw_version"] = m.sw_version
    elif cmd == fam.CMD_SERIAL:
        hdr["serial"] = _str(m.serial, m.serial_len)
    elif cmd == fam.CMD_MGMT:
        hdr.update({"chg_v_mv": m.chg_v_mv, "dsg_v_mv": m.dsg_v_mv,
                    "chg_limit_ma": m.chg_limit_ma, "dsg_limit_ma": m.dsg_limit_ma,
                    "mgmt_flags": m.mgmt_flags})
    elif cmd == fam.CMD_PARAMS:
        hdr.update({"cell_hi_mv": m.cell_hi_mv, "cell_lo_mv": m.cell_lo_mv,
                    "cell_uv_mv": m.cell_uv_mv, "mod_hi_mv": m.mod_hi_mv,
                    "mod_lo_mv": m.mod_lo_mv, "mod_uv_mv": m.mod_uv_mv,
                    "params_chg_ma": m.params_chg_ma, "params_dsg_ma": m.params_dsg_ma})
    _out(hdr, 0)


def can(fam, can_id, payload):
    text = payload.strip().replace(" ", "")
    if len(text) % 2 or len(text) > 16:
        _usage("CAN data must be 0..8 bytes of hex, got %r" % payload)
    try:
        data = bytearray(int(text[i:i + 2], 16) for i in range(0, len(text), 2))
    except ValueError:
        _usage("CAN data is not hex: %r" % payload)
    buf = bytearray(8)
    for i, b in enumerate(data):
        buf[i] = b
    m = model.Module(0)
    r = fam.decode(can_id, buf, len(data), m, 0)
    if r < 0:
        _fail(r)
    out = {"ok": True, "family": fam.NAME, "can_id": "0x%03X" % can_id, "dlc": len(data)}
    if can_id == fam.ID_LIMITS:
        out.update({"chg_v_mv": m.chg_v_mv, "chg_limit_ma": m.chg_limit_ma,
                    "dsg_limit_ma": m.dsg_limit_ma})
        if len(data) >= 8:
            out["dsg_v_mv"] = m.dsg_v_mv
    elif can_id == fam.ID_SOC:
        out.update({"soc_pm": m.soc_pm, "soh_pm": m.soh_pm})
    elif can_id == fam.ID_MEASURE:
        out.update({"voltage_mv": m.voltage_mv, "current_ma": m.current_ma, "temp_dc": m.temp_dc[0]})
    elif can_id == fam.ID_ALARMS:
        out.update(alarm(m))
        out["n_modules"] = m.status[4]
    elif can_id == fam.ID_REQUEST:
        out["mgmt_flags"] = m.mgmt_flags
    elif can_id == fam.ID_NAME:
        out["manufacturer"] = _str(m.manufacturer, m.manufacturer_len)
    _out(out, 0)


def _run(family, cmd, mode, addr, payload):
    try:
        fam = registry.get(family)
    except ValueError as e:
        _usage(str(e))
    if fam.NAME == "pylontech-can":
        can(fam, cmd, payload)
    else:
        rs485(fam, cmd, mode, addr, payload)


def decode_json(family, cmd, mode, addr, payload):
    """The JSON object `bankgate decode` prints (exit status in key "rc")."""
    try:
        _run(family, cmd, mode, addr, payload)
    except _Done as d:
        d.obj["rc"] = d.rc
        return d.obj
    return {"ok": False, "error": "internal: no result", "rc": 3}


def request_text(family, cmd, addr, group=False):
    """The family's request frame for `cmd` to `addr` as text (encode_request)."""
    fam = registry.get(family)
    buf = bytearray(64)
    n = fam.encode_group_request(cmd, addr, buf) if group else fam.encode_request(cmd, addr, buf)
    if n < 0:
        return errors.name(n)
    return bytes(buf[:n]).decode()


def main(argv):
    if len(argv) != 6:
        print(json.dumps({"ok": False, "error": "usage: cli_decode.py FAMILY COMMAND MODE ADDR PAYLOAD"}))
        sys.exit(2)
    obj = decode_json(argv[1], int(argv[2]), argv[3], int(argv[4]), argv[5])
    rc = obj.pop("rc")
    print(json.dumps(obj))
    sys.exit(rc)


if __name__ == "__main__":
    main(sys.argv)
