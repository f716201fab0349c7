"""The firmware frozen into the 32-bit unix port: heap figures as on the device.

The kit (../shared/micropython32/: a static 32-bit MicroPython unix port, its source and
build.sh) builds a binary with firmware/manifest.py frozen in: bytecode and constant data
live in the executable (as in ESP32 flash), 31-bit small ints, 4-byte words and 16-byte GC
blocks, so gc.mem_alloc() counts what the device's heap holds.  `bankgate bench` and
tests/host/test_heap32.py run tools/rigs/bench_alone.py on it.

    kit_dir()             the kit: $BANKGATE_MP32_KIT, else the first shared/micropython32/
                          beside the repository or beside one of its parent directories
    frozen_binary()       build (or reuse) build/frozen32/micropython-frozen-<key>, key = a hash
                          of the manifest, every lib/ source and the kit's build.sh + source
    run(args, heapsize)   run a tools/rigs module (-m) on it; the firmware comes from the
                          frozen image only (lib/ is not on MICROPYPATH)
"""
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess

from . import REPO, mpy

ENV_KIT = "BANKGATE_MP32_KIT"
MANIFEST = os.path.join(REPO, "firmware", "manifest.py")
OUT = os.path.join(REPO, "build", "frozen32")
MARCH = "x86"


class KitMissing(RuntimeError):
    pass


def kit_dir():
    env = os.environ.get(ENV_KIT)
    if env:
        if not os.path.isfile(os.path.join(env, "build.sh")):
            raise KitMissing("%s=%s has no build.sh" % (ENV_KIT, env))
        return os.path.abspath(env)
    d = REPO
    while True:
        parent = os.path.dirname(d)
        cand = os.path.join(parent, "shared", "micropython32")
        if os.path.isfile(os.path.join(cand, "build.sh")):
            return cand
        if parent == d:
            raise KitMissing("no shared/micropython32/ (with build.sh) beside the repository; "
                             "set %s" % ENV_KIT)
        d = parent


def _sources():
    files = [MANIFEST]
    for root, dirs, names in os.walk(os.path.join(REPO, "lib")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    return files


def source_key(kit=None):
    """Hash of what the frozen image is made of: the manifest, lib/ and the kit."""
    kit = kit or kit_dir()
    h = hashlib.sha256()
    for p in _sources() + [os.path.join(kit, "build.sh")]:
        h.update(os.path.relpath(p, REPO).encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    st = os.stat(os.path.join(kit, "micropython-src.tar.xz"))
    h.update(("%d" % st.st_size).encode())
    return h.hexdigest()[:16]


def frozen_binary(log=None):
    """The frozen 32-bit binary of the current sources, building it when it is missing
    (about 2 minutes; later builds reuse the kit's extracted source and objects)."""
    kit = kit_dir()
    key = source_key(kit)
    dest = os.path.join(OUT, "micropython-frozen-" + key)
    if os.path.exists(dest):
        return dest
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # one build at a time (pytest -n 2 may ask twice)
        if os.path.exists(dest):
            return dest
        return _build(kit, dest)


def _build(kit, dest):
    # make re-freezes a module only when its source is newer than its frozen .mpy: a source
    # switched to an older version (git checkout) would be missed, so freeze every module anew
    for stale in glob.glob(os.path.join(OUT, ".src-*", "ports", "unix", "build-frozen32", "frozen_mpy")):
        shutil.rmtree(stale, ignore_errors=True)
    logpath = os.path.join(OUT, "build.log")
    with open(logpath, "w") as f:
        proc = subprocess.run([os.path.join(kit, "build.sh"), OUT, MANIFEST], stdout=f,
                              stderr=subprocess.STDOUT, timeout=3600)
    if proc.returncode != 0:
        with open(logpath) as f:
            tail = f.read()[-3000:]
        raise RuntimeError("build.sh failed (rc=%d), %s:\n%s" % (proc.returncode, logpath, tail))
    tmp = dest + ".%d.tmp" % os.getpid()
    shutil.copy2(os.path.join(OUT, "micropython-frozen"), tmp)
    os.replace(tmp, dest)
    for old in glob.glob(os.path.join(OUT, "micropython-frozen-*")):   # keep the newest few
        if old != dest and not old.endswith(".tmp"):
            try:
                if os.path.getmtime(old) < os.path.getmtime(dest) - 86400 * 7:
                    os.unlink(old)
            except OSError:
                pass
    return dest


def command(module, args=(), heapsize="96k", binary=None):
    return [binary or frozen_binary(), "-X", "heapsize=" + heapsize, "-m", module] + list(args)


def environ():
    env = dict(os.environ)
    # .frozen first: the firmware (and umqtt) come from the image; the host-side helpers
    # (tools/cli, harness, rigs, fakes, sim; tests/fuzz, support) are .mpy compiled for x86 (their bytecode is on the
    # heap: bench_alone.py measures from a baseline taken after importing them)
    env["MICROPYPATH"] = os.pathsep.join([".frozen"] + mpy.compiled_path("bytecode", MARCH, skip=("lib",)))
    return env


def run(module, args=(), heapsize="96k", binary=None, timeout=1800):
    return subprocess.run(command(module, args, heapsize, binary), env=environ(), cwd=OUT,
                          capture_output=True, text=True, timeout=timeout)
