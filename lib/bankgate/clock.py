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


# ---- the time model (docs/architecture.md "Time model")
# diff() is only right while the two stamps are less than 2**29 ms (6.2 days) apart.
# A stamp that nobody refreshes (the last frame of a silent module, the boot time, the
# last close, a deadline nobody looked at) gets older than that, and its age would read
# small or negative again: stale data would look fresh.  So no stamp may get that old:
#   * hold() drags a stamp older than AGE_MAX (2**28 ms, 3.1 days) along to exactly
#     now - AGE_MAX.  Its age then reads AGE_MAX, "at least 3.1 days", which is larger
#     than every configured time limit (config bounds keep them below AGE_MAX), so every
#     `age > limit` / `age >= limit` / due() comparison gives the answer the true age
#     would give, for any uptime and any starting tick;
#   * every component that keeps stamps runs an "aging pass" from its step/update that
#     passes each of them through hold() at least every AGE_SWEEP_MS (round-robin slices
#     every AGE_PASS_MS, so no step pays for the whole pass).
# Between two holds a stamp ages by at most AGE_SWEEP_MS, so its true age stays below
# AGE_MAX + AGE_SWEEP_MS < 2**29 and diff() is exact.  Negative values are sentinels
# ("not running", e.g. pending_since = -1; ticks are never negative), left alone.
AGE_MAX = const(0x10000000)     # 2**28 ms = 3.1 days: the saturated age
AGE_PASS_MS = const(1000)       # an aging slice runs at most this long apart
AGE_SWEEP_MS = const(120000)    # bound: every stamp is held at least this often


def hold(now, t):
    """The stamp t, or now - AGE_MAX when t is older than that (or beyond the range
    diff() can tell, i.e. more than AGE_MAX in the future).  t < 0: a sentinel,
    returned unchanged.  Allocation-free."""
    if t < 0:
        return t
    d = diff(now, t)
    if d >= AGE_MAX or d < -AGE_MAX:
        return add(now, -AGE_MAX)
    return t


def hold_range(now, a, i, j):
    """hold() the stamps a[i:j] of an array in place (indices clipped to the array)."""
    n = len(a)
    if j > n:
        j = n
    while i < j:
        t = a[i]
        if t >= 0:
            d = diff(now, t)
            if d >= AGE_MAX or d < -AGE_MAX:
                a[i] = add(now, -AGE_MAX)
        i += 1


def pass_due(now, t_last):
    """True when an aging slice last run at t_last is due again (AGE_PASS_MS passed,
    or t_last lies ahead: the clock restarted or was never set)."""
    d = diff(now, t_last)
    return d >= AGE_PASS_MS or d < 0


class PortTicks:
    """The port's own tick counters (time.ticks_ms / ticks_us, period 2**30) behind the
    hardware clock's interface (ticks_ms(), ticks_us()): for code built without an injected
    clock (unit-test stand-ins).  The firmware passes hw.clock everywhere instead, so the
    simulator's SimClock governs everything the control loop and telemetry time."""

    def __init__(self):
        import time
        self._t = time

    def ticks_ms(self):
        return self._t.ticks_ms() & _MASK

    def ticks_us(self):
        return self._t.ticks_us() & _MASK
