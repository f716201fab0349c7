"""`bankgate bench --quick --json`: every figure is there, and the targets that do not
depend on how fast or loaded this host is hold.

CPU-time ratios are host measurements (reported, not asserted: a loaded CI machine
would fail them at random); allocation counts, heap_lock proofs, the poll period and
the reaction in SIMULATED time, and the fixed-vs-float agreement are deterministic and
asserted.  The wire-time arithmetic is recomputed here independently.
"""
import json
import os
import subprocess
import sys

import pytest

BIN = os.path.join(os.path.dirname(sys.executable), "bankgate")


@pytest.fixture(scope="module")
def bench():
    cmd = [BIN] if os.path.exists(BIN) else [sys.executable, "-m", "bankgate_host"]
    # the timeout only guards against a hang: on a loaded machine (make test-busy, 2 cores
    # shared by many processes) the quick bench took more than 15 minutes
    proc = subprocess.run(cmd + ["bench", "--quick", "--json"], capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_every_figure_present(bench):
    for n in ("1", "4", "8", "16"):
        r = bench["cycle"]["rs485"][n]
        for k in ("cpu_us", "decode_us", "control_us", "format_us"):
            assert r[k]["median"] > 0 and r[k]["min"] <= r[k]["median"] <= r[k]["max"], (n, k, r[k])
        assert set(r["ratio_pct"]) == {"115200", "9600"}
        assert r["admitted"] == int(n)
        c = bench["cycle"]["can"][n]
        assert c["cpu_us"]["median"] > 0 and c["ratio_pct"]["500000"] > 0
    assert bench["loop"]["cpu_us_per_sweep"]["median"] > 0
    assert bench["period"]["115200"]["sweeps"] >= 5
    assert bench["alloc"]["mqtt"]["bank_message"] > 0          # the MQTT stage is reported
    assert bench["alloc"]["mqtt"]["online"] is True
    assert bench["metrics"]["float_us"]["median"] > 0
    sm = bench["sim"]                                   # simulator speed, both emitters
    # measured and reported (wall-clock figures are bench's output, not a pass mark: the
    # suite must pass on a loaded machine, docs/testing.md)
    assert sm["speed"]["min"] > 0 and sm["bytecode_speed"] > 0, sm
    assert sm["requests_per_sim_s"] > 80                # the 16-module bus was saturated
    assert bench["targets"]["sim_speed_16_115200_x"]["value"] == sm["speed"]["max"]
    hp = bench["heap"]["at_64k"]
    assert "ok" in hp and (hp["ok"] or "error" in hp)
    figures = hp if hp["ok"] else bench["heap"]["at_4m"]
    assert figures["ok"] and figures["code_bytes"] > 0 and figures["objects_bytes"] > 0
    h32 = bench["heap32"]                               # frozen 32-bit figures (issue 17)
    if "error" not in h32:
        assert "ok" in h32["at_96k"]                     # the 96 KiB target: reported, met or not
        assert h32["at_guard"]["ok"], h32["at_guard"]   # the regression guard must hold
        f = h32["figures"]
        assert f["frozen"] and f["bits"] == 32 and f["objects_bytes"] > 0 and f["live_max_bytes"] > 0
        assert bench["targets"]["frozen32_runs_in_96k"]["ok"] is h32["at_96k"]["ok"]
    assert set(bench["targets"]) >= {
        "cycle_cpu_vs_wire_16_115200_pct", "poll_period_vs_bound_115200", "alloc_decode_bytes",
        "alloc_admission_bytes", "alloc_metrics_bytes", "firmware_alone_in_64k",
        "metrics_fixed_alloc_bytes", "reaction_from_wire_ms"}


def test_wire_time_arithmetic(bench):
    # RS485: 10 bits per character at the baud rate + 2 ms turnaround per transaction
    for n in ("1", "16"):
        r = bench["cycle"]["rs485"][n]
        k = 3 * int(n)
        assert r["wire_us"]["115200"] == r["wire_chars"] * 10 * 1000000 // 115200 + k * 2000
        assert r["wire_us"]["9600"] == r["wire_chars"] * 10 * 1000000 // 9600 + k * 2000
    # CAN: 6 frames per module, each 47 + 8 * dlc bits plus at most the worst-case stuffing
    c = bench["cycle"]["can"]["16"]
    assert c["frames"] == 96
    data_bits = 16 * 8 * (8 + 4 + 6 + 7 + 2 + 8)
    lo = 96 * 47 + data_bits
    hi = lo + sum((34 + 8 * d - 1) // 4 for d in (8, 4, 6, 7, 2, 8)) * 16
    assert lo <= c["wire_bits"] <= hi
    assert c["wire_us"]["500000"] == c["wire_bits"] * 2


def test_zero_allocation_stages(bench):
    al = bench["alloc"]
    for stage in ("decode", "admission", "metrics", "aggregate", "health", "control_step"):
        assert al[stage] == 0, (stage, al[stage])
    assert all(al["heap_lock_ok"].values()), al["heap_lock_ok"]
    assert bench["targets"]["alloc_decode_bytes"]["ok"] is True


def test_poll_period_within_bound(bench):
    p = bench["period"]["115200"]
    assert p["ratio"] <= 1.10, p
    assert p["ratio"] >= 0.999, p          # nothing can beat the wire


def test_reaction_within_one_control_period(bench):
    r = bench["reaction"]["115200"]
    assert r["measured"] >= 2, r
    assert r["from_wire_ms"]["max"] <= r["period_ms"], r
    # from the BMS raising it: within the module's next turn in the poll -- one sweep, or
    # two when the sweep re-reads every identity (once a minute)
    sweep = bench["period"]["115200"]["period_ms"]
    assert r["from_injection_ms"]["max"] <= 2 * sweep + r["period_ms"], (r, sweep)


def test_fixed_point_metrics_vs_float(bench):
    m = bench["metrics"]
    assert m["fixed_alloc_bytes"] == 0
    assert m["float_alloc_bytes"] > 0
    assert m["max_abs_diff"] <= 1, m


def test_alarm_data_age_within_its_bound(bench):
    # issue 15: per baud and module count, the worst-case age of alarm data the poll
    # scheduler achieved (every contactor closed, across an identity re-read) is within
    # the plan's bound, which is within gating.max_age_ms
    rows = bench["freshness"]
    assert {(r["baud"], r["modules"]) for r in rows} >= {(115200, 4), (115200, 16)}
    for r in rows:
        assert 0 < r["measured_worst_age_ms"] <= r["plan_worst_age_ms"] <= r["max_age_ms"], r
    assert bench["targets"]["alarm_age_within_bound"]["ok"] is True
