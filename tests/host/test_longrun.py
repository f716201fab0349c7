"""The multi-wrap harness (tools/rigs/longrun.py): the real Gateway over weeks of device
time, on BOTH MicroPython binaries: the venv's 64-bit unix port and the 32-bit build
(/work/shared/micropython32, ESP32-like 31-bit small ints).  The tick wrap is 2**30 ms
on both (bankgate.clock implements it); small-int overflow shows only on the 32-bit one.

`make test` runs the short versions (14 days, started just past 2**29; 2 days, started
60 s before a wrap); `-m slow` runs 38.5 days (more than three tick wraps) from three
starting ticks.  Every result is judged here from the harness's counts: the soak's
checker on every close, the silent module, the rejoins, the healthy modules at every
window's end, the wraps crossed.
"""
import json
import os

import pytest

from bankgate_host import REPO, mpy

MP32 = os.environ.get("BANKGATE_MICROPYTHON32", "/work/shared/micropython32/micropython")
HALF = 1 << 29
WRAP = 1 << 30
DAY_MS = 86400000


def _binaries():
    out = [pytest.param("64", id="mp64")]
    out.append(pytest.param("32", id="mp32", marks=pytest.mark.skipif(
        not os.path.exists(MP32), reason="no 32-bit MicroPython at %s" % MP32)))
    return out


def run_longrun(bits, timeout=1800, **kw):
    args = [os.path.join(REPO, "tools", "rigs", "longrun.py")]
    args += ["%s=%s" % (k, v) for k, v in kw.items()]
    if bits == "64":
        proc = mpy.run(args, heapsize="8m", timeout=timeout, emit="native")
    else:
        # the 32-bit binary imports the sources (the .mpy build tree is for the host port)
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join(d for _, d in mpy.SOURCE_DIRS)
        import subprocess
        proc = subprocess.run([MP32, "-X", "heapsize=4m"] + args, env=env, capture_output=True,
                              text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def judge(r, days, min_wraps):
    print(json.dumps(r))
    assert r["days"] >= days
    assert r["closes_bad"] == 0, r["violations"]
    assert r["silent_closed"] == 0, r["notes"]
    assert r["windows_bad"] == 0, r["notes"]
    assert r["no_rejoin"] == 0 and r["not_opened"] == 0, r["notes"]
    assert r["wdt_expired"] == 0 and r["resets"] == 0 and r["exceptions"] == 0, r
    # the run did what it claims: the ticks wrapped, the bank closed in every window, the
    # alarm module rejoined after every alarm, the silent module was watched
    assert r["wraps"] >= min_wraps, r
    assert r["closes"] >= r["windows"] * 2, r
    assert r["alarms"] >= int(days / 1.5) and r["rejoins"] == r["alarms"], r
    assert r["silent_checks"] > 0, r
    # the ticks moved as far as simulated time says (the harness's skips included)
    elapsed_ms = int(r["days"] * DAY_MS)
    assert (r["tick_start_ms"] + elapsed_ms - r["tick_end_ms"]) % WRAP < 1000, r


@pytest.mark.parametrize("bits", _binaries())
def test_longrun_14_days_started_past_half_period(bits):
    # issue 14 on the old code, all three: no poll until the wrap (started at 2**29 + 1),
    # joins blocked from day 6.2 to 12.4 (boot hold), the module silent since day 3.1
    # closed again after day 12.4 on data 9 days old
    r = run_longrun(bits, days=14, tick_start_ms=HALF + 1, skip_s=86400)
    judge(r, 14, 1)
    assert r["first_close_s"] < 30, r


@pytest.mark.parametrize("bits", _binaries())
def test_longrun_started_60_s_before_a_wrap(bits):
    r = run_longrun(bits, days=2, tick_start_ms=WRAP - 60000, skip_s=43200, silent_day=0.6,
                    alarm_every_days=0.9)
    judge(r, 2, 1)
    assert r["first_close_s"] < 30, r


@pytest.mark.slow
@pytest.mark.parametrize("bits", _binaries())
@pytest.mark.parametrize("start", [0, HALF + 1, WRAP - 60000])
def test_longrun_three_wraps(bits, start):
    r = run_longrun(bits, timeout=3600, days=38.5, tick_start_ms=start, skip_s=43200)
    judge(r, 38.5, 3)


@pytest.mark.skipif(not os.path.exists(MP32), reason="no 32-bit MicroPython at %s" % MP32)
def test_time_model_tests_pass_on_the_32_bit_binary():
    # tests/mp/test_timemodel.py again, on the 32-bit port: the heap-locked tests there
    # (SimClock ticks after 2000 simulated seconds, every aging pass) allocate if any value
    # outgrows a 31-bit small int, which the 64-bit port would never show
    import re
    import subprocess
    src = os.path.join(REPO, "tests", "mp", "test_timemodel.py")
    with open(src) as f:
        names = re.findall(r"^def (test_\w+)\(\):", f.read(), re.M)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(d for _, d in mpy.SOURCE_DIRS)
    proc = subprocess.run([MP32, "-X", "heapsize=2m", os.path.join(mpy.HARNESS, "mptest_run.py"),
                           str(2 * 1024 * 1024), src] + names, env=env, capture_output=True, text=True,
                          timeout=1200)
    results = [json.loads(x[5:]) for x in proc.stdout.split("\n") if x.startswith("\x1eMPT ")]
    assert len(results) == len(names) >= 14, (proc.stdout[-2000:], proc.stderr[-2000:])
    failed = [(r["name"], r["tb"]) for r in results if r["status"] != "pass"]
    assert not failed, failed
