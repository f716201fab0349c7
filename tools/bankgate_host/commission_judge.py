"""The commissioning order and its judging (docs/commissioning.md).

The 15 steps are the seed article's commissioning sequence (/work/shared/seeds, "What
commissioning sequence should the installer follow?").  For each step the assistant says
what the gateway verified itself (`Check`s with their numbers, from a `commission_run.Run`)
and what only the installer can confirm by hand (`manual`).  `judge_test()` judges the
charge/discharge test (steps 13-14): current sharing, SOC drift and temperatures against
`thresholds()`, which take the gateway's own diagnosis limits from its configuration (the
same numbers that raise `current_high`, `soc_drift_cycle` and `running_warm`, docs/diagnoses.md)
so the assistant and the firmware never disagree about what "normal" is.
"""

import json

# Defaults of the configuration keys used here (bankgate/config.py SCHEMA; used when a
# recording carries no configuration, e.g. an MQTT log).
CONFIG_DEFAULTS = {
    ("gating", "max_dv_mv"): 500,
    ("gating", "soc_spread_pm"): 150,
    ("diagnosis", "share_raise_pm"): 250,
    ("diagnosis", "drift_raise_pm"): 20,
    ("diagnosis", "temp_raise_dc"): 50,
}
TEMP_MAX_DC = 450          # 45 degC: the end of the full-current band of LFP BMS derating
TEST_MIN_MA_PER_MODULE = 2000   # a sample is judged only with at least 2 A per admitted module
LIGHT_MAX_MA_PER_MODULE = 10000  # "light": at most 10 A per module (0.1 C of a 100 Ah module)
PHASE_MIN_SAMPLES = 5      # a charge or discharge phase needs this many judged samples


def cfg_value(config, section, key):
    if config and isinstance(config.get(section), dict) and config[section].get(key) is not None:
        return config[section][key]
    return CONFIG_DEFAULTS[(section, key)]


def thresholds(config):
    """The limits the assistant judges with, and where each comes from."""
    return {
        "max_dv_mv": (cfg_value(config, "gating", "max_dv_mv"), "gating.max_dv_mv"),
        "soc_spread_pm": (cfg_value(config, "gating", "soc_spread_pm"), "gating.soc_spread_pm"),
        "share_pm": (cfg_value(config, "diagnosis", "share_raise_pm"), "diagnosis.share_raise_pm"),
        "drift_pm": (cfg_value(config, "diagnosis", "drift_raise_pm"), "diagnosis.drift_raise_pm"),
        "temp_above_mean_dc": (cfg_value(config, "diagnosis", "temp_raise_dc"), "diagnosis.temp_raise_dc"),
        "temp_max_dc": (TEMP_MAX_DC, "commissioning: 45 degC"),
    }


class Check:
    """One verified check: name, ok (True / False / None = not yet known), numbers, text."""
    __slots__ = ("step", "name", "ok", "text", "numbers")

    def __init__(self, step, name, ok, text, **numbers):
        self.step, self.name, self.ok, self.text, self.numbers = step, name, ok, text, numbers

    def verdict(self):
        return {True: "PASS", False: "FAIL", None: "WAIT"}[self.ok]

    def to_dict(self):
        return {"step": self.step, "name": self.name, "ok": self.ok, "verdict": self.verdict(),
                "text": self.text, "numbers": self.numbers}


# step number, title (the seed's words), what the installer confirms by hand (None: nothing)
STEPS = (
    (1, "Confirm each module model, voltage, chemistry, and allowed parallel count.",
     "The manufacturer's manual allows this model in parallel, in this count, with this chemistry."),
    (2, "Bring module SOC close together before final connection.", None),
    (3, "Turn off inverter, PV input, charger, and household loads tied to the system.",
     "Inverter, PV input, charger and the loads tied to the system are off."),
    (4, "Verify polarity on every cable before landing it.",
     "Polarity checked with a meter on every cable before landing it."),
    (5, "Install branch fuses or breakers on each positive module lead.",
     "Each positive module lead has its own fuse or breaker of the rated size."),
    (6, "Land equal-length module leads on positive and negative busbars.",
     "Module leads are of equal length and gauge, landed on the busbars."),
    (7, "Torque terminals to the manufacturer's value.",
     "Every terminal is torqued to the manufacturer's value."),
    (8, "Connect BMS communication cables in the approved order.",
     "BMS communication cables follow the approved order; the bus is terminated at both ends."),
    (9, "Set module addresses or DIP switches if required.", None),
    (10, "Power the BMS network and confirm every module is visible.", None),
    (11, "Close the main battery disconnect only after BMS status is normal.",
     "Main battery disconnect closed (only now, with every module admitted)."),
    (12, "Start the inverter and check battery recognition.", "Inverter started."),
    (13, "Run a light charge and discharge test.",
     "Light charge, then light discharge applied (about 0.1 C)."),
    (14, "Compare module current, SOC drift, and temperature.", None),
    (15, "Increase load only after current sharing looks normal.", None),
)
STEP_TITLES = {n: t for n, t, _ in STEPS}
MANUAL = {n: m for n, _, m in STEPS if m}


def sw_text(v):
    """BMS firmware version as the gateway stores it (major << 8 | minor) -> "1.4"."""
    if isinstance(v, int):
        return "%d.%d" % (v >> 8, v & 0xFF)
    return str(v) if v is not None else "?"


def visible(m):
    """A module the gateway hears now: analog data valid and not judged absent by admission."""
    return bool(m) and bool(m.get("online")) and m.get("state") != "absent"


def _expected(run):
    cfg = run.config or {}
    addrs = list(cfg.get("bank", {}).get("addresses") or [])
    if not addrs and run.samples:
        addrs = sorted(run.samples[-1]["modules"])
    return addrs


def _first_full(run, addrs):
    """The first sample in which every expected module reports analog data."""
    for s in run.samples:
        if all(s["modules"].get(a, {}).get("online") and s["modules"][a].get("mv") for a in addrs):
            return s
    return None


def joins(run):
    """Each module's join: [{"addr", "t", "order", "dv_mv"}] in join order.  t is the first
    sample showing it admitted, dv_mv the |dV| the gateway measured in the last sample before
    (while pending/dwell/closing); None when the module was admitted in the first sample."""
    out = []
    prev = {}
    for s in run.samples:
        for a, m in s["modules"].items():
            st = m.get("state")
            if st == "admitted" and prev.get(a, {}).get("state") != "admitted" \
                    and a not in [j["addr"] for j in out]:
                p = prev.get(a)
                dv = p.get("dv_mv") if p else None
                out.append({"addr": a, "t": s["t"], "order": len(out) + 1,
                            "dv_mv": abs(dv) if isinstance(dv, int) else None,
                            "before": p.get("state") if p else None})
            prev[a] = m
    return out


def gateway_checks(run):
    """The checks the gateway verified for steps 1, 2, 8-12, with their numbers."""
    th = thresholds(run.config)
    addrs = _expected(run)
    checks = []
    last = run.last()
    first = _first_full(run, addrs)
    # step 10: every configured module visible
    seen = [a for a in addrs if last and visible(last["modules"].get(a))]
    missing = [a for a in addrs if a not in seen]
    checks.append(Check(10, "modules visible", not missing,
                        "%d of %d configured modules answer%s" % (
                            len(seen), len(addrs), "; missing: %s" % missing if missing else ""),
                        expected=len(addrs), visible=len(seen), missing=missing))
    bus = (last["bank"].get("bus") if last else None) or {}
    verdict = bus.get("verdict") if isinstance(bus, dict) else None
    # step 9: addresses (the gateway's discovery verdict)
    disc = (last["bank"].get("discovery") if last else None) or {}
    bad_addr = []
    for a in addrs:
        r = (last["modules"].get(a) or {}).get("reason") if last else None
        if r == "address":
            bad_addr.append(a)
    if verdict == "duplicate_address" and not bad_addr:
        bad_addr.append("duplicate (bus verdict)")
    # a BMS answering at an address that is not configured: its address switch is wrong
    stray = sorted(a for a in (last["modules"] if last else {}) if a not in addrs)
    bad_addr.extend("%s (not configured)" % a for a in stray)
    found = disc.get("found") if isinstance(disc, dict) else None
    # a wrong address is a failure; modules that do not answer at all leave it open (step 10)
    checks.append(Check(9, "addresses", False if bad_addr else (None if missing else True),
                        "configured %s, answering %s%s%s" % (
                            addrs, seen, "; discovery: %s" % json.dumps(disc) if disc else "",
                            "; at a wrong address: %s" % bad_addr if bad_addr else ""),
                        configured=addrs, answering=seen, discovery=disc, problem=bad_addr))
    # step 8: bus health (termination, errors)
    bus_reason = [a for a in addrs if last and (last["modules"].get(a) or {}).get("reason") == "bus"]
    # wiring verdicts fail this step; duplicate_address is step 9's, module_offline step 10's
    bus_ok = not bus_reason and verdict not in ("termination_suspect", "wiring_noise")
    nums = ""
    if isinstance(bus, dict) and "requests" in bus:
        term = ("terminator check: idle %s mV with ours off, %s mV on" % (bus.get("idle_off_mv"), bus.get("idle_on_mv"))
                if (bus.get("idle_on_mv") or -1) >= 0 else "no terminator check on this board")
        nums = " (%s requests, %s timeouts, errors %s per mille; %s)" % (
            bus.get("requests"), bus.get("timeouts"), bus.get("error_pm"), term)
    checks.append(Check(8, "bus health", bus_ok,
                        "bus verdict %s%s%s" % (verdict if verdict is not None else "(not reported)", nums,
                                                "; modules held for the bus: %s" % bus_reason if bus_reason else ""),
                        verdict=verdict, held=bus_reason, requests=bus.get("requests") if isinstance(bus, dict) else None,
                        timeouts=bus.get("timeouts") if isinstance(bus, dict) else None,
                        error_pm=bus.get("error_pm") if isinstance(bus, dict) else None))
    # step 1: identity and compatibility
    ids = run.identities()
    bad_id = {}
    for a in addrs:
        r = (last["modules"].get(a) or {}).get("reason") if last else None    # the verdict now
        if r in ("identity", "model", "firmware_min", "firmware_same", "cells", "chemistry", "nominal",
                 "parallel"):
            bad_id[a] = r
    models = sorted({str(ids[a]["model"]) for a in addrs if ids.get(a, {}).get("model")})
    fws = sorted({sw_text(ids[a]["sw_version"]) for a in addrs
                  if isinstance(ids.get(a, {}).get("sw_version"), int) and ids[a]["sw_version"] >= 0})
    checks.append(Check(1, "identity and compatibility", not bad_id and bool(ids),
                        "models %s, BMS firmware %s%s" % (", ".join(models), ", ".join(fws),
                                                        "; refused: %s" % bad_id if bad_id else ""),
                        models=models, firmware=fws, refused=bad_id))
    # step 2: SOC spread before the first join
    if first is not None:
        socs = [first["modules"][a].get("soc_pm") or 0 for a in addrs]
        spread = max(socs) - min(socs)
        lim = th["soc_spread_pm"][0]
        checks.append(Check(2, "SOC spread", spread <= lim,
                            "SOC %s %%: spread %.1f %% (limit %.1f %%)" % (
                                "/".join("%.1f" % (x / 10) for x in socs), spread / 10, lim / 10),
                            spread_pm=spread, limit_pm=lim, soc_pm=socs))
    else:
        checks.append(Check(2, "SOC spread", None, "waiting for every module's SOC"))
    # step 11: joins, dV at each against the limit, bank closed
    lim = th["max_dv_mv"][0]
    js = joins(run)
    for j in js:
        dv = j["dv_mv"]
        checks.append(Check(11, "join %s" % j["addr"], dv is None or dv <= lim,
                            "module %s joined #%d at %.0f s, dV %s (limit %d mV)" % (
                                j["addr"], j["order"], j["t"], "%d mV" % dv if dv is not None else "n/a",
                                lim), addr=j["addr"], order=j["order"], t=j["t"], dv_mv=dv, limit_mv=lim))
    closed = [s for s in run.samples if s["bank"].get("state") == "closed"]
    not_joined = [a for a in addrs if a not in [j["addr"] for j in js]]
    if closed:
        txt = "bank closed at %.0f s, %s/%s admitted" % (closed[0]["t"], closed[0]["bank"].get("admitted"),
                                                         closed[0]["bank"].get("expected"))
    else:
        pend = []
        if last:
            for a in addrs:
                m = last["modules"].get(a) or {}
                if m.get("state") != "admitted" and m.get("reason") == "dv":
                    pend.append("%s %s (dV %s mV, limit %d mV)" % (a, m.get("state"), m.get("value"), lim))
                elif m.get("state") != "admitted":
                    pend.append("%s %s (%s %s)" % (a, m.get("state"), m.get("reason"), m.get("value")))
        txt = "bank not closed; waiting: %s" % "; ".join(pend)
    checks.append(Check(11, "bank closed", bool(closed) and not not_joined, txt,
                        closed_t=closed[0]["t"] if closed else None, not_joined=not_joined))
    # step 12: inverter recognised, limits sent
    inv_t = [e["t"] for e in run.events if e["name"] == "inverter" and e["a"] == 1]
    inv = (last["bank"].get("inverter") if last else None) or {}
    hb = bool(inv_t) or bool(isinstance(inv, dict) and inv.get("heartbeat"))
    checks.append(Check(12, "inverter heartbeat", hb,
                        "inverter recognised%s" % (" at %.0f s" % inv_t[0] if inv_t else "")
                        if hb else "no inverter heartbeat seen", t=inv_t[0] if inv_t else None))
    lim_d = (last["bank"].get("limits") if last else None) or {}
    chg, dsg = lim_d.get("chg_ma"), lim_d.get("dsg_ma")
    mod_chg = sum((last["modules"].get(a) or {}).get("chg_limit_ma") or 0 for a in addrs) if last else 0
    mod_dsg = sum((last["modules"].get(a) or {}).get("dsg_limit_ma") or 0 for a in addrs) if last else 0
    # sent, and never above what the admitted modules allow together
    lim_ok = bool(chg) and bool(dsg) and (not mod_chg or (chg <= mod_chg and dsg <= mod_dsg))
    if not lim_ok and not (last and last["bank"].get("state") == "closed"):
        lim_ok = None          # an open bank sends no limits: nothing to judge yet
    checks.append(Check(12, "combined limits", lim_ok,
                        "charge %.1f A, discharge %.1f A (modules' sum %.1f / %.1f A); charge to %.2f V, "
                        "discharge down to %.2f V" % (
                            (chg or 0) / 1000, (dsg or 0) / 1000, mod_chg / 1000, mod_dsg / 1000,
                            (lim_d.get("chg_v_mv") or 0) / 1000, (lim_d.get("dsg_v_mv") or 0) / 1000),
                        chg_ma=chg, dsg_ma=dsg, module_chg_ma=mod_chg, module_dsg_ma=mod_dsg,
                        chg_v_mv=lim_d.get("chg_v_mv"), dsg_v_mv=lim_d.get("dsg_v_mv")))
    return checks


def _phases(run, addrs):
    """Contiguous runs of judged samples (bank closed, |I| >= TEST_MIN per module) of one sign."""
    phases = []
    cur = None
    for s in run.samples:
        adm = [a for a in addrs if (s["modules"].get(a) or {}).get("state") == "admitted"]
        ok = s["bank"].get("state") == "closed" and len(adm) == len(addrs) and adm
        cur_ma = sum((s["modules"][a].get("ma") or 0) for a in adm) if ok else 0
        sign = 0
        if ok and abs(cur_ma) >= TEST_MIN_MA_PER_MODULE * len(adm):
            sign = 1 if cur_ma > 0 else -1
        if sign == 0:
            cur = None
            continue
        if cur is None or cur["sign"] != sign:
            cur = {"sign": sign, "samples": []}
            phases.append(cur)
        cur["samples"].append(s)
    return [p for p in phases if len(p["samples"]) >= 2]


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def judge_test(run):
    """Steps 13-14: current sharing, SOC drift and temperature during the loaded phases.
    Returns {"checks": [Check], "phases": [...], "ok": bool or None (no test data)}."""
    th = thresholds(run.config)
    addrs = _expected(run)
    phases = _phases(run, addrs)
    checks = []
    have = {1: 0, -1: 0}
    have_light = {1: 0, -1: 0}
    out_phases = []
    for p in phases:
        ss = p["samples"]
        have[p["sign"]] += len(ss)
        kind = "charge" if p["sign"] > 0 else "discharge"
        peak = max(abs(sum(s["modules"][a].get("ma") or 0 for a in addrs)) for s in ss)
        light = peak <= LIGHT_MAX_MA_PER_MODULE * len(addrs)
        if light:
            have_light[p["sign"]] += len(ss)
        label = ("light " if light else "") + kind
        soh = {a: (ss[0]["modules"][a].get("soh_pm") or 1000) for a in addrs}
        tot_soh = float(sum(soh.values()))
        devs = {a: [] for a in addrs}
        for s in ss:
            tot = sum(s["modules"][a].get("ma") or 0 for a in addrs)
            for a in addrs:
                fair = soh[a] / tot_soh
                share = (s["modules"][a].get("ma") or 0) / float(tot)
                devs[a].append((share - fair) / fair * 1000.0)
        med = {a: _median(devs[a]) for a in addrs}
        worst = max(addrs, key=lambda a: abs(med[a]))
        lim = th["share_pm"][0]
        t0, t1 = ss[0]["t"], ss[-1]["t"]
        bank_a = _median([sum(s["modules"][a].get("ma") or 0 for a in addrs) for s in ss]) / 1000.0
        checks.append(Check(14, "current sharing (%s %.0f-%.0f s)" % (label, t0, t1), abs(med[worst]) <= lim,
                            "%s %.1f A: worst module %s %+.0f %% of its share (limit %.0f %%)" % (
                                kind, bank_a, worst, med[worst] / 10, lim / 10),
                            phase=kind, t0=t0, t1=t1, bank_a=bank_a, worst=worst,
                            deviation_pm={a: int(round(med[a])) for a in addrs}, limit_pm=lim))
        # SOC drift against the bank mean over the phase
        d_soc = {a: (ss[-1]["modules"][a].get("soc_pm") or 0) - (ss[0]["modules"][a].get("soc_pm") or 0)
                 for a in addrs}
        mean = sum(d_soc.values()) / float(len(addrs))
        drift = {a: d_soc[a] - mean for a in addrs}
        wd = max(addrs, key=lambda a: abs(drift[a]))
        lim = th["drift_pm"][0]
        checks.append(Check(14, "SOC drift (%s %.0f-%.0f s)" % (label, t0, t1), abs(drift[wd]) <= lim,
                            "module %s drifted %+.1f %% against the bank (limit %.1f %%)" % (
                                wd, drift[wd] / 10, lim / 10),
                            phase=kind, worst=wd, drift_pm={a: round(drift[a], 1) for a in addrs},
                            limit_pm=lim))
        out_phases.append({"kind": kind, "light": light, "t0": t0, "t1": t1, "bank_a": bank_a,
                           "samples": len(ss)})
    # temperatures over the whole test (every sample of every phase)
    test_samples = [s for p in phases for s in p["samples"]]
    if test_samples:
        tmax = {a: max((s["modules"][a].get("temp_dc") or -1000) for s in test_samples) for a in addrs}
        above = []
        for s in test_samples:
            ts = [s["modules"][a].get("temp_dc") for a in addrs]
            if None in ts:
                continue
            mean = sum(ts) / float(len(ts))
            above.append(max(ts) - mean)
        hottest = max(addrs, key=lambda a: tmax[a])
        ab = max(above) if above else 0.0
        lmax, lab = th["temp_max_dc"][0], th["temp_above_mean_dc"][0]
        checks.append(Check(14, "temperature", tmax[hottest] <= lmax and ab <= lab,
                            "hottest module %s %.1f degC (limit %.1f), at most %.1f K above the bank mean "
                            "(limit %.1f K)" % (hottest, tmax[hottest] / 10, lmax / 10, ab / 10, lab / 10),
                            max_dc={a: tmax[a] for a in addrs}, above_mean_dc=round(ab, 1),
                            limit_max_dc=lmax, limit_above_mean_dc=lab))
    complete = have_light[1] >= PHASE_MIN_SAMPLES and have_light[-1] >= PHASE_MIN_SAMPLES
    checks.append(Check(13, "light charge and discharge test", True if complete else None,
                        "%d light charge and %d light discharge samples (at least %d each, %.0f-%.0f A per "
                        "module)%s" % (have_light[1], have_light[-1], PHASE_MIN_SAMPLES,
                                       TEST_MIN_MA_PER_MODULE / 1000, LIGHT_MAX_MA_PER_MODULE / 1000,
                                       "; heavier: %d charge, %d discharge samples" % (
                                           have[1] - have_light[1], have[-1] - have_light[-1])
                                       if have != have_light else ""),
                        charge_samples=have_light[1], discharge_samples=have_light[-1],
                        heavier_charge_samples=have[1] - have_light[1],
                        heavier_discharge_samples=have[-1] - have_light[-1]))
    judged = [c for c in checks if c.step == 14]
    if not complete:
        ok = None if all(c.ok is not False for c in judged) else False
    else:
        ok = all(c.ok for c in judged)
    return {"checks": checks, "phases": out_phases, "ok": ok}


def assess(run):
    """Every step with its checks, the manual confirmations and the step the bank is at."""
    gw = gateway_checks(run)
    test = judge_test(run)
    checks = gw + test["checks"]
    by_step = {}
    for c in checks:
        by_step.setdefault(c.step, []).append(c)
    steps = []
    for n, title, manual in STEPS:
        cs = by_step.get(n, [])
        ans = run.answers.get(n) if manual else None
        if any(c.ok is False for c in cs) or (manual and ans is False):
            status = "fail"
        elif any(c.ok is None for c in cs) or (manual and ans is None):
            status = "open"
        else:
            status = "done"
        if n == 15:
            status = "done" if test["ok"] else ("fail" if test["ok"] is False else "open")
        steps.append({"step": n, "title": title, "manual": manual, "answer": ans, "status": status,
                      "checks": [c.to_dict() for c in cs]})
    # the step the bank is at: the first that failed, else the first not finished
    failed = [st["step"] for st in steps if st["status"] == "fail"]
    opened = [st["step"] for st in steps if st["status"] == "open"]
    at = failed[0] if failed else (opened[0] if opened else None)
    diag = sorted(run.diagnoses.values(), key=lambda d: d.get("t", 0))
    test = dict(test, checks=[c.to_dict() for c in test["checks"]])
    return {"steps": steps, "at_step": at, "complete": at is None, "test": test,
            "checks": [c.to_dict() for c in checks], "joins": joins(run), "diagnoses": diag,
            "thresholds": {k: {"value": v, "source": s} for k, (v, s) in thresholds(run.config).items()}}
