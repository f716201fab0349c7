"""`bankgate commission` -- the commissioning assistant (docs/commissioning.md).

Walks the installer through the seed article's 15-step commissioning order: for each step
what the gateway verified itself (each check with its numbers), what the installer must
confirm by hand (a prompt; `--yes` or `--answers FILE` for non-interactive use), then the
charge/discharge test judged for current sharing, SOC drift and temperatures
(bankgate_host.commission_judge), and writes the commissioning report (one HTML file,
bankgate_host.commission_report).

Sources:
  --sim [--scenario FILE]   the simulated bank (default tests/scenarios/commissioning_healthy_3.json):
                            the real firmware under the unix port, sampled every second
  --port DEV                a live gateway over the USB console (as `bankgate status`); the test
                            is sampled from `status` replies; --mqtt-log FILE adds a recorded log
  --from FILE               a recording: `bankgate simulate` / `commission --record` JSON lines,
                            or an MQTT log (mosquitto_sub -v, or {"t","topic","payload"} lines)
Exit code: 0 every step done and passed, 1 a check failed or the installer declined a step,
2 bad arguments or input (nothing written), 3 the simulated firmware could not start.
"""
import json
import os
import subprocess
import sys
import time

from . import mpy
from . import commission_run as crun
from . import commission_judge as judge

DEFAULT_SCENARIO = os.path.join(mpy.REPO, "tests", "scenarios", "commissioning_healthy_3.json")
# steps the installer confirms before the bank is powered (the rest follow the gateway's data)
PRE_POWER_STEPS = (1, 3, 4, 5, 6, 7, 8)


def add_arguments(p):
    src = p.add_mutually_exclusive_group()
    src.add_argument("--sim", action="store_true", help="the simulated bank (default when no other source)")
    src.add_argument("--port", metavar="DEV", help="a live gateway's USB console (e.g. /dev/ttyUSB0)")
    src.add_argument("--from", dest="from_file", metavar="FILE",
                     help="a recorded run: simulate/commission JSON lines or an MQTT log")
    p.add_argument("--scenario", metavar="FILE", help="scenario for --sim (default: %s)" %
                   os.path.relpath(DEFAULT_SCENARIO, mpy.REPO))
    p.add_argument("--until", type=float, metavar="S", help="--sim: stop after S simulated seconds")
    p.add_argument("--yes", action="store_true", help="confirm every manual step (non-interactive)")
    p.add_argument("--answers", metavar="FILE",
                   help='JSON file of the installer\'s answers, {"1": true, "3": true, ...} (step: confirmed)')
    p.add_argument("--report", metavar="OUT.html", help="write the commissioning report here")
    p.add_argument("--record", metavar="FILE", help="--sim: also keep the simulator's JSON lines here")
    p.add_argument("--mqtt-log", metavar="FILE", help="--port: the telemetry recorded meanwhile (for the report)")
    p.add_argument("--test-s", type=float, default=60.0, metavar="S",
                   help="--port: seconds to sample each of the charge and discharge tests (default 60)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="--port: seconds to wait for the bank to reach a step (default 300)")
    p.add_argument("--json", action="store_true", help="print the assessment as JSON instead of text")


class InputError(Exception):
    pass


# -- the installer's answers ------------------------------------------------------------------
class Answers:
    """Where confirmations come from: --yes, an answers file, or the terminal."""

    def __init__(self, yes=False, path=None, stream_in=None, out=None):
        self.yes = yes
        self.given = {}
        self.inp = stream_in if stream_in is not None else sys.stdin
        self.out = out or sys.stdout
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    d = json.load(f)
            except (OSError, ValueError) as e:
                raise InputError("answers file %s: %s" % (path, e))
            if isinstance(d, dict) and isinstance(d.get("answers"), dict):
                d = d["answers"]
            if not isinstance(d, dict):
                raise InputError("answers file %s: expected a JSON object {\"step\": true/false}" % path)
            for k, v in d.items():
                try:
                    n = int(k)
                except ValueError:
                    raise InputError("answers file %s: %r is not a step number" % (path, k))
                if n not in judge.MANUAL:
                    raise InputError("answers file %s: step %d has nothing to confirm by hand (steps: %s)" % (
                        path, n, ", ".join(str(x) for x in sorted(judge.MANUAL))))
                if not isinstance(v, bool):
                    raise InputError("answers file %s: step %d: expected true or false, found %r" % (path, n, v))
                self.given[n] = v

    def ask(self, step):
        text = judge.MANUAL[step]
        if step in self.given:
            ans = self.given[step]
            self.out.write("  confirm: %s -> %s (answers file)\n" % (text, "yes" if ans else "NO"))
            return ans
        if self.yes:
            self.out.write("  confirm: %s -> yes (--yes)\n" % text)
            return True
        if not (hasattr(self.inp, "isatty") and self.inp.isatty()):
            raise InputError("step %d needs the installer's confirmation (%s): run on a terminal, or pass "
                             "--yes or --answers FILE" % (step, text))
        self.out.write("  confirm: %s [y/N] " % text)
        self.out.flush()
        line = self.inp.readline()
        return line.strip().lower() in ("y", "yes")


# -- text ------------------------------------------------------------------------------------
def _step_head(out, n):
    out.write("\nStep %d/15: %s\n" % (n, judge.STEP_TITLES[n]))


def _print_checks(out, checks):
    for c in checks:
        out.write("  [%s] %s: %s\n" % (c["verdict"], c["name"], c["text"]))


def _walk(run, answers, out, steps=None, ask=True):
    """Print every step (or those given) with its checks; ask for the manual ones not yet
    answered (ask=False: only say they were not confirmed).  Returns the assessment."""
    a = judge.assess(run)
    for st in a["steps"]:
        n = st["step"]
        if steps is not None and n not in steps:
            continue
        _step_head(out, n)
        _print_checks(out, st["checks"])
        if st["manual"] and n not in run.answers and not ask:
            out.write("  not confirmed by the installer (the walk did not get here)\n")
        elif st["manual"] and n not in run.answers:
            run.answers[n] = answers.ask(n)
        elif st["manual"]:
            out.write("  confirmed by the installer: %s\n" % ("yes" if run.answers[n] else "NO"))
        if n == 14:
            for d in a["diagnoses"]:
                out.write("  diagnosis %s (module %s): first check: %s\n" % (
                    d.get("name"), d.get("addr"), d.get("first_check")))
        if n == 15:
            if a["test"]["ok"]:
                out.write("  current sharing, SOC drift and temperatures are normal: the load may be increased.\n")
            elif a["test"]["ok"] is False:
                out.write("  DO NOT increase the load: fix what failed above first (docs/commissioning.md).\n")
            else:
                out.write("  the charge/discharge test is not complete yet.\n")
    return judge.assess(run)


def _summary(a, out):
    out.write("\n")
    if a["complete"]:
        out.write("Commissioning complete: every step done, every check passed.\n")
    else:
        st = a["steps"][a["at_step"] - 1]
        out.write("The bank is at step %d (%s): %s.\n" % (
            a["at_step"], st["title"].rstrip("."), {"fail": "a check failed or a step was declined",
                                                     "open": "not finished"}[st["status"]]))


def _finish(args, run, a, out):
    if args.report:
        from . import commission_report
        path = commission_report.write(run, args.report, a)
        out.write("report: %s\n" % os.path.abspath(path))
    if args.json:
        out.write(json.dumps({"assessment": a, "answers": run.answers}, default=str) + "\n")
    else:
        _summary(a, out)
    return 0 if a["complete"] else 1


# -- sources -----------------------------------------------------------------------------------
def run_sim(scenario, until=None, record=None):
    """Run the scenario with cli_commission.py; returns (Run, exit code of the simulator)."""
    argv = [os.path.join(mpy.CLI, "cli_commission.py"), os.path.abspath(scenario), "--report-s", "1"]
    if until is not None:
        argv += ["--until", repr(float(until))]
    proc = subprocess.run(mpy.command(argv, "2m"), env=mpy.environ(emit="native"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if record:
        with open(record, "w", encoding="utf-8") as f:
            f.write(proc.stdout)
    lines = proc.stdout.splitlines()
    try:
        run = crun.from_sim_lines(lines, source="sim")
    except crun.RunError as e:
        raise InputError("%s%s" % (e, ("\n" + proc.stderr.strip()) if proc.stderr.strip() else ""))
    run.meta["scenario"] = os.path.abspath(scenario)
    run.meta["rc"] = proc.returncode
    return run, proc.returncode


class LiveSource:
    """A live gateway over the USB console: `status` replies become samples."""

    def __init__(self, client, clock=time.monotonic, sleep=time.sleep):
        self.client = client
        self.clock, self.sleep = clock, sleep
        self.run = crun.Run("live")
        self._unwrap = crun._Unwrap()
        self._seq = 0

    def config(self):
        try:
            r = self.client.command("config", 10.0)
            if r.get("ok") and isinstance(r.get("config"), dict):
                self.run.config = r["config"]
        except TimeoutError:
            pass

    def poll(self):
        st = self.client.command("status", 10.0)
        t = self._unwrap(st["t_ms"]) if isinstance(st.get("t_ms"), int) else 0.0
        if st.get("modules") is not None:
            self.run.add_snapshot(t, st)
        inv = st.get("inverter") or {}
        if inv.get("heartbeat") and not any(e["name"] == "inverter" for e in self.run.events):
            self.run.add_event(t, "inverter", -1, 1, 0)
        return st

    def wait(self, cond, timeout, period=1.0):
        end = self.clock() + timeout
        while True:
            self.poll()
            if cond(self.run):
                return True
            if self.clock() >= end:
                return False
            self.sleep(period)

    def sample(self, seconds, period=1.0):
        end = self.clock() + seconds
        while self.clock() < end:
            self.poll()
            self.sleep(period)


def _visible(run):
    addrs = judge._expected(run)
    last = run.last()
    return bool(addrs) and last is not None and all(judge.visible(last["modules"].get(a)) for a in addrs)


def _closed(run):
    last = run.last()
    return last is not None and last["bank"].get("state") == "closed"


def _inverter(run):
    return any(e["name"] == "inverter" and e["a"] == 1 for e in run.events)


def live_session(src, answers, out, test_s=60.0, timeout=300.0):
    """The assistant against a live gateway (src: LiveSource).  Returns the Run; stops at
    the first step that fails or that the installer declines."""
    run = src.run
    src.config()
    src.poll()

    def manual(n):
        _step_head(out, n)
        run.answers[n] = answers.ask(n)
        return run.answers[n]

    for n in PRE_POWER_STEPS:
        if not manual(n):
            return run
    for n, cond, what in ((10, _visible, "every configured module to answer"),
                          (11, _closed, "every module to be admitted")):
        _step_head(out, n)
        out.write("  waiting up to %.0f s for %s ...\n" % (timeout, what))
        ok = src.wait(cond, timeout)
        a = judge.assess(run)
        for st in a["steps"]:
            if st["step"] in ((1, 2, 8, 9, 10) if n == 10 else (11,)):
                _print_checks(out, st["checks"])
        if not ok:
            out.write("  not reached within %.0f s\n" % timeout)
            return run
        if n == 11 and not manual(11):
            return run
    _step_head(out, 12)
    run.answers[12] = answers.ask(12)
    if not run.answers[12]:
        return run
    if not src.wait(_inverter, timeout):
        out.write("  no inverter heartbeat within %.0f s\n" % timeout)
        return run
    _step_head(out, 13)
    run.answers[13] = answers.ask(13)
    if not run.answers[13]:
        return run
    out.write("  apply a light CHARGE now; sampling %.0f s ...\n" % test_s)
    src.sample(test_s)
    out.write("  apply a light DISCHARGE now; sampling %.0f s ...\n" % test_s)
    src.sample(test_s)
    return run


def main(args, stdin=None, out=None):
    out = out or sys.stdout
    try:
        answers = Answers(args.yes, args.answers, stdin, out)
        if args.port:
            from .status_cmd import ConsoleClient
            try:
                client = ConsoleClient(args.port)
            except Exception as e:
                raise InputError("cannot open %s: %s" % (args.port, e))
            try:
                src = LiveSource(client)
                run = live_session(src, answers, out, args.test_s, args.timeout)
            except TimeoutError as e:
                raise InputError(str(e))
            finally:
                client.close()
            if args.mqtt_log:
                try:
                    log_run = crun.load(args.mqtt_log)
                except (OSError, crun.RunError) as e:
                    raise InputError("MQTT log %s: %s" % (args.mqtt_log, e))
                log_run.config = log_run.config or run.config
                log_run.answers = run.answers
                run = log_run
            out.write("\n== The bank as the gateway saw it ==")
            a = _walk(run, answers, out, steps=(1, 2, 8, 9, 10, 11, 12, 13, 14, 15), ask=False)
            return _finish(args, run, a, out)
        if args.from_file:
            try:
                run = crun.load(args.from_file)
            except (OSError, crun.RunError) as e:
                raise InputError("%s: %s" % (args.from_file, e))
            out.write("Commissioning run from %s (%s)\n" % (args.from_file, run.source))
            a = _walk(run, answers, out)
            return _finish(args, run, a, out)
        scenario = args.scenario or DEFAULT_SCENARIO
        if not os.path.isfile(scenario):
            raise InputError("no such scenario file: %s" % scenario)
        out.write("Commissioning the simulated bank (%s)\n" % os.path.relpath(scenario))
        out.write("Before the bank is powered, the installer confirms:\n")
        pre = crun.Run("sim")
        for n in PRE_POWER_STEPS:
            _step_head(out, n)
            pre.answers[n] = answers.ask(n)
            if not pre.answers[n]:
                out.write("\nStopped at step %d: confirm it before going on.\n" % n)
                return 1
        out.write("\nPowering the simulated bank (the real firmware on the unix port) ...\n")
        run, rc = run_sim(scenario, args.until, args.record)
        if rc == 3:
            out.write("the simulated firmware could not start\n")
            return 3
        run.answers.update(pre.answers)
        a = _walk(run, answers, out, steps=(1, 2, 8, 9, 10, 11, 12, 13, 14, 15))
        return _finish(args, run, a, out)
    except InputError as e:
        sys.stderr.write("bankgate commission: %s\n" % e)
        return 2
