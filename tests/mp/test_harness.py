# The harness itself, seen from inside MicroPython.
import gc
import sys

import mptest


def test_runs_under_micropython():
    assert sys.implementation.name == "micropython"


def test_heap_limit_is_enforced():
    # the whole heap cannot hold a block its own size: MemoryError, not growth
    assert mptest.heapsize > 0
    e = mptest.raises(MemoryError, bytearray, mptest.heapsize)
    assert "memory allocation failed" in str(e)
    gc.collect()
    assert gc.mem_free() + gc.mem_alloc() <= mptest.heapsize


def test_no_alloc_detects_allocation():
    def allocates():
        return [1, 2, 3]

    def clean(a, b):
        return a + b

    assert mptest.no_alloc(clean, 2, 3) == 5
    mptest.raises(AssertionError, mptest.no_alloc, allocates)
