# The host side of `bankgate config check` (issue 16), on the device's own validator
# (bankgate.config): every error of a file at once, and warnings for legal but unusual
# set-ups.  Not imported by the firmware (the device reports the first error and keeps
# its heap for the bank).
from bankgate import config as C


def warnings(cfg, board=None):
    """Legal but unusual set-ups: ["path: text", ...] (`config check` prints them
    as WARNING lines and still exits 0)."""
    out = []
    g = cfg["gating"]
    c = cfg["contactors"]
    if not c["feedback"]:
        out.append("contactors.feedback: none wired: a welded contactor is found only by current "
                   "through an open branch (contactors.weld_ma), never at rest")
    if g["topology"] == "main" and c["weld_link_ms"] == 0:
        out.append("contactors.weld_link_ms: 0 switches the link-held weld check off (meant for an "
                   "inverter that holds its input up by itself)")
    if g["topology"] == "main" and c["link_isolated_input"]:
        out.append("contactors.link_isolated_input: used by the branch topology only")
    elif board is not None and board.get("link_adc") and c["link_isolated_input"]:
        out.append("contactors.link_isolated_input: board %s measures the DC link; this input is "
                   "not used" % board.get("name", "?"))
    if g["critical_alarms"] & ~C.ALARMS_REQUIRED & 0x0300 != 0x0300:
        out.append("gating.critical_alarms: over-current warnings do not block a join (the module's "
                   "own limit still does)")
    if g["loop_resistance_mohm"] < 5:
        out.append("gating.loop_resistance_mohm: below 5 mOhm joins need |dV| under %d mV"
                   % (g["max_inrush_ma"] * g["loop_resistance_mohm"] // 1000))
    return out


def validate_all(given, strict=False, board=None):
    """Every error of a configuration at once (the host's `config check`):
    returns (cfg, errors); cfg is None unless errors is empty.  A rule between
    settings is left out when it names a setting already refused on its own (it
    would describe the default put in its place)."""
    sink = []
    bad = []
    C._sink = sink
    C._bad = bad
    try:
        cfg = C._merge("", C.SCHEMA, given)
        if strict:
            C._require(given)
        k = len(sink)
        C._cross(cfg)
        if board is not None:
            C.check_board(cfg, board)
        errs = sink[:k]
        for e in sink[k:]:
            text = str(e)
            if not [b for b in bad if b == e.path or b in text]:
                errs.append(e)
    finally:
        C._sink = None
        C._bad = []
    return (None if errs else cfg), errs
