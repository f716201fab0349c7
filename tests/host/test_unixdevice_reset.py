"""deploy and config push reset the unix-port device (issue 18, part 6): the device runs
under bankgate_host.unixdevice's launcher, the reset script (config_cmd.RESET_SCRIPT) ends
the unix process with RESET_EXIT and the launcher powers it on again into main.py, so
`bankgate status` answers right after, without --no-reset and without a hand restart."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from bankgate_host.unixdevice import UnixDevice

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bankgate(*args, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "bankgate_host"] + list(args), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat; .ci/run installs it)")
    base = tmp_path_factory.mktemp("resetdev")
    root = base / "device"
    root.mkdir()
    dev = UnixDevice(str(root), str(base / "ttyBG1"))
    with open(os.path.join(REPO, "examples", "sim.json")) as f:
        cfg = json.load(f)
    dev.config = base / "config.json"
    dev.config.write_text(json.dumps(cfg, indent=1))
    dev.base = base
    dev.start()                      # a freshly flashed board: the REPL only
    yield dev
    dev.stop()


def _status(dev):
    rc, out = _bankgate("status", "--port", dev.tty, "--json", "--timeout", "60")
    replies = [json.loads(ln[3:]) for ln in out.splitlines() if ln.startswith("BG ")]
    return rc, out, replies


def test_deploy_resets_the_device_and_status_answers(device):
    rc, out = _bankgate("deploy", "--port", device.tty, "--board", "sim", "--config", str(device.config),
                        "--build-dir", str(device.base / "build"))
    assert rc == 0, out
    assert "board reset; the firmware starts" in out
    assert device.alive()            # the launcher restarted the process: the "board" is still there
    rc, out, replies = _status(device)
    assert rc == 0, out
    st = replies[-1]
    assert st["cmd"] == "status" and st["ok"] and st["board"] == "sim" and st["error"] is None, st
    assert st["configured_outputs"] == ["k1", "k2", "k3"]
    assert set(st["outputs"].values()) == {0}       # no bank attached: nothing closes


def test_config_push_resets_and_the_new_configuration_runs(device):
    cfg = json.loads(device.config.read_text())
    cfg["gateway_id"] = "after-push"
    device.config.write_text(json.dumps(cfg))
    rc, out = _bankgate("config", "push", "--port", device.tty, str(device.config))
    assert rc == 0, out
    assert "device reset; it starts with the new configuration" in out
    assert device.alive()
    rc, out, replies = _status(device)
    assert rc == 0, out
    assert replies[-1]["gateway_id"] == "after-push"
    # the text view: only the configured outputs, in natural order
    rc, out = _bankgate("status", "--port", device.tty, "--timeout", "60")
    assert rc == 0, out
    line = [ln for ln in out.splitlines() if ln.startswith("outputs:")][0]
    assert line == "outputs: k1 open, k2 open, k3 open", out
