# Wrapping millisecond/microsecond tick arithmetic, identical to time.ticks_diff /
# time.ticks_add on every port (period 2**30), written out so that the simulated
# clock and the ESP32 agree bit for bit and every value stays a small int.
from micropython import const

PERIOD = const(0x40000000)  # 2**30
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)


def diff(a, b):
    """a - b in ticks, correct across one wrap; valid while |a - b| < 2**29."""
    return ((a - b + _HALF) & _MASK) - _HALF


def add(t, delta):
    return (t + delta) & _MASK


def due(now, deadline):
    """True when `deadline` (a tick value) is reached or past at `now`."""
    return ((now - deadline + _HALF) & _MASK) - _HALF >= 0
