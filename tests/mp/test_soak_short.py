# The shortened soak (part of `make test`): the real firmware with MQTT telemetry on
# 16 simulated modules, random faults, independent checkers (tools/mp/soak.py has
# the definitions and soak.check() the pass criteria).  12 simulated minutes here;
# `make soak` runs 24 hours (tests/mp/test_soak_long.py).
# mpy-heapsize: 4m
# mpy-timeout: 600
# mpy-emit: native
import soak


def test_soak_short():
    soak.check(soak.run(hours=0.2, n=16, baud=9600, seed=3, warmup_h=0.07, sample_s=60))


def test_soak_is_reproducible():
    # same seed: the same faults and the same bus traffic and contactor operations
    # (telemetry's timing uses real CPU-time budgets; the control path does not)
    a = soak.Soak(hours=0.05, n=4, baud=9600, seed=5, warmup_h=0.0, sample_s=60)
    ra = a.run()
    b = soak.Soak(hours=0.05, n=4, baud=9600, seed=5, warmup_h=0.0, sample_s=60)
    rb = b.run()
    assert ra["faults"] == rb["faults"]
    assert ra["closes"] == rb["closes"] and ra["sweeps"] == rb["sweeps"]
    assert a.sim.wire.requests == b.sim.wire.requests
