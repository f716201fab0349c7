"""`bankgate decode` -- decode one BMS frame with the device decoder.

    bankgate decode pylontech '~20024600D05E...E906'            (0x42 by default)
    bankgate decode pace --command 0x44 '~25014600004C...EF3A'
    bankgate decode pylontech --group '~2002...'                (whole-group FF answer)
    bankgate decode pylontech-can 0x351 1402B0044006C201

The decoding runs under the unix MicroPython port (tools/cli/cli_decode.py through
bankgate_host.mpy), i.e. it is exactly the firmware's bankgate.proto code.
Prints one JSON object per frame; exit 0 when accepted, 1 when a frame is rejected
({"ok": false, "error": "<name>: <detail>"}), 2 on usage errors.
    bankgate decode pylontech --file capture.txt                 (one frame a line)
    some-capture | bankgate decode pylontech                       (frames on stdin)
    bankgate decode pylontech-can 0x351 14 02 B0 04 40 06 C2 01   (spaced bytes)

Frames longer than a command line is comfortable with (a 16-pack group answer is
about 2700 characters) go on stdin or in a file (--file, "-" = stdin), one a line;
for pylontech-can a line is "ID DATA" ("0x351 1402B004...", "351#1402B004..." or
spaced bytes).  Every frame reaches MicroPython through a file, never argv (the unix
port interns argv strings, and a string over 255 characters cannot be interned).

On a terminal it prints a text view (volts, amps, %, degC, alarm names); with
--json, or when stdout is not a terminal, one JSON object per frame as before.
"""
import json
import os
import sys
import tempfile

from . import mpy, words


def _int(text):
    return int(text, 0)


def _int(text):
    return int(text, 0)


def add_arguments(p):
    p.add_argument("family", help="protocol family: pylontech, pace, pylontech-can")
    p.add_argument("args", nargs="*", metavar="FRAME",
                   help="RS485: response frame(s) ('~...', CR optional); "
                        "CAN: the CAN id (e.g. 0x351) and the data bytes as hex (spaces allowed). "
                        "None: frames from --file or stdin, one a line")
    p.add_argument("--file", metavar="PATH", help="read frames from PATH, one a line ('-' = stdin)")
    p.add_argument("--command", type=_int, default=0x42,
                   help="RS485 command the frame answers (default 0x42)")
    p.add_argument("--addr", type=_int, default=-1,
                   help="expected reply address (default: the frame's ADR)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--group", dest="mode", action="store_const", const="group",
                   help="the frame answers a whole-group (INFO FF) query")
    g.add_argument("--single", dest="mode", action="store_const", const="single",
                   help="the frame answers a single-pack query (no group detection)")
    p.set_defaults(mode="auto")
    words.add_view_arguments(p)
    # options may come between the frames ("pylontech --text FRAME"): without this argparse
    # gives the optional FRAME list nothing before the first option and then refuses FRAME
    _intermixed(p)


def _intermixed(p):
    def parse_known_args(args=None, namespace=None):
        del p.parse_known_args          # the intermixed parse calls the ordinary one
        try:
            return p.parse_known_intermixed_args(args, namespace)
        finally:
            p.parse_known_args = parse_known_args
    p.parse_known_args = parse_known_args


def _print(obj):
    sys.stdout.write(json.dumps(obj) + "\n")


class UsageError(ValueError):
    pass


def _can_request(parts):
    """(can_id, data text) from ["0x351", "14", "02", ...], ["351#1402..."] or ["0x351", "1402..."]."""
    if len(parts) == 1 and "#" in parts[0]:
        ident, _, data = parts[0].partition("#")
        try:
            return int(ident, 16), data
        except ValueError:
            raise UsageError("CAN id %r is not hex" % ident)
    if len(parts) < 2:
        raise UsageError("bankgate decode pylontech-can CAN_ID HEXDATA (e.g. 0x351 1402B0044006C201)")
    try:
        cmd = _int(parts[0])
    except ValueError:
        raise UsageError("CAN id %r is not a number" % parts[0])
    return cmd, " ".join(parts[1:])


def _read_lines(path):
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, "r", errors="replace") as f:
            text = f.read()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def requests(args):
    """The [family, command, mode, addr, payload] list for cli_decode.py --batch."""
    if args.args and args.file:
        raise UsageError("give frames either as arguments or with --file, not both")
    if args.args:
        lines = None
    else:
        path = args.file or "-"
        if path == "-" and sys.stdin.isatty():
            raise UsageError("no frame: give it as an argument, with --file PATH, or on stdin")
        try:
            lines = _read_lines(path)
        except OSError as e:
            raise UsageError("cannot read %s: %s" % (path, e.strerror or e))
        if not lines:
            raise UsageError("no frame in %s" % ("stdin" if path == "-" else path))
    out = []
    if args.family == "pylontech-can":
        if lines is None:
            cmd, data = _can_request(args.args)
            out.append([args.family, cmd, args.mode, args.addr, data])
        else:
            for ln in lines:
                cmd, data = _can_request(ln.split())
                out.append([args.family, cmd, args.mode, args.addr, data])
    else:
        for frame in (args.args if lines is None else lines):
            out.append([args.family, args.command, args.mode, args.addr, frame])
    return out


# the longest frame of the ASCII framing (cli_decode.MAX_FRAME_CHARS): longer input is answered
# here, without loading it into the decoder's heap
MAX_FRAME_CHARS = 1 + 12 + 0xFFF + 4 + 1
MAX_CAN_CHARS = 64


def decode(reqs, timeout=120):
    """Decode reqs; returns (objects, worst exit code).  Oversized payloads are refused here,
    the rest go through cli_decode.py --batch."""
    local = {}
    for i, r in enumerate(reqs):
        limit = MAX_CAN_CHARS if r[0] == "pylontech-can" else MAX_FRAME_CHARS
        if len(r[4]) > limit:
            local[i] = {"ok": False, "error": "length: %d characters: no frame of the protocol is longer "
                                              "than %d" % (len(r[4]), limit)}
    if not local:
        return _decode(reqs, timeout)
    rest = [r for i, r in enumerate(reqs) if i not in local]
    objs, rc = _decode(rest, timeout) if rest else ([], 0)
    if len(objs) != len(rest):
        return objs, rc
    it = iter(objs)
    out = [local[i] if i in local else next(it) for i in range(len(reqs))]
    return out, max(rc, 1)


def _decode(reqs, timeout):
    script = os.path.join(mpy.CLI, "cli_decode.py")
    fd, path = tempfile.mkstemp(prefix="bgdecode-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(reqs, f)
        proc = mpy.run([script, "--batch", path], timeout=timeout)
    finally:
        os.unlink(path)
    objs = []
    junk = []
    for line in proc.stdout.strip().splitlines():
        try:
            objs.append(json.loads(line))
        except ValueError:
            junk.append(line)
    if len(objs) != len(reqs):
        # the decoder's last error line only (e.g. "MemoryError: ..."), never a whole traceback
        why = (junk or proc.stderr.strip().splitlines() or ["no message"])[-1][:300]
        objs.append({"ok": False, "error": "internal: decoder stopped after %d of %d frames: %s"
                     % (len(objs), len(reqs), why)})
        return objs, 3
    return objs, proc.returncode


def main(args):
    text = words.use_text(args)
    try:
        reqs = requests(args)
    except UsageError as e:
        if text:
            sys.stderr.write("bankgate decode: %s\n" % e)
        else:
            _print({"ok": False, "error": "usage: %s" % e})
        return 2
    objs, rc = decode(reqs)
    for i, obj in enumerate(objs):
        obj.pop("code", None)
        if text:
            label = "frame %d" % (i + 1) if len(objs) > 1 else None
            sys.stdout.write("\n".join(words.decode_text(obj, label)) + "\n")
        else:
            _print(obj)
    return rc
