# The command line of the MicroPython scripts that run a scenario (the unix port has
# no argparse): tools/cli/cli_simulate.py, tools/rigs/simprof.py.
#
#   path, until, opts = scenario_args(argv, flags=("--all-frames",), options=("--only",))
#
# The first word that is not an option is the scenario file; `--until SECONDS` (a
# float) is common to all of them; a name in `flags` stands alone (opts[name] = True),
# a name in `options` takes the next word (opts[name] = that string).  Anything else
# that starts with "--", a missing value or a missing scenario raises ValueError.


def scenario_args(argv, flags=(), options=()):
    path = None
    until = None
    opts = {}
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--until" or a in options:
            if i + 1 >= len(argv):
                raise ValueError("%s needs a value" % a)
            i += 1
            if a == "--until":
                until = float(argv[i])
            else:
                opts[a] = argv[i]
        elif a in flags:
            opts[a] = True
        elif a.startswith("--"):
            raise ValueError("unknown option %s" % a)
        elif path is None:
            path = a
        else:
            raise ValueError("one scenario file, not %s and %s" % (path, a))
        i += 1
    if path is None:
        raise ValueError("no scenario file")
    return path, until, opts
