# The simulator does not hide a firmware failure (issue #20.3): a gw.snapshot() that
# raises fails the run -- it used to become a "warning" line and a snapshot pieced
# together from the components, so a broken snapshot passed every scenario.
# mpy-heapsize: 1m
import mptest

from bgsim import runner
from bgsim import scenario as sc


def _sim(lines):
    s = sc.validate({"name": "nohide", "duration_s": 5, "modules": [{}, {}]})
    return runner.Simulation(s, lines.append)


def test_a_failing_snapshot_fails_the_run():
    lines = []
    sim = _sim(lines)
    assert sim.gw is not None and sim.failed_start is None

    def broken():
        raise TypeError("planted: snapshot is broken")
    sim.gw.snapshot = broken
    e = mptest.raises(TypeError, sim.snapshot)
    assert "planted" in str(e)
    mptest.raises(TypeError, sim.run)
    assert not [x for x in lines if x.get("type") == "warning"], lines


def test_a_working_snapshot_is_the_firmwares():
    lines = []
    sim = _sim(lines)
    assert sim.run(3) in (runner.RC_OK, runner.RC_FAILED)
    snap = sim.snapshot()
    assert "state" in snap and "outputs" in snap and "modules" in snap, sorted(snap)
    assert not [x for x in lines if x.get("type") in ("warning", "error")], lines
