# MicroPython back end of `bankgate commission --sim` (tools/bankgate_host/commission_cmd.py):
#
#   micropython cli_commission.py SCENARIO.json [--report-s SECONDS] [--until SECONDS]
#
# Runs the scenario on the simulated bank exactly as `bankgate simulate` does (bgsim.runner,
# the real firmware main loop) and prints the same JSON lines, preceded by one line
# {"type": "config", "config": ...}: the gateway configuration as the firmware's validator
# resolved it (defaults filled in), which the commissioning assistant needs for its limits.
# --report-s overrides the scenario's report_s (the assistant samples every second).
# Exit code: the runner's (0 every expectation held, 1 some failed, 2 invalid, 3 no start).
import sys

from bgsim import runner
from bgsim import scenario as sc
from bankgate import config as bgconfig


def main(argv):
    path = None
    until = None
    report_s = None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--until":
            i += 1
            until = float(argv[i])
        elif a == "--report-s":
            i += 1
            report_s = float(argv[i])
        else:
            path = a
        i += 1
    if path is None:
        sys.stderr.write("usage: cli_commission.py SCENARIO.json [--report-s S] [--until S]\n")
        return 2
    out = runner.print_line
    try:
        s = sc.load(path)
        if report_s is not None:
            s["report_s"] = report_s
        sim = runner.Simulation(s, out)
    except (sc.ScenarioError, bgconfig.ConfigError, ValueError, OSError) as e:
        out({"t": 0.0, "type": "error", "error": "invalid scenario %s: %s" % (path, e)})
        return runner.RC_INVALID
    out({"t": 0.0, "type": "config", "config": sim.cfg})
    return sim.run(until)


sys.exit(main(sys.argv))
