"""Words for people: the text views of `bankgate decode`, `status`, `simulate` and the demo.

The device speaks integers (mV, mA, permille, decidegrees) and numeric codes; these
helpers turn them into units a person reads (V, A, %, degC) and into names.  Only
the text views use them: the JSON output (--json) stays exactly the device's.
"""
import re
import sys


def natural_key(name):
    """Sort key so that k2 < k10 (k1, k2, .., k10, main, precharge)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(name))]


def natural_sorted(names):
    return sorted(names, key=natural_key)


def volts(mv, digits=2):
    return "?" if mv is None else "%.*f V" % (digits, mv / 1000.0)


def amps(ma, digits=1):
    return "?" if ma is None else "%.*f A" % (digits, ma / 1000.0)


def percent(pm):
    return "?" if pm is None else "%.1f %%" % (pm / 10.0)


def degc(dc):
    return "?" if dc is None else "%.1f degC" % (dc / 10.0)


def ah(mah):
    return "?" if mah is None else "%.2f Ah" % (mah / 1000.0)


# the unit of an admission check's value (lib/bankgate/admission CHECK_NAMES): how to show
# "pending dv: 1.20 V (limit 0.50 V)"
_CHECK_UNITS = {
    "dv": volts, "dv_link": volts, "link": volts, "cell_dv": lambda v: "%d mV" % v,
    "soc": percent, "soc_gap": percent, "temp": degc, "temp_hi": degc, "temp_lo": degc,
    "current": amps, "spread": volts, "voltage": volts, "soc_spread": percent,
}


def check_value(reason, value):
    """A pending reason's value in its unit, e.g. ("dv", 1200) -> "1.20 V"."""
    if value is None:
        return ""
    f = _CHECK_UNITS.get(reason)
    if f is None:
        for key, fn in _CHECK_UNITS.items():
            if reason.startswith(key):
                f = fn
                break
    return f(value) if f is not None else str(value)


def use_text(args):
    """Text unless --json; --text forces text (tests); default: text on a terminal only, so
    a script that pipes the output keeps getting JSON exactly as before."""
    if getattr(args, "json", False):
        return False
    if getattr(args, "text", False):
        return True
    return sys.stdout.isatty()


def add_view_arguments(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON (the default when stdout is not a terminal)")
    g.add_argument("--text", action="store_true", help="print the text view (the default on a terminal)")


# ------------------------------------------------------------------ decode
def _module_lines(i, m):
    out = []
    if "cells_mv" in m:
        cells = m["cells_mv"]
        head = "  pack %d: %s, %s" % (i + 1, volts(m.get("voltage_mv")), amps(m.get("current_ma"), 2))
        if m.get("soc_pm") is not None:
            head += ", SOC %s" % percent(m["soc_pm"])
        if m.get("soh_pm") is not None:
            head += ", SOH %s" % percent(m["soh_pm"])
        out.append(head)
        if cells:
            out.append("    %d cells: min %s, max %s (spread %d mV)" % (
                len(cells), volts(min(cells), 3), volts(max(cells), 3), max(cells) - min(cells)))
        if m.get("temps_dc"):
            out.append("    temperatures: %s" % ", ".join(degc(t) for t in m["temps_dc"]))
        out.append("    remaining %s of %s, %s cycles" % (ah(m.get("remaining_mah")), ah(m.get("total_mah")),
                                                       m.get("cycles")))
    else:
        names = (m.get("alarm_names") or []) + ["protection: " + n for n in m.get("protection_names") or []]
        out.append("  pack %d: %s" % (i + 1, ", ".join(names) if names else "no alarm, no protection"))
    return out


_DECODE_FIELDS = [
    ("chg_v_mv", "charge voltage", volts), ("dsg_v_mv", "discharge voltage", volts),
    ("chg_limit_ma", "charge current limit", amps), ("dsg_limit_ma", "discharge current limit", amps),
    ("soc_pm", "SOC", percent), ("soh_pm", "SOH", percent), ("voltage_mv", "voltage", volts),
    ("current_ma", "current", amps), ("temp_dc", "temperature", degc),
    ("cell_hi_mv", "cell high", volts), ("cell_lo_mv", "cell low", volts), ("cell_uv_mv", "cell undervoltage", volts),
    ("mod_hi_mv", "module high", volts), ("mod_lo_mv", "module low", volts),
    ("mod_uv_mv", "module undervoltage", volts), ("params_chg_ma", "charge current", amps),
    ("params_dsg_ma", "discharge current", amps),
    ("model", "model", str), ("manufacturer", "manufacturer", str), ("serial", "serial", str),
    ("sw_version", "software", str), ("proto_version", "protocol version", lambda v: "0x%02X" % v),
    ("n_modules", "modules", str), ("mgmt_flags", "management flags", lambda v: "0x%02X" % v),
]


def decode_text(obj, label=None):
    """One decoded frame (cli_decode's JSON object) as lines of text."""
    pre = "%s: " % label if label else ""
    if not obj.get("ok"):
        return [pre + "REJECTED " + obj.get("error", "?")]
    if "can_id" in obj:
        out = [pre + "%s CAN %s, %d bytes" % (obj["family"], obj["can_id"], obj.get("dlc", 0))]
    else:
        out = [pre + "%s answer to %s from address %d" % (obj["family"], obj["command"], obj["adr"])]
        if "modules" in obj:
            n = len(obj["modules"])
            out[0] += ": %s, %d pack%s" % ("whole group" if obj.get("group") else "one pack", n,
                                          "" if n == 1 else "s")
    for i, m in enumerate(obj.get("modules") or []):
        out += _module_lines(i, m)
    for key, label_, fmt in _DECODE_FIELDS:
        if key in obj and obj[key] is not None:
            out.append("  %s: %s" % (label_, fmt(obj[key])))
    if "alarm_names" in obj and "modules" not in obj:
        names = obj["alarm_names"] + ["protection: " + n for n in obj.get("protection_names") or []]
        out.append("  alarms: %s" % (", ".join(names) if names else "none"))
    return out


# ------------------------------------------------------------------ device names
_NAMES = None


def device_names():
    """The firmware's own name tables (STATE_NAMES, MOD_STATE_NAMES, CHECK_NAMES), read from
    its source with ast (the admission code may be a module or a package), so the text views
    never keep a copy that could drift."""
    global _NAMES
    if _NAMES is not None:
        return _NAMES
    import ast
    import glob
    import os
    from . import REPO
    want = ("STATE_NAMES", "MOD_STATE_NAMES", "CHECK_NAMES")
    found = {}
    lib = os.path.join(REPO, "lib", "bankgate")
    paths = [os.path.join(lib, "admission.py")] + sorted(glob.glob(os.path.join(lib, "admission", "*.py")))
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            try:
                tree = ast.parse(f.read())
            except SyntaxError:
                continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name) and node.targets[0].id in want:
                try:
                    found[node.targets[0].id] = tuple(ast.literal_eval(node.value))
                except ValueError:
                    pass
    _NAMES = found
    return found


def _name(table, code):
    names = device_names().get(table) or ()
    return names[code] if isinstance(code, int) and 0 <= code < len(names) else str(code)


def event_text(e):
    """A runner event line ({"name", "addr", "a", "b"}) in words."""
    name, a, b, addr = e.get("name"), e.get("a"), e.get("b"), e.get("addr", -1)
    who = " module %s" % addr if isinstance(addr, int) and addr >= 0 else ""
    if name == "boot":
        return "firmware started"
    if name == "bank_state":
        return "bank %s (was %s)" % (_name("STATE_NAMES", a), _name("STATE_NAMES", b))
    if name == "module_state":
        r = _name("CHECK_NAMES", b)
        return "%s%s: %s%s" % (name.replace("_", " "), who, _name("MOD_STATE_NAMES", a),
                               "" if r == "ok" else " (%s)" % r)
    if name == "check_fail":
        c = _name("CHECK_NAMES", a)
        return "check failed%s: %s %s" % (who, c, check_value(c, b))
    if name == "check_clear":
        return "check passes again%s: %s" % (who, _name("CHECK_NAMES", a))
    if name == "contactor":
        return "contactor %s%s %s" % (a, who, "closed" if b else "opened")
    if name == "inverter":
        return "inverter heartbeat %s" % ("present" if a else "lost")
    if name == "lost":
        return "%s events lost (ring overrun)" % e.get("count")
    return "%s%s (a=%s, b=%s)" % (name, who, a, b)


def sim_line(d):
    """One `bankgate simulate` / runner JSON line as text (None: nothing worth a line)."""
    t = d.get("t")
    ts = "%8.1f s  " % t if isinstance(t, (int, float)) else ""
    typ = d.get("type")
    if typ == "start":
        return "scenario %s: %s modules, %s on %s, %s topology, %s s%s" % (
            d.get("scenario"), d.get("modules"), d.get("family"), d.get("bus"), d.get("topology"),
            d.get("duration_s"), "" if d.get("firmware", True) else " (firmware did not start)")
    if typ == "event":
        return ts + event_text(d)
    if typ == "state":
        sim = d.get("sim") or {}
        gw = d.get("gw") or {}
        outs = gw.get("outputs") or {}
        closed = [k for k in natural_sorted(outs) if outs[k]]
        head = ts + "bank %s: bus %s, %s, inverter %s; closed: %s" % (
            d.get("bank"), "?" if sim.get("bus_v") is None else "%.2f V" % sim["bus_v"],
            "?" if sim.get("bank_a") is None else "%.1f A" % sim["bank_a"],
            "?" if sim.get("inverter_a") is None else "%.1f A" % sim["inverter_a"],
            ", ".join(closed) or "none")
        lines = [head]
        for m in gw.get("modules") or []:
            lines.append("           " + _module_summary(m))
        return "\n".join(lines)
    if typ == "expect":
        return ts + "%s expectation %s: %s" % ("PASS" if d.get("ok") else "FAIL", d.get("index"), d.get("detail"))
    if typ == "result":
        return "result: %s, %s of %s expectations passed%s; %s simulated s in %s s (%sx)" % (
            "PASS" if d.get("ok") else "FAIL", d.get("passed"), d.get("expectations"),
            ", %s not reached" % d["not_reached"] if d.get("not_reached") else "",
            d.get("sim_s"), d.get("wall_s"), d.get("speed"))
    if typ == "error":
        return ts + "ERROR " + str(d.get("error"))
    if typ == "can":
        return ts + "CAN to inverter %s %s" % (d.get("id"), d.get("data"))
    if typ == "mqtt":
        return ts + "MQTT %s" % (d.get("topic") or "")
    rest = ", ".join("%s=%s" % (k, v) for k, v in d.items() if k not in ("t", "type"))
    return ts + "%s %s" % (typ, rest)


def _module_summary(m):
    state = m.get("state")
    text = "module %s: %s" % (m.get("addr"), state)
    r = m.get("reason")
    if state == "absent" or (m.get("online") is False and not m.get("mv")):
        return text + " (no answer)"
    if r and r != "ok":
        val = m.get("dv_mv") if r == "dv" else m.get("value")
        text += " (%s %s)" % (r, check_value(r, val)) if val is not None else " (%s)" % r
    parts = [volts(m.get("mv")), amps(m.get("ma"))]
    if m.get("soc_pm") is not None:
        parts.append("SOC " + percent(m["soc_pm"]))
    if m.get("temp_dc") is not None:
        parts.append(degc(m["temp_dc"]))
    return text + ": " + ", ".join(parts)
