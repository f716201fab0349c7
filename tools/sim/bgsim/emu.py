# BMS emulation on the simulated buses: each module's BMS answers the gateway's
# requests on the RS485 wire (Pylontech or PACE framing) or broadcasts its frame
# set on the module CAN bus (family "pylontech-can"), with the numbers of its own
# physical state (bgsim.bms.Bms.report()).  Frames are built by
# tools/sim/bmsproto.py (the same encoders the protocol tests use).
#
# RS485: one responder per module is attached to the wire (fakebus.FakeRs485Wire
# .attach); the wire calls it with the request bytes and collides answers when
# two modules share an address.  A module answers only
#   - while plugged (its communication cable connected, BMS awake),
#   - requests addressed to its CURRENT address (an address change takes effect
#     at once: it answers at the new address, no longer at the old one),
#   - with RTN 02 when the request's checksum is wrong, RTN 04 for a command its
#     family does not have, nothing when the bytes are not a frame at all.
# The group query (Pylontech 0x42/0x44 with INFO FF) is answered by the addressed
# module for itself and every plugged module at a higher address (master + slaves);
# a 0x44 group answer carries the documented block per pack, without the trailing
# byte of single answers (bmsproto.alarm_group_response).
#
# CAN (bank.bus "can"): every module sends 0x351/355/356/359/35C/35E once per
# period on id 0x400 + (address << 4) + (id & 0xF) (bankgate.poller.can_id_for),
# modules staggered so the bus is not hit by all of them in the same millisecond.
import micropython
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_INTERNAL, ALM_MOD_OV, ALM_MOD_UV)
from bankgate.proto import frame

import bmsproto
from bgsim.answers import Answers, _pace_bits1, _pace_bits2, _pylon_s1, unhex

_last = [None, None]             # [request object, its parse]: one request, many responders


@micropython.native
def parse_request(req):
    """(ver, adr, cid1, cid2, info bytes, checksum_ok) or None when `req` is not a
    frame at all (no '~'/'\\r', odd length, non-hex).  The wire hands the same
    request object to every module's responder: it is parsed once (the cache holds
    a reference to it, so an identical `is` means identical bytes; bytes only)."""
    if req is _last[0]:
        return _last[1]
    p = _parse_request(req)
    if isinstance(req, bytes):
        _last[0] = req
        _last[1] = p
    return p


@micropython.native
def _parse_request(req):
    n = len(req)
    if n < frame.OVERHEAD or req[0] != 0x7E or req[n - 1] != 0x0D or (n - 2) % 2:
        return None
    # every character between '~' and '\r' upper-case hex, decoded into _vals, and
    # the ASCII sum of VER .. end of INFO for the CHKSUM (bgsim.answers.unhex)
    m = (n - 2) // 2
    vals = _vals if m <= len(_vals) else bytearray(m)
    s = unhex(vals, req, 1, n - 2)
    if s < 0:
        return None
    s -= req[n - 5] + req[n - 4] + req[n - 3] + req[n - 2]
    lenid = ((vals[4] << 8) | vals[5]) & 0xFFF
    end = 6 + lenid // 2
    if end > m:
        end = m
    info = bytes(vals[6:end]) if end > 6 else b""
    cs = (vals[m - 2] << 8) | vals[m - 1]
    ok = cs == (-s) & 0xFFFF and len(info) * 2 == lenid and lenid == n - frame.OVERHEAD
    return vals[0], vals[1], vals[2], vals[3], info, ok


_vals = bytearray(256)         # _parse_request's decode buffer


# ------------------------------------------------------------ data builders
def pack_data(r):
    return {"cells_mv": r["cell_mv"], "temps_dc": r["temp_dc"], "current_ma": r["current_ma"],
            "voltage_mv": r["voltage_mv"], "remaining_mah": r["remaining_mah"],
            "total_mah": r["total_mah"], "cycles": r["cycles"], "design_mah": r["design_mah"]}


def _flags_of(values, lo, hi):
    return [2 if v >= hi else (1 if v <= lo else 0) for v in values]


def alarm_data(family, r, bms):
    """0x44 content from the BMS state: per-cell / per-sensor flags from the
    measured values, injected bits mapped onto the fields that carry them."""
    cl = bms.cell
    al = r["alarms"]
    pr = r["protections"]
    cells = r["cell_mv"]
    cf = _flags_of(cells, int(cl["uv_alarm"] * 1000), int(cl["ov_alarm"] * 1000))
    if al & ALM_CELL_OV and 2 not in cf:
        cf[cells.index(max(cells))] = 2
    if al & ALM_CELL_UV and 1 not in cf:
        cf[cells.index(min(cells))] = 1
    temps = r["temp_dc"]
    tf = _flags_of(temps, int(bms.ut_alarm_c * 10), int(bms.ot_alarm_c * 10))
    if al & (ALM_CHG_OT | ALM_DSG_OT) and 2 not in tf:
        tf[1] = 2
    if al & (ALM_CHG_UT | ALM_DSG_UT) and 1 not in tf:
        tf[1] = 1
    a = {"cell_flags": cf, "temp_flags": tf,
         "charge_current_flag": 2 if al & ALM_CHG_OC else 0,
         "voltage_flag": 2 if al & ALM_MOD_OV else (1 if al & ALM_MOD_UV else 0),
         "discharge_current_flag": 2 if al & ALM_DSG_OC else 0}
    if family == "pace":
        fault = 0x08 if (al | pr) & ALM_INTERNAL else 0     # b3: cell fault
        sysb = (0x01 if r["charging"] else 0) | (0x02 if r["discharging"] else 0)
        a["status"] = [_pace_bits1(pr), _pace_bits2(pr), sysb, 0, fault, 0, 0,
                       _pace_bits1(al), _pace_bits2(al)]
    else:
        s1 = _pylon_s1(pr)
        open_ = bms.mod.bms_open
        s2 = 0x08 | (0 if open_ else 0x06)
        s3 = (0x80 if r["charging"] else 0) | (0x40 if r["discharging"] else 0) | \
             (0x08 if r["soc_pm"] >= 1000 else 0)
        s4 = 0x01 if (al | pr) & ALM_INTERNAL else 0
        a["status"] = [s1, s2, s3, s4, 0]
        a["extra"] = True
    return a


def params_data(r):
    return {"cell_hi_mv": r["cell_hi_mv"], "cell_lo_mv": r["cell_lo_mv"], "cell_uv_mv": r["cell_uv_mv"],
            "chg_ma": r["params_chg_ma"], "mod_hi_mv": r["mod_hi_mv"], "mod_lo_mv": r["mod_lo_mv"],
            "mod_uv_mv": r["mod_uv_mv"], "dsg_ma": r["params_dsg_ma"]}


def mgmt_data(r):
    return {"chg_v_mv": r["chg_v_mv"], "dsg_v_mv": r["dsg_v_mv"], "chg_limit_ma": r["chg_limit_ma"],
            "dsg_limit_ma": r["dsg_limit_ma"], "mgmt_flags": r["mgmt_flags"]}


# ---------------------------------------------------------------- RS485
class Rs485Bms:
    """Responder of one module's BMS: call it with the request bytes."""

    def __init__(self, bms, family, peers, before=None, stamp=None):
        self.bms = bms
        self.family = family
        self.peers = peers           # every Rs485Bms on the wire (group queries)
        self.before = before         # callable run before answering (bring physics up to date)
        self.stamp = stamp           # callable -> physics time (reuse reports within a step)
        self.requests = 0
        self.answers = 0
        # fast path for the polled commands (0x42, 0x44, Pylontech 0x92): the same
        # bytes as the bmsproto path below, from the BMS's integers without dicts
        # (bgsim.answers; equality checked in tests/mp/test_bgsim_emu.py).
        # fast = False: always the bmsproto path (the reference).
        self.fast = True
        self._ans = Answers()

    @micropython.native
    def __call__(self, req):
        b = self.bms
        if not b.plugged:
            return None
        p = parse_request(req)
        if p is None:
            return None
        ver, adr, cid1, cmd, info, ok = p
        if adr != b.addr:
            return None
        self.requests += 1
        fam = self.family
        if not ok:
            self.answers += 1
            return bmsproto.error_response(fam, adr, 0x02)
        if self.before is not None:
            self.before()
        group = fam == "pylontech" and cmd in (0x42, 0x44) and len(info) >= 1 and info[0] == 0xFF
        if group:
            members = sorted([p for p in self.peers if p.bms.plugged and p.bms.addr >= adr],
                             key=lambda p: p.bms.addr)
            st = self.stamp() if self.stamp is not None else None
            reps = [(m.bms, m.bms.report(st)) for m in members]
            self.answers += 1
            if cmd == 0x42:
                return bmsproto.analog_group_response(adr, [pack_data(r) for _, r in reps])
            return bmsproto.alarm_group_response(adr, [alarm_data(fam, r, m) for m, r in reps])
        st = self.stamp() if self.stamp is not None else None
        if self.fast:
            b.refresh(st)
            out = self._ans.get(fam, cmd, b, adr)
            if out is not None:
                self.answers += 1
                return out
        r = b.report(st)
        if cmd == 0x42:
            data = pack_data(r)
        elif cmd == 0x44:
            data = alarm_data(fam, r, b)
        elif cmd == 0x47:
            data = params_data(r)
        elif cmd == 0x92:
            data = mgmt_data(r)
        elif cmd in (0x51, 0xC1):
            data = {"model": r["model"], "sw_version": r["sw_version"], "manufacturer": r["manufacturer"]}
        elif cmd in (0x93, 0xC2):
            data = {"serial": r["serial"]}
        else:
            data = None
        self.answers += 1
        return bmsproto.response(fam, cmd, adr, data)


# ---------------------------------------------------------------- CAN
CAN_MOD_BASE = 0x400


def can_frames(r, addr):
    """The module's Pylontech CAN frame set as [(can_id, bytes)] on its own ids."""
    from bankgate.proto import pylon_can as pc
    out = []
    buf = bytearray(8)
    temp = max(r["temp_dc"])
    for pid in (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E):
        for i in range(8):
            buf[i] = 0
        if pid == 0x351:
            n = pc.encode_351(buf, r["chg_v_mv"], r["chg_limit_ma"], r["dsg_limit_ma"], r["dsg_v_mv"])
        elif pid == 0x355:
            n = pc.encode_355(buf, r["soc_pm"], r["soh_pm"])
        elif pid == 0x356:
            n = pc.encode_356(buf, r["voltage_mv"], r["current_ma"], temp)
        elif pid == 0x359:
            n = pc.encode_359(buf, r["protections"], r["alarms"], 1, False)
        elif pid == 0x35C:
            n = pc.encode_35c(buf, r["mgmt_flags"])
        else:
            n = pc.encode_35e(buf, r["manufacturer"])
        if n is None:
            n = 8
        out.append((CAN_MOD_BASE + (addr << 4) + (pid & 0xF), bytes(buf[:n])))
    return out
