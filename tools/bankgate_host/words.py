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
