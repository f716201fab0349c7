# Energy counters end to end: the real firmware on the simulator (bgsim), charging, publishing to
# the recording broker, restarted HARD (simulated power cycle) on the same simulated filesystem:
# the bank's published charge energy never goes backwards across the reboot: the new firmware
# starts from the value last written.  (Counting on after a reload: tests/mp/test_energy.py.)
# mpy-heapsize: 2m
# mpy-timeout: 600
import json

from bgsim import runner
from bgsim import scenario as sc


def _scenario(reboot_at):
    return sc.validate({
        "name": "energy_reboot", "duration_s": 200, "step_ms": 100,
        "defaults": {"model": "US5000", "sw_version": "1.4", "chemistry": "lfp", "cells": 15,
                     "capacity_mah": 100000},
        "modules": [{}, {}, {}],
        "terminal": {"disconnect": False},
        "inverter": {"profile": [[0, 0], [25, 140]]},         # 140 A charging from 25 s
        "mqtt": {"broker": True},
        "config": {"bank": {"expected_modules": 3, "addresses": [2, 3, 4],
                            "approved_models": ["US5000"]},
                   "contactors": {"outputs": ["k1", "k2", "k3"], "feedback": ["f1", "f2", "f3"],
                                  "link_isolated_input": "iso"},
                   "mqtt": {"enabled": True}},
        "timeline": [{"at": 15, "do": "disconnect", "value": True},     # battery disconnect closed
                     {"at": reboot_at, "do": "reboot", "value": "hard"}],
    })


def test_published_energy_survives_a_hard_reboot_without_going_back():
    seq = []                                  # (t, e_chg_wh, e_dsg_wh) of every bank message
    boots = []

    def out(x):
        if x.get("type") == "action" and x["do"] == "reboot":
            boots.append(x["t"])
        elif x.get("type") == "mqtt" and x["topic"].endswith("/bank"):
            d = json.loads(x["payload"])
            if d.get("e_chg_wh") is not None:
                seq.append((x["t"], d["e_chg_wh"], d["e_dsg_wh"]))

    sim = runner.Simulation(_scenario(150), out)
    sim.run()
    assert sim.boots == 2 and len(boots) == 1, (sim.boots, boots)
    before = [e for t, e, _ in seq if t < boots[0]]
    after = [e for t, e, _ in seq if t > boots[0]]
    assert before and after, (len(before), len(after))
    for i in range(1, len(seq)):
        assert seq[i][1] >= seq[i - 1][1], (seq[i - 1], seq[i])
    assert before[-1] >= 100, before[-3:]     # ~7 kW charging: written every 100 Wh
    assert after[0] == before[-1], (before[-3:], after[:3])   # the reboot repeats the last written value
    assert "energy.bin" in sim.fs.files
