"""`bankgate demo` (the README's main command): starts an embedded broker, runs the
firmware on the unix port against the simulated bank, shows what is published,
and stops cleanly -- on its own or on Ctrl-C -- leaving no process behind."""
import os
import re
import signal
import subprocess
import time

from bankgate_host import REPO

BANKGATE = os.path.join(REPO, ".venv", "bin", "bankgate")


def _leftovers(port):
    out = subprocess.run(["pgrep", "-af", "127.0.0.1:%s|bankgate-demo-" % port],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def _port(text):
    m = re.search(r"embedded MQTT broker \(amqtt\) on 127\.0\.0\.1:(\d+)", text)
    assert m, text[-2000:]
    return m.group(1)


def test_demo_runs_publishes_and_stops():
    proc = subprocess.run([BANKGATE, "demo", "--seconds", "25", "--speed", "4", "--plain"],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
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
    assert _leftovers(_port(out)) == []


def test_ctrl_c_stops_everything():
    proc = subprocess.Popen([BANKGATE, "demo", "--plain"], stdout=subprocess.PIPE,
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
    rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    assert "demo: stopped" in out
    assert _leftovers(_port(out)) == []
