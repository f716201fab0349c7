# Half-duplex RS485 master: one request, one response frame, never blocking the
# main loop except for the bounded wait while the request leaves the UART.
#
#   rs = Rs485Master(hw.uart, hw.de_pin, hw.clock, frame_timeout_ms=200)
#   rs.start(buf, n)              # send buf[0:n]
#   while rs.poll(now) == BUSY:   # main loop: hw.idle(rs.wait_ms(now)) in between
#   ...  rs.rx[0:rs.n] is the frame from '~' to EOI (inclusive) after DONE
#
# Timing, all derived from uart.baudrate (8N1: 10 bits per character):
#   char_us  = ceil(10 * 1e6 / baud)             9600: 1042 us   115200: 87 us
#   guard_us = max(20, ceil(2 * 1e6 / baud))     DE held after txdone() reports the
#              last stop bit sent (2 bit times: covers UARTs whose "done" fires at the
#              start of the stop bit and the jitter of this loop).  9600: 209 us,
#              115200: 20 us.  Responders answer ~1..10 ms after the request, far later.
#   gap_ms   = max(2, ceil((4 + rx_latency_chars) * char_us / 1000))
#              inter-character timeout inside a frame.  rx_latency_chars is how many
#              characters the UART may hold before software sees them (ESP-IDF hands
#              bytes over on its RX-FIFO timeout/threshold; the board layer can set
#              uart.rx_latency_chars, default 0).  9600: 5 ms, 115200: 2 ms.
#              GAP is declared when no byte arrived for MORE than gap_ms ticks, i.e.
#              after at least gap_ms of real silence (ticks_ms quantises by 1 ms).
#   frame timeout: TIMEOUT when the frame is not complete frame_timeout_ms after
#              the request end (the poller's control.poll_timeout_ms).
#   tx bound: start() waits for txdone() at most (n + 2) * char_us + 2000 us; a UART
#              that never reports done is released (tx_stuck counted).
#
# Input handling: bytes before the first '~' are discarded and counted in `noise`
# (line glitches when drivers switch).  A '~' inside a frame restarts the frame (a
# truncated frame followed by a new one).  The transaction ends with
#   DONE      '~' ... EOI in rx[0:n]
#   GAP       a partial frame stopped for longer than gap_ms (rx[0:n] = the partial)
#   OVERFLOW  rxbuf_size bytes without EOI
#   TIMEOUT   frame_timeout_ms passed without a complete frame (silence, or a frame
#             still arriving / stalled at the deadline; a partial stays in rx[0:n])
#   NOISE     frame_timeout_ms passed and only bytes without '~' arrived
# Outside a transaction poll() returns the last result (TIMEOUT before the first).
#
# Allocation: none in start()/poll()/wait_ms() once warm.  start(buf, n) with
# n == len(buf) passes buf itself; otherwise it needs memoryview(buf)[:n], which is
# created once per (buf, n) pair and cached (8 entries), so a poller reusing one
# request buffer allocates only on the first request of each length.
from micropython import const

from bankgate import clock as _clk
import array

try:                                   # native byte loop; bytecode fallback in _feed
    from bankgate.proto import fast as _fast
except (ImportError, ValueError, SyntaxError, NotImplementedError):
    _fast = None

BUSY = const(0)
DONE = const(1)
TIMEOUT = const(-1)
GAP = const(-2)
OVERFLOW = const(-3)
NOISE = const(-4)

RESULT_NAMES = {BUSY: "busy", DONE: "done", TIMEOUT: "timeout", GAP: "gap",
                OVERFLOW: "overflow", NOISE: "noise"}

_SOF = const(0x7E)          # '~'
_GAP_CHARS = const(4)
_GAP_MIN_MS = const(2)
_GUARD_MIN_US = const(20)
_MASK = const(0x3FFFFFFF)  # counters wrap at 2**30 (small ints on the ESP32)
_VIEWS = const(8)
_SCRATCH = const(64)

_ST_IDLE = const(0)
_ST_SOF = const(1)         # waiting for '~'
_ST_BODY = const(2)        # inside a frame


def char_time_us(baud):
    return (10000000 + baud - 1) // baud


def guard_time_us(baud):
    g = (2000000 + baud - 1) // baud
    return g if g > _GUARD_MIN_US else _GUARD_MIN_US


def gap_time_ms(baud, rx_latency_chars=0):
    g = ((_GAP_CHARS + rx_latency_chars) * char_time_us(baud) + 999) // 1000
    return g if g > _GAP_MIN_MS else _GAP_MIN_MS


class Rs485Master:
    def __init__(self, uart, de_pin, clock, frame_timeout_ms, rxbuf_size=512, eoi=0x0D):
        if frame_timeout_ms <= 0 or frame_timeout_ms > 60000:
            raise ValueError("frame_timeout_ms out of range 1..60000")
        if rxbuf_size < 16:
            raise ValueError("rxbuf_size below 16")
        baud = uart.baudrate
        if baud < 300 or baud > 4000000:
            raise ValueError("uart.baudrate out of range")
        self._uart = uart
        self._de = de_pin
        self._clock = clock
        self._sleep_us = getattr(clock, "sleep_us", None)
        self.baud = baud
        self.eoi = eoi
        self.frame_timeout_ms = frame_timeout_ms
        self.char_us = char_time_us(baud)
        self.guard_us = guard_time_us(baud)
        self.rx_latency_chars = getattr(uart, "rx_latency_chars", 0)
        self.gap_ms = gap_time_ms(baud, self.rx_latency_chars)
        self.rx = bytearray(rxbuf_size)
        self.n = 0
        self._size = rxbuf_size
        self._scratch = bytearray(_SCRATCH)
        self._state = _ST_IDLE
        self._result = TIMEOUT
        self._t_end = 0            # ticks_ms at the request end
        self._t_last = 0           # ticks_ms when the last frame byte was seen
        self._noise_now = 0        # noise bytes in this transaction
        self._io = array.array("i", (0, 0, 0, 0))   # fast.feed state in/out
        self.native = _fast is not None             # tests may switch it off
        # cache of memoryview(buf)[:n] for start()
        self._vbuf = [None] * _VIEWS
        self._vn = [0] * _VIEWS
        self._vview = [None] * _VIEWS
        self._vnext = 0
        # results and counters (wrap at 2**30)
        self.latency_ms = 0
        self.bytes_tx = 0
        self.bytes_rx = 0
        self.noise = 0             # bytes discarded before a '~'
        self.stale = 0             # bytes flushed at start() (late answers, echo)
        self.tx_stuck = 0          # start() gave up waiting for txdone()
        if de_pin is not None:
            de_pin.value(0)

    # ------------------------------------------------------------------ public
    def start(self, buf, n):
        """Send buf[0:n] and arm the response timeouts.  Bounded busy-wait for the
        wire time of the request; allocation-free once warm (see module notes)."""
        if n <= 0 or n > len(buf):
            raise ValueError("bad request length")
        uart = self._uart
        clk = self._clock
        # stale input: a late answer to the previous request, line noise
        while uart.any():
            k = uart.readinto(self._scratch)
            if not k:
                break
            self.stale = (self.stale + k) & _MASK
        de = self._de
        if de is not None:
            de.value(1)
        if n == len(buf):
            uart.write(buf)
        else:
            uart.write(self._view(buf, n))
        self.bytes_tx = (self.bytes_tx + n) & _MASK
        # the only busy-wait: the request's wire time, bounded
        t0 = clk.ticks_us()
        limit = (n + 2) * self.char_us + 2000
        sleep = self._sleep_us
        if sleep is not None:
            sleep(n * self.char_us)
        step = self.char_us >> 1
        while not uart.txdone():
            if _clk.diff(clk.ticks_us(), t0) > limit:
                self.tx_stuck = (self.tx_stuck + 1) & _MASK
                break
            if sleep is not None:
                sleep(step)
        if de is not None:
            if sleep is not None:
                sleep(self.guard_us)
            else:
                t1 = clk.ticks_us()
                while _clk.diff(clk.ticks_us(), t1) < self.guard_us:
                    pass
            de.value(0)
        self._t_end = clk.ticks_ms()
        self._t_last = self._t_end
        self.n = 0
        self._noise_now = 0
        self._state = _ST_SOF
        self._result = BUSY

    def poll(self, now):
        """Read what arrived; return BUSY, DONE, TIMEOUT, GAP, OVERFLOW or NOISE."""
        if self._state == _ST_IDLE:
            return self._result
        uart = self._uart
        scratch = self._scratch
        got = False
        while True:
            k = uart.readinto(scratch)
            if not k:
                break
            self.bytes_rx = (self.bytes_rx + k) & _MASK
            got = True
            r = self._feed(k)
            if r != BUSY:
                if r == DONE:
                    self.latency_ms = _clk.diff(now, self._t_end)
                return self._finish(r)
            if k < _SCRATCH:
                break
        if got and self._state == _ST_BODY:
            self._t_last = now
        if _clk.due(now, _clk.add(self._t_end, self.frame_timeout_ms)):
            # a partial frame at the whole-frame deadline is reported as TIMEOUT too
            # (rx[0:n] keeps the partial for diagnosis)
            return self._finish(NOISE if (self._noise_now and self._state != _ST_BODY) else TIMEOUT)
        if (not got and self._state == _ST_BODY
                and _clk.diff(now, self._t_last) > self.gap_ms):
            return self._finish(GAP)
        return BUSY

    def wait_ms(self, now):
        """Milliseconds until the next deadline while BUSY (0 otherwise)."""
        if self._state == _ST_IDLE:
            return 0
        d = _clk.diff(_clk.add(self._t_end, self.frame_timeout_ms), now)
        if self._state == _ST_BODY:
            g = _clk.diff(_clk.add(self._t_last, self.gap_ms + 1), now)
            if g < d:
                d = g
        return d if d > 0 else 0

    def busy(self):
        return self._state != _ST_IDLE

    # ------------------------------------------------------------------ internals
    def _finish(self, r):
        self._state = _ST_IDLE
        self._result = r
        return r

    def _feed(self, k):
        if self.native:
            io = self._io
            io[0] = self.n
            io[1] = self._state
            r = _fast.feed(self._scratch, k, self.rx, self._size, self.eoi, io)
            self.n = io[0]
            self._state = io[1]
            if io[2]:
                self.noise = (self.noise + io[2]) & _MASK
                self._noise_now += io[3]
            return r
        rx = self.rx
        sc = self._scratch
        n = self.n
        st = self._state
        eoi = self.eoi
        size = self._size
        for i in range(k):
            c = sc[i]
            if c == _SOF:
                if st == _ST_BODY:
                    self.noise = (self.noise + n) & _MASK   # the cut frame
                rx[0] = c
                n = 1
                st = _ST_BODY
            elif st == _ST_SOF:
                self.noise = (self.noise + 1) & _MASK
                self._noise_now += 1
            else:
                if n >= size:
                    self.n = n
                    self._state = st
                    return OVERFLOW
                rx[n] = c
                n += 1
                if c == eoi:
                    self.n = n
                    self._state = st
                    return DONE
        self.n = n
        self._state = st
        return BUSY

    def _view(self, buf, n):
        vb = self._vbuf
        vn = self._vn
        for i in range(_VIEWS):
            if vb[i] is buf and vn[i] == n:
                return self._vview[i]
        i = self._vnext
        self._vnext = (i + 1) % _VIEWS
        v = memoryview(buf)[:n]
        vb[i] = buf
        vn[i] = n
        self._vview[i] = v
        return v
