"""`bankgate simulate`: the scenario runner end to end (CPython drives the CLI, the
firmware and the bank model run under the unix MicroPython port).

- every shipped scenario (tests/scenarios/*.json) must exit 0 (all expectations held);
- the runner's own behaviour (exit codes, timeline, expectations, JSON lines) is
  checked on small physics-only scenarios (firmware: false), which need no firmware;
- the speed of simulated time with 16 modules on RS485 at 115200 baud is measured
  and printed (run with -s to see it), against a conservative bound.
"""
import concurrent.futures
import glob
import json
import os
import subprocess
import sys

import pytest

from bankgate_host import REPO

SCEN_DIR = os.path.join(REPO, "tests", "scenarios")
SCENARIOS = sorted(glob.glob(os.path.join(SCEN_DIR, "*.json")))


def simulate(path, *extra, timeout=900):
    cmd = [sys.executable, "-m", "bankgate_host", "simulate", "--scenario", str(path)] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    return p.returncode, lines, p.stderr


@pytest.fixture(scope="module")
def shipped_results():
    """Run every shipped scenario, two at a time (the machine has two cores)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        futs = {p: ex.submit(simulate, p) for p in SCENARIOS}
        return {p: f.result() for p, f in futs.items()}


def test_the_shipped_set_is_complete():
    names = {os.path.basename(p)[:-5] for p in SCENARIOS}
    # the seed article's 15-step commissioning, both failure/troubleshooting tables, a new module
    want = {"commissioning_healthy_3", "new_module_higher_soc",
            "fm_one_module_discharges_faster", "fm_one_module_runs_warmer", "fm_repeated_bms_alarms",
            "fm_circulating_current", "fm_fuse_trips_one_branch",
            "ts_one_module_current_much_higher", "ts_one_module_stays_offline", "ts_soc_drifts_each_cycle",
            "ts_hot_terminal", "ts_inverter_reduced_capacity", "ts_branch_fuse_trips",
            "ts_alarm_during_startup"}
    assert want <= names, want - names
    for p in SCENARIOS:
        with open(p) as f:
            s = json.load(f)
        assert s.get("description") and s.get("expect"), p


@pytest.mark.parametrize("path", SCENARIOS, ids=[os.path.basename(p)[:-5] for p in SCENARIOS])
def test_shipped_scenario_passes(path, shipped_results):
    rc, lines, err = shipped_results[path]
    failed = [x for x in lines if x.get("type") == "expect" and x.get("ok") is False]
    result = [x for x in lines if x.get("type") == "result"]
    assert rc == 0, "exit %s\nfailed expectations: %s\nresult: %s\nstderr: %s" % (
        rc, json.dumps(failed, indent=1), result, err[-3000:])
    assert result and result[-1]["ok"] is True and result[-1]["failed"] == 0


# ---------------------------------------------------------------- runner behaviour
def _phys(tmp_path, **over):
    s = {"name": "phys", "firmware": False, "duration_s": 30, "report_s": 10,
         "modules": [{"soc_pct": 90}, {"soc_pct": 40}],
         "config": {"bank": {"expected_modules": 2, "addresses": [2, 3]},
                    "contactors": {"outputs": ["k1", "k2"]}},
         "timeline": [{"at": 1, "do": "output", "output": "k1", "value": 1},
                      {"at": 2, "do": "output", "output": "k2", "value": 1}],
         "expect": [{"during": [3, 30], "sim": "current_a", "module": 1, "min": 5.0, "max": 40.0},
                    {"at": 1.5, "sim": "conducting", "module": 1, "eq": False}]}
    s.update(over)
    p = tmp_path / "s.json"
    p.write_text(json.dumps(s))
    return p


def test_runner_lines_and_exit_zero(tmp_path):
    rc, lines, err = simulate(_phys(tmp_path))
    assert rc == 0, err
    kinds = [x["type"] for x in lines]
    assert kinds[0] == "start" and kinds[-1] == "result"
    assert kinds.count("action") == 2 and kinds.count("expect") == 2
    states = [x for x in lines if x["type"] == "state"]
    assert [x["t"] for x in states] == [10.0, 20.0, 30.0]
    m = states[-1]["sim"]["modules"]
    # circulating current at rest: equal and opposite, driven by the SOC difference
    assert m[0]["current_a"] < -5 and abs(m[0]["current_a"] + m[1]["current_a"]) < 0.05
    assert m[0]["soc_pct"] < 90 and m[1]["soc_pct"] > 40
    assert lines[-1]["passed"] == 2 and lines[-1]["failed"] == 0


def test_failed_expectation_exits_one(tmp_path):
    p = _phys(tmp_path, expect=[{"during": [5, 20], "sim": "current_a", "module": 1, "max": 1.0}])
    rc, lines, _ = simulate(p)
    assert rc == 1
    ex = [x for x in lines if x["type"] == "expect"]
    assert len(ex) == 1 and ex[0]["ok"] is False and "current_a=" in ex[0]["detail"]
    assert lines[-1]["ok"] is False and lines[-1]["failed"] == 1


def test_until_stops_early_and_leaves_later_expectations_unjudged(tmp_path):
    p = _phys(tmp_path, expect=[{"at": 25, "sim": "current_a", "module": 1, "min": 5.0}])
    rc, lines, _ = simulate(p, "--until", "12")
    assert rc == 0
    assert lines[-1]["sim_s"] == 12.0 and lines[-1]["not_reached"] == 1


@pytest.mark.parametrize("bad,field", [
    ({"modules": []}, "modules"),
    ({"modules": [{"soc_pct": 120}]}, "soc_pct"),
    ({"modules": [{"colour": "red"}]}, "colour"),
    ({"timeline": [{"at": 1, "do": "explode"}]}, "timeline[0].do"),
    ({"expect": [{"at": 1}]}, "expect[0]"),
    # no expectation can be parked as "optional" (a known defect is fixed, not reported)
    ({"expect": [{"at": 1.5, "sim": "conducting", "module": 1, "eq": False, "optional": True}]},
     "expect[0].optional"),
    ({"config": {"bank": {"expected_modules": 99}}}, "bank.expected_modules"),
])
def test_invalid_scenario_is_rejected_before_running(tmp_path, bad, field):
    rc, lines, _ = simulate(_phys(tmp_path, **bad))
    assert rc == 2
    assert len(lines) == 1 and lines[0]["type"] == "error" and field in lines[0]["error"]


def test_missing_file():
    rc, lines, err = simulate("/nonexistent/scenario.json")
    assert rc == 2 and "no such scenario" in err


# ---------------------------------------------------------------- emitters
# The simulator compiles the firmware and the model to machine code by default
# (simulate --emit native, tools/bankgate_host/mpy.py EMITS); the device and the logic
# tests run bytecode.  Same source, so the same run: every output line must be equal,
# except the wall-clock figures of the final result line.
EQUIV = ["commissioning_healthy_3", "adm_main_precharge", "fm_repeated_bms_alarms",
         "inv_module_pending", "adm_welded_feedback"]


def _comparable(lines):
    out = []
    for x in lines:
        if x.get("type") == "result":
            x = {k: v for k, v in x.items() if k not in ("wall_s", "speed")}
        out.append(x)
    return out


@pytest.mark.parametrize("name", EQUIV)
def test_native_and_bytecode_runs_print_the_same_lines(name):
    path = os.path.join(SCEN_DIR, name + ".json")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        fb = ex.submit(simulate, path, "--emit", "bytecode")
        fn = ex.submit(simulate, path, "--emit", "native")
        rb, lb, eb = fb.result()
        rn, ln, en = fn.result()
    assert rb == rn == 0, (rb, rn, eb[-1500:], en[-1500:])
    assert len(lb) > 20
    cb, cn = _comparable(lb), _comparable(ln)
    for i, (a, b) in enumerate(zip(cb, cn)):
        assert a == b, "first difference at line %d:\nbytecode %s\nnative   %s" % (i, a, b)
    assert len(cb) == len(cn)


# ---------------------------------------------------------------- speed
# Issue 4 asks for >= 100 x real time with 16 modules polled over RS485 at 115200 baud.
# `bankgate bench` measures it (best of 3, target sim_speed_16_115200_x; docs/scenarios.md,
# "Speed": 100-120 x on the idle 2-core VM, single runs 75-100 x).  This test runs it once as
# `bankgate simulate` does and prints the speed, but asserts only what does not depend on the
# machine's load: the bus saturated, one loop wake per answer (what per-frame control steps or
# per-byte wake-ups would break).  Wall-clock speed is bench's, never a test's.


def test_speed_16_modules_rs485_115200():
    """Simulated seconds per wall second with the real firmware polling 16 modules."""
    path = os.path.join(SCEN_DIR, "perf_16_modules.json")
    rc, lines, err = simulate(path)
    res = lines[-1]
    assert res["type"] == "result", err
    assert rc == 0, [x for x in lines if x.get("type") == "expect" and x.get("ok") is False]
    start = [x for x in lines if x["type"] == "start"][0]
    assert start["modules"] == 16 and start["bus"] == "rs485"
    print("\nbankgate simulate speed: 16 modules, RS485 115200 baud: %.1f x real time "
          "(%.0f simulated s in %.1f wall s, %d requests, %d loop cycles)"
          % (res["speed"], res["sim_s"], res["wall_s"], res["rs485_requests"], res["cycles"]))
    assert res["rs485_requests"] > 80 * res["sim_s"]       # the bus really was saturated
    assert res["cycles"] < 2 * res["rs485_requests"]        # one wake per answer; the next request leaves in it


def test_mqtt_messages_are_recorded_and_the_broker_can_stop(tmp_path):
    s = {"name": "mq", "duration_s": 40, "report_s": 100, "mqtt": {"broker": True},
         "modules": [{}, {}, {}], "terminal": {"disconnect": False},
         "config": {"mqtt": {"enabled": True, "bank_period_ms": 2000},
                    "contactors": {"outputs": ["k1", "k2", "k3"], "link_isolated_input": "iso"}},
         "timeline": [{"at": 15, "do": "mqtt_broker", "value": "stop"},
                      {"at": 25, "do": "mqtt_broker", "value": "start"}],
         "expect": [{"by": 14, "bank_state": "closed"}]}
    p = tmp_path / "mq.json"
    p.write_text(json.dumps(s))
    rc, lines, err = simulate(p)
    assert rc == 0, err
    mq = [x for x in lines if x["type"] == "mqtt"]
    assert any(x["topic"].endswith("/status") and x["payload"] == "online" for x in mq)
    before = [x for x in mq if 5 < x["t"] < 15]
    during = [x for x in mq if 15.5 < x["t"] < 25]
    after = [x for x in mq if x["t"] > 25]
    assert before and not during and after
    assert lines[-1]["mqtt_messages"] == len(mq)
