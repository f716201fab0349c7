"""Issue 16: a configuration can be neither unsafe nor dead.

- every setting of the schema is walked: at each bound it is accepted, just outside
  it refused with its field path (and, for a safety bound, its reason);
- the unsafe and dead configurations of the issue are refused, all in one run,
  each with its path and reason; the documented dangerous combinations too;
- property (hypothesis): any configuration the validator accepts, run through the
  real admission step with one module at the worst allowed dV, never closes onto a
  join current above the module's own limit or max_inrush_ma (physics: I = dV / R
  with the real loop resistance: either not below the configured one, or measured
  by metrics -- then the measured value is what the gate uses);
- property: whatever alarm masks are accepted, any BMS protection bit opens a
  closed module in the next control step.

Everything runs the device code (bankgate.config, bankgate.admission) under the
unix port through tools/harness/cfgprobe.py."""
import copy
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bankgate_host import REPO


def _load(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return json.load(f)


SIM_EXAMPLE = _load("examples", "sim.json")
BOARDS = {n: _load("boards", n + ".json") for n in ("sim", "lilygo-t-can485", "waveshare-esp32-s3-rs485-can",
                                                      "devkitc-sn65hvd230-max3485")}


def _with(base, **changes):
    c = copy.deepcopy(base)
    for path, v in changes.items():
        d = c
        parts = path.split("__")
        for k in parts[:-1]:
            d = d.setdefault(k, {})
        d[parts[-1]] = v
    return c


@pytest.fixture(scope="module")
def schema(mp):
    return mp.call("cfgprobe", "schema")


def _leaves(tree, prefix=""):
    for key in sorted(tree):
        e = tree[key]
        if isinstance(e, dict):
            yield from _leaves(e, prefix + key + ".")
        else:
            yield prefix + key, e


def _set(base, path, value):
    return _with(base, **{path.replace(".", "__"): value})


def _path_errors(mp, cfg, path):
    return [m for p, m in mp.call("cfgprobe", "errors", cfg, None, False) if p == path]


# ------------------------------------------------------------ walk every setting
def test_every_setting_at_and_just_outside_its_bounds(mp, schema):
    why = schema["why"]
    n_int = n_why = 0
    for path, (kind, default, lo, hi, doc) in _leaves(schema["schema"]):
        if kind == "int":
            n_int += 1
            for v in (lo, hi):
                errs = _path_errors(mp, _set(SIM_EXAMPLE, path, v), path)
                assert not [m for m in errs if "an integer from" in m], (path, v, errs)
            for v in (lo - 1, hi + 1):
                errs = _path_errors(mp, _set(SIM_EXAMPLE, path, v), path)
                want = "%s: expected an integer from %d to %d" % (path, lo, hi)
                assert errs and errs[0].startswith(want) and errs[0].endswith("found %d" % v), (path, v, errs)
                if path in why:
                    n_why += 1
                    assert why[path].split(". ")[0].rstrip(".") in errs[0], (path, errs[0])
        elif kind == "str":
            for v in ("x" * max(lo, 1), "x" * hi):
                if path == "board" or path in ("gateway_id", "mqtt.prefix", "mqtt.discovery_prefix"):
                    v = v.replace("x", "a")
                assert not [m for m in _path_errors(mp, _set(SIM_EXAMPLE, path, v), path)
                            if "characters" in m], (path, v)
            errs = _path_errors(mp, _set(SIM_EXAMPLE, path, "x" * (hi + 1)), path)
            assert errs and "a string of %d to %d characters" % (lo, hi) in errs[0], (path, errs)
        elif kind in ("ints", "strs"):
            errs = _path_errors(mp, _set(SIM_EXAMPLE, path, [1] * (hi + 1) if kind == "ints"
                                         else ["a"] * (hi + 1)), path)
            assert errs and "a list of %d to %d" % (lo, hi) in errs[0], (path, errs)
        elif kind == "enum":
            for v in lo:
                assert not [m for m in _path_errors(mp, _set(SIM_EXAMPLE, path, v), path)
                            if "one of" in m], (path, v)
            errs = _path_errors(mp, _set(SIM_EXAMPLE, path, "nonsense"), path)
            assert errs and "one of" in errs[0], (path, errs)
        elif kind == "bool":
            for v in (True, False):
                assert not [m for m in _path_errors(mp, _set(SIM_EXAMPLE, path, v), path)
                            if "true or false" in m], (path, v)
            assert _path_errors(mp, _set(SIM_EXAMPLE, path, 1), path)
    assert n_int > 80
    # every safety bound was met just outside both ends and gave its reason
    assert n_why == 2 * len(why), (n_why, sorted(why))


# ------------------------------------------------- the issue's unsafe settings
UNSAFE = [
    ("gating.critical_alarms", 0, "0x04FF"),
    ("gating.derate_alarms", 65535, "0x0300"),
    ("gating.max_dv_mv", 5000, "Ceiling 2000 mV"),
    ("gating.loop_resistance_mohm", 10000, "Ceiling 100 mOhm"),
    ("gating.max_inrush_ma", 1000000, "Ceiling 100 A"),
    ("gating.max_age_ms", 600000, "Ceiling 30 s"),
    ("gating.dwell_ms", 0, "Floor 200 ms"),
    ("control.boot_hold_ms", 0, "Floor 500 ms"),
    ("contactors.weld_ma", 100000, "Ceiling 10 A"),
    ("contactors.weld_confirm_ms", 60000, "Ceiling 10 s"),
    ("gating.min_limit_ma", 0, "Floor 100 mA"),
]


@pytest.mark.parametrize("path,value,reason", UNSAFE, ids=[u[0] for u in UNSAFE])
def test_each_unsafe_setting_of_the_issue_is_refused_with_its_reason(mp, path, value, reason):
    errs = mp.call("cfgprobe", "errors", _set(SIM_EXAMPLE, path, value), BOARDS["sim"], True)
    assert [p for p, _ in errs] == [path], errs
    assert reason in errs[0][1], errs


def _write(tmp_path, name, cfg):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return str(p)


def _check(*args):
    proc = subprocess.run([sys.executable, "-m", "bankgate_host", "config", "check"] + list(args),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout.strip().splitlines()


def test_config_check_reports_every_unsafe_setting_in_one_run(tmp_path):
    cfg = SIM_EXAMPLE
    for path, value, _ in UNSAFE:
        cfg = _set(cfg, path, value)
    rc, lines = _check(_write(tmp_path, "unsafe.json", cfg))
    assert rc == 1, lines
    invalid = [x for x in lines if x.startswith("INVALID ")]
    assert len(invalid) == len(UNSAFE), lines
    for (path, _, reason), line in zip(sorted(UNSAFE), sorted(invalid)):
        assert line.startswith("INVALID %s: expected" % path) and reason in line, (path, line)
    assert lines[-1] == "%d errors" % len(UNSAFE)


# --------------------------------------------------------- dead configurations
def test_dead_configurations_are_refused_saying_what_to_add(mp, tmp_path):
    lilygo = _load("examples", "lilygo-t-can485.json")
    no_iso = copy.deepcopy(lilygo)
    del no_iso["contactors"]["link_isolated_input"]
    errs = mp.call("cfgprobe", "errors", no_iso, BOARDS["lilygo-t-can485"], True)
    assert [p for p, _ in errs] == ["contactors.link_isolated_input"], errs
    assert "(fb1, fb2)" in errs[0][1] and "never closes" in errs[0][1]
    main = _with(lilygo, gating__topology="main", contactors__outputs=["k1", "k2"])
    errs = mp.call("cfgprobe", "errors", main, BOARDS["lilygo-t-can485"], True)
    assert [p for p, _ in errs] == ["gating.topology"], errs
    assert "no DC-link voltage sensor" in errs[0][1] and "link_isolated_input" in errs[0][1]
    ws = _load("examples", "waveshare-esp32-s3-rs485-can.json")
    ws_main = _with(ws, gating__topology="main", contactors__outputs=["k1", "k1x"])
    paths = [p for p, _ in mp.call("cfgprobe", "errors", ws_main, BOARDS["waveshare-esp32-s3-rs485-can"], True)]
    assert "gating.topology" in paths, paths
    # outputs or inputs the board lacks: every one of them, with what the board has
    more = _with(lilygo, bank__expected_modules=5, bank__addresses=[2, 3, 4, 5, 6],
                 contactors__outputs=["k1", "k2", "k3", "k4", "k5"], contactors__reset_input="btn")
    errs = mp.call("cfgprobe", "errors", more, BOARDS["lilygo-t-can485"], True)
    assert [p for p, _ in errs] == ["contactors.outputs[4]", "contactors.reset_input"], errs
    assert "k1, k2, k3, k4" in errs[0][1] and "fb1, fb2" in errs[1][1]
    # the CLI says the same, exit 1
    rc, lines = _check(_write(tmp_path, "dead.json", no_iso))
    assert rc == 1 and lines[0].startswith("INVALID contactors.link_isolated_input: expected an input of "
                                           "board lilygo-t-can485"), lines


def test_legal_but_unusual_set_ups_warn_and_exit_0(tmp_path):
    cfg = _with(_load("examples", "devkitc-sn65hvd230-max3485.json"), contactors__feedback=[],
                contactors__link_isolated_input="fb1", gating__critical_alarms=0x04FF)
    rc, lines = _check(_write(tmp_path, "unusual.json", cfg))
    assert rc == 0 and lines[0].startswith("OK "), lines
    warn = sorted(x.split(":")[0] for x in lines[1:])
    assert warn == ["WARNING contactors.feedback", "WARNING contactors.link_isolated_input",
                    "WARNING gating.critical_alarms"], lines


DANGEROUS = [
    # (changes, path, text): combinations the reference documents as refused
    (dict(gating__critical_alarms=0x0300), "gating.critical_alarms", "0x04FF"),
    (dict(gating__critical_alarms=0x14FF), "gating.critical_alarms", "0x04FF"),
    (dict(gating__derate_alarms=0x0310), "gating.derate_alarms", "0x0300"),
    (dict(gating__max_dv_mv=200, gating__hysteresis_mv=200), "gating.hysteresis_mv", "below gating.max_dv_mv"),
    (dict(gating__max_age_ms=500, control__poll_timeout_ms=200), "gating.max_age_ms",
     "one slow poll cycle must not drop every module"),
    (dict(control__period_ms=1000, control__watchdog_ms=1500), "control.watchdog_ms", "at least 2 x"),
    (dict(contactors__reset_input="fb4", contactors__link_isolated_input="fb4"),
     "contactors.link_isolated_input", "another input than reset_input"),
    (dict(contactors__link_isolated_input="fb1"), "contactors.link_isolated_input", "not used as feedback"),
    (dict(gating__module_mv_min=57600), "gating.module_mv_min", "below gating.module_mv_max"),
    (dict(gating__min_limit_ma=600000), "gating.min_limit_ma", "below gating.max_limit_ma"),
]


@pytest.mark.parametrize("changes,path,text", DANGEROUS, ids=[d[1] + str(i) for i, d in enumerate(DANGEROUS)])
def test_documented_dangerous_combinations_are_refused(mp, changes, path, text):
    errs = mp.call("cfgprobe", "errors", _with(SIM_EXAMPLE, **changes), BOARDS["sim"], True)
    assert [p for p, _ in errs] == [path] and text in errs[0][1], errs


# -------------------------------------------------------------------- properties
def _accepted(mp, cfg):
    return not mp.call("cfgprobe", "errors", cfg, BOARDS["sim"], True)


@st.composite
def gate_configs(draw):
    max_dv = draw(st.integers(10, 2000))
    return _with(SIM_EXAMPLE, bank__expected_modules=1, bank__addresses=[2], contactors__outputs=["k1"],
                 contactors__feedback=[],
                 gating__max_dv_mv=max_dv,
                 gating__hysteresis_mv=draw(st.integers(0, max_dv - 1)),
                 gating__loop_resistance_mohm=draw(st.integers(1, 100)),
                 gating__max_inrush_ma=draw(st.integers(1000, 100000)),
                 gating__dwell_ms=draw(st.sampled_from([200, 1000])),
                 control__boot_hold_ms=500)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=gate_configs(), worst=st.booleans(), frac=st.integers(0, 1000), sign=st.sampled_from([1, -1]),
       lim_a=st.integers(1, 500), r_real=st.integers(1, 200), measured=st.booleans())
def test_no_accepted_configuration_closes_onto_a_join_current_above_the_module_limit(
        mp, cfg, worst, frac, sign, lim_a, r_real, measured):
    g = cfg["gating"]
    if not measured:
        # no estimate yet: the physics is trusted to be at least the configured loop
        # (the configured value is capped at 100 mOhm by the schema)
        assume(r_real >= g["loop_resistance_mohm"])
    assert _accepted(mp, cfg)
    dv = sign * (g["max_dv_mv"] if worst else g["max_dv_mv"] * frac // 1000)
    lim = lim_a * 1000
    res = mp.call("cfgprobe", "join", cfg, dv, lim, r_real if measured else 0)
    if measured and r_real < g["loop_resistance_mohm"]:
        assert res["loop_mohm"] == r_real, res
    if res["closed"]:
        i_real = abs(dv) * 1000 // r_real          # inrush ~ dV / real loop resistance
        assert i_real <= lim, (res, dv, r_real, lim)
        assert i_real <= g["max_inrush_ma"], (res, dv, r_real)
    else:
        assert res["reason"] in ("dv", "inrush", "module_limit"), res


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drop=st.integers(0, 0x0300), add_imb=st.booleans(), derate=st.integers(0, 0x0300),
       bit=st.integers(0, 11))
def test_no_accepted_alarm_mask_keeps_a_protection_from_opening(mp, drop, add_imb, derate, bit):
    crit = (0x07FF & ~(drop & 0x0300)) | (0x0800 if add_imb else 0)
    cfg = _with(SIM_EXAMPLE, bank__expected_modules=1, bank__addresses=[2], contactors__outputs=["k1"],
                contactors__feedback=[], gating__critical_alarms=crit,
                gating__derate_alarms=derate & 0x0300, control__boot_hold_ms=500, gating__dwell_ms=200)
    assert _accepted(mp, cfg)
    res = mp.call("cfgprobe", "join", cfg, 0, 50000, 0, 1 << bit)
    assert res["closed"] and res["opened"] is True, (hex(crit), hex(derate), bit, res)
