# The shared command line of the scenario scripts (tools/sim/bgsim/cmdline.py):
# cli_simulate.py (`bankgate simulate`) and simprof.py.
import mptest

from bgsim.cmdline import scenario_args


def test_path_until_flags_and_options():
    path, until, opts = scenario_args(["x.py", "--until", "12.5", "s.json", "--all-frames", "--only",
                                       "a,b"], flags=("--all-frames",), options=("--only",))
    assert path == "s.json" and until == 12.5
    assert opts == {"--all-frames": True, "--only": "a,b"}
    assert scenario_args(["x.py", "s.json"]) == ("s.json", None, {})


def test_bad_command_lines_are_refused():
    for argv in (["x.py"], ["x.py", "--until"], ["x.py", "s.json", "--until", "soon"],
                 ["x.py", "s.json", "--nope"], ["x.py", "a.json", "b.json"]):
        mptest.raises(ValueError, scenario_args, argv, ("--all-frames",))
