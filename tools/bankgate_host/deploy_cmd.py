"""`bankgate deploy --port P --board B --config C` -- put the firmware on a board.

1. The board file (boards/B.json) and the configuration are validated with the
   device validator under the unix port; anything invalid stops here, before the
   device is touched.
2. lib/bankgate and lib/umqtt are compiled with `mpy-cross -march=xtensawin` into
   build/deploy/ (bytecode .mpy: smaller, no compile RAM on the device).
3. mpremote (`connect P resume ...`, one session): the old lib/bankgate and
   lib/umqtt are removed (a stale .py would shadow its new .mpy), then the .mpy
   tree, firmware/boot.py and main.py, the board file as /board.json, the
   configuration as /config.json (and --secrets as /secrets.json) are copied.
4. The board is reset (unless --no-reset) and starts the firmware.

Device layout after a deploy (docs/deployment.md):
    /boot.py  /main.py  /board.json  /config.json  [/secrets.json]
    /lib/bankgate/**.mpy  /lib/umqtt/simple.mpy
"""
import os
import shutil
import subprocess
import sys

from . import REPO, mpy
from .config_cmd import BOARDS_DIR, install_file, mpremote, reset_device, run_check

LIB = os.path.join(REPO, "lib")
FIRMWARE = os.path.join(REPO, "firmware")
PACKAGES = ("bankgate", "umqtt")
ENTRY_POINTS = ("boot.py", "main.py")

# Run on the device before copying: remove the old packages, create the directories.
_PREPARE = """
import os
def _rm(p):
    try:
        st = os.stat(p)
    except OSError:
        return
    if st[0] & 0x4000:
        for e in os.ilistdir(p):
            _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
for p in %r:
    _rm(p)
for d in %r:
    try:
        os.mkdir(d)
    except OSError:
        pass
"""


def add_arguments(p):
    p.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB0)")
    p.add_argument("--board", required=True, help="board name (boards/<name>.json)")
    p.add_argument("--config", required=True, help="configuration file (validated first)")
    p.add_argument("--secrets", help="secrets file (Wi-Fi / MQTT credentials), validated first")
    p.add_argument("--march", default="xtensawin",
                   help="mpy-cross architecture (default xtensawin: ESP32 and ESP32-S3)")
    p.add_argument("--build-dir", default=os.path.join(REPO, "build", "deploy"))
    p.add_argument("--build-only", action="store_true", help="validate and compile; copy nothing")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")


def compile_tree(build_dir, march="xtensawin"):
    """Compile lib/<package>/**.py into build_dir/lib/...mpy.  Returns [(src, rel)]
    with rel the path on the device (e.g. lib/bankgate/app.mpy)."""
    out_root = os.path.join(build_dir, "lib")
    if os.path.isdir(out_root):
        shutil.rmtree(out_root)
    files = []
    cross = mpy.mpy_cross_binary()
    for pkg in PACKAGES:
        root = os.path.join(LIB, pkg)
        if not os.path.isdir(root):
            raise RuntimeError("%s is missing (run `make setup`, which fetches umqtt)" % root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fn in sorted(filenames):
                if not fn.endswith(".py"):
                    continue
                src = os.path.join(dirpath, fn)
                rel = os.path.relpath(src, REPO)[:-3] + ".mpy"
                dst = os.path.join(build_dir, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                proc = subprocess.run([cross, "-march=" + march, "-o", dst, src],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError("mpy-cross %s: %s" % (src, proc.stderr.strip()))
                files.append((dst, rel))
    return files


def plan(files):
    """mpremote commands copying the compiled tree and the entry points."""
    dirs = sorted({os.path.dirname(rel) for _, rel in files})
    all_dirs = []
    for d in dirs:
        parts = d.split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in all_dirs:
                all_dirs.append(p)
    remove = ["lib/" + pkg for pkg in PACKAGES]
    cmds = ["exec", _PREPARE % (remove, all_dirs)]
    for src, rel in files:
        cmds += ["+", "cp", src, ":" + rel]
    for name in ENTRY_POINTS:
        cmds += ["+", "cp", os.path.join(FIRMWARE, name), ":" + name]
    return cmds


def main(args):
    board_path = os.path.join(BOARDS_DIR, args.board + ".json")
    if not os.path.exists(board_path):
        known = sorted(f[:-5] for f in os.listdir(BOARDS_DIR) if f.endswith(".json"))
        print("deploy: unknown board %r (known: %s)" % (args.board, ", ".join(known)), file=sys.stderr)
        return 1
    if not args.port and not args.build_only:
        from .config_cmd import NO_PORT
        print("deploy: %s (or --build-only)" % NO_PORT, file=sys.stderr)
        return 2
    ok, msg = run_check(args.config, args.board, args.secrets)
    if not ok:
        print("deploy: refused, nothing copied: %s" % msg, file=sys.stderr)
        return 1
    print("deploy: %s" % msg)
    try:
        files = compile_tree(args.build_dir, args.march)
    except RuntimeError as e:
        print("deploy: %s" % e, file=sys.stderr)
        return 1
    print("deploy: compiled %d modules (-march=%s) into %s" % (len(files), args.march, args.build_dir))
    if args.build_only:
        return 0
    try:
        mpremote(args.port, *plan(files), timeout=600)
        install_file(args.port, board_path, "board.json")
        install_file(args.port, args.config, "config.json")
        if args.secrets:
            install_file(args.port, args.secrets, "secrets.json")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print("deploy: copy failed: %s" % e, file=sys.stderr)
        return 1
    print("deploy: copied firmware, board %s and configuration to %s" % (args.board, args.port))
    if not args.no_reset:
        reset_device(args.port)
        print("deploy: board reset; the firmware starts")
    return 0
