"""The unix-port "board": MicroPython behind a pseudo-terminal, with a reset that works.

    python -m bankgate_host.unixdevice serve DIR TTY [--heapsize 512k]
        make DIR the device's "/" and TTY its USB serial port (socat), until Ctrl-C.
    python -m bankgate_host.unixdevice boot [--heapsize 512k]
        (run by socat on the pty) the device's power: `micropython -i` (a freshly
        flashed board: the REPL), and after every reset `micropython -i main.py`.

A reset on the ESP32 is `machine.reset()`.  The unix port has none, and Ctrl-D at its
REPL ends the process, so `bankgate deploy` / `config push` reset a board with one
script (config_cmd.RESET_SCRIPT) that calls `machine.reset()` on an ESP32 and elsewhere
ends the unix process with RESET_EXIT; `boot` then powers the device on again with
main.py -- what the board does after its reset.  Any other exit ends `boot` (and socat).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

from . import mpy

RESET_EXIT = 99
DEVICE_HEAPSIZE = "512k"     # the whole firmware on the 64-bit port (docs/deployment.md)


def boot(heapsize=DEVICE_HEAPSIZE, main=False):
    binary = mpy.micropython_binary()
    script = ["main.py"] if main else []
    while True:
        rc = subprocess.call([binary, "-X", "heapsize=%s" % heapsize, "-i"] + script)
        if rc != RESET_EXIT:
            return rc
        script = ["main.py"]          # after a reset the board runs main.py


def device_path(root):
    """MICROPYPATH of a device rooted at ROOT: what was deployed (ROOT/lib) and the fakes and
    the simulator (compiled), as on docs/deployment.md's unix-port device."""
    sim = [p for p in mpy.compiled_path() if p.endswith((os.sep + "fakes", os.sep + "sim"))]
    return os.pathsep.join([os.path.join(root, "lib")] + sim)


class UnixDevice:
    """socat PTY <-> `python -m bankgate_host.unixdevice boot`, cwd = ROOT."""

    def __init__(self, root, tty, heapsize=DEVICE_HEAPSIZE):
        self.root = root
        self.tty = tty
        self.heapsize = heapsize
        self.proc = None
        self._log = None
        self.log = os.path.join(os.path.dirname(os.path.abspath(tty)), "socat.log")

    def start(self, main=False):
        """main False: a freshly flashed board (REPL only); True: power-on into main.py."""
        self.stop()
        if os.path.lexists(self.tty):
            os.unlink(self.tty)
        cmd = "%s -m bankgate_host.unixdevice boot --heapsize %s%s" % (
            sys.executable, self.heapsize, " --main" if main else "")
        env = dict(os.environ, MICROPYPATH=device_path(self.root))
        self._log = open(self.log, "a")
        self.proc = subprocess.Popen(
            ["socat", "PTY,link=%s,raw,echo=0" % self.tty, "EXEC:%s,pty,raw,echo=0,stderr" % cmd],
            cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 30
        while not os.path.exists(self.tty):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("socat did not create %s (see %s)" % (self.tty, self.log))
            time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bankgate_host.unixdevice")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot", help="(on the pty) run the device, restarting it with main.py on reset")
    b.add_argument("--heapsize", default=DEVICE_HEAPSIZE)
    b.add_argument("--main", action="store_true", help="power on into main.py (default: REPL only)")
    s = sub.add_parser("serve", help="make DIR a device on TTY until Ctrl-C")
    s.add_argument("root", metavar="DIR")
    s.add_argument("tty", metavar="TTY")
    s.add_argument("--heapsize", default=DEVICE_HEAPSIZE)
    s.add_argument("--main", action="store_true", help="power on into main.py (default: REPL only)")
    a = p.parse_args(argv)
    if a.cmd == "boot":
        return boot(a.heapsize, a.main)
    if shutil.which("socat") is None:
        print("unixdevice: socat is not installed (apt-get install socat)", file=sys.stderr)
        return 2
    os.makedirs(a.root, exist_ok=True)
    dev = UnixDevice(os.path.abspath(a.root), a.tty, a.heapsize)
    dev.start(a.main)
    print("unixdevice: %s is the serial port of the device in %s (Ctrl-C ends it)" % (a.tty, a.root))
    try:
        while dev.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
