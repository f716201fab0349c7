"""`bankgate flash --port P --firmware IMAGE.bin [--board B]` -- put the official
MicroPython image on a board with esptool (pinned in tools/requirements.txt).

The board file (boards/B.json) names the chip (`chip`) and the official image
(`firmware`, e.g. ESP32_GENERIC or ESP32_GENERIC_S3-SPIRAM_OCT).  The image goes to
the offset the official download page gives for that chip: MicroPython's
ports/esp32/boards/*/board.json `deploy_options.flash_offset`, rendered on
https://micropython.org/download/ESP32_GENERIC/ ("starting at address 0x1000") and
https://micropython.org/download/ESP32_GENERIC_S3/ ("starting at address 0").

Two esptool runs, in order: `erase-flash` (the download page: "If you are putting
MicroPython on your board for the first time then you should first erase the entire
flash"; --no-erase skips it), then `write-flash -z OFFSET IMAGE`.  --dry-run prints the
command lines and runs nothing.  A mismatch between the image's file name and the
board's `firmware` key (a SPIRAM image on a WROOM board, an ESP32 image on an ESP32-S3)
is refused before the port is opened; --force overrides the file-name check only.

Exit codes: 0 flashed (or dry run), 1 esptool failed (the reason on stderr),
2 usage (unknown board, no such file, wrong image).
"""
import json
import os
import re
import subprocess
import sys

from .config_cmd import BOARDS_DIR, NO_PORT

# chip -> (esptool --chip name, flash offset of the official image)
# Source: micropython/micropython ports/esp32/boards/ESP32_GENERIC/board.json ("flash_offset": "0x1000")
# and ports/esp32/boards/ESP32_GENERIC_S3/board.json ("flash_offset": "0"), shown on the download pages.
CHIPS = {
    "esp32": ("esp32", "0x1000"),
    "esp32s3": ("esp32s3", "0x0"),
}
DEFAULT_BAUD = 460800        # the download page's write-flash baud ("try removing --baud" if it fails)
DEFAULT_BOARD = "devkitc-sn65hvd230-max3485"


def add_arguments(p):
    p.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB0)")
    p.add_argument("--firmware", required=True, metavar="IMAGE.bin",
                   help="the official MicroPython image from https://micropython.org/download/ "
                        "(the board file's `firmware` names which one)")
    p.add_argument("--board", default=DEFAULT_BOARD, help="board name (boards/<name>.json, default %s)"
                   % DEFAULT_BOARD)
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help="write-flash baud (default %d; drop to 115200 if flashing fails midway)" % DEFAULT_BAUD)
    p.add_argument("--no-erase", action="store_true", help="skip erase-flash (re-flashing MicroPython only)")
    p.add_argument("--connect-attempts", type=int, default=7,
                   help="esptool connection attempts (default 7, esptool's own)")
    p.add_argument("--dry-run", action="store_true", help="print the esptool command lines, run nothing")
    p.add_argument("--force", action="store_true",
                   help="accept an image whose file name does not match the board's firmware")


class FlashError(ValueError):
    pass


def load_board(board):
    path = os.path.join(BOARDS_DIR, board + ".json")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(BOARDS_DIR) if f.endswith(".json"))
        raise FlashError("unknown board %r (known: %s)" % (board, ", ".join(known)))
    with open(path) as f:
        b = json.load(f)
    chip = b.get("chip")
    if chip not in CHIPS:
        raise FlashError("board %s has chip %r: only %s run MicroPython from an image (the sim board "
                         "is the unix port, nothing to flash)" % (board, chip, ", ".join(sorted(CHIPS))))
    if not b.get("firmware"):
        raise FlashError("board %s names no official firmware image" % board)
    return b


def image_matches(firmware_key, filename):
    """True when FILENAME is an official image of FIRMWARE_KEY: the download page names them
    KEY-DATE-VERSION.bin (ESP32_GENERIC-20250415-v1.25.0.bin, ESP32_GENERIC-SPIRAM-2025...).
    ESP32_GENERIC-SPIRAM-... is therefore NOT an ESP32_GENERIC image."""
    base = os.path.basename(filename)
    return re.match(re.escape(firmware_key) + r"-\d{8}-v\d", base) is not None


def commands(board_name, board, port, image, baud=DEFAULT_BAUD, erase=True, connect_attempts=7,
             esptool=None):
    """The esptool command lines (lists) that flash IMAGE on BOARD: [erase,] write."""
    chip, offset = CHIPS[board["chip"]]
    base = list(esptool or [sys.executable, "-m", "esptool"])
    base += ["--chip", chip, "--port", port, "--connect-attempts", str(connect_attempts)]
    out = []
    if erase:
        out.append(base + ["erase-flash"])
    out.append(base + ["--baud", str(baud), "write-flash", "-z", offset, image])
    return out


def _last_error(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line and ("error" in line.lower() or "fail" in line.lower()):
            return line
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else "no output"


def _run(cmd):
    """Run one esptool command, echoing its output; returns (rc, output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    seen = []
    for line in proc.stdout:
        seen.append(line)
        sys.stdout.write("  | " + line)
    sys.stdout.flush()
    return proc.wait(), "".join(seen)


def main(args):
    try:
        board = load_board(args.board)
        if not os.path.isfile(args.firmware):
            raise FlashError("no such image file: %s (download %s from https://micropython.org/download/)"
                             % (args.firmware, board["firmware"]))
        if not image_matches(board["firmware"], args.firmware) and not args.force:
            raise FlashError("%s is not an official %s image (expected %s-YYYYMMDD-vX.Y.Z.bin from "
                             "https://micropython.org/download/; board %s: %s); --force to flash it anyway"
                             % (os.path.basename(args.firmware), board["firmware"], board["firmware"],
                                args.board, board.get("module", board["chip"])))
        if args.connect_attempts < 1:
            raise FlashError("--connect-attempts must be at least 1")
    except FlashError as e:
        print("flash: %s" % e, file=sys.stderr)
        return 2
    if not args.port and not args.dry_run:
        print("flash: %s" % NO_PORT, file=sys.stderr)
        return 2
    cmds = commands(args.board, board, args.port or "PORT", args.firmware, args.baud,
                    not args.no_erase, args.connect_attempts)
    chip, offset = CHIPS[board["chip"]]
    print("flash: board %s, chip %s, image %s at %s" % (args.board, chip, os.path.basename(args.firmware),
                                                        offset))
    for cmd in cmds:
        print("flash: $ " + " ".join(cmd))
    if args.dry_run:
        return 0
    for cmd in cmds:
        rc, text = _run(cmd)
        if rc != 0:
            step = "erase-flash" if "erase-flash" in cmd else "write-flash"
            print("flash: %s failed (esptool exit %d): %s\n"
                  "flash: is the board on %s and in its bootloader? Hold BOOT, tap RESET/EN, release BOOT, "
                  "then try again; close any serial terminal holding the port." % (
                      step, rc, _last_error(text), args.port), file=sys.stderr)
            return 1
    print("flash: done. Press RESET, then: bankgate deploy --port %s --board %s --config ..."
          % (args.port, args.board))
    return 0
