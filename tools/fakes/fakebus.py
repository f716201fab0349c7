# Byte- and frame-level fakes of the two module/inverter networks, for host tests
# and the bank simulator (runs under the unix MicroPython port; CPython gives the
# same results: integer PRNG, one float model evaluated once at construction).
#
# RS485 (event-driven on the SimClock):
#   wire = FakeRs485Wire(clock, baud, model=ElectricalModel(...), seed=1)
#   wire.attach(responder, turnaround_us=2000)   responder(request: bytes) -> bytes|None
#   wire.route = fn(request) -> indices          optional: only these responders may answer
#   uart = FakeUart(wire)                        the gateway's port (hal serial interface)
#   hw.de_pin = uart.de                          driver-enable pin; uart.de_history
#   hw.input_ready = lambda: uart.any() > 0
# The wire delivers every response at request_end + turnaround + its own wire time;
# responses overlapping in time collide (garbled bytes).  Bytes the gateway sends
# while DE is low are lost; response bytes arriving while DE is high are lost.
#
# CAN (lazy: the bus computes what happened up to clock.now_us whenever any node is
# accessed, so sending/receiving never schedules events and never allocates):
#   bus = FakeCanBus(clock, bitrate=500000, model=None, seed=1)     (fakecan.py)
#   can = FakeCan(bus)                      the bankgate.bus.can interface
#   mc  = FakeMachineCan(FakeCan(bus))      MicroPython machine.CAN API (for hal/twai)
#   chip = FakeMcp2515(bus, crystal_hz)     MCP2515 registers behind chip.spi / chip.cs,
#                                           interrupt output chip.int_pin (fakemcp2515.py)
# All of them can be imported from here (loaded on first use).
#
# The electrical model (ElectricalModel) and every rule used here are documented in
# docs/bus.md.
try:
    import micropython       # @micropython.native: hot paths compiled to machine code
except ImportError:          # CPython: the decorator does nothing
    class micropython:
        @staticmethod
        def native(f):
            return f
import math

_M32 = 0xFFFFFFFF


class Prng:
    """xorshift32: small, deterministic, identical on MicroPython and CPython.

    The 32-bit state is kept as two 16-bit halves (self.h, self.l) so every
    intermediate stays a small int on a 32-bit port (31-bit small ints, as on the
    ESP32): below() and chance_ppm() do not allocate on any port.  The sequence is
    exactly Marsaglia's xorshift32 (13, 17, 5); next32() returns the whole word
    (a heap int on a 32-bit port: for tests, not for hot paths)."""

    def __init__(self, seed=1):
        x = (seed * 2654435761 + 0x9E3779B9) & _M32 or 1
        self.h = x >> 16
        self.l = x & 0xFFFF

    def _step(self):
        h = self.h
        l = self.l
        h ^= ((h << 13) | (l >> 3)) & 0xFFFF      # x ^= x << 13
        l ^= (l << 13) & 0xFFFF
        l ^= h >> 1                               # x ^= x >> 17
        h ^= ((h << 5) | (l >> 11)) & 0xFFFF      # x ^= x << 5
        l ^= (l << 5) & 0xFFFF
        self.h = h
        self.l = l

    @property
    def x(self):
        return self.h << 16 | self.l

    def next32(self):
        self._step()
        return self.h << 16 | self.l

    def below(self, n):
        """Uniform 0..n-1 (n <= 2**24) without modulo bias worth mentioning:
        ((x >> 8) * n) >> 24, computed in 12-bit pieces (exact) for n < 2**17."""
        self._step()
        if n >= 0x20000:
            return (((self.h << 16 | self.l) >> 8) * n) >> 24
        h24 = self.h << 8 | self.l >> 8
        return ((h24 >> 12) * n + (((h24 & 0xFFF) * n) >> 12)) >> 12

    def chance_ppm(self, ppm):
        """True with probability ppm / 1e6 (exact to 2**-32):
        ((x * 1000000) >> 32) < ppm, i.e. ((x * 15625) >> 26) < ppm, in 16-bit pieces."""
        self._step()
        return (self.h * 15625 + ((self.l * 15625) >> 16)) >> 10 < ppm


# ---------------------------------------------------------------------- electrical model
PROP_NS_PER_M = 5          # signal propagation in twisted pair, ~0.66 c
R_TERM = 120               # ohm, terminator and cable characteristic impedance
R_DRV = 30                 # ohm, Thevenin output resistance of a driver
V_DRV_MV = 3000            # mV, open-circuit differential output of a driver
R_CABLE_MOHM_PER_M = 168   # loop resistance of 24 AWG pair (2 x 84 mohm/m)
R_UNIT_LOAD = 12000        # ohm, one RS485 unit load (receiver input)
V_TH_MV = 200              # receiver threshold (RS485 and CAN both ~ 200..500 mV)
C_PF_PER_M = 50            # cable capacitance
C_PF_PER_NODE = 25         # transceiver pin capacitance
R_CAN_IN = 30000           # ohm, CAN transceiver differential input resistance


class ElectricalModel:
    """Per-byte corruption probability and idle voltage of a two-wire bus.

    terminators  number of 120 ohm terminators on the bus (0, 1, 2, 3, ...)
    length_m     cable length, bitrate in bit/s
    noise_ppm    impulsive-noise floor: per-byte corruption probability in ppm
    noise_mv     rms differential noise at a receiver (sets the amplitude margin)
    nodes        transceivers on the bus (loads when unterminated; CAN capacitance)
    bias_ohm     fail-safe bias resistors (each, to Vcc and to ground); 0: none
    vcc_mv       bias supply

    byte_error_ppm = 1e6 * min(0.5, 1 - (1-p_floor)(1-p_refl)(1-p_amp)) where
      r       = 2 * length * 5 ns * bitrate           round trip / bit time
      p_refl  = min(0.5, 0.25 * U * r^2)              U = unterminated ends, max(0, 2 - T)
      R_load  = 120 / T (T >= 1) else 12k / nodes
      V_rx    = 3000 mV * R_load / (R_load + 30 + 0.168 * length)
      x       = (V_rx - 200 mV) / noise_mv
      p_amp   = 0.5 if x <= 0 else min(0.5, 5 * exp(-x^2 / 2))
      p_floor = noise_ppm / 1e6
    idle_mv = vcc * R_idle / (R_idle + 2 * bias) with R_idle = 120 / T (T >= 1) else
      12k / nodes; 0 without bias resistors.
    """

    def __init__(self, terminators=2, length_m=10, bitrate=115200, noise_ppm=0,
                 noise_mv=50, nodes=4, bias_ohm=680, vcc_mv=3300):
        if terminators < 0 or length_m < 0 or bitrate <= 0 or nodes < 1 or noise_mv <= 0:
            raise ValueError("bad electrical model parameters")
        self.terminators = terminators
        self.length_m = length_m
        self.bitrate = bitrate
        self.noise_ppm = noise_ppm
        self.noise_mv = noise_mv
        self.nodes = nodes
        self.bias_ohm = bias_ohm
        self.vcc_mv = vcc_mv
        r = 2.0 * length_m * PROP_NS_PER_M * bitrate / 1e9
        self.ratio = r
        unterminated = 2 - terminators if terminators < 2 else 0
        p_refl = min(0.5, 0.25 * unterminated * r * r)
        r_load = (R_TERM / terminators) if terminators else (R_UNIT_LOAD / nodes)
        r_cable = R_CABLE_MOHM_PER_M * length_m / 1000.0
        v_rx = V_DRV_MV * r_load / (r_load + R_DRV + r_cable)
        self.signal_mv = int(v_rx + 0.5)
        x = (v_rx - V_TH_MV) / noise_mv
        p_amp = 0.5 if x <= 0 else min(0.5, 5.0 * math.exp(-x * x / 2.0))
        p_floor = min(1.0, noise_ppm / 1e6)
        p = 1.0 - (1.0 - p_floor) * (1.0 - p_refl) * (1.0 - p_amp)
        self.refl_ppm = int(p_refl * 1e6 + 0.5)
        self.amp_ppm = int(p_amp * 1e6 + 0.5)
        self.byte_error_ppm = int(min(0.5, p) * 1e6 + 0.5)
        if bias_ohm > 0:
            r_idle = (R_TERM / terminators) if terminators else (R_UNIT_LOAD / nodes)
            self.idle_mv = int(vcc_mv * r_idle / (r_idle + 2 * bias_ohm) + 0.5)
        else:
            self.idle_mv = 0
        # CAN without any terminator: nothing but the transceivers' input resistance
        # pulls the bus back to recessive, tau = R_in / nodes * C_bus.  (With a
        # terminator the matched line settles within its propagation time; the
        # mismatch of a single terminator is already in p_refl.)
        if terminators == 0:
            c_pf = C_PF_PER_M * length_m + C_PF_PER_NODE * nodes
            self.tau_ns = int(R_CAN_IN / nodes * c_pf / 1000.0 + 0.5)
        else:
            self.tau_ns = 0

    def can_frame_error_ppm(self, bits):
        """Probability (ppm) that a CAN frame of `bits` bits is destroyed:
        1 - (1 - p_byte)^(bits / 10) combined with the recessive-decay term of an
        unterminated bus, p_decay = clamp((3 tau - 0.2 T_bit) / (0.3 T_bit), 0, 1):
        the bit is misread when the line has not settled (3 tau) before the sample
        point's margin (20 % of the bit) and always when 3 tau > 50 % of the bit."""
        pb = self.byte_error_ppm / 1e6
        p_bits = 1.0 - (1.0 - pb) ** (bits / 10.0)
        t_bit = 1e9 / self.bitrate
        p_decay = (3.0 * self.tau_ns - 0.2 * t_bit) / (0.3 * t_bit)
        p_decay = 0.0 if p_decay < 0 else (1.0 if p_decay > 1 else p_decay)
        p = 1.0 - (1.0 - p_bits) * (1.0 - p_decay)
        return int(p * 1e6 + 0.5)

    def __repr__(self):
        return "ElectricalModel(T=%d, %dm, %d bit/s, floor %d ppm): %d ppm/byte, idle %d mV" % (
            self.terminators, self.length_m, self.bitrate, self.noise_ppm,
            self.byte_error_ppm, self.idle_mv)


# ---------------------------------------------------------------------- RS485
class _DePin:
    """Driver-enable output pin of FakeUart; records (t_us, level) in uart.de_history."""

    def __init__(self, uart):
        self._u = uart
        self._v = 0

    @micropython.native
    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            self._u._de_change(v)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class FakeRs485Wire:
    """The RS485 pair: one gateway port (FakeUart) and any number of responders."""

    def __init__(self, clock, baud, model=None, seed=1):
        self.clock = clock
        self.baud = baud
        self.char_us = (10000000 + baud - 1) // baud
        self.model = model if model is not None else ElectricalModel(bitrate=baud)
        self.error_ppm = self.model.byte_error_ppm
        self.rng = Prng(seed)
        self.responders = []       # [responder, turnaround_us, enabled]
        # optional route(request) -> indices (ascending) of the only responders that may
        # answer it; the others are known to stay silent and are not called (a bank of
        # 16 emulated BMSes: only the addressed one).  None: call every responder.
        self.route = None
        self.uart = None
        # statistics
        self.requests = 0
        self.collisions = 0        # byte slots where two or more responders drove
        self.corrupted = 0         # bytes with flipped bits (either direction)
        self.dropped = 0           # bytes lost to framing errors
        self.truncated = 0         # frames cut short
        self.last_request = b""

    def attach(self, responder, turnaround_us=2000):
        """Add a responder; returns its index (see set_enabled)."""
        self.responders.append([responder, turnaround_us, True])
        return len(self.responders) - 1

    def set_enabled(self, index, enabled):
        self.responders[index][2] = bool(enabled)

    def idle_mv(self):
        return self.model.idle_mv

    # -- corruption (deterministic with the seed)
    def _corrupt(self, data, times):
        """The per-byte error model, p = error_ppm / 1e6: a corrupted byte gets one
        random bit flipped, or (a framing error, probability min(0.5, 4p) of the
        corrupted bytes) is dropped; when p >= 5 % a frame is also truncated at a
        random point with probability p.  Returns (bytes, times)."""
        p = self.error_ppm
        if p <= 0:
            return data, times
        rng = self.rng
        drop_ppm = 4 * p if 4 * p < 500000 else 500000
        out_b = bytearray()
        out_t = []
        for i in range(len(data)):
            b = data[i]
            if rng.chance_ppm(p):
                if rng.chance_ppm(drop_ppm):
                    self.dropped += 1
                    continue
                b ^= 1 << rng.below(8)
                self.corrupted += 1
            out_b.append(b)
            out_t.append(times[i])
        if p >= 50000 and len(out_b) > 1 and rng.chance_ppm(p):
            self.truncated += 1
            k = 1 + rng.below(len(out_b) - 1)
            out_b = out_b[:k]
            out_t = out_t[:k]
        return out_b, out_t

    # -- called by FakeUart when a request has left the gateway
    @micropython.native
    def _request_done(self, uart, data):
        self.requests += 1
        p = self.error_ppm
        if p > 0:
            req, _ = self._corrupt(data, [0] * len(data))
            req = bytes(req)
        else:
            req = data if isinstance(data, bytes) else bytes(data)   # no draws: clean
        self.last_request = req
        t_end = self.clock.now_us
        if not req:
            return
        first = None               # the only answer so far: (start_us, bytes)
        resp = None                # every answer, once there are two or more
        rs = self.responders
        sel = self.route(req) if self.route is not None else range(len(rs))
        for k in sel:
            r = rs[k]
            if not r[2]:
                continue
            out = r[0](req)
            if out:
                out = out if isinstance(out, bytes) else bytes(out)
                if first is None:
                    first = (t_end + r[1], out)
                else:
                    if resp is None:
                        resp = [first]
                    resp.append((t_end + r[1], out))
        if first is None:
            return
        c = self.char_us
        if resp is None and p <= 0:
            # fast path (one responder, clean wire): byte i is readable at
            # start + (i + 1) * char_us -- what the general path computes for a single
            # answer, without a per-byte slot table (no collision, no draw)
            uart._arrive_run(first[1], first[0] + c, c)
            return
        if resp is None:
            resp = [first]
        resp.sort(key=lambda x: x[0])
        t0 = resp[0][0]
        slots = {}
        for start, data in resp:
            k0 = (start - t0 + c // 2) // c
            for i in range(len(data)):
                s = slots.get(k0 + i)
                if s is None:
                    slots[k0 + i] = [data[i], 1]
                else:
                    s[0] &= data[i]
                    s[1] += 1
        merged = bytearray()
        times = []
        for k in sorted(slots):
            b, cnt = slots[k]
            if cnt > 1:
                # drivers fighting with skewed edges: never a clean byte
                b ^= 1 << self.rng.below(8)
                self.collisions += 1
            merged.append(b & 0xFF)
            times.append(t0 + (k + 1) * c)
        out_b, out_t = self._corrupt(merged, times)
        if out_b:
            uart._arrive(out_b, out_t)


class FakeUart:
    """The gateway's serial port on a FakeRs485Wire (bankgate.hal serial interface:
    write, txdone, any, readinto, baudrate).  txdone() turns true when the last stop
    bit has left (as ESP-IDF's uart_wait_tx_done).  auto_de=True models an
    automatic-direction transceiver (no DE pin: driver on exactly while sending)."""

    def __init__(self, wire, auto_de=False, rxbuf=1024, de_history_max=256):
        self.wire = wire
        self.clock = wire.clock
        self.baudrate = wire.baud
        self.auto_de = auto_de
        self.de = _DePin(self)
        self.de_history = []        # (t_us, level); bounded to de_history_max entries
        self._de_max = de_history_max
        self._de_t = []             # full-resolution transitions still needed for checks
        self._de_v = []
        self._rx = bytearray(rxbuf)
        self._rxv = memoryview(self._rx)
        self._rx_head = 0
        self._rx_n = 0
        self._runs = []             # pending input: [data, times | None, t_first, char_us, next index]
        self._tx_start = 0
        self._tx_end = 0
        # idle wake-ups: an event when the first and when the last byte of an arrival is
        # readable.  wake_first_byte=False drops the first for a clean single answer
        # (_arrive_run): hw.idle then returns when the answer is complete (or at the
        # firmware's own deadline), as on an ESP32 whose UART driver hands bytes over
        # in FIFO-sized chunks; every byte is still readable at its own time.
        self.wake_first_byte = True
        self.lost_tx = 0            # request bytes sent while DE was low
        self.lost_rx = 0            # response bytes that arrived while DE was high
        self.overruns = 0
        self.writes = 0
        wire.uart = self

    # -- DE bookkeeping
    @micropython.native
    def _de_change(self, v):
        t = self.clock.now_us
        self.de_history.append((t, v))
        if len(self.de_history) > self._de_max:
            del self.de_history[:len(self.de_history) - self._de_max]
        self._de_t.append(t)
        self._de_v.append(v)

    @micropython.native
    def _de_level(self, t):
        lvl = 0
        ts = self._de_t
        for i in range(len(ts)):
            if ts[i] <= t:
                lvl = self._de_v[i]
            else:
                break
        return lvl

    @micropython.native
    def _de_high_all(self, a, b):
        if self._de_level(a) == 0:
            return False
        ts = self._de_t
        for i in range(len(ts)):
            if a < ts[i] <= b and self._de_v[i] == 0:
                return False
        return True

    @micropython.native
    def _de_high_any(self, a, b):
        if self.auto_de:
            return a < self._tx_end and b > self._tx_start
        if self._de_level(a):
            return True
        ts = self._de_t
        for i in range(len(ts)):
            if a < ts[i] <= b and self._de_v[i] == 1:
                return True
        return False

    @micropython.native
    def _trim_de(self, before):
        # keep the level in force at `before` and everything after it
        ts = self._de_t
        k = 0
        while k + 1 < len(ts) and ts[k + 1] <= before:
            k += 1
        if k:
            del self._de_t[:k]
            del self._de_v[:k]

    # -- serial interface
    @micropython.native
    def write(self, buf):
        n = len(buf)
        now = self.clock.now_us
        c = self.wire.char_us
        t0 = now if now > self._tx_end else self._tx_end
        data = bytes(buf)
        self._tx_start = t0
        self._tx_end = t0 + n * c
        self.writes += 1
        self.clock.at_us(self._tx_end, self._tx_finished, data, t0)
        return n

    @micropython.native
    def _tx_finished(self, data, t0):
        c = self.wire.char_us
        if self.auto_de or self._de_high_all(t0, t0 + len(data) * c):
            # the driver was on for the whole request (the usual case): every byte kept
            self.wire._request_done(self, data)
            return
        kept = bytearray()
        for i in range(len(data)):
            a = t0 + i * c
            if self.auto_de or self._de_high_all(a, a + c):
                kept.append(data[i])
            else:
                self.lost_tx += 1
        self.wire._request_done(self, bytes(kept))

    @micropython.native
    def txdone(self):
        return self.clock.now_us >= self._tx_end

    def _arrive(self, data, times):
        """Bytes arriving from the line: data[i] is readable at times[i] (us)."""
        if not data:
            return
        self._runs.append([data, times, 0, 0, 0])
        # wake the idle loop when the first byte is readable and when the last is
        self.clock.at_us(times[0], _noop)
        self.clock.at_us(times[-1], _noop)

    @micropython.native
    def _arrive_run(self, data, t_first, c):
        """The same for evenly spaced bytes: data[i] is readable at t_first + i * c
        (a clean answer: no per-byte time list)."""
        if not data:
            return
        self._runs.append([data, None, t_first, c, 0])
        if self.wake_first_byte:
            self.clock.at_us(t_first, _noop)
        self.clock.at_us(t_first + (len(data) - 1) * c, _noop)

    @micropython.native
    def _pull(self):
        # move every byte whose time has come from the pending runs into the RX
        # ring, in arrival-list order (a run not yet complete stops the scan):
        # a byte arriving while DE is high is lost (lost_rx), one that finds the
        # ring full is an overrun
        runs = self._runs
        if not runs:
            return
        now = self.clock.now_us
        c = self.wire.char_us
        moved = False
        while runs:
            r = runs[0]
            data = r[0]
            times = r[1]
            pos = r[4]
            n = len(data)
            if times is None:
                t0 = r[2]
                rc = r[3]
                if t0 + pos * rc > now:
                    break
                k = (now - t0) // rc + 1
                if k > n:
                    k = n
                if self.auto_de:
                    clean = not (t0 + pos * rc - c < self._tx_end and t0 + (k - 1) * rc > self._tx_start)
                else:
                    clean = not self._de_high_any(t0 + pos * rc - c, t0 + (k - 1) * rc)
                if clean:
                    self._store(data, pos, k - pos)
                else:
                    for i in range(pos, k):
                        self._byte(data[i], t0 + i * rc, c)
            else:
                k = pos
                while k < n and times[k] <= now:
                    self._byte(data[k], times[k], c)
                    k += 1
                if k == pos:
                    break
            moved = True
            if k < n:
                r[4] = k
                break
            runs.pop(0)
        if moved:
            self._trim_de(now - 4 * c)

    def _byte(self, b, t, c):
        if self._de_high_any(t - c, t):
            self.lost_rx += 1
        elif self._rx_n >= len(self._rx):
            self.overruns += 1
        else:
            self._rx[(self._rx_head + self._rx_n) % len(self._rx)] = b
            self._rx_n += 1

    @micropython.native
    def _store(self, data, i, m):
        # data[i:i+m] into the ring, as far as it has room (the rest: overruns)
        rx = self._rx
        size = len(rx)
        free = size - self._rx_n
        if m > free:
            self.overruns += m - free
            m = free
        if m <= 0:
            return
        tail = (self._rx_head + self._rx_n) % size
        first = size - tail
        if first > m:
            first = m
        rx[tail:tail + first] = data[i:i + first]
        if m > first:
            rx[0:m - first] = data[i + first:i + m]
        self._rx_n += m

    @micropython.native
    def any(self):
        self._pull()
        return self._rx_n

    def read(self, n=-1):
        self._pull()
        if self._rx_n == 0:
            return None
        if n < 0 or n > self._rx_n:
            n = self._rx_n
        buf = bytearray(n)
        self.readinto(buf)
        return bytes(buf)

    @micropython.native
    def readinto(self, buf, nbytes=-1):
        self._pull()
        k = self._rx_n
        if k == 0:
            return None
        lim = len(buf) if nbytes < 0 or nbytes > len(buf) else nbytes
        if k > lim:
            k = lim
        rx = self._rxv              # memoryview: slicing it copies nothing
        size = len(rx)
        h = self._rx_head
        first = size - h
        if first > k:
            first = k
        buf[0:first] = rx[h:h + first]
        if k > first:
            buf[first:k] = rx[0:k - first]
        self._rx_head = (h + k) % size
        self._rx_n -= k
        return k

    def inject(self, data, delay_us=0):
        """Host helper: bytes arriving from the line (no collision/electrical model)."""
        c = self.wire.char_us
        self._arrive_run(bytes(data), self.clock.now_us + delay_us + c, c)


def _noop():
    pass


# The CAN fakes live in their own modules (each compiles within the test heap);
# `from fakebus import FakeCan` still works and loads them on first use.
_LAZY = {"FakeCanBus": "fakecan", "FakeCan": "fakecan", "FakeMachineCan": "fakecan",
         "FakeMcp2515": "fakemcp2515"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(name)
    return getattr(__import__(mod), name)
