# MicroPython side of bankgate_host.mpy.MpWorker: one JSON request per stdin line,
# one reply per stdout line prefixed with \x1e (so stray prints are skipped).
import io
import json
import sys


def _reply(obj):
    sys.stdout.write("\x1e")
    sys.stdout.write(json.dumps(obj))
    sys.stdout.write("\n")


def main():
    mods = {}
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        try:
            req = json.loads(line)
            name = req["m"]
            mod = mods.get(name)
            if mod is None:
                mod = __import__(name, None, None, ["_"])
                mods[name] = mod
            _reply({"ok": getattr(mod, req["f"])(*req["a"])})
        except Exception as e:
            buf = io.StringIO()
            sys.print_exception(e, buf)
            _reply({"err": buf.getvalue()})


main()
