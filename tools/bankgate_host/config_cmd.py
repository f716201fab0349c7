"""`bankgate config check|push|docs` -- configuration files.

check  runs the DEVICE validator (bankgate.config + bankgate.boards) under the unix
       MicroPython port: the same code, the same messages as on the board.
push   validates first (against the board file the device actually has), and only
       then copies the file to the device with mpremote.  A refused file leaves the
       device untouched.
docs   regenerates docs/configuration.md from the schema (--check: compare only).
"""
import json
import os
import subprocess
import sys
import tempfile

from . import REPO, mpy

CLI = os.path.join(mpy.CLI, "cli_config.py")
BOARDS_DIR = os.path.join(REPO, "boards")
DOCS = os.path.join(REPO, "docs", "configuration.md")
# The validator runs from the compiled mirror (bankgate_host.mpy), as on the device.
HEAPSIZE = None  # mpy.DEFAULT_HEAPSIZE


def add_arguments(p):
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    c = sub.add_parser("check", help="validate a configuration file with the device validator")
    c.add_argument("file")
    c.add_argument("--board", help="board name (boards/<name>.json) or board file "
                   "(default: the configuration's \"board\")")
    c.add_argument("--secrets", help="also validate this secrets file")
    ps = sub.add_parser("push", help="validate, then copy the configuration to a board")
    ps.add_argument("file")
    ps.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB0; "
                    "`ls /dev/ttyUSB* /dev/ttyACM*` lists them)")
    ps.add_argument("--secrets", help="also validate and copy this secrets file")
    ps.add_argument("--no-reset", action="store_true",
                    help="do not reset the board afterwards (the new file is read at the next start)")
    d = sub.add_parser("docs", help="regenerate docs/configuration.md from the schema")
    d.add_argument("--check", action="store_true", help="only compare; exit 1 if out of date")
    d.add_argument("--output", default=DOCS)


def board_file(board):
    """A board name or path -> path of the board file (None: not found)."""
    if board is None:
        return None
    if os.path.sep in board or board.endswith(".json"):
        return board
    return os.path.join(BOARDS_DIR, board + ".json")


def strict_json_error(path, label):
    """CPython's strict reading of a JSON file: None if fine, else a message.

    The device's parser (MicroPython) is lenient (it accepts a missing comma, and
    a repeated key silently wins), so the host refuses what it would not parse
    itself before anything reaches a board.  The file's text is never quoted."""
    def no_duplicates(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError("duplicate key %r" % k)
            seen.add(k)
        return dict(pairs)

    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return None  # the device validator reports the missing file
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None  # the device validator reports it
    if not text.strip():
        return None
    try:
        json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        return "%s: expected valid JSON (check quotes, commas and brackets), found a syntax " \
               "error at line %d, column %d (%s)" % (label, e.lineno, e.colno, e.msg)
    except ValueError as e:
        if "duplicate key" in str(e):
            key = str(e).split("duplicate key ", 1)[1]
            return "%s: expected every key once per object, found %s twice" % (
                label, key if label != "secrets" else "a key")
        raise
    return None


def run_check(path, board=None, secrets=None):
    """(ok, message) from the device validator under the unix port."""
    for p, label in ((path, path), (secrets, secrets)):
        if p is not None:
            err = strict_json_error(p, label)
            if err:
                return False, err
    args = [CLI, "check", path]
    if board is not None:
        args += ["--board", board_file(board)]
    else:
        args += ["--boards-dir", BOARDS_DIR]
    if secrets is not None:
        args += ["--secrets", secrets]
    proc = mpy.run(args, heapsize=HEAPSIZE, timeout=120)
    out = proc.stdout.strip().splitlines()
    last = out[-1] if out else ""
    # every error of the file at once (one ERROR line each), and WARNING lines for
    # legal but unusual set-ups: the message is the lines joined, the first error first
    warn = ["WARNING " + x[8:] for x in out if x.startswith("WARNING ")]
    errs = [x[6:] for x in out if x.startswith("ERROR ")]
    if proc.returncode == 0 and last.startswith("OK "):
        return True, "\n".join([last[3:]] + warn)
    if errs:
        return False, "\n".join(errs)
    return False, "validator failed (rc=%s): %s" % (proc.returncode, (proc.stderr or proc.stdout).strip())


def mpremote_binary():
    cand = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return cand if os.path.exists(cand) else "mpremote"


def mpremote(port, *commands, timeout=120, check=True):
    """Run `mpremote connect PORT resume CMD...`.  `resume` never soft-resets:
    the unix-port device has no soft reset, and on the ESP32 the firmware's own
    Ctrl-C handler has already released every output."""
    argv = [mpremote_binary(), "connect", port, "resume"] + list(commands)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError("mpremote %s failed (rc=%d): %s" % (
            " ".join(commands[:2]), proc.returncode, (proc.stderr or proc.stdout).strip()))
    return proc


def fetch_device_board(port, dest):
    """Copy the device's /board.json to dest; False if it has none."""
    proc = mpremote(port, "cp", ":board.json", dest, check=False)
    return proc.returncode == 0 and os.path.exists(dest)


def install_file(port, src, name):
    """Copy src to the device as `name` atomically (write name.new, then rename)."""
    mpremote(port, "cp", src, ":%s.new" % name, "+", "exec",
             "import os\ntry:\n os.rename('%s.new', '%s')\nexcept OSError:\n"
             " os.remove('%s')\n os.rename('%s.new', '%s')\n" % (name, name, name, name, name))


def reset_device(port):
    """Hard reset so main.py reads the new files (ESP32: machine.reset())."""
    mpremote(port, "reset", check=False)


NO_PORT = ("no serial port given: set PORT=/dev/ttyUSB0 (make) or --port /dev/ttyUSB0 "
           "(the board's USB serial device: `ls /dev/ttyUSB* /dev/ttyACM*` before and after "
           "plugging it in; on macOS /dev/cu.usbserial-*)")


def push(args):
    if not args.port:
        print("config push: %s" % NO_PORT, file=sys.stderr)
        return 2
    # 1. Without touching the device: the file against the board it names (a board
    #    that only the device knows is checked in step 2).
    ok, msg = run_check(args.file, None, args.secrets)
    if not ok and [m for m in msg.splitlines() if not m.startswith("board: expected one of")]:
        print("config push: refused, nothing copied: %s" % msg, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bankgate-push-") as tmp:
        # 2. Against the board file the device really has.  Reading it stops the
        #    firmware (mpremote's Ctrl-C): every output is released from here on.
        dev_board = os.path.join(tmp, "board.json")
        if not fetch_device_board(args.port, dev_board):
            print("config push: the device has no /board.json: run `bankgate deploy` first",
                  file=sys.stderr)
            return 1
        ok, msg = run_check(args.file, dev_board, args.secrets)
        if not ok:
            print("config push: refused, nothing copied: %s" % msg, file=sys.stderr)
            if not args.no_reset:
                reset_device(args.port)
            return 1
        # 3. Copy (atomically), then restart the firmware.
        install_file(args.port, args.file, "config.json")
        if args.secrets:
            install_file(args.port, args.secrets, "secrets.json")
        print("config push: %s" % msg)
        if not args.no_reset:
            reset_device(args.port)
            print("config push: device reset; it starts with the new configuration")
        else:
            print("config push: copied; the device uses it from its next start")
    return 0


def docs(args):
    proc = mpy.run([CLI, "docs"], heapsize=HEAPSIZE, timeout=120)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return 1
    text = proc.stdout
    if args.check:
        try:
            with open(args.output) as f:
                current = f.read()
        except OSError:
            current = ""
        if current != text:
            print("%s is out of date: run `bankgate config docs`" % args.output, file=sys.stderr)
            return 1
        print("%s is up to date" % args.output)
        return 0
    with open(args.output, "w") as f:
        f.write(text)
    print("wrote %s" % args.output)
    return 0


def main(args):
    cmd = getattr(args, "config_command", None)
    if cmd == "check":
        bf = board_file(args.board)
        if bf is not None and not os.path.exists(bf):
            known = sorted(f[:-5] for f in os.listdir(BOARDS_DIR) if f.endswith(".json"))
            print("INVALID board: expected one of %s, found %r" % (", ".join(known), args.board))
            return 1
        ok, msg = run_check(args.file, args.board, args.secrets)
        lines = msg.splitlines()
        if ok:
            print("OK %s" % lines[0])
            for w in lines[1:]:
                print(w)
        else:
            for e in lines:
                print("INVALID %s" % e)
            if len(lines) > 1:
                print("%d errors" % len(lines))
        return 0 if ok else 1
    if cmd == "push":
        return push(args)
    if cmd == "docs":
        return docs(args)
    print("usage: bankgate config check|push|docs ... (see --help)", file=sys.stderr)
    return 2
