"""`bankgate run --sim [SCENARIO] --mqtt HOST:PORT [--seconds N] [--speed X]`

Runs the firmware (the real bankgate.app.Gateway main loop) under the unix MicroPython port
against the simulated bank (tools/sim/bgsim, in real time: the simulated clock follows the
wall clock x --speed) and publishes to a REAL MQTT broker with bankgate.telemetry (topics in
docs/mqtt.md).  Without SCENARIO a built-in 3-module bank runs.  The runner's JSON lines go
to stdout; the exit code is the runner's (0 every expectation held, 1 some failed,
2 invalid scenario/arguments, 3 the firmware could not start).
"""
import os
import subprocess
import sys

from . import mpy

RUN_HEAPSIZE = "2m"   # firmware + bank model + emulated BMSes share this process (see simulate_cmd)


def add_arguments(p):
    p.add_argument("--sim", nargs="?", const="-", metavar="SCENARIO", required=True,
                   help="run against the simulated bank (optionally a scenario JSON file)")
    p.add_argument("--mqtt", required=True, metavar="HOST:PORT", help="MQTT broker to publish to")
    p.add_argument("--seconds", type=float, default=None, help="stop after N real seconds (default: run until Ctrl-C)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
    p.add_argument("--heapsize", default=RUN_HEAPSIZE, help="MicroPython heap for the process")


def parse_hostport(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("--mqtt wants HOST:PORT, got %r" % text)
    return host, int(port)


def command(args):
    host, port = parse_hostport(args.mqtt)
    scen = args.sim if args.sim == "-" else os.path.abspath(args.sim)
    argv = [os.path.join(mpy.CLI, "cli_run.py"), scen, host, str(port)]
    if args.seconds is not None:
        argv += ["--seconds", repr(float(args.seconds))]
    if args.speed != 1.0:
        argv += ["--speed", repr(float(args.speed))]
    return mpy.command(argv, args.heapsize)


def main(args):
    try:
        cmd = command(args)
    except ValueError as e:
        sys.stderr.write("bankgate run: %s\n" % e)
        return 2
    if args.sim != "-" and not os.path.isfile(args.sim):
        sys.stderr.write("bankgate run: no such scenario file: %s\n" % args.sim)
        return 2
    sys.stdout.flush()
    proc = subprocess.Popen(cmd, env=mpy.environ())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return 130
