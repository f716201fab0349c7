# Tick arithmetic (bankgate.clock): wrap-around and the ESP32 small-int range.
import mptest
from bankgate import clock
from checkedint import CheckedInt, RangeError

MASK = (1 << 30) - 1
HALF = 1 << 29
EDGES = (0, 1, 2, HALF - 1, HALF, HALF + 1, MASK - 1, MASK)


def _ref_diff(a, b):
    return ((a - b + HALF) & MASK) - HALF


def test_diff_and_add_match_the_reference_across_the_wrap():
    deltas = (0, 1, -1, 1000, -1000, HALF - 1, -HALF + 1, -HALF)
    for a in EDGES:
        for d in deltas:
            t = clock.add(a, d)
            assert 0 <= t <= MASK
            assert t == (a + d) & MASK, (a, d, t)
            assert clock.diff(t, a) == d, (a, d)
        for b in EDGES:
            assert clock.diff(a, b) == _ref_diff(a, b), (a, b)
    assert clock.due(5, 3) and clock.due(3, 3) and not clock.due(2, 3)
    assert clock.due(2, MASK - 2)            # just past a deadline set before the wrap


def test_every_intermediate_is_an_esp32_small_int():
    deltas = (0, 1, -1, HALF - 1, -HALF)
    for a in EDGES:
        for b in EDGES:
            clock.diff(CheckedInt(a), CheckedInt(b))
        for d in deltas:
            clock.add(CheckedInt(a), CheckedInt(d))
    # and the textbook formula would not have been: CheckedInt catches it
    mptest.raises(RangeError, lambda: (CheckedInt(MASK) - CheckedInt(0) + CheckedInt(HALF)))


def test_no_allocation():
    assert mptest.no_alloc(clock.diff, 3, MASK) == 4
    assert mptest.no_alloc(clock.add, MASK, 2) == 1
