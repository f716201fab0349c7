"""`bankgate` -- the one front door for users and tests.

Every subcommand that runs firmware logic runs it under the unix MicroPython
port (bankgate_host.mpy); this CPython layer only parses arguments, starts
processes and talks to hardware over USB.
"""
import argparse
import importlib
import sys

from . import VERSION

# name -> (module in bankgate_host, one-line help).  Each module has
# add_arguments(parser) and main(args) -> exit code.
SUBCOMMANDS = [
    ("run", "run_cmd", "run the firmware on the unix port (simulated bank, real MQTT broker)"),
    ("simulate", "simulate_cmd", "run a scenario against the simulated bank (text on a terminal, --json: JSON lines)"),
    ("decode", "decode_cmd", "decode BMS frames (argument, --file or stdin) with the device decoder (text on a terminal, --json)"),
    ("config", "config_cmd", "check a configuration file / push it to a board"),
    ("deploy", "deploy_cmd", "compile and copy the firmware to a board with mpremote"),
    ("flash", "flash_cmd", "write the official MicroPython image to a board with esptool"),
    ("status", "status_cmd", "read live state and latched faults over USB; local fault reset"),
    ("bench", "bench_cmd", "benchmarks: CPU vs wire time, allocations, heap, fixed vs float"),
    ("demo", "demo_cmd", "the demo: simulated 3-module bank, embedded broker, live view"),
    ("commission", "commission_cmd", "commissioning assistant (15 steps, charge/discharge test) and HTML report"),
]


def build_parser():
    p = argparse.ArgumentParser(
        prog="bankgate",
        description="bankgate: ESP32 gateway that admits parallel battery modules safely.")
    p.add_argument("--version", action="version", version="bankgate %s" % VERSION)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname, helptext in SUBCOMMANDS:
        sp = sub.add_parser(name, help=helptext, description=helptext)
        sp.set_defaults(_module=modname)
        mod = _load(modname)
        if mod is not None:
            mod.add_arguments(sp)
    return p


def _load(modname):
    try:
        return importlib.import_module("bankgate_host." + modname)
    except ModuleNotFoundError as e:
        if e.name == "bankgate_host." + modname:
            return None
        raise


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mod = _load(args._module)
    if mod is None:
        sys.stderr.write("bankgate %s: not available in this build\n" % args.command)
        return 2
    return mod.main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
