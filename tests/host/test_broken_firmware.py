"""Tests that cannot hide (issue #20.3): a firmware module that fails to import must make
the tests that need it FAIL -- not skip, not report "firmware not available" and pass.

A temporary copy of the repository gets two planted faults: `bankgate/diagnose.py`
(imported when the Gateway is built: the simulator's runner, `bankgate simulate`, the
device's main.py) and `bankgate/console.py` (the USB console) each start with an import
of a module that does not exist.  Then, in that copy:

- `bankgate simulate` on a shipped scenario must exit non-zero (3: firmware could not be
  started) and name the planted import;
- pytest on the console tests (MicroPython side), the USB end-to-end tests (socat + the
  unix port as the device) and a firmware-running simulate test must report failures and
  no skips.

Slow-ish (the copy compiles its own .mpy tree, the e2e tests start a device): it is the
proof, run once per `make test`.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from bankgate_host import REPO

PLANTED = "_planted_missing_module_20_3"
COPY = ["lib", "tools", "boards", "firmware", "examples", "pyproject.toml",
        os.path.join("tests", "support"), os.path.join("tests", "fuzz"), os.path.join("tests", "mp"),
        os.path.join("tests", "host"), os.path.join("tests", "scenarios")]
BROKEN = [os.path.join("lib", "bankgate", "diagnose.py"), os.path.join("lib", "bankgate", "console.py")]
SCENARIO = os.path.join("tests", "scenarios", "commissioning_healthy_3.json")


def _ignore(d, names):
    return [n for n in names if n in ("__pycache__", ".pytest_cache", ".hypothesis")
            or n.endswith((".egg-info", ".pyc", ".mpy"))]


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken") / "repo"
    for rel in COPY:
        src = os.path.join(REPO, rel)
        dst = os.path.join(str(root), rel)
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=_ignore)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
    for rel in BROKEN:
        p = os.path.join(str(root), rel)
        with open(p) as f:
            text = f.read()
        with open(p, "w") as f:
            f.write("import %s  # planted by tests/host/test_broken_firmware.py\n" % PLANTED + text)
    return str(root)


def _env(root):
    env = dict(os.environ)
    # the copy's own bankgate_host (its REPO is the copy, so it compiles and runs the copy)
    env["PYTHONPATH"] = os.path.join(root, "tools") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def test_the_copy_runs_its_own_firmware(broken_repo):
    # otherwise the checks below would test the real tree, which is not broken
    out = subprocess.run([sys.executable, "-c", "import bankgate_host; print(bankgate_host.REPO)"],
                         env=_env(broken_repo), cwd=broken_repo, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert os.path.realpath(out.stdout.strip()) == os.path.realpath(broken_repo)


def test_simulate_cli_fails_on_a_broken_firmware_import(broken_repo):
    p = subprocess.run([sys.executable, "-m", "bankgate_host", "simulate", "--scenario",
                        os.path.join(broken_repo, SCENARIO)],
                       env=_env(broken_repo), cwd=broken_repo, capture_output=True, text=True,
                       timeout=600)
    both = p.stdout + p.stderr
    assert p.returncode == 3, (p.returncode, both[-2000:])
    assert PLANTED in both, both[-2000:]
    # and the runner said why in an error line
    errors = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{") and '"error"' in x]
    assert any(PLANTED in e.get("error", "") for e in errors), p.stdout[-2000:]


def test_firmware_tests_fail_not_skip_on_a_broken_import(broken_repo):
    tests = [os.path.join("tests", "mp", "test_console.py"),
             os.path.join("tests", "host", "test_usb_e2e.py"),
             os.path.join("tests", "host", "test_simulate_cli.py") + "::test_speed_16_modules_rs485_115200"]
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
                        "-q", "-rfEs"] + tests,
                       env=_env(broken_repo), cwd=broken_repo, capture_output=True, text=True,
                       timeout=1200)
    out = p.stdout + p.stderr
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    assert p.returncode == 1, (p.returncode, out[-3000:])
    assert "failed" in summary and "skipped" not in summary, summary
    assert PLANTED in out, out[-3000:]
    # every part named above fails: the console (MicroPython), the device over USB, the runner
    for part in ("test_console.py", "test_usb_e2e.py", "test_simulate_cli.py"):
        assert re.search(r"FAILED \S*%s" % re.escape(part), out), (part, out[-3000:])
