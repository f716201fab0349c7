"""Every device-side file compiles for the ESP32 (mpy-cross -march=xtensawin)."""
import glob
import os
import subprocess

import pytest

from bankgate_host import REPO, mpy

DEVICE_FILES = sorted(
    os.path.relpath(p, REPO)
    for pattern in ("lib/bankgate/**/*.py", "firmware/*.py")
    for p in glob.glob(os.path.join(REPO, pattern), recursive=True))


def test_device_files_exist():
    assert any(f.startswith("lib/bankgate/") for f in DEVICE_FILES)
    assert "firmware/main.py" in DEVICE_FILES


@pytest.mark.parametrize("path", DEVICE_FILES)
def test_compiles_for_xtensawin(path, tmp_path):
    proc = subprocess.run(
        [mpy.mpy_cross_binary(), "-march=xtensawin", "-o", str(tmp_path / "out.mpy"),
         os.path.join(REPO, path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0


def test_only_the_hardware_layer_imports_machine():
    offenders = []
    for path in DEVICE_FILES:
        if path.startswith("lib/bankgate/hal/esp32") or path.startswith("firmware/"):
            continue
        with open(os.path.join(REPO, path)) as f:
            for line in f:
                s = line.strip()
                if s.startswith("import machine") or s.startswith("from machine"):
                    offenders.append(path)
    assert offenders == []
