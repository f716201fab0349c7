"""`bankgate run --sim` without a scenario runs examples/run_sim_bank.json (issue 18, part 6):
a bank installed in the commissioning order, which closes as a real installation does
(the old built-in bank had its DC link at 0 V with the disconnect closed: every module
stayed pending dv)."""
import argparse
import json
import os
import subprocess
import sys

from bankgate_host import run_cmd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANKGATE = os.path.join(os.path.dirname(sys.executable), "bankgate")


def test_run_sim_without_a_scenario_runs_the_default_bank():
    args = argparse.Namespace(sim="-", mqtt="127.0.0.1:1883", seconds=None, speed=1.0, heapsize="2m")
    cmd = run_cmd.command(args)
    assert run_cmd.DEFAULT_BANK in cmd
    assert run_cmd.DEFAULT_BANK == os.path.join(REPO, "examples", "run_sim_bank.json")


# what a real installation shows: every module admitted before the installer closes the main
# disconnect at 20 s, the bank closed with every branch contactor energised
EXPECT = [{"by": 20, "module": 0, "state": "admitted"}, {"by": 20, "module": 1, "state": "admitted"},
          {"by": 20, "module": 2, "state": "admitted"}, {"by": 60, "bank_state": "closed"},
          {"by": 60, "output": "k3", "value": 1}]


def test_the_default_bank_closes_every_module_in_commissioning_order(tmp_path):
    with open(run_cmd.DEFAULT_BANK) as f:
        scen = json.load(f)
    assert "expect" not in scen          # a bank that runs until Ctrl-C has no deadlines
    scen["expect"] = EXPECT
    path = tmp_path / "run_default.json"
    path.write_text(json.dumps(scen))
    proc = subprocess.run([BANKGATE, "simulate", "--scenario", str(path), "--until", "60"],
                          capture_output=True, text=True, timeout=900)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    res = [ln for ln in lines if ln["type"] == "result"][-1]
    assert proc.returncode == 0 and res["ok"] and res["passed"] == res["expectations"] == 5, res
    # the first module closed onto the isolated DC link, before the disconnect closed at 20 s
    closes = [ln for ln in lines if ln["type"] == "event" and ln["name"] == "contactor" and ln["b"] == 1]
    assert len(closes) == 3 and closes[0]["t"] < 20.0
    # never a dv wait for the first module: nothing to compare with on an isolated link
    states = [ln for ln in lines if ln["type"] == "state"]
    assert states[-1]["bank"] == "closed"
    ts = [ln["t"] for ln in lines if "t" in ln]
    assert ts == sorted(ts)                    # simulated time only goes forward
