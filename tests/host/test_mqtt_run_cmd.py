"""`bankgate run --sim --mqtt HOST:PORT`: the REAL Gateway on the simulated bank, in real time,
publishing to a real mosquitto; the observer is paho-mqtt."""
import json
import os
import subprocess
import sys

import pytest

from mqtt_fixtures import Sub, broker_factory  # noqa: F401

pytestmark = pytest.mark.broker


def test_run_sim_publishes_real_gateway_state(broker_factory):
    b = broker_factory()
    sub = Sub(b.port, qos=1)
    exe = os.path.join(os.path.dirname(sys.executable), "bankgate")
    p = subprocess.run([exe, "run", "--sim", "--mqtt", "127.0.0.1:%d" % b.port, "--seconds", "6"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    result = [json.loads(ln) for ln in p.stdout.splitlines() if '"result"' in ln][-1]
    assert result["ok"], result          # loop_max_us is real time: reported, not asserted
    sub.wait(lambda s: s.get("/status") and s.get("/status")[-1][1] == b"offline", 10, "orderly offline")
    base = "bankgate/bankgate"
    bank = json.loads(sub.get(base + "/bank")[-1][1])
    assert bank["expected"] == 3 and "state" in bank and type(bank["mv"]) is int
    mods = {t for t, _, _, _ in sub.get() if t.startswith(base + "/module/")}
    assert mods == {base + "/module/%d" % a for a in (2, 3, 4)}
    evs = [json.loads(p) for t, p, q, r in sub.get(base + "/event")]
    seqs = sorted({e["seq"] for e in evs})
    assert seqs[0] == 1 and seqs == list(range(1, seqs[-1] + 1))
    assert any(e["ev"] == "boot" for e in evs)
    assert len(sub.get("/config")) >= 40
    # Home Assistant: a device per module (via the gateway), energy sensors, derate controls;
    # the bank message carries the persisted energy (the simulator has a device filesystem)
    cfgs = {t: json.loads(p) for t, p, q, r in sub.get("/config")}
    devs = {c["dev"]["ids"][0]: c["dev"] for c in cfgs.values()}
    assert set(devs) == {"bankgate_bankgate"} | {"bankgate_bankgate_m%d" % a for a in (2, 3, 4)}, sorted(devs)
    assert all(devs["bankgate_bankgate_m%d" % a]["via_device"] == "bankgate_bankgate" for a in (2, 3, 4))
    assert cfgs["homeassistant/sensor/bankgate/m3_energy_chg/config"]["stat_cla"] == "total_increasing"
    assert cfgs["homeassistant/number/bankgate/ctl_chg_cap_a/config"]["cmd_t"] == "~/cmd/chg_cap_a"
    assert type(bank["e_chg_wh"]) is int and bank["energy"]["verdict"] in ("missing", "ok"), bank
    mod = json.loads(sub.get(base + "/module/3")[-1][1])
    assert mod["avail"] in (0, 1) and type(mod["e_chg_wh"]) is int and "alarm_names" in mod
    sub.close()


def test_run_rejects_bad_arguments():
    exe = os.path.join(os.path.dirname(sys.executable), "bankgate")
    p = subprocess.run([exe, "run", "--sim", "--mqtt", "nohostport"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "HOST:PORT" in p.stderr
    p = subprocess.run([exe, "run", "--sim", "/no/such.json", "--mqtt", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no such scenario" in p.stderr
