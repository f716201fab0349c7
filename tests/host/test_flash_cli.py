"""`bankgate flash` / `make flash-micropython` (issue 18, part 1): the esptool command lines
it builds from the board files (chip, offset of the official image, erase first), the
refusals before the port is opened, and a real esptool run against a serial port on which
nothing answers (a socat pty), which must fail with a clear message."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bankgate_host import flash_cmd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANKGATE = os.path.join(os.path.dirname(sys.executable), "bankgate")
IMAGE = {"ESP32_GENERIC": "ESP32_GENERIC-20250415-v1.25.0.bin",
         "ESP32_GENERIC-SPIRAM": "ESP32_GENERIC-SPIRAM-20250415-v1.25.0.bin",
         "ESP32_GENERIC_S3-SPIRAM_OCT": "ESP32_GENERIC_S3-SPIRAM_OCT-20250415-v1.25.0.bin"}


def boards():
    out = []
    for fn in sorted(os.listdir(os.path.join(REPO, "boards"))):
        if fn.endswith(".json"):
            with open(os.path.join(REPO, "boards", fn)) as f:
                b = json.load(f)
            if b["chip"] != "sim":
                out.append((fn[:-5], b))
    return out


def bankgate(*args, cwd=REPO):
    proc = subprocess.run([BANKGATE, "flash"] + list(args), capture_output=True, text=True, timeout=120,
                          cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def image(tmp_path):
    def make(board):
        p = tmp_path / IMAGE[board["firmware"]]
        p.write_bytes(b"\xe9" + bytes(4095))
        return str(p)
    return make


@pytest.mark.parametrize("name,board", boards(), ids=[n for n, _ in boards()])
def test_dry_run_erases_then_writes_the_official_image_at_the_chips_offset(name, board, image):
    img = image(board)
    rc, out, err = bankgate("--board", name, "--firmware", img, "--port", "/dev/ttyUSB9", "--dry-run")
    assert rc == 0, err
    lines = [ln[len("flash: $ "):].split() for ln in out.splitlines() if ln.startswith("flash: $ ")]
    assert len(lines) == 2
    erase, write = lines
    want_chip, want_offset = {"esp32": ("esp32", "0x1000"), "esp32s3": ("esp32s3", "0x0")}[board["chip"]]
    for cmd in (erase, write):
        assert cmd[1:3] == ["-m", "esptool"]
        assert cmd[cmd.index("--chip") + 1] == want_chip and cmd[cmd.index("--port") + 1] == "/dev/ttyUSB9"
    assert erase[-1] == "erase-flash"
    assert write[-4:] == ["write-flash", "-z", want_offset, img]


def test_no_erase_writes_only(image):
    name, board = boards()[0]
    cmds = flash_cmd.commands(name, board, "/dev/ttyUSB0", image(board), erase=False)
    assert len(cmds) == 1 and "write-flash" in cmds[0]


def test_wrong_image_for_the_board_is_refused_before_the_port(tmp_path):
    spiram = tmp_path / "ESP32_GENERIC-SPIRAM-20250415-v1.25.0.bin"
    spiram.write_bytes(b"\xe9")
    # a WROOM board (no PSRAM) and the SPIRAM image: refused, esptool never runs
    rc, out, err = bankgate("--board", "devkitc-sn65hvd230-max3485", "--firmware", str(spiram),
                            "--port", "/dev/nonexistent")
    assert rc == 2 and "is not an official ESP32_GENERIC image" in err and "esptool" not in out
    s3 = tmp_path / "ESP32_GENERIC_S3-20250415-v1.25.0.bin"
    s3.write_bytes(b"\xe9")
    rc, out, err = bankgate("--board", "lilygo-t-can485", "--firmware", str(s3), "--port", "/dev/nonexistent")
    assert rc == 2 and "ESP32_GENERIC" in err


def test_refusals_unknown_board_sim_board_missing_file_no_port(tmp_path, image):
    rc, out, err = bankgate("--board", "nosuch", "--firmware", "x.bin", "--port", "/dev/ttyUSB0")
    assert rc == 2 and "unknown board 'nosuch'" in err and "lilygo-t-can485" in err
    rc, out, err = bankgate("--board", "sim", "--firmware", "x.bin", "--port", "/dev/ttyUSB0")
    assert rc == 2 and "nothing to flash" in err
    rc, out, err = bankgate("--board", "lilygo-t-can485", "--firmware", str(tmp_path / "none.bin"),
                            "--port", "/dev/ttyUSB0")
    assert rc == 2 and "no such image file" in err and "ESP32_GENERIC" in err
    name, board = boards()[0]
    rc, out, err = bankgate("--board", name, "--firmware", image(board))
    assert rc == 2 and "no serial port given" in err


def test_image_name_matching():
    assert flash_cmd.image_matches("ESP32_GENERIC", "dl/ESP32_GENERIC-20250415-v1.25.0.bin")
    assert not flash_cmd.image_matches("ESP32_GENERIC", "ESP32_GENERIC-SPIRAM-20250415-v1.25.0.bin")
    assert not flash_cmd.image_matches("ESP32_GENERIC", "ESP32_GENERIC_S3-20250415-v1.25.0.bin")
    assert flash_cmd.image_matches("ESP32_GENERIC_S3-SPIRAM_OCT",
                                   "ESP32_GENERIC_S3-SPIRAM_OCT-20251209-v1.27.0.bin")


def test_esptool_is_installed_at_the_pinned_version():
    with open(os.path.join(REPO, "tools", "requirements.txt")) as f:
        pin = [ln.split("==")[1].strip() for ln in f if ln.startswith("esptool==")]
    proc = subprocess.run([sys.executable, "-m", "esptool", "version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and pin and pin[0] in proc.stdout


def test_esptool_against_a_port_that_answers_nothing_fails_clearly(tmp_path, image):
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat; .ci/run installs it)")
    tty = str(tmp_path / "ttyESP")
    # a serial port with nothing behind it that ever speaks: the ROM bootloader never answers
    silent = subprocess.Popen(["socat", "PTY,link=%s,raw,echo=0" % tty, "EXEC:sleep 600,pty,raw,echo=0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(500):
            if os.path.exists(tty) or silent.poll() is not None:
                break
            time.sleep(0.02)          # polling for socat to create the link
        assert os.path.exists(tty)
        name, board = [(n, b) for n, b in boards() if n == "lilygo-t-can485"][0]
        rc, out, err = bankgate("--board", name, "--firmware", image(board), "--port", tty,
                                "--connect-attempts", "1")
        assert rc == 1, out + err
        assert "esptool v" in out                         # esptool itself ran against the port
        assert "flash: erase-flash failed" in err and "Failed to connect to ESP32" in err
        assert "Hold BOOT, tap RESET/EN" in err and "Traceback" not in out + err
    finally:
        os.killpg(silent.pid, signal.SIGTERM)
        silent.wait()


def test_make_flash_micropython_runs_bankgate_flash_with_the_board():
    proc = subprocess.run(["make", "-n", "flash-micropython", "PORT=/dev/ttyUSB7", "FIRMWARE=img.bin",
                           "BOARD=lilygo-t-can485"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "bankgate flash --port /dev/ttyUSB7 --board lilygo-t-can485 --firmware img.bin" in proc.stdout
    proc = subprocess.run(["make", "flash-micropython", "PORT=/dev/ttyUSB7", "BOARD=lilygo-t-can485"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "set FIRMWARE to the official image for board lilygo-t-can485, e.g. FIRMWARE=ESP32_GENERIC-" \
        in proc.stdout
