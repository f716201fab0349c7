"""`bankgate demo` (the README's main command): starts an embedded broker, runs the
firmware on the unix port against the simulated bank, shows what is published,
and stops cleanly -- on its own or on Ctrl-C -- leaving no process behind."""
import os
import re
import signal
import subprocess
import time
import uuid

from bankgate_host import REPO

BANKGATE = os.path.join(REPO, ".venv", "bin", "bankgate")


def _tagged_env():
    """The demo's environment with a tag of this test's own: every process the demo starts
    (broker, firmware runner, MicroPython) inherits it, so leftovers are found by the tag,
    never confused with another test's demo running at the same time."""
    tag = uuid.uuid4().hex
    return dict(os.environ, BANKGATE_TEST_TAG=tag), ("BANKGATE_TEST_TAG=" + tag).encode()


def _leftovers(mark):
    """Processes still alive that carry this run's tag (Linux /proc)."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue                      # gone meanwhile, or not ours to read
        if mark in env:
            left.append("%s %s" % (pid, cmd))
    return left


def test_demo_runs_publishes_and_stops():
    env, mark = _tagged_env()
    proc = subprocess.run([BANKGATE, "demo", "--seconds", "25", "--speed", "4", "--plain"],
                          capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    seen = int(re.search(r"demo: done \((\d+) MQTT messages seen\)", out).group(1))
    assert seen >= 20, out[-2000:]
    # the live view was built from the gateway's own MQTT messages: bank state and modules
    assert re.search(r"bank=(waiting|joining|closed|degraded)", out), out[-2000:]
    assert re.search(r"modules=\[2:\w+.*, 3:\w+.*, 4:\w+", out), out[-2000:]
    # messages keep flowing for the whole run, not only at the start
    counts = [int(c) for c in re.findall(r"^demo: bank=.* msgs=(\d+)$", out, re.M)]
    assert len(counts) >= 10, out[-2000:]
    assert counts[-1] > counts[len(counts) // 2] > counts[0], counts
    assert "embedded MQTT broker (amqtt) on 127.0.0.1:" in out, out[-2000:]
    assert _leftovers(mark) == []


def test_ctrl_c_stops_everything():
    env, mark = _tagged_env()
    proc = subprocess.Popen([BANKGATE, "demo", "--plain"], stdout=subprocess.PIPE, env=env,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines = []
    end = time.monotonic() + 120
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("demo: bank=") and "modules=[2:" in line:
            break                         # the view shows real state: interrupt now
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=600)   # a hang guard, not a speed limit
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    assert "demo: stopped" in out
    assert "embedded MQTT broker (amqtt) on 127.0.0.1:" in out, out[-2000:]
    assert _leftovers(mark) == []
