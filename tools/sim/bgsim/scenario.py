# The JSON scenario format (documented field by field in docs/scenarios.md):
# load, fill defaults, validate.  Errors name the field path and what was
# expected, and nothing is run for an invalid scenario.
#
# Units are in the field names: _s seconds, _a amperes (+ = charging the bank),
# _v volts, _mohm milliohm, _mah milliampere-hour, _pct percent, _c degC,
# _uf microfarad, _m metre, _mm2 square millimetre, _k_w kelvin per watt.
import micropython
import json

# module field -> (type(s), default).  None default: not set (derived).
MODULE_FIELDS = {
    "addr": (int, None),             # bus address (default 2 + position)
    "serial": (str, None),           # default "SIMBG" + address + position
    "model": (str, "US5000"),
    "manufacturer": (str, "PYLON"),
    "sw_version": (str, "1.4"),
    "chemistry": (str, "lfp"),
    "cells": (int, None),            # default: 15 for lfp, 14 for nmc
    "capacity_mah": ((int, float), 100000),   # design capacity
    "soh_pct": ((int, float), 100),           # actual capacity = design x soh
    "soc_pct": ((int, float), 50),
    "r_int_mohm": ((int, float), 20.0),
    "cable_mohm": ((int, float), None),       # branch cable pair resistance, or:
    "cable_m": ((int, float), 1.5),           #   one-way length and
    "cable_mm2": ((int, float), 35.0),        #   cross-section of copper
    "lug_mohm": ((int, float), 0.1),          # terminal / lug contact resistance
    "fuse_a": ((int, float), 125),            # branch fuse rating, 0 = none
    "fuse_i2t_a2s": ((int, float), 500000),   # > 0: I2t characteristic
    "fuse_trip_factor": ((int, float), 2.0),  # else time-over-current: factor x rating ...
    "fuse_trip_s": ((int, float), 10.0),      # ... for this long
    "ambient_c": ((int, float), 25.0),
    "temp_c": ((int, float), None),           # initial; default ambient
    "rth_k_w": ((int, float), 0.3),
    "tau_s": ((int, float), 3600.0),
    "term_rth_k_w": ((int, float), 5.0),
    "term_tau_s": ((int, float), 300.0),
    "cell_spread_mv": ((int, float), 10.0),
    "chg_limit_a": ((int, float), 50.0),      # BMS rated charge current
    "dsg_limit_a": ((int, float), 50.0),      # BMS rated discharge current
    "oc_protect": ((int, float), 1.5),        # protection at this x rated ...
    "oc_delay_s": ((int, float), 1.0),        # ... for this long
    "ot_alarm_c": ((int, float), 50.0),
    "ut_alarm_c": ((int, float), 0.0),
    "recover_s": ((int, float), 30.0),
    "taper_soc_pct": ((int, float), 90.0),
    "cycles": (int, 0),
    "plugged": (bool, True),                  # communication connected / BMS awake
    "breaker": (bool, True),                  # branch breaker closed
    "output": (str, None),                    # branch contactor output (default: by address order)
}

BUS_FIELDS = {
    "family": (str, None),           # default: config bank.family
    "baud": (int, None),             # default: config bank.baud
    "terminators": (int, 2),
    "cable_m": ((int, float), 10.0),
    "noise": ((int, float), 0.0),
}

TERMINAL_FIELDS = {
    "link_uf": ((int, float), 5000.0),
    "bleed_ohm": ((int, float), 20000.0),
    "precharge_ohm": ((int, float), 20.0),
    "main_mohm": ((int, float), 0.2),
    "link_sensor": (str, "auto"),             # "auto", "link", "bus" or "none"
    "disconnect": (bool, True),               # branch topology: main battery disconnect closed at start
    "link_v": ((int, float), 0.0),
}

INVERTER_FIELDS = {
    "heartbeat": (bool, True),
    "profile": (list, [[0, 0]]),
    "interp": (str, "step"),
    "repeat_s": ((int, float), 0),
    "obey_limits": (bool, True),
    "min_v": ((int, float), 40.0),
    "max_v": ((int, float), 60.0),
}

MQTT_FIELDS = {
    "broker": (bool, False),         # a broker is up at the start (the recording stand-in)
}

DEVICE_FIELDS = {
    "tick_start_ms": (int, 0),       # device ticks_ms() at the start (0 .. 2**30 - 1)
}

TOP_FIELDS = {
    "name": (str, None),
    "description": (str, ""),
    "seed": (int, 1),
    "duration_s": ((int, float), 600),
    "step_ms": (int, 100),
    "report_s": ((int, float), 10),
    "check_ms": (int, 200),
    "firmware": (bool, True),
    "defaults": (dict, {}),
    "modules": (list, None),
    "bus": (dict, {}),
    "terminal": (dict, {}),
    "inverter": (dict, {}),
    "mqtt": (dict, {}),
    "device": (dict, {}),
    "config": (dict, {}),
    "timeline": (list, []),
    "expect": (list, []),
}

ACTIONS = {
    # do -> required keys (besides "at", "do")
    "set": (),                 # module + field + value | bus field | inverter field | terminal field
    "unplug": ("module",),
    "plug": ("module",),
    "address": ("module", "value"),
    "alarm": ("module", "alarms"),
    "clear_alarm": ("module",),
    "blow_fuse": ("module",),
    "replace_fuse": ("module",),
    "loosen_lug": ("module", "mohm"),
    "breaker": ("module", "value"),
    "weld": ("output",),
    "stick": ("output",),
    "free": ("output",),
    "output": ("output", "value"),
    "mqtt_broker": ("value",),
    "heartbeat": ("value",),
    "inverter": (),
    "reset_faults": (),
    "disconnect": ("value",),
    "reboot": (),              # value "hard" (default) | "soft": the firmware restarts
    "fs_cut": (),              # op (1), keep (0): power lost in the op-th file operation from now
    "fs_fail": ("value",),     # the next `value` file writes fail (EIO)
    "fs_corrupt": (),          # path ("latches.bin"), byte (0): flip one byte's bits
    "freeze": ("module",),
    "skew_voltage": ("module", "mv"),
}

STATE_KEYS = ("bank_state", "module", "state", "reason", "output", "value", "diagnosis", "present",
              "event", "a", "b", "sim", "path", "min", "max", "eq", "ne",
              "can", "byte", "u16", "s16", "bit")


class ScenarioError(Exception):
    def __init__(self, path, msg):
        super().__init__("%s: %s" % (path, msg))
        self.path = path


def _fill(path, given, fields):
    if type(given) is not dict:
        raise ScenarioError(path, "expected an object")
    for k in given:
        if k not in fields and not k.startswith("_"):
            raise ScenarioError("%s.%s" % (path, k) if path else k,
                                "unknown field (known: %s)" % ", ".join(sorted(fields)))
    out = {}
    for k, (typ, default) in fields.items():
        if k in given and given[k] is not None:
            v = given[k]
            ok = isinstance(v, typ) and not (typ is not bool and isinstance(v, bool)
                                             and (typ is int or typ == (int, float)))
            if not ok:
                raise ScenarioError("%s.%s" % (path, k) if path else k, "wrong type %r" % (v,))
            out[k] = v
        else:
            out[k] = default
    return out


def _num(path, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScenarioError(path, "expected a number, found %r" % (v,))
    return v


def validate(raw):
    """Scenario dict (parsed JSON) -> normalised scenario; raises ScenarioError."""
    s = _fill("", raw, TOP_FIELDS)
    if not s["modules"]:
        raise ScenarioError("modules", "a list of 1 to 16 modules is required")
    if len(s["modules"]) > 16:
        raise ScenarioError("modules", "at most 16 modules")
    _num("duration_s", s["duration_s"])
    if s["duration_s"] <= 0:
        raise ScenarioError("duration_s", "must be > 0")
    if not 1 <= s["step_ms"] <= 1000:
        raise ScenarioError("step_ms", "1 .. 1000 ms")
    defaults = _fill("defaults", s["defaults"], MODULE_FIELDS)
    given_defaults = s["defaults"]
    mods = []
    for i, m in enumerate(s["modules"]):
        if type(m) is not dict:
            raise ScenarioError("modules[%d]" % i, "expected an object")
        merged = dict(given_defaults)
        merged.update(m)
        f = _fill("modules[%d]" % i, merged, MODULE_FIELDS)
        if f["addr"] is None:
            f["addr"] = 2 + i
        if not 0 <= f["addr"] <= 255:
            raise ScenarioError("modules[%d].addr" % i, "0 .. 255")
        if f["chemistry"] not in ("lfp", "nmc"):
            raise ScenarioError("modules[%d].chemistry" % i, "lfp or nmc")
        if f["cells"] is None:
            f["cells"] = 15 if f["chemistry"] == "lfp" else 14
        if not 4 <= f["cells"] <= 24:
            raise ScenarioError("modules[%d].cells" % i, "4 .. 24")
        if not 0 <= f["soc_pct"] <= 100:
            raise ScenarioError("modules[%d].soc_pct" % i, "0 .. 100")
        if f["capacity_mah"] <= 0 or not 0 < f["soh_pct"] <= 150:
            raise ScenarioError("modules[%d].capacity_mah" % i, "capacity > 0, soh 0 .. 150 %")
        if f["r_int_mohm"] <= 0 or f["cable_mm2"] <= 0:
            raise ScenarioError("modules[%d].r_int_mohm" % i, "resistance and cross-section > 0")
        if f["serial"] is None:
            f["serial"] = "SIMBG%03d%08d" % (f["addr"], i)
        mods.append(f)
    del defaults
    s["modules"] = mods
    s["bus"] = _fill("bus", s["bus"], BUS_FIELDS)
    s["terminal"] = _fill("terminal", s["terminal"], TERMINAL_FIELDS)
    if s["terminal"]["link_sensor"] not in ("auto", "link", "bus", "none"):
        raise ScenarioError("terminal.link_sensor", "auto, link, bus or none")
    s["inverter"] = _fill("inverter", s["inverter"], INVERTER_FIELDS)
    s["inverter"]["profile"] = _profile("inverter.profile", s["inverter"]["profile"])
    if s["inverter"]["interp"] not in ("step", "linear"):
        raise ScenarioError("inverter.interp", "step or linear")
    s["mqtt"] = _fill("mqtt", s["mqtt"], MQTT_FIELDS)
    s["device"] = _fill("device", s["device"], DEVICE_FIELDS)
    if not 0 <= s["device"]["tick_start_ms"] <= 0x3FFFFFFF:
        raise ScenarioError("device.tick_start_ms", "0 .. 1073741823 (2**30 - 1), found %d"
                            % s["device"]["tick_start_ms"])
    n = len(mods)
    for i, ev in enumerate(s["timeline"]):
        p = "timeline[%d]" % i
        if type(ev) is not dict or "at" not in ev or "do" not in ev:
            raise ScenarioError(p, "expected {\"at\": seconds, \"do\": action, ...}")
        _num(p + ".at", ev["at"])
        if ev["do"] not in ACTIONS:
            raise ScenarioError(p + ".do", "unknown action %r (known: %s)"
                                % (ev["do"], ", ".join(sorted(ACTIONS))))
        for k in ACTIONS[ev["do"]]:
            if k not in ev:
                raise ScenarioError(p, "action %s needs %r" % (ev["do"], k))
        if "module" in ev and not (type(ev["module"]) is int and 0 <= ev["module"] < n):
            raise ScenarioError(p + ".module", "a module index 0 .. %d" % (n - 1))
        if ev["do"] == "set":
            keys = [k for k in ("field", "bus", "inverter", "terminal") if k in ev]
            if len(keys) != 1 or "value" not in ev:
                raise ScenarioError(p, "set needs \"value\" and one of field (with module), bus, "
                                       "inverter, terminal")
            if "field" in ev:
                if "module" not in ev:
                    raise ScenarioError(p, "set field needs a module index")
                if ev["field"] not in MODULE_FIELDS:
                    raise ScenarioError(p + ".field", "unknown module field %r" % ev["field"])
        _device_action(p, ev)
        if ev["do"] == "inverter" and "profile" in ev:
            ev["profile"] = _profile(p + ".profile", ev["profile"])
    s["timeline"] = sorted(s["timeline"], key=lambda e: e["at"])
    for i, ex in enumerate(s["expect"]):
        p = "expect[%d]" % i
        if type(ex) is not dict:
            raise ScenarioError(p, "expected an object")
        when = [k for k in ("at", "by", "during") if k in ex]
        if len(when) != 1:
            raise ScenarioError(p, "exactly one of at / by / during")
        if "during" in ex:
            d = ex["during"]
            if type(d) is not list or len(d) != 2 or _num(p, d[0]) > _num(p, d[1]):
                raise ScenarioError(p + ".during", "[from_s, to_s]")
        else:
            _num(p + "." + when[0], ex[when[0]])
        what = [k for k in ("bank_state", "module", "output", "diagnosis", "event", "sim", "path", "can")
                if k in ex]
        if not what:
            raise ScenarioError(p, "nothing to check (bank_state, module, output, diagnosis, event, "
                                   "sim or path)")
        for k in ex:
            if k not in STATE_KEYS and k not in ("at", "by", "during", "note", "field"):
                raise ScenarioError(p + "." + k, "unknown key")
        if "module" in ex and not (type(ex["module"]) is int and 0 <= ex["module"] < n):
            raise ScenarioError(p + ".module", "a module index 0 .. %d" % (n - 1))
        if "can" in ex:
            _can_cond(p, ex)
        if "sim" in ex and ex["sim"] not in SIM_FIELDS:
            raise ScenarioError(p + ".sim", "unknown physics field %r (known: %s)"
                                % (ex["sim"], ", ".join(sorted(SIM_FIELDS))))
    return s


def _device_action(p, ev):
    """Field checks of the reboot / filesystem actions (docs/scenarios.md)."""
    do = ev["do"]
    if do == "reboot" and ev.get("value", "hard") not in ("hard", "soft"):
        raise ScenarioError(p + ".value", "reboot: \"hard\" or \"soft\"")
    if do == "fs_cut":
        for k, lo in (("op", 1), ("keep", 0)):
            v = ev.get(k, lo)
            if type(v) is not int or v < lo:
                raise ScenarioError(p + "." + k, "an integer >= %d" % lo)
    if do == "fs_fail" and not (type(ev["value"]) is int and ev["value"] >= 0):
        raise ScenarioError(p + ".value", "a number of writes >= 0")
    if do == "fs_corrupt":
        if type(ev.get("path", "")) is not str or not ev.get("path", "x"):
            raise ScenarioError(p + ".path", "a file name")
        if not (type(ev.get("byte", 0)) is int and ev.get("byte", 0) >= 0):
            raise ScenarioError(p + ".byte", "a byte offset >= 0")


def _can_cond(p, ex):
    """`"can": "0x359"` (or an int) with at most one of "byte": k, "u16"/"s16": k, "bit": [k, b]."""
    cid = ex["can"]
    try:
        cid = int(cid, 16) if type(cid) is str else cid
    except ValueError:
        cid = None
    if type(cid) is not int or not 0 <= cid <= 0x7FF:
        raise ScenarioError(p + ".can", "an 11-bit CAN id such as \"0x359\"")
    sel = [k for k in ("byte", "u16", "s16", "bit") if k in ex]
    if len(sel) > 1:
        raise ScenarioError(p + ".can", "at most one of byte / u16 / s16 / bit")
    for k in sel:
        v = ex[k]
        if k == "bit":
            if type(v) is not list or len(v) != 2 or [type(x) for x in v] != [int, int] \
                    or not 0 <= v[0] <= 7 or not 0 <= v[1] <= 7:
                raise ScenarioError(p + ".bit", "[byte 0..7, bit 0..7]")
        elif type(v) is not int or not 0 <= v <= (7 if k == "byte" else 6):
            raise ScenarioError(p + "." + k, "a byte offset 0..%d" % (7 if k == "byte" else 6))


# physics fields an expectation can read: name -> True when per module
SIM_FIELDS = {
    "soc_pct": True, "current_a": True, "voltage_v": True, "ocv_v": True, "temp_c": True,
    "term_c": True, "fuse_blown": True, "bms_open": True, "conducting": True,
    "contactor_closed": True, "charge_ah": True, "r_branch_mohm": True, "bms_alarms": True,
    "bms_protections": True, "chg_limit_a": True, "dsg_limit_a": True, "bms_trips": True,
    "link_v": False, "bus_v": False, "bank_a": False, "inverter_a": False, "soc_spread_pct": False,
    "max_abs_current_a": False,
}


def _profile(path, prof):
    if type(prof) is not list or not prof:
        raise ScenarioError(path, "a list of [t_s, amps] points")
    last = None
    out = []
    for i, pt in enumerate(prof):
        if type(pt) is not list or len(pt) != 2:
            raise ScenarioError("%s[%d]" % (path, i), "[t_s, amps]")
        t = _num("%s[%d]" % (path, i), pt[0])
        a = _num("%s[%d]" % (path, i), pt[1])
        if last is not None and t < last:
            raise ScenarioError("%s[%d]" % (path, i), "times must not decrease")
        last = t
        out.append((float(t), float(a)))
    return out


@micropython.native
def profile_at(prof, t, interp="step", repeat_s=0):
    """Inverter current (A, + = charging the bank) at time t from a profile."""
    if repeat_s and repeat_s > 0:
        t = t % repeat_s
    if t < prof[0][0]:
        return 0.0                   # before the first point: the inverter is idle
    prev = prof[0]
    for pt in prof[1:]:
        if t < pt[0]:
            if interp == "linear" and pt[0] > prev[0]:
                return prev[1] + (pt[1] - prev[1]) * (t - prev[0]) / (pt[0] - prev[0])
            return prev[1]
        prev = pt
    return prev[1]


def load(path):
    with open(path) as f:
        raw = json.load(f)
    s = validate(raw)
    if s["name"] is None:
        s["name"] = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return s
