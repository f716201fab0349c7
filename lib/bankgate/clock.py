# Wrapping millisecond/microsecond tick arithmetic, identical to time.ticks_diff /
# time.ticks_add on every port (period 2**30), written out so that the simulated
# clock and the ESP32 agree bit for bit.
#
# Every intermediate stays inside the ESP32's small-int range [-2**30, 2**30 - 1]:
# tick values are in [0, 2**30), so a - b is in (-2**30, 2**30), and the wrap is
# corrected by adding or subtracting _MASK and then 1 (2**30 itself is not a small
# int on a 32-bit port and is never used in arithmetic).  Proven with CheckedInt in
# tests/mp/test_clock.py.
from micropython import const

PERIOD = 0x40000000  # 2**30, for documentation and host code only
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)


def diff(a, b):
    """a - b in ticks, correct across one wrap; valid while |a - b| < 2**29."""
    d = a - b
    if d >= _HALF:
        d = d - _MASK - 1
    elif d < -_HALF:
        d = d + _MASK + 1
    return d


def add(t, delta):
    """t + delta wrapped into [0, 2**30); |delta| < 2**29."""
    if delta >= 0:
        r = t - _MASK + delta        # in [-2**30 + 1, 2**29)
        if r <= 0:
            return r + _MASK
        return r - 1
    r = t + delta                    # in [-2**29, 2**30)
    if r < 0:
        r = r + _MASK + 1
    return r


def due(now, deadline):
    """True when `deadline` (a tick value) is reached or past at `now`."""
    return diff(now, deadline) >= 0
