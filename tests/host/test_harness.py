"""The MicroPython test harness reports like ordinary pytest tests."""
import textwrap

import pytest

from bankgate_host import mpy
from bankgate_host.pytest_mpy import parse_size

pytest_plugins = ["pytester"]


def _write(pytester, body, name="test_sample.py"):
    d = pytester.path / "mp"
    d.mkdir(exist_ok=True)
    (d / name).write_text(textwrap.dedent(body))


def test_each_function_is_an_item_and_failure_shows_micropython_traceback(pytester):
    _write(pytester, """
        import sys

        def helper(x):
            assert x == 2, "x was %d" % x

        def test_good():
            assert sys.implementation.name == "micropython"

        def test_bad():
            print("diagnostic from inside")
            helper(3)
        """)
    res = pytester.runpytest("-p", "bankgate_host.pytest_mpy", "-v")
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    assert "test_good PASSED" in out and "test_bad FAILED" in out
    assert "MicroPython traceback" in out
    assert "in helper" in out and "AssertionError: x was 3" in out
    assert "diagnostic from inside" in out


def test_skip_and_heapsize_directive(pytester):
    _write(pytester, """
        # mpy-heapsize: 32k
        import gc, mptest

        def test_small_heap():
            gc.collect()
            assert mptest.heapsize == HEAP, mptest.heapsize
            mptest.raises(MemoryError, bytearray, 40 * 1024)

        def test_skipped():
            mptest.skip("no CAN on this port")
        """.replace("HEAP", str(parse_size(mpy.heapsize_for_lane("32k")))))   # 24k on a 32-bit lane
    res = pytester.runpytest("-p", "bankgate_host.pytest_mpy", "-rs")
    res.assert_outcomes(passed=1, skipped=1)
    assert "no CAN on this port" in res.stdout.str()


def test_import_error_fails_every_test(pytester):
    _write(pytester, """
        import no_such_module_here

        def test_a():
            pass
        """)
    res = pytester.runpytest("-p", "bankgate_host.pytest_mpy")
    res.assert_outcomes(failed=1)
    assert "no_such_module_here" in res.stdout.str()


def test_worker_round_trip_and_errors():
    with mpy.MpWorker() as w:
        assert w.call("bankgate.clock", "diff", 5, 0x3FFFFFFF) == 6
        assert w.call("bankgate.clock", "add", 0x3FFFFFFF, 2) == 1
        with pytest.raises(mpy.MpError) as ei:
            w.call("bankgate.clock", "diff", "x", 1)
        assert "TypeError" in str(ei.value)
        # the worker survives an error
        assert w.call("bankgate.clock", "due", 10, 9) is True
