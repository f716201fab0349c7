"""The demo's words (issue 18, part 5): its speed, outputs in natural order, a pending reason
with value and limit, events by name, MQTT lines never cut inside a JSON text; and the
commissioning scenario at 20x ends cleanly."""
import json
import os
import re
import subprocess
import sys

from bankgate_host.demo_cmd import View, event_line, scenario_max_dv, traffic_line

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANKGATE = os.path.join(os.path.dirname(sys.executable), "bankgate")


def _view():
    v = View("bankgate", True, speed=20.0, max_dv_mv=500)
    outs = {"k%d" % i: 0 for i in range(1, 12)}
    outs["k10"] = 1
    v.on_message("bankgate/demo/bank", json.dumps({"state": "degraded", "admitted": 1, "expected": 3,
                                                   "outputs": outs, "mv": 53000, "ma": 0}).encode())
    v.on_message("bankgate/demo/module/2", json.dumps({"addr": 2, "state": "pending", "reason": "dv",
                                                       "value": 1200, "dv_mv": 1200, "online": True,
                                                       "mv": 52100}).encode())
    v.on_message("bankgate/demo/module/3", json.dumps({"addr": 3, "state": "absent", "reason": "absent",
                                                       "online": False, "mv": 0}).encode())
    v.on_message("bankgate/demo/event", b'{"seq":7,"t_ms":12500,"code":3,"ev":"contactor","addr":2,"a":1,"b":1}')
    return v


def test_plain_line_words():
    line = _view().plain_line()
    assert "outputs=[k1 open, k2 open, k3 open, k4 open, k5 open, k6 open, k7 open, k8 open, k9 open, " \
           "k10 closed, k11 open]" in line
    assert "modules=[2:pending dv 1.20 V (limit 0.50 V), 3:absent]" in line


def test_full_view_speed_events_absent_and_traffic():
    v = _view()
    big = json.dumps({"k%d" % i: list(range(16)) for i in range(20)}).encode()
    v.on_message("bankgate/demo/metrics", big)
    text = "\n".join(v.lines())
    assert "running at 20x (1 real second = 20 simulated seconds)" in text
    assert re.search(r"^2\s+pending\s+dv 1.20 V \(limit 0.50 V\)", text, re.M)
    assert re.search(r"^3\s+absent\s+\(no answer\)", text, re.M) and "0.00" not in text.split("3 ")[-1][:40]
    assert "12.5 s  contactor module 2  (a=1, b=1, #7)" in text
    assert "bankgate/demo/metrics {k0, k1, k2, k3, k4, k5, ...} (%d bytes)" % len(big) in text


def test_traffic_line_never_cuts_json():
    short = b'{"a": 1}'
    assert traffic_line("t", short) == 't {"a": 1}'
    assert traffic_line("t", b"[" + b"1, " * 100 + b"1]") == "t [101 items] (%d bytes)" % (3 * 100 + 3)
    assert traffic_line("t", b"x" * 200) == "t (200 bytes)"
    assert event_line({"seq": 1, "t_ms": 0, "code": 0, "ev": "boot", "addr": -1, "a": 0, "b": 0}) == \
        "     0.0 s  boot  (a=0, b=0, #1)"


def test_scenario_max_dv_from_the_scenario_or_the_schema(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"config": {"gating": {"max_dv_mv": 300}}}))
    assert scenario_max_dv(str(p)) == 300
    p.write_text(json.dumps({"config": {}}))
    assert scenario_max_dv(str(p)) == 500       # bankgate.config's default


def test_commissioning_scenario_at_20x_ends_cleanly():
    proc = subprocess.run([BANKGATE, "demo", "--scenario", "tests/scenarios/commissioning_healthy_3.json",
                           "--plain", "--seconds", "6", "--speed", "20"], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert "at 20x: 1 real second = 20 simulated seconds" in out
    assert out.rstrip().splitlines()[-1].startswith("demo: done (")
    assert "{" not in out                       # no JSON fragment anywhere in the plain view
