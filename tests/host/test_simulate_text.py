"""`bankgate simulate`'s text view (issue 18, part 5): names instead of codes, units, the
modules under each state line, no JSON; JSON stays the default into a pipe and with --json."""
import json
import os
import re
import subprocess
import sys

from bankgate_host import words

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANKGATE = os.path.join(os.path.dirname(sys.executable), "bankgate")
BANK = os.path.join(REPO, "examples", "run_sim_bank.json")


def test_text_view_of_a_run():
    proc = subprocess.run([BANKGATE, "simulate", "--scenario", BANK, "--until", "15", "--text"],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "{" not in out and "[0, 0, 0" not in out
    assert out.startswith("scenario run: 3 modules, pylontech on rs485, branch topology")
    assert re.search(r"^\s+\d+\.\d s  bank waiting \(was boot\)$", out, re.M)
    assert re.search(r"module state module 2: admitted", out)
    assert re.search(r"contactor 0 module 2 closed", out)
    # a state line with its modules, in units
    assert re.search(r"bank closed: bus \d+\.\d\d V, -?\d+\.\d A, inverter -?\d+\.\d A; closed: k1, k2, k3", out)
    assert re.search(r"module 3: admitted: \d+\.\d\d V, -?\d+\.\d A, SOC \d+\.\d %, \d+\.\d degC", out)
    assert out.rstrip().splitlines()[-1].startswith("result: PASS")
    ts = [float(m) for m in re.findall(r"^\s+(\d+\.\d) s  ", out, re.M)]
    assert ts == sorted(ts)


def test_json_unchanged_into_a_pipe_and_with_json():
    for extra in ([], ["--json"]):
        proc = subprocess.run([BANKGATE, "simulate", "--scenario", BANK, "--until", "3"] + extra,
                              capture_output=True, text=True, timeout=600)
        lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
        assert proc.returncode == 0 and lines[0]["type"] == "start" and lines[-1]["type"] == "result"


def test_event_words_use_the_firmwares_own_tables():
    names = words.device_names()
    assert names["STATE_NAMES"][0] == "boot" and "dv" in names["CHECK_NAMES"]
    assert "admitted" in names["MOD_STATE_NAMES"]
    dv = names["CHECK_NAMES"].index("dv")
    assert words.event_text({"name": "check_fail", "addr": 3, "a": dv, "b": 1200}) == \
        "check failed module 3: dv 1.20 V"
    assert words.event_text({"name": "bank_state", "addr": -1, "a": 3, "b": 2}) == "bank closed (was joining)"
