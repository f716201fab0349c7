# MicroPython back end of `bankgate simulate` (tools/bankgate_host/simulate_cmd.py):
#
#   micropython cli_simulate.py SCENARIO.json [--until SECONDS] [--all-frames]
#
# Runs the scenario (bgsim.runner) and prints JSON lines; exits with the runner's
# code (0: every expectation held, 1: some failed, 2: invalid scenario, 3: the
# firmware could not start).
import sys

from bgsim import runner


def main(argv):
    path = None
    until = None
    all_frames = False
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--until":
            i += 1
            until = float(argv[i])
        elif a == "--all-frames":
            all_frames = True
        else:
            path = a
        i += 1
    if path is None:
        sys.stderr.write("usage: cli_simulate.py SCENARIO.json [--until SECONDS] [--all-frames]\n")
        return 2
    return runner.run_file(path, until, all_frames=all_frames)


sys.exit(main(sys.argv))
