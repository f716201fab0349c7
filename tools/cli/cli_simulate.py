# MicroPython back end of `bankgate simulate` (tools/bankgate_host/simulate_cmd.py):
#
#   micropython cli_simulate.py SCENARIO.json [--until SECONDS] [--all-frames]
#
# Runs the scenario (bgsim.runner) and prints JSON lines; exits with the runner's
# code (0: every expectation held, 1: some failed, 2: invalid scenario, 3: the
# firmware could not start).
import sys

from bgsim import cmdline, runner


def main(argv):
    try:
        path, until, opts = cmdline.scenario_args(argv, flags=("--all-frames",))
    except ValueError as e:
        sys.stderr.write("cli_simulate.py: %s\n" % e)
        sys.stderr.write("usage: cli_simulate.py SCENARIO.json [--until SECONDS] [--all-frames]\n")
        return 2
    return runner.run_file(path, until, all_frames=opts.get("--all-frames", False))


sys.exit(main(sys.argv))
