# Poll plan: what the RS485 module bus can carry, computed from the configuration
# (issue 15 / 16 part 3).  Used by the poller (how much slow data fits in one sweep)
# and by the config validator (refuse a max_age_ms the bus cannot meet).
#
# The poll cycle (one "sweep") reads every module's FAST commands (the data that
# gating.max_age_ms governs: analog + alarm), then spends the spare capacity on
# SLOW transactions, one per slot visit at most (limits 0x92, identity 0x4F/0x51/
# 0x93/0x47 ...), within a per-sweep time budget.  So the alarm data of every module is
# re-read once per sweep whatever else is polled, and the worst-case age of alarm
# data is bounded by
#
#   worst_age = fast_cycle + slow_budget + one miss + control.period_ms
#
#   fast_cycle  = n x sum over FAST commands of tx(cmd)
#   tx(cmd)     = request chars x char time + TURNAROUND + reply chars x char time
#                 + LOOP_SLACK + control.poll_gap_ms        (8N1: 10 bits per char)
#   one miss    = a module that does not answer holds the bus for poll_timeout_ms
#                 instead of its reply (one per sweep: a lost module is re-probed
#                 only every poller.REPROBE_MS, longer than any accepted sweep)
#   slow_budget = what is left of AGE_SHARE/AGE_DEN of max_age_ms (at least the
#                 longest slow transaction, else the configuration is refused)
#
# Frame length = 18 ASCII chars of header/checksum + 2 per INFO byte (frame.py).
# Reply INFO sizes per command are the family layouts (docs/protocols.md) for the
# configured cell count and the largest temperature count (model.MAX_TEMPS).
# TURNAROUND is the BMS reply latency we budget (Pylontech/PACE packs answer within a
# few ms; a slower reply still completes inside poll_timeout_ms and costs at most the
# "one miss" above).  All integer arithmetic, host and device alike.
from micropython import const

TURNAROUND_US = const(10000)
_LOOP_SLACK_US = const(2000)       # ticks_ms quantisation + one loop iteration
_FRAME_OVERHEAD = const(18)        # SOI VER ADR CID1 CID2 LENGTH(4) CHKSUM(4) EOI
_AGE_SHARE = const(9)              # worst_age must stay within 9/10 of max_age_ms
_AGE_DEN = const(10)
_MAX_TEMPS = const(8)
CAN_FRAME_MS = const(1000)        # Pylontech CAN: the frame set once a second

# family -> (fast commands, slow limit command or -1, identity commands)
_FAST = {"pylontech": (0x42, 0x44), "pace": (0x42, 0x44)}
_SLOW_LIMITS = {"pylontech": 0x92, "pace": -1}
_IDENT = {"pylontech": (0x4F, 0x51, 0x93, 0x47), "pace": (0x4F, 0xC1, 0xC2)}


def char_us(baud):
    return 10000000 // baud


def req_info(family, cmd):
    """INFO bytes of the request."""
    if cmd == 0x4F or cmd == 0x51 or cmd == 0xC1 or cmd == 0xC2:
        return 0
    return 1


def reply_info(family, cmd, cells, temps=_MAX_TEMPS):
    """INFO bytes of the reply to `cmd` for a module of `cells` cells."""
    pace = family == "pace"
    if cmd == 0x42:      # flag, addr, n, cells, n, temps, I V rem udi tot cyc, u24 x2 / PACE extras
        return (21 if pace else 23) + 2 * cells + 2 * temps
    if cmd == 0x44:      # flag, addr, n, cell flags, n, temp flags, 3 flags, status bytes
        return (17 if pace else 13) + cells + temps
    if cmd == 0x92:
        return 10
    if cmd == 0x47:
        return 26
    if cmd == 0x4F:
        return 0
    if cmd == 0x51:
        return 32
    if cmd == 0x93:
        return 17
    if cmd == 0xC1:
        return 20
    if cmd == 0xC2:
        return 40
    return 64


def tx_us(family, cmd, baud, cells, gap_ms):
    """Bus time of one answered transaction, microseconds."""
    ch = char_us(baud)
    n = 2 * _FRAME_OVERHEAD + 2 * (req_info(family, cmd) + reply_info(family, cmd, cells))
    return n * ch + TURNAROUND_US + _LOOP_SLACK_US + gap_ms * 1000


def group_tx_us(family, cmd, baud, cells, gap_ms, packs):
    """Bus time of one answered whole-group query (0x42/0x44 INFO FF) of `packs` packs,
    microseconds (as the plan's group figures; allocation-free)."""
    ch = 2 * _FRAME_OVERHEAD + 2 * (1 + 2 + packs * (reply_info(family, cmd, cells) - 2))
    return ch * char_us(baud) + TURNAROUND_US + _LOOP_SLACK_US + gap_ms * 1000


def fast_cmds(family):
    return _FAST.get(family, ())


def slow_cmds(family):
    """Slow commands: the limits command (if the family has one) then identity."""
    s = _SLOW_LIMITS.get(family, -1)
    out = [] if s < 0 else [s]
    out.extend(_IDENT.get(family, ()))
    return tuple(out)


def plan(cfg):
    """The poll plan of a validated configuration (dict; allocates: config time only).
    None for a CAN module bus (modules send unasked: see can_plan)."""
    b = cfg["bank"]
    if b["bus"] != "rs485":
        return None
    fam = b["family"]
    c = cfg["control"]
    baud = b["baud"]
    cells = b["cells"]
    gap = c["poll_gap_ms"]
    n = b["expected_modules"]
    max_age = cfg["gating"]["max_age_ms"]
    fast_one = 0
    longest_reply = 0
    for cmd in fast_cmds(fam):
        fast_one += tx_us(fam, cmd, baud, cells, gap)
    slow_max = 0
    for cmd in slow_cmds(fam):
        t = tx_us(fam, cmd, baud, cells, gap)
        if t > slow_max:
            slow_max = t
    for cmd in fast_cmds(fam) + slow_cmds(fam):
        r = (_FRAME_OVERHEAD + 2 * reply_info(fam, cmd, cells)) * char_us(baud) + TURNAROUND_US
        if r > longest_reply:
            longest_reply = r
    fast_us = n * fast_one
    # the same fast data by the group query (0x42/0x44 INFO FF to the master), where the
    # family has one: reported for comparison, not used (docs/protocols.md "Group query":
    # a lost answer costs its whole reply time and ages every module at once, a silent
    # slave shifts every later pack onto the wrong slot)
    group_us = 0
    group_miss_us = 0
    if fam == "pylontech":
        for cmd in fast_cmds(fam):
            ch = 2 * _FRAME_OVERHEAD + 2 * (1 + 2 + n * (reply_info(fam, cmd, cells) - 2))
            group_us += ch * char_us(baud) + TURNAROUND_US + _LOOP_SLACK_US + gap * 1000
            # a lost group answer holds the bus for its whole-frame timeout (>= its reply)
            r = (_FRAME_OVERHEAD + 2 * (1 + 2 + n * (reply_info(fam, cmd, cells) - 2))) * char_us(baud) \
                + TURNAROUND_US + _LOOP_SLACK_US + gap * 1000
            if r > group_miss_us:
                group_miss_us = r
    miss_us = c["poll_timeout_ms"] * 1000 + _LOOP_SLACK_US + gap * 1000
    # the same bound by the group query (comparison only, docs/protocols.md "Group query")
    group_age_us = group_us + group_miss_us + c["period_ms"] * 1000 if group_us else 0
    target_us = max_age * (1000 * _AGE_SHARE // _AGE_DEN) - c["period_ms"] * 1000   # < 2**30
    budget_us = target_us - fast_us - miss_us
    if budget_us > n * slow_max:
        budget_us = n * slow_max            # at most one slow transaction per slot visit
    ok = budget_us >= slow_max
    slow_us = budget_us if ok else slow_max  # the poller always does at least one
    sweep_us = fast_us + slow_us
    worst_age_us = sweep_us + miss_us + c["period_ms"] * 1000
    if group_age_us:
        group_age_us += slow_max
    # slow turns: a slot gets a slow transaction every `turn` sweeps
    per_sweep = slow_us // slow_max if slow_max else 0
    if per_sweep < 1:
        per_sweep = 1
    turn = (n + per_sweep - 1) // per_sweep
    return {
        "family": fam, "baud": baud, "modules": n, "cells": cells,
        "fast_tx_us": fast_one, "fast_cycle_ms": fast_us // 1000, "group_cycle_ms": group_us // 1000,
        "group_worst_age_ms": (group_age_us + 999) // 1000,
        "slow_tx_max_ms": slow_max // 1000, "slow_budget_ms": slow_us // 1000,
        "slow_per_sweep": per_sweep, "slow_turn_sweeps": turn,
        "sweep_ms": sweep_us // 1000, "miss_ms": miss_us // 1000,
        "worst_age_ms": (worst_age_us + 999) // 1000, "max_age_ms": max_age,
        "bound_ms": max_age * _AGE_SHARE // _AGE_DEN,
        "limits_worst_ms": cfg["gating"]["limits_max_age_ms"] // 2 + turn * (sweep_us // 1000),
        "longest_reply_ms": (longest_reply + 999) // 1000,
        "ok": ok,
    }


def _meets(cfg, max_age):
    g = dict(cfg["gating"])
    g["max_age_ms"] = max_age
    c2 = dict(cfg)
    c2["gating"] = g
    p = plan(c2)
    if _SLOW_LIMITS.get(cfg["bank"]["family"], -1) < 0:
        return p["ok"]                      # no limits command to refresh
    return p["ok"] and p["limits_worst_ms"] <= g["limits_max_age_ms"] * 3 // 4


def min_max_age_ms(cfg):
    """Smallest gating.max_age_ms (10 ms steps) whose plan meets both the alarm-data
    bound and the limits refresh (ms), or 0 if none up to 600000 does."""
    p = plan(cfg)
    c = cfg["control"]
    need_us = p["fast_cycle_ms"] * 1000 + p["slow_tx_max_ms"] * 1000 + p["miss_ms"] * 1000 \
        + c["period_ms"] * 1000
    lo = ((need_us * _AGE_DEN // _AGE_SHARE + 999) // 1000 + 9) // 10 * 10
    if _meets(cfg, lo):
        return lo
    hi = lo
    while not _meets(cfg, hi):
        hi *= 2
        if hi > 600000:
            return 0
    while hi - lo > 10:
        mid = (lo + hi) // 20 * 10
        if _meets(cfg, mid):
            hi = mid
        else:
            lo = mid
    return hi


def _fit(cfg):
    """Most modules this bus carries within the configured max_age_ms."""
    b = cfg["bank"]
    for k in range(b["expected_modules"], 0, -1):
        b2 = dict(b)
        b2["expected_modules"] = k
        c2 = dict(cfg)
        c2["bank"] = b2
        if _meets(c2, cfg["gating"]["max_age_ms"]):
            return k
    return 0


def check(cfg):
    """(field, expected, value) of the first timing error of a configuration, or None.
    The RS485 module bus must re-read every module's alarm data well inside
    gating.max_age_ms; a reply must fit inside control.poll_timeout_ms; the limits must
    be refreshed inside 3/4 of gating.limits_max_age_ms."""
    p = plan(cfg)
    b = cfg["bank"]
    c = cfg["control"]
    g = cfg["gating"]
    if p is None:
        # CAN module bus: modules send unasked, once per CAN_FRAME_MS; one lost frame set
        # must not drop a module
        need = 2 * CAN_FRAME_MS + c["period_ms"]
        if g["max_age_ms"] < need:
            return ("gating.max_age_ms", "at least %d on a CAN module bus: modules send their "
                    "frame set once a second and one lost frame must not drop a module" % need,
                    g["max_age_ms"])
        return None
    if p["longest_reply_ms"] > c["poll_timeout_ms"]:
        return ("control.poll_timeout_ms",
                "at least %d: the longest reply of a %d-cell %s module takes %d ms at %d baud"
                % (p["longest_reply_ms"], b["cells"], b["family"], p["longest_reply_ms"], b["baud"]),
                c["poll_timeout_ms"])
    if _meets(cfg, g["max_age_ms"]):
        return None
    need = min_max_age_ms(cfg)
    if need:
        hint = "raise it by %d ms to %d" % (need - g["max_age_ms"], need)
    else:
        hint = "no max_age_ms up to 600000 is enough"
    if b["baud"] < 115200:
        hint += ", or set bank.baud 115200"
    hint += ", or put at most %d modules on this bus" % _fit(cfg)
    if c["poll_gap_ms"]:
        hint += ", or lower control.poll_gap_ms (%d)" % c["poll_gap_ms"]
    if p["ok"]:
        hint += ", or raise gating.limits_max_age_ms (%d: every module's limits are re-read " \
            "once per %d sweeps)" % (g["limits_max_age_ms"], p["slow_turn_sweeps"])
    return ("gating.max_age_ms",
            "at least %d: %d modules at %d baud need a %d ms poll cycle (worst-case age "
            "of alarm data %d ms, which must stay within 9/10 of max_age_ms, and room for "
            "the limits and identity reads); %s"
            % (need, b["expected_modules"], b["baud"], p["sweep_ms"], p["worst_age_ms"], hint),
            g["max_age_ms"])
