"""Deployment and the local console end to end, over a real pseudo-terminal.

The "device" is the unix MicroPython port behind `socat` (PTY <-> micropython),
run in a temporary directory that plays the device's "/" (docs/deployment.md,
"The unix-port device").  The same host commands a user runs against an ESP32
drive it: `bankgate deploy` (mpremote over the pty), `bankgate config push`
(validated first: a bad file never reaches the device), then the deployed
firmware/main.py is started (the unix-port equivalent of a reset) and
`bankgate status [--reset-faults]` talks to the running firmware's console.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bankgate_host import REPO, mpy

SECRET = "Hunter2-Secret-77"
# The whole firmware on the 64-bit unix port (pointers twice the ESP32's size) plus
# the fake peripherals; this test is about the USB workflow, the firmware's memory
# footprint is measured by `bankgate bench`.
DEVICE_HEAPSIZE = "512k"


def _bankgate(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "bankgate_host"] + list(args), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


class UnixDevice:
    """micropython (the unix port) on a pty made by socat, cwd = the device root."""

    def __init__(self, root, tty):
        self.root = root
        self.tty = tty
        self.proc = None
        self.log = os.path.join(os.path.dirname(tty), "socat.log")
        sim = [p for p in mpy.compiled_path() if p.endswith((os.sep + "fakes", os.sep + "sim"))]
        # the device sees only what was deployed (root/lib) plus the fake peripherals
        self.path = os.pathsep.join([os.path.join(root, "lib")] + sim)

    def start(self, script=None):
        """script None: a freshly flashed board (REPL only); "main.py": power-on."""
        self.stop()
        if os.path.lexists(self.tty):
            os.unlink(self.tty)
        cmd = "%s -X heapsize=%s -i%s" % (mpy.micropython_binary(), DEVICE_HEAPSIZE,
                                          " " + script if script else "")
        env = dict(os.environ, MICROPYPATH=self.path)
        self._log = open(self.log, "a")
        self.proc = subprocess.Popen(
            ["socat", "PTY,link=%s,raw,echo=0" % self.tty, "EXEC:%s,pty,raw,echo=0,stderr" % cmd],
            cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        end = time.monotonic() + 10
        while not os.path.exists(self.tty):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("socat did not create %s (see %s)" % (self.tty, self.log))
            time.sleep(0.02)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None

    def file(self, name):
        with open(os.path.join(self.root, name), "rb") as f:
            return f.read()


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat; .ci/run installs it)")
    base = tmp_path_factory.mktemp("usb")
    root = base / "device"
    root.mkdir()
    dev = UnixDevice(str(root), str(base / "ttyBG0"))
    with open(os.path.join(REPO, "examples", "config.json")) as f:
        cfg = json.load(f)
    cfg["board"] = "sim"
    cfg["gateway_id"] = SECRET              # the status must mask it: it is also the MQTT password
    dev.config = base / "config.json"
    dev.config.write_text(json.dumps(cfg, indent=1))
    dev.secrets = base / "secrets.json"
    dev.secrets.write_text(json.dumps({"mqtt": {"user": "bg", "password": SECRET}}))
    dev.base = base
    dev.start()                             # a fresh board: just the REPL
    yield dev
    dev.stop()


def test_deploy_copies_compiled_firmware_board_and_config(device):
    rc, out = _bankgate("deploy", "--port", device.tty, "--board", "sim", "--config",
                        str(device.config), "--secrets", str(device.secrets), "--no-reset",
                        "--build-dir", str(device.base / "build"))
    assert rc == 0, out
    root = device.root
    for name in ("boot.py", "main.py", "board.json", "config.json", "secrets.json"):
        assert os.path.exists(os.path.join(root, name)), name
    with open(os.path.join(REPO, "boards", "sim.json"), "rb") as f:
        assert device.file("board.json") == f.read()
    assert device.file("config.json") == device.config.read_bytes()
    with open(os.path.join(REPO, "firmware", "main.py"), "rb") as f:
        assert device.file("main.py") == f.read()
    lib = os.path.join(root, "lib")
    found = [os.path.relpath(os.path.join(d, f), lib) for d, _, fs in os.walk(lib) for f in fs]
    assert "bankgate/app.mpy" in found and "bankgate/console.mpy" in found and "umqtt/simple.mpy" in found
    assert all(f.endswith(".mpy") for f in found), [f for f in found if not f.endswith(".mpy")]
    with open(os.path.join(lib, "bankgate", "config.mpy"), "rb") as f:
        head = f.read(4)
    assert head[0:2] == b"M\x06", head             # mpy-cross bytecode, .mpy version 6
    assert "-march=xtensawin" in out and "deploy: copied firmware" in out, out


def test_bad_config_push_is_refused_before_anything_is_copied(device):
    before = device.file("config.json")
    mtime = os.stat(os.path.join(device.root, "config.json")).st_mtime_ns
    bad = device.base / "bad.json"
    cfg = json.loads(device.config.read_text())
    cfg["contactors"]["outputs"] = ["k1", "k2", "k99"]
    bad.write_text(json.dumps(cfg))
    rc, out = _bankgate("config", "push", "--port", device.tty, str(bad), "--no-reset")
    assert rc == 1, out
    assert "refused, nothing copied" in out and "contactors.outputs[2]" in out, out
    bad.write_text("{\"board\": \"sim\",")
    rc, out = _bankgate("config", "push", "--port", device.tty, str(bad), "--no-reset")
    assert rc == 1 and "expected valid JSON" in out, out
    assert device.file("config.json") == before
    assert os.stat(os.path.join(device.root, "config.json")).st_mtime_ns == mtime
    assert not os.path.exists(os.path.join(device.root, "config.json.new"))


def test_good_config_push_replaces_the_file(device):
    cfg = json.loads(device.config.read_text())
    cfg["gating"]["max_dv_mv"] = 400
    device.config.write_text(json.dumps(cfg, indent=1))
    rc, out = _bankgate("config", "push", "--port", device.tty, str(device.config), "--no-reset")
    assert rc == 0, out
    assert json.loads(device.file("config.json"))["gating"]["max_dv_mv"] == 400
    assert not os.path.exists(os.path.join(device.root, "config.json.new"))


def _status(device, *extra):
    rc, out = _bankgate("status", "--port", device.tty, "--json", "--timeout", "20", *extra)
    replies = [json.loads(l[3:]) for l in out.splitlines() if l.startswith("BG ")]
    return rc, out, replies


def test_invalid_config_on_the_device_keeps_outputs_open_and_says_why(device):
    good = device.file("config.json")
    cfg = json.loads(good)
    cfg["mqtt"]["host"] = SECRET * 5          # too long: the message quotes it, masked
    with open(os.path.join(device.root, "config.json"), "w") as f:
        json.dump(cfg, f)
    try:
        device.start("main.py")
        rc, out, replies = _status(device)
        assert rc == 0, out
        st = replies[-1]
        assert st["state"] == "config_error", st
        assert st["error"].startswith("invalid configuration: mqtt.host: expected a string of 1 to 64"), st
        assert set(st["outputs"].values()) == {0} and "k1" in st["outputs"]
        assert SECRET not in out and "***" in st["error"], out
        rc, out, replies = _status(device, "--reset-faults")
        assert rc == 1 and "not running" in out, out
    finally:
        device.stop()
        with open(os.path.join(device.root, "config.json"), "wb") as f:
            f.write(good)


def test_running_firmware_status_fault_reset_and_push_over_the_pty(device):
    device.start("main.py")
    try:
        rc, out, replies = _status(device)
        assert rc == 0, out
        st = replies[-1]
        assert st["cmd"] == "status" and st["ok"] and st["error"] is None, st
        assert st["board"] == "sim" and st["gateway_id"] == "***", st
        assert SECRET not in out
        assert set(st["outputs"].values()) == {0}      # no module answers: nothing closes
        assert "modules" in st and "faults" in st
        rc, out, replies = _status(device, "--reset-faults")
        assert rc == 0, out
        assert replies[0]["cmd"] == "reset-faults" and replies[0]["ok"] is True
        assert replies[1]["cmd"] == "status"
        # human-readable form
        rc, out = _bankgate("status", "--port", device.tty, "--timeout", "20")
        assert rc == 0 and "state:" in out and "every contactor open" in out, out
        # a push while the firmware runs: mpremote's Ctrl-C stops it (outputs
        # released) and the REPL takes the file
        cfg = json.loads(device.config.read_text())
        cfg["gating"]["dwell_ms"] = 4000
        device.config.write_text(json.dumps(cfg))
        rc, out = _bankgate("config", "push", "--port", device.tty, str(device.config), "--no-reset")
        assert rc == 0, out
        assert json.loads(device.file("config.json"))["gating"]["dwell_ms"] == 4000
    finally:
        device.stop()
