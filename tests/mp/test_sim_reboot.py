# The simulator's reboot and power loss (tools/sim/bgsim/runner.py, simfs.SimFS):
# the firmware restarts on the same physics, contacts and simulated filesystem, and
# after a reboot with a latched fault no output pin rises until the local reset.
# The shipped rb_*.json scenarios sample the outputs every check_ms; these tests read
# every pin change (FakePin.history), so a close of any length would be seen.
# mpy-heapsize: 2m
# mpy-timeout: 600
import mptest
from simfs import DeviceReset, SimFS

from bgsim import runner
from bgsim import scenario as sc


def _root():
    for marker in ("/build/host-mpy", "/tests/mp/"):   # host-mpy[-<arch>]/
        if marker in __file__:
            return __file__.rsplit(marker, 1)[0]
    return "."


SCEN = _root() + "/tests/scenarios/"


def _run(name):
    lines = []
    sim = runner.Simulation(sc.load(SCEN + name + ".json"), lines.append)
    rc = sim.run()
    return sim, rc, lines


def _rises(sim, t0_s, t1_s):
    """(output, t_s) of every close between t0_s and t1_s."""
    out = []
    for name, pin in sim.hw.outputs.items():
        for t_us, v in pin.history:
            if v and t0_s * 1e6 <= t_us < t1_s * 1e6:
                out.append((name, t_us / 1e6))
    return out


def _action_t(sim, do, k=0):
    ts = [ev["at"] for ev in sim.s["timeline"] if ev["do"] == do]
    return ts[k]


def test_weld_measured_hard_reboot_no_close_until_local_reset():
    sim, rc, lines = _run("rb_weld_measured_hard_reboot")
    assert rc == 0, [x for x in lines if x.get("type") == "expect" and not x["ok"]]
    boots = [x for x in lines if x.get("type") == "reboot"]
    assert len(boots) == 1 and boots[0]["kind"] == "hard" and sim.boots == 2
    t_boot = [x["t"] for x in lines if x.get("type") == "action" and x["do"] == "reboot"][0]
    t_reset = _action_t(sim, "reset_faults")
    assert _rises(sim, 36, t_reset) == []
    assert t_boot < t_reset
    assert _rises(sim, t_reset, 95)                 # and it does join again afterwards
    assert sim.fs.files["latches.bin"] and sim.fs.writes == 2    # the latch, the clear


def test_failed_to_close_soft_reboot_never_energises_again():
    sim, rc, lines = _run("rb_failed_to_close_soft_reboot")
    assert rc == 0, [x for x in lines if x.get("type") == "expect" and not x["ok"]]
    k3 = [t for t, v in sim.hw.outputs["k3"].history if v]
    assert len(k3) == 2 and k3[0] < 15e6 and k3[1] > _action_t(sim, "reset_faults") * 1e6
    assert _rises(sim, 15, _action_t(sim, "reset_faults")) == []
    assert sim.clock.ticks_ms() == sim.clock.ms()    # soft: ticks continued


def test_cut_latch_writes_restore_the_old_state():
    sim, rc, lines = _run("rb_latch_write_cut")
    assert rc == 0, [x for x in lines if x.get("type") == "expect" and not x["ok"]]
    why = [x["why"] for x in lines if x.get("type") == "reboot"]
    assert len(why) == 2 and "writing latches.tmp after 7" in why[0] and "renaming" in why[1]
    assert _rises(sim, 36, _action_t(sim, "reset_faults", 2)) == []
    assert sim.fs.cuts == 2


def test_first_latch_write_cut_finds_the_weld_again_before_any_close():
    sim, rc, lines = _run("rb_first_latch_write_cut")
    assert rc == 0, [x for x in lines if x.get("type") == "expect" and not x["ok"]]
    assert _rises(sim, 30, 60) == []
    assert sim.boots == 3


def test_corrupt_latch_file_holds_every_output_open():
    sim, rc, lines = _run("rb_corrupt_latch_file")
    assert rc == 0, [x for x in lines if x.get("type") == "expect" and not x["ok"]]
    assert _rises(sim, 20, _action_t(sim, "reset_faults", 1)) == []


def test_reboot_actions_are_validated():
    base = {"name": "v", "duration_s": 1, "modules": [{}],
            "config": {"bank": {"expected_modules": 1, "addresses": [2]},
                       "contactors": {"outputs": ["k1"]}}}
    for ev, field in (({"do": "reboot", "value": "warm"}, "value"), ({"do": "fs_cut", "op": 0}, "op"),
                      ({"do": "fs_cut", "keep": -1}, "keep"), ({"do": "fs_fail"}, "fs_fail"),
                      ({"do": "fs_fail", "value": "x"}, "value"),
                      ({"do": "fs_corrupt", "byte": -2}, "byte")):
        s = dict(base, timeline=[dict(ev, at=0.5)])
        e = mptest.raises(sc.ScenarioError, sc.validate, s)
        assert field in str(e), (ev, str(e))
    sc.validate(dict(base, timeline=[{"at": 0.5, "do": "reboot"}, {"at": 0.6, "do": "reboot", "value": "soft"},
                                     {"at": 0.7, "do": "fs_cut"}, {"at": 0.8, "do": "fs_corrupt"}]))


def test_hard_reboot_restarts_device_ticks_soft_keeps_them():
    s = sc.validate({"name": "t", "duration_s": 10, "modules": [{}],
                     "config": {"bank": {"expected_modules": 1, "addresses": [2]},
                                "contactors": {"outputs": ["k1"]}},
                     "timeline": [{"at": 3, "do": "reboot", "value": "soft"},
                                  {"at": 6, "do": "reboot", "value": "hard"}]})
    lines = []
    sim = runner.Simulation(s, lines.append)
    gws = [sim.gw]
    orig = sim._reboot

    def reboot(r):
        orig(r)
        gws.append((r.kind, sim.gw, sim.clock.ticks_ms(), sim.clock.ms()))
    sim._reboot = reboot
    assert sim.run() == 0
    assert [g[0] for g in gws[1:]] == ["soft", "hard"]
    assert gws[1][2] == gws[1][3] == 3000          # soft: the ticks go on
    assert gws[2][2] == 0 and gws[2][3] == 6000    # hard: restarted at 0
    assert sim.clock.ticks_ms() == 4000
    assert gws[0] is not gws[1][1] and gws[1][1] is not gws[2][1] and gws[2][1] is sim.gw


def test_simfs_cut_and_fail():
    fs = SimFS({"a": b"old"})
    f = fs.open("b", "wb")
    f.write(b"12345")
    f.close()
    assert fs.files["b"] == b"12345" and fs.writes == 1
    fs.cut(2, 2)                                   # open 1, write 2
    f = fs.open("c", "wb")
    e = mptest.raises(DeviceReset, f.write, b"abcdef")
    assert e.kind == "hard" and fs.files["c"] == b"ab"
    fs.cut(1)
    mptest.raises(DeviceReset, fs.rename, "b", "a")
    assert fs.files["a"] == b"old" and fs.files["b"] == b"12345"
    fs.fail(1)
    e = mptest.raises(OSError, fs.open, "d", "wb")
    assert "d" not in fs.files
    e = mptest.raises(OSError, fs.open, "zz", "rb")
    assert e.args[0] == 2
    fs.corrupt("a", 1)
    assert fs.files["a"] == b"o\x93d"
