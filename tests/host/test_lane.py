"""The harness takes its MicroPython from one setting, BANKGATE_MICROPYTHON (docs/testing.md):
the binary, its .mpy architecture and its build tree and heap follow from it."""
import os

import pytest

from bankgate_host import frozen32, mpy


@pytest.fixture
def lane_env(monkeypatch):
    def use(binary):
        if binary is None:
            monkeypatch.delenv(mpy.ENV_BINARY, raising=False)
        else:
            monkeypatch.setenv(mpy.ENV_BINARY, binary)
        monkeypatch.delenv(mpy.ENV_MARCH, raising=False)
        mpy._lane_cache.clear()
    yield use
    mpy._lane_cache.clear()


def _mp32():
    try:
        p = os.path.join(frozen32.kit_dir(), "micropython")
    except frozen32.KitMissing as e:
        pytest.skip(str(e))
    return p


def test_default_is_the_venv_64bit_port(lane_env):
    lane_env(None)
    ln = mpy.lane()
    assert ln["bits"] == 64 and ln["march"] == "x64"
    assert mpy.build_dir().endswith(os.path.join("build", "host-mpy"))
    assert mpy.default_heapsize() == mpy.DEFAULT_HEAPSIZE
    assert mpy.heapsize_for_lane("512k") == "512k"


def test_the_setting_switches_binary_arch_build_tree_and_heap(lane_env):
    lane_env(_mp32())
    ln = mpy.lane()
    assert ln["bits"] == 32 and ln["march"] == "x86"
    assert mpy.build_dir().endswith(os.path.join("build", "host-mpy-x86"))
    assert mpy.build_dir("native").endswith("host-mpy-x86-native")
    assert mpy.default_heapsize() == mpy.HEAPSIZE_32
    assert mpy.heapsize_for_lane("512k") == "384k" and mpy.heapsize_for_lane("1m") == "768k"
    assert mpy.heapsize_for_lane("512k", "200k") == "200k"
    # a run goes through that binary, importing modules compiled for it (bankgate.clock as .mpy)
    p = mpy.run(["-c", "import sys, time; from bankgate import clock; "
                       "print(sys.maxsize, time.ticks_add(0, -1), clock.__file__)"])
    assert p.returncode == 0, p.stderr
    maxsize, wrap, path = p.stdout.split()
    assert int(maxsize) == 2 ** 31 - 1 and int(wrap) == 2 ** 30 - 1
    assert "host-mpy-x86" in path and path.endswith(".mpy")


def test_a_bad_setting_is_a_clear_error(lane_env, tmp_path):
    lane_env(str(tmp_path / "no-such-micropython"))
    with pytest.raises(mpy.MicroPythonNotFound, match=mpy.ENV_BINARY):
        mpy.micropython_binary()
    f = tmp_path / "not-micropython"
    f.write_text("#!/bin/sh\necho hello\n")
    f.chmod(0o755)
    lane_env(str(f))
    with pytest.raises(mpy.MicroPythonNotFound, match="does not run as MicroPython"):
        mpy.lane()
