# Helpers for MicroPython-side tests (tests/mp/test_*.py).  The runner that
# executes those tests is mptest_run.py; it sets `heapsize` before any test runs.
import micropython

heapsize = 0  # the -X heapsize of this run, in bytes


class SkipTest(Exception):
    """Raise (or call skip()) when the port lacks a capability the test needs."""


def skip(msg="skipped"):
    raise SkipTest(msg)


def raises(exc, fn, *args):
    """Assert fn(*args) raises exc; return the exception for further checks."""
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s did not raise %s" % (fn, exc.__name__))


def no_alloc(fn, *args):
    """Call fn(*args) with the heap locked: any allocation fails the test.

    Returns fn's result.  The result must not be a new object (that would have
    allocated); return small ints, None, or preallocated objects.  Up to four
    arguments; they are unpacked before the lock because a star-call allocates.
    """
    n = len(args)
    a = args[0] if n > 0 else None
    b = args[1] if n > 1 else None
    c = args[2] if n > 2 else None
    d = args[3] if n > 3 else None
    micropython.heap_lock()
    try:
        if n == 0:
            r = fn()
        elif n == 1:
            r = fn(a)
        elif n == 2:
            r = fn(a, b)
        elif n == 3:
            r = fn(a, b, c)
        else:
            r = fn(a, b, c, d)
    except MemoryError:
        micropython.heap_unlock()
        raise AssertionError("%s allocated with the heap locked" % fn)
    except BaseException:
        micropython.heap_unlock()
        raise
    micropython.heap_unlock()
    return r
