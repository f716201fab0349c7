"""An invalid configuration is reported over MQTT (firmware.hold + telemetry.errreport) when its
mqtt section is valid on its own: the real firmware entry point under the unix port, a real
mosquitto, a paho subscriber that arrives after the report (so the messages must be retained)."""
import json
import os
import subprocess

import pytest

from bankgate_host import REPO, mpy
from mqtt_fixtures import Sub, broker_factory, wait_for  # noqa: F401

pytestmark = pytest.mark.broker

SCRIPT = r"""
import os, sys
from bankgate import firmware
d = sys.argv[1]
import io
class In(io.IOBase):
    def readinto(self, buf):
        return 0
    def ioctl(self, req, arg):
        return 0 if req == 3 else -22   # never readable; no file descriptor (-EINVAL)
class Out:
    def write(self, b):
        pass
stop = lambda: _exists(d + "/stop")
def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
firmware.device_main(d + "/board.json", d + "/config.json", d + "/secrets.json", In(), Out(), stop)
print("held", firmware.config_error)
"""


def test_invalid_configuration_is_published_retained_and_outputs_stay_open(broker_factory, tmp_path):
    b = broker_factory()
    with open(os.path.join(REPO, "examples", "config.json")) as f:
        cfg = json.load(f)
    cfg["board"] = "sim"
    cfg["bank"]["addresses"] = [2, 3]            # three expected modules: invalid
    cfg["gateway_id"] = "gw-err"
    cfg["mqtt"].update({"enabled": True, "host": "127.0.0.1", "port": b.port, "discovery": False})
    d = tmp_path / "dev"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    with open(os.path.join(REPO, "boards", "sim.json")) as f:
        (d / "board.json").write_text(f.read())
    (d / "script.py").write_text(SCRIPT)
    p = subprocess.Popen(mpy.command([str(d / "script.py"), str(d)]), env=mpy.environ(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sub = Sub(b.port, topics=("bankgate/gw-err/#",), qos=0)
        sub.wait(lambda x: x.get("/bank"), 60, "the configuration error on the broker")
        sub.close()
        late = Sub(b.port, topics=("bankgate/gw-err/#",), qos=0)   # arrives after: retained copies
        late.wait(lambda x: x.get("/bank") and x.get("/status"), 10, "retained error and status")
        t, pl, q, retained = late.get("/bank")[-1]
        bank = json.loads(pl)
        assert retained and bank["state"] == "config_error", bank
        assert bank["error"].startswith("invalid configuration: bank.addresses"), bank
        st = late.get("/status")[-1]
        assert st[1] == b"config_error" and st[3] is True, st
        late.close()
    finally:
        (d / "stop").write_text("")
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "held invalid configuration: bank.addresses" in out, (out, err)
