"""`bankgate commission`: the commissioning assistant's judging and walk (docs/commissioning.md).

The runs are real: the shipped scenarios on the simulated bank with the real firmware
(tools/cli/cli_commission.py through commission_cmd.run_sim), judged by commission_judge.
The fault scenarios of the seed's failure tables must fail the check they are about and
the healthy commissioning must pass every step; the MQTT log reader reads the firmware's
real telemetry (the simulator's recorded `mqtt` lines) and must judge it as the state lines;
the live walk runs against a console that replays the firmware's real status replies.
"""
import io
import json
import os
import subprocess
import sys

import pytest

from bankgate_host import REPO
from bankgate_host import commission_cmd as cmd
from bankgate_host import commission_judge as judge
from bankgate_host import commission_run as crun

SCEN = os.path.join(REPO, "tests", "scenarios")
ALL_YES = {n: True for n in judge.MANUAL}


def sim(name, until=None):
    run, rc = cmd.run_sim(os.path.join(SCEN, name + ".json"), until)
    assert rc in (0, 1), rc         # the scenario's own expectations may be cut short by until
    return run


def checks(a, prefix):
    return [c for c in a["checks"] if c["name"].startswith(prefix)]


@pytest.fixture(scope="module")
def healthy():
    return sim("commissioning_healthy_3")


def test_healthy_commissioning_passes_every_step(healthy):
    healthy.answers.update(ALL_YES)
    a = judge.assess(healthy)
    bad = [c for c in a["checks"] if c["ok"] is not True]
    assert not bad, bad
    assert a["complete"] and a["at_step"] is None
    assert [j["addr"] for j in a["joins"]] == [2, 3, 4]
    assert all(j["dv_mv"] is not None and j["dv_mv"] <= 500 for j in a["joins"][1:])
    kinds = [(p["light"], p["kind"]) for p in a["test"]["phases"]]
    assert kinds == [(True, "charge"), (True, "discharge"), (False, "discharge")]
    (light,) = checks(a, "light charge and discharge test")
    assert light["numbers"]["charge_samples"] >= 40 and light["numbers"]["discharge_samples"] >= 40
    assert a["test"]["ok"] is True
    assert a["steps"][14]["status"] == "done"


def test_healthy_without_confirmations_stays_at_step_one(healthy):
    run = crun.Run("sim")
    run.config, run.samples, run.events = healthy.config, healthy.samples, healthy.events
    a = judge.assess(run)
    assert a["at_step"] == 1 and not a["complete"]
    run.answers.update(ALL_YES)
    run.answers[6] = False              # leads not of equal length: the walk stops there
    a = judge.assess(run)
    assert a["at_step"] == 6 and a["steps"][5]["status"] == "fail"


def test_unequal_cables_fail_current_sharing():
    """Troubleshooting table, 'One module current is much higher': the short branch of module 0
    (address 2) carries about twice the share of each long one."""
    run = sim("ts_one_module_current_much_higher", until=60)
    run.answers.update(ALL_YES)
    a = judge.assess(run)
    (share,) = checks(a, "current sharing")
    assert share["ok"] is False
    assert share["numbers"]["worst"] == 2 and share["numbers"]["deviation_pm"][2] > 250
    assert a["test"]["ok"] is False
    assert a["steps"][14]["status"] == "fail"
    assert all(c["ok"] for c in checks(a, "SOC drift") + checks(a, "temperature"))
    assert "current_high" in [d["name"] for d in a["diagnoses"]]


def test_soc_drift_fails_while_sharing_is_within_its_limit():
    """'SOC drifts after each cycle': module 0 carries ~15 % more than its share (below the
    sharing limit), but over one discharge its SOC drifts more than 2 % below the bank's."""
    run = sim("ts_soc_drifts_each_cycle", until=174)
    a = judge.assess(run)
    (share,) = checks(a, "current sharing")
    (drift,) = checks(a, "SOC drift")
    assert share["ok"] is True and 100 < share["numbers"]["deviation_pm"][2] < 250
    assert drift["ok"] is False and drift["numbers"]["worst"] == 2
    assert drift["numbers"]["drift_pm"][2] < -20
    assert a["test"]["ok"] is False


@pytest.mark.parametrize("name", ["fm_one_module_runs_warmer", "ts_hot_terminal"])
def test_hot_module_fails_temperature(name):
    """'One module runs warmer' (poor cooling) and 'Hot terminal or cable end' (loose lug):
    module 0 resp. 1 rises more than 5 K above the bank mean."""
    run = sim(name)
    a = judge.assess(run)
    (temp,) = checks(a, "temperature")
    assert temp["ok"] is False
    hot = 2 if name == "fm_one_module_runs_warmer" else 3
    assert max(temp["numbers"]["max_dc"], key=temp["numbers"]["max_dc"].get) == hot
    assert temp["numbers"]["above_mean_dc"] > 50
    assert a["test"]["ok"] is False


@pytest.mark.parametrize("name,until,step,check,text", [
    ("adm_wrong_address", 20, 9, "addresses", "at a wrong address: ['9 (not configured)']"),
    ("adm_bus_termination", 20, 8, "bus health", "bus verdict termination_suspect"),
    ("adm_incompatible_model", 40, 1, "identity and compatibility", "refused: {4: 'model'}"),
])
def test_pre_close_checks_stop_the_walk_at_their_step(name, until, step, check, text):
    """The admission scenarios' wiring and identity faults fail the step they belong to, with
    the gateway's numbers, and the bank is at that step; the bank does not close."""
    run = sim(name, until)
    run.answers.update(ALL_YES)
    a = judge.assess(run)
    (c,) = [c for c in a["checks"] if c["name"] == check]
    assert c["ok"] is False and c["step"] == step and text in c["text"], c
    assert a["at_step"] == step
    (closed,) = checks(a, "bank closed")
    assert closed["ok"] is False


def test_thresholds_follow_the_configuration(healthy):
    run = crun.Run("sim")
    run.config = json.loads(json.dumps(healthy.config))
    run.samples, run.events = healthy.samples, healthy.events
    run.config["diagnosis"]["share_raise_pm"] = 100     # stricter than the healthy bank's +14 %
    a = judge.assess(run)
    assert [c["ok"] for c in checks(a, "current sharing")][:2] == [False, False]
    run.config["gating"]["max_dv_mv"] = 10              # module 3 joined at 15 mV
    a = judge.assess(run)
    assert [c["ok"] for c in checks(a, "join")] == [True, False, False]


# -- the MQTT log reader, on the firmware's real telemetry ---------------------------------------
def _mqtt_scenario(tmp_path, tick_start_ms=0):
    with open(os.path.join(SCEN, "commissioning_healthy_3.json")) as f:
        s = json.load(f)
    s["config"]["mqtt"] = {"enabled": True}
    s["mqtt"] = {"broker": True}
    s["device"] = {"tick_start_ms": tick_start_ms}
    s["expect"] = []
    p = tmp_path / "mqtt_healthy.json"
    p.write_text(json.dumps(s))
    return p


def test_mqtt_log_is_judged_like_the_state_lines(tmp_path):
    """The device starts 60 s before its tick counter wraps (2**30 ms): the log's t_ms wrap
    and the reader must unwrap them."""
    rec = tmp_path / "rec.jsonl"
    run = cmd.run_sim(str(_mqtt_scenario(tmp_path, tick_start_ms=(1 << 30) - 60000)), None, str(rec))[0]
    # the simulator's record holds the gateway's publications as mqtt lines
    text = rec.read_text()
    msgs = [json.loads(x) for x in text.splitlines() if '"type": "mqtt"' in x]
    assert len(msgs) > 200
    log = tmp_path / "bank.log"
    with open(log, "w") as f:          # as mosquitto_sub -v writes it
        for m in msgs:
            pl = m["payload"]
            f.write("%s %s\n" % (m["topic"], pl if isinstance(pl, str) else json.dumps(pl)))
    wrapped = [(json.loads(m["payload"]) if isinstance(m["payload"], str) else m["payload"])["t_ms"]
               for m in msgs if m["topic"].endswith("/bank")]
    assert max(wrapped) > (1 << 30) - 60000 and min(wrapped) < 200000     # it did wrap
    mrun = crun.load(str(log))
    assert mrun.source == "mqtt-log"
    ts = [s["t"] for s in mrun.samples]
    assert ts == sorted(ts) and 230 <= ts[-1] - ts[0] <= 241
    a_log = judge.assess(mrun)
    a_sim = judge.assess(run)
    assert [j["addr"] for j in a_log["joins"]] == [j["addr"] for j in a_sim["joins"]] == [2, 3, 4]
    v_log = {c["name"].split(" (")[0] + c["numbers"].get("phase", ""): c["ok"] for c in a_log["checks"]}
    assert v_log["current sharingcharge"] is True and v_log["current sharingdischarge"] is True
    assert all(c["ok"] for c in checks(a_log, "temperature"))
    # the same file as JSON lines {"t", "topic", "payload"} reads the same
    jl = tmp_path / "bank.jsonl"
    jl.write_text("".join(json.dumps({"topic": m["topic"], "payload": m["payload"]}) + "\n" for m in msgs))
    assert len(crun.load(str(jl)).samples) == len(mrun.samples)


def test_bad_recordings_are_refused_with_their_reason(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("no-space-here\n")
    with pytest.raises(crun.RunError, match="line 1: expected '<topic> <payload>'"):
        crun.load(str(p))
    p.write_text("bankgate/x/bank {not json\n")
    with pytest.raises(crun.RunError, match="line 1: payload of bankgate/x/bank is not JSON"):
        crun.load(str(p))
    p.write_text('{"t": 0, "type": "start"}\n')
    with pytest.raises(crun.RunError, match="no state lines"):
        crun.load(str(p))


# -- the CLI: answers, exit codes, the report path ----------------------------------------------
def _cli(*argv, stdin=""):
    return subprocess.run([sys.executable, "-m", "bankgate_host", "commission"] + list(argv),
                          capture_output=True, text=True, input=stdin, timeout=900)


@pytest.fixture(scope="module")
def recording(tmp_path_factory, healthy):
    p = tmp_path_factory.mktemp("rec") / "healthy.jsonl"
    lines = [{"t": 0.0, "type": "config", "config": healthy.config}]
    for s in healthy.samples:
        snap = dict(s["bank"])
        snap["modules"] = list(s["modules"].values())
        lines.append({"t": s["t"], "type": "state", "gw": snap})
    for e in healthy.events:
        lines.append(dict(e, type="event"))
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


def test_cli_walks_a_recording_and_writes_the_report(recording, tmp_path):
    out = tmp_path / "r.html"
    p = _cli("--from", str(recording), "--yes", "--report", str(out))
    assert p.returncode == 0, p.stderr
    assert "Step 15/15" in p.stdout and "Commissioning complete" in p.stdout
    assert "module 3 joined #2" in p.stdout and "(limit 500 mV)" in p.stdout
    assert out.stat().st_size > 20000 and "report: %s" % out in p.stdout


def test_a_bankgate_simulate_output_is_a_source(tmp_path):
    """`bankgate simulate` prints state lines every report_s (30 s here) and no configuration:
    the assistant judges them with the firmware's default limits and says so in the report."""
    p = subprocess.run([sys.executable, "-m", "bankgate_host", "simulate", "--scenario",
                        os.path.join(SCEN, "ts_one_module_current_much_higher.json")],
                       capture_output=True, text=True, timeout=900)
    rec = tmp_path / "simulate.jsonl"
    rec.write_text(p.stdout)
    out = tmp_path / "r.html"
    c = _cli("--from", str(rec), "--yes", "--report", str(out), "--json")
    assert c.returncode == 1, c.stderr
    a = json.loads(c.stdout.splitlines()[-1])["assessment"]
    (share,) = [x for x in a["checks"] if x["name"].startswith("current sharing")]
    assert share["ok"] is False and share["numbers"]["deviation_pm"]["2"] > 250
    assert a["thresholds"]["max_dv_mv"]["value"] == 500 and a["at_step"] == 14
    assert "The recording carries no configuration" in out.read_text()


def test_cli_declined_step_stops_there(recording, tmp_path):
    ans = tmp_path / "a.json"
    ans.write_text(json.dumps({str(n): n != 7 for n in judge.MANUAL}))
    p = _cli("--from", str(recording), "--answers", str(ans), "--json")
    assert p.returncode == 1
    a = json.loads(p.stdout.splitlines()[-1])["assessment"]
    assert a["at_step"] == 7


@pytest.mark.parametrize("content,msg", [
    ('{"2": true}', "step 2 has nothing to confirm by hand"),
    ('{"x": true}', "'x' is not a step number"),
    ('{"3": "yes"}', "step 3: expected true or false"),
    ('[1]', "expected a JSON object"),
    ('{', "answers file"),
])
def test_cli_bad_answers_file_changes_nothing(recording, tmp_path, content, msg):
    ans = tmp_path / "a.json"
    ans.write_text(content)
    out = tmp_path / "r.html"
    p = _cli("--from", str(recording), "--answers", str(ans), "--report", str(out))
    assert p.returncode == 2 and msg in p.stderr, p.stderr
    assert not out.exists() and p.stdout == ""


def test_cli_without_terminal_never_assumes_yes(recording, tmp_path):
    out = tmp_path / "r.html"
    p = _cli("--from", str(recording), "--report", str(out), stdin="y\n")
    assert p.returncode == 2 and "needs the installer's confirmation" in p.stderr
    assert not out.exists()


class TtyIn(io.StringIO):
    def isatty(self):
        return True


def test_prompt_on_a_terminal_takes_only_yes_as_yes():
    out = io.StringIO()
    ans = cmd.Answers(stream_in=TtyIn("y\n\nyes\nn\nsure\n"), out=out)
    assert [ans.ask(n) for n in (1, 3, 4, 5, 6)] == [True, False, True, False, False]
    assert out.getvalue().count("[y/N]") == 5


def test_cli_sim_missing_scenario():
    p = _cli("--sim", "--scenario", "/nonexistent.json", "--yes")
    assert p.returncode == 2 and "no such scenario file" in p.stderr


# -- the live walk, against the firmware's real status replies -----------------------------------
class ReplayConsole:
    """Stands in for the USB console (status_cmd.ConsoleClient): each `status` returns the next
    snapshot the firmware produced in the healthy run, `config` its configuration."""

    def __init__(self, run):
        self.snaps = []
        for s in run.samples:
            snap = dict(s["bank"])
            snap["modules"] = list(s["modules"].values())
            snap["t_ms"] = int(s["t"] * 1000)
            self.snaps.append(snap)
        self.cfg = run.config
        self.i = 0
        self.sent = []

    def command(self, c, timeout=10.0):
        self.sent.append(c)
        if c == "config":
            return {"cmd": "config", "ok": True, "config": self.cfg}
        snap = self.snaps[min(self.i, len(self.snaps) - 1)]
        self.i += 1
        return dict(snap, cmd="status", ok=True)


class FakeTime:
    def __init__(self):
        self.t = 0.0

    def clock(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_live_walk_follows_the_bank(healthy):
    con = ReplayConsole(healthy)
    ft = FakeTime()
    src = cmd.LiveSource(con, clock=ft.clock, sleep=ft.sleep)
    out = io.StringIO()
    run = cmd.live_session(src, cmd.Answers(yes=True, out=out), out, test_s=100, timeout=120)
    text = out.getvalue()
    for n in (1, 3, 8, 10, 11, 12, 13):
        assert "Step %d/15" % n in text
    assert "[PASS] bank closed" in text and "apply a light DISCHARGE" in text
    assert con.sent[0] == "config" and con.sent.count("status") > 100
    a = judge.assess(run)
    assert [j["addr"] for j in a["joins"]] == [2, 3, 4]
    assert a["test"]["ok"] is True


def test_live_walk_stops_when_the_bank_does_not_close(healthy):
    con = ReplayConsole(healthy)
    con.snaps = con.snaps[:5]           # the bank never gets past joining
    ft = FakeTime()
    src = cmd.LiveSource(con, clock=ft.clock, sleep=ft.sleep)
    out = io.StringIO()
    run = cmd.live_session(src, cmd.Answers(yes=True, out=out), out, test_s=10, timeout=30)
    assert "not reached within 30 s" in out.getvalue()
    assert "Step 12/15" not in out.getvalue()
    assert judge.assess(run)["at_step"] == 11
