"""Run a command while load generators keep every core busy (`make test-busy`).

    python3 tools/dev/busy.py [--burners N] [--] COMMAND ...

Starts N processes (default: one per core, os.cpu_count()) that spin in a Python
loop, runs COMMAND (default: `make test`), then stops exactly the burners it
started (by their process ids) and exits with COMMAND's exit code.  It prints
the burners' CPU time at the end, as the evidence that they really competed
for the cores during the run.  The suite must pass like this: no test may
depend on how fast the machine is (docs/testing.md, "A loaded machine").
"""
import os
import subprocess
import sys
import time

BURN = "while True: pass"


def _cpu_s(pid):
    # utime + stime of a child, from /proc (Linux); None elsewhere
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main(argv):
    n = os.cpu_count() or 2
    if len(argv) > 2 and argv[1] == "--burners":
        n = int(argv[2])
        argv = argv[:1] + argv[3:]
    if len(argv) > 1 and argv[1] == "--":
        argv = argv[:1] + argv[2:]
    cmd = argv[1:] or ["make", "test"]
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
    print("busy: %d burner(s) %s, running: %s" % (n, [b.pid for b in burners], " ".join(cmd)),
          flush=True)
    t0 = time.monotonic()
    try:
        rc = subprocess.call(cmd)
    finally:
        cpu = [_cpu_s(b.pid) for b in burners]
        for b in burners:
            b.kill()
        for b in burners:
            b.wait()
    wall = time.monotonic() - t0
    shown = ", ".join("%.1f s" % c for c in cpu if c is not None) or "n/a"
    print("busy: exit %d after %.0f s wall; burners' CPU time %s" % (rc, wall, shown), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
