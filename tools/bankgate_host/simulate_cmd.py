"""`bankgate simulate --scenario FILE [--until T]`: run a scenario against the
simulated bank with the REAL firmware main loop, under the unix MicroPython port.

Prints the runner's JSON lines as they come (see docs/scenarios.md) and exits
with its code: 0 every expectation held, 1 some failed, 2 invalid scenario,
3 the firmware could not start.

The simulator process gets a larger heap than the firmware's budget
(SIM_HEAPSIZE): the heap is shared by the firmware AND the bank model, the
16 emulated BMSes, the fake buses and the recorded output.  The firmware's own
memory budget is proven by its tests under mpy.DEFAULT_HEAPSIZE.
"""
import os
import subprocess
import sys

from . import mpy

SIM_HEAPSIZE = "2m"
# The simulator runs the firmware and the bank model compiled to machine code (mpy.EMITS):
# the same source and the same output line for line (tests/host/test_simulate_cli.py), at
# about twice the speed; the device and the logic tests run bytecode.
SIM_EMIT = "native"


def add_arguments(p):
    p.add_argument("--scenario", required=True, metavar="FILE", help="scenario JSON file (docs/scenarios.md)")
    p.add_argument("--until", type=float, default=None, metavar="T",
                   help="stop after T simulated seconds (default: the scenario's duration_s)")
    p.add_argument("--all-frames", action="store_true",
                   help="print every CAN frame sent to the inverter (default: only frames whose data changed)")
    p.add_argument("--heapsize", default=SIM_HEAPSIZE, help="MicroPython heap for the simulator process")
    p.add_argument("--emit", choices=mpy.EMITS, default=SIM_EMIT,
                   help="how the firmware and the model are compiled for the run (default %s: every "
                        "function machine code, ~2x faster; bytecode: as on the device; the output "
                        "is the same)" % SIM_EMIT)


def command(args):
    script = os.path.join(mpy.CLI, "cli_simulate.py")
    argv = [script, os.path.abspath(args.scenario)]
    if args.until is not None:
        argv += ["--until", repr(float(args.until))]
    if args.all_frames:
        argv.append("--all-frames")
    return mpy.command(argv, args.heapsize)


def main(args):
    if not os.path.isfile(args.scenario):
        sys.stderr.write("bankgate simulate: no such scenario file: %s\n" % args.scenario)
        return 2
    sys.stdout.flush()
    proc = subprocess.Popen(command(args), env=mpy.environ(emit=args.emit))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return 130
