# Fake peripherals for host runs (tests and the simulator), implementing the
# interfaces of bankgate.hal at the level the real peripherals do: pins hold
# levels, the UART moves bytes with wire timing, the clock is simulated.
#
# SimClock is an event scheduler in integer microseconds.  Firmware code sees only
# ticks_ms()/ticks_us() (wrapping like the ESP32's) and sleep_ms(); host code
# schedules callbacks with at_us()/after_us() and the clock runs them as time
# passes, so a simulated hour takes as long as its events take to compute.
try:
    import micropython       # @micropython.native: hot paths compiled to machine code
except ImportError:          # CPython: the decorator does nothing
    class micropython:
        @staticmethod
        def native(f):
            return f
import heapq

from bankgate.hal import Hardware

_MASK = 0x3FFFFFFF


class SimClock:
    """now_us: host-side simulated time since the start of the run (unbounded; host
    code schedules with it).  The device's tick counters start at tick_start_ms
    (ticks_ms() == tick_start_ms at now_us == 0, ticks_us() == tick_start_ms * 1000
    wrapped), so a run can start anywhere in the 2**30 cycle (a device up for days,
    just before a wrap).  ticks_ms()/ticks_us() return wrapped values kept up to date
    whenever time moves, so they stay small ints and never allocate at any simulated
    time, also on a 32-bit port where now_us itself outgrows a small int after 1073 s."""

    def __init__(self, start_us=0, tick_start_ms=0):
        if not isinstance(tick_start_ms, int) or tick_start_ms < 0 or tick_start_ms > _MASK:
            raise ValueError("tick_start_ms must be an int in [0, 2**30 - 1], got %r" % (tick_start_ms,))
        self.now_us = start_us
        self.tick_start_ms = tick_start_ms
        self._off_us = tick_start_ms * 1000
        self._ms = 0
        self._us = 0
        self._sync()
        self._q = []
        self._seq = 0

    def set_ticks_ms(self, tick_ms):
        """The device tick counters restart here: ticks_ms() reads tick_ms now (a hard
        reset restarts them at 0; a soft reset keeps them).  now_us, the host-side time,
        runs on unchanged."""
        if not isinstance(tick_ms, int) or tick_ms < 0 or tick_ms > _MASK:
            raise ValueError("tick_ms must be an int in [0, 2**30 - 1], got %r" % (tick_ms,))
        self._off_us = tick_ms * 1000 - self.now_us
        self._sync()

    def _sync(self):
        t = self.now_us + self._off_us
        self._us = t & _MASK
        self._ms = (t // 1000) & _MASK

    # -- the firmware-facing interface
    @micropython.native
    def ticks_ms(self):
        return self._ms

    @micropython.native
    def ticks_us(self):
        return self._us

    def sleep_ms(self, ms):
        self.advance_us(ms * 1000)

    @micropython.native
    def sleep_us(self, us):
        self.advance_us(us)

    # -- the host-facing interface
    def ms(self):
        """Unwrapped simulated milliseconds since the start."""
        return self.now_us // 1000

    @micropython.native
    def at_us(self, t_us, fn, *args):
        self._seq += 1
        heapq.heappush(self._q, (t_us, self._seq, fn, args))

    @micropython.native
    def after_us(self, delay_us, fn, *args):
        self.at_us(self.now_us + delay_us, fn, *args)

    def next_event_us(self):
        return self._q[0][0] if self._q else None

    @micropython.native
    def advance_us(self, delta_us, stop=None):
        """Run events up to now + delta_us.  If stop() becomes true after an event,
        return early at that event's time (used by idle: wake on bus input)."""
        end = self.now_us + delta_us
        q = self._q
        while q and q[0][0] <= end:
            t, _, fn, args = heapq.heappop(q)
            if t > self.now_us:
                self.now_us = t
                self._sync()
            fn(*args)
            if stop is not None and stop():
                return
        self.now_us = end
        self._sync()


class FakePin:
    """Output or input pin.  `history` records (t_us, value) of every change."""

    def __init__(self, clock=None, value=0, name=""):
        self._v = value
        self.name = name
        self.clock = clock
        self.history = []
        self.on_change = None

    @micropython.native
    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            if self.clock is not None:
                self.history.append((self.clock.now_us, v))
            if self.on_change is not None:
                self.on_change(v)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class FakeWdt:
    """Watchdog: records feeds; `expired()` tells whether the timeout passed unfed."""

    def __init__(self, clock, timeout_ms):
        self.clock = clock
        self.timeout_ms = timeout_ms
        self.last_feed_us = clock.now_us
        self.feeds = 0

    def feed(self):
        self.last_feed_us = self.clock.now_us
        self.feeds += 1

    def expired(self):
        return self.clock.now_us - self.last_feed_us > self.timeout_ms * 1000


class FakeAdc:
    def __init__(self, mv=0):
        self.mv = mv

    def read_mv(self):
        return self.mv


class FakeHardware(Hardware):
    """Hardware built from fakes.  `input_ready()` is the idle wake condition:
    the simulator (or a test) sets it to a function telling whether any bus has
    input for the firmware."""

    def __init__(self, clock=None, outputs=(), inputs=(), board_name="sim"):
        Hardware.__init__(self, clock or SimClock(), board_name)
        for name in outputs:
            self.outputs[name] = FakePin(self.clock, 0, name)
        for name in inputs:
            self.inputs[name] = FakePin(self.clock, 0, name)
        self.input_ready = None
        self.resets = 0

    def start_watchdog(self, timeout_ms):
        self.wdt = FakeWdt(self.clock, timeout_ms)

    @micropython.native
    def idle(self, ms):
        self.clock.advance_us(ms * 1000, self.input_ready)

    def reset(self):
        self.resets += 1
        self.release_all()
