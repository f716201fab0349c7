"""`bankgate decode` -- decode one BMS frame with the device decoder.

    bankgate decode pylontech '~20024600D05E...E906'            (0x42 by default)
    bankgate decode pace --command 0x44 '~25014600004C...EF3A'
    bankgate decode pylontech --group '~2002...'                (whole-group FF answer)
    bankgate decode pylontech-can 0x351 1402B0044006C201

The decoding runs under the unix MicroPython port (tools/cli/cli_decode.py through
bankgate_host.mpy), i.e. it is exactly the firmware's bankgate.proto code.
Prints one JSON object; exit 0 when accepted, 1 when the frame is rejected
({"ok": false, "error": "<name>: <detail>"}), 2 on usage errors.
"""
import json
import os
import sys

from . import mpy


def _int(text):
    return int(text, 0)


def add_arguments(p):
    p.add_argument("family", help="protocol family: pylontech, pace, pylontech-can")
    p.add_argument("args", nargs="+", metavar="FRAME",
                   help="RS485: the response frame ('~...', CR optional); "
                        "CAN: the CAN id (e.g. 0x351) and the data bytes as hex")
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


def _print(obj):
    sys.stdout.write(json.dumps(obj) + "\n")


def main(args):
    if args.family == "pylontech-can":
        if len(args.args) != 2:
            _print({"ok": False, "error": "usage: bankgate decode pylontech-can CAN_ID HEXDATA"})
            return 2
        try:
            cmd = _int(args.args[0])
        except ValueError:
            _print({"ok": False, "error": "usage: CAN id %r is not a number" % args.args[0]})
            return 2
        payload = args.args[1]
    else:
        if len(args.args) != 1:
            _print({"ok": False, "error": "usage: bankgate decode FAMILY [--command 0xNN] FRAME"})
            return 2
        cmd = args.command
        payload = args.args[0]
    script = os.path.join(mpy.CLI, "cli_decode.py")
    proc = mpy.run([script, args.family, str(cmd), args.mode, str(args.addr), payload], timeout=60)
    out = proc.stdout.strip().splitlines()
    if not out:
        _print({"ok": False, "error": "internal: decoder produced no output: %s" % proc.stderr.strip()})
        return 3
    try:
        obj = json.loads(out[-1])
    except ValueError:
        _print({"ok": False, "error": "internal: %s %s" % (proc.stdout.strip(), proc.stderr.strip())})
        return 3
    obj.pop("code", None)
    _print(obj)
    return proc.returncode
