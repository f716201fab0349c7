# MicroPython-side test runner, driven by bankgate_host.pytest_mpy.
#
#   micropython -X heapsize=N mptest_run.py HEAPSIZE_BYTES path/to/test_x.py name1 name2 ...
#
# Imports the test module and calls each named zero-argument function.  For each
# test it prints a begin marker, lets the test print freely, then one result
# record: "\x1eMPT " + JSON {"name", "status": pass|fail|skip, "tb"}.
import gc
import io
import json
import sys

import mptest


def _record(name, status, tb=""):
    sys.stdout.write("\n\x1eMPT ")
    sys.stdout.write(json.dumps({"name": name, "status": status, "tb": tb}))
    sys.stdout.write("\n")


def main(argv):
    mptest.heapsize = int(argv[1])
    path = argv[2]
    names = argv[3:]
    d, _, fname = path.rpartition("/")
    sys.path.insert(0, d or ".")
    try:
        mod = __import__(fname.rpartition(".")[0])
    except Exception as e:
        buf = io.StringIO()
        sys.print_exception(e, buf)
        for name in names:
            _record(name, "fail", "error importing %s:\n%s" % (path, buf.getvalue()))
        return
    for name in names:
        sys.stdout.write("\x1eMPT-BEGIN %s\n" % name)
        gc.collect()
        try:
            getattr(mod, name)()
            _record(name, "pass")
        except mptest.SkipTest as e:
            _record(name, "skip", str(e))
        except BaseException as e:  # a test's SystemExit is a failure too
            buf = io.StringIO()
            sys.print_exception(e, buf)
            _record(name, "fail", buf.getvalue())


main(sys.argv)
