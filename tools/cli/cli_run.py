# MicroPython back end of `bankgate run --sim` (tools/bankgate_host/run_cmd.py):
#
#   micropython cli_run.py SCENARIO.json|- HOST PORT [--seconds N] [--speed X]
#
# The REAL firmware main loop (bankgate.app.Gateway via bgsim.runner.run_realtime) on the
# simulated bank, with its simulated clock following wall time x speed, publishing to a
# REAL MQTT broker through bankgate.telemetry on the unix port's sockets.  SCENARIO "-" runs a
# built-in 3-module bank.  The scenario's own "config" is kept; mqtt.enabled/host/port are
# set from the command line.  Prints the runner's JSON lines; exits with its code.
import sys

from bankgate.net import Net
from bgsim import runner

_DEFAULT = {"name": "run", "duration_s": 86400, "modules": [{}, {}, {}]}


def main(argv):
    if len(argv) < 4:
        sys.stderr.write("usage: cli_run.py SCENARIO.json|- HOST PORT [--seconds N] [--speed X]\n")
        return 2
    path, host, port = argv[1], argv[2], int(argv[3])
    seconds = None
    speed = 1.0
    i = 4
    while i < len(argv):
        if argv[i] == "--seconds":
            seconds = float(argv[i + 1])
        elif argv[i] == "--speed":
            speed = float(argv[i + 1])
        i += 2
    try:
        if path == "-":
            s = dict(_DEFAULT)
        else:
            import json
            with open(path) as f:
                s = json.load(f)          # raw: the runner validates it (once)
        if type(s) is not dict:
            raise ValueError("not a JSON object")
    except Exception as e:
        print('{"t": 0.0, "type": "error", "error": "invalid scenario %s: %s"}' % (path, e))
        return 2
    cfgd = s.setdefault("config", {})
    m = cfgd.setdefault("mqtt", {})
    m["enabled"] = True
    m["host"] = host
    m["port"] = port
    until = seconds * speed if seconds else None
    try:
        return runner.run_realtime(s, until, speed, net=Net())
    except Exception as e:  # invalid scenario/config: the runner's ScenarioError / ConfigError
        print('{"t": 0.0, "type": "error", "error": "invalid scenario %s: %s"}' % (path, e))
        return 2


sys.exit(main(sys.argv))
