# Rs485Master against the fake wire (tools/fakes/fakebus.py) in simulated time.
import mptest
from fakehw import SimClock
from fakebus import ElectricalModel, FakeRs485Wire, FakeUart

from bankgate.bus import rs485
from bankgate.bus.rs485 import BUSY, DONE, GAP, NOISE, OVERFLOW, TIMEOUT, Rs485Master

REQ = b"~20024642E00202FD33\r"
RESP_4F = b"~200246000000FDB2\r"
# UP2500 0x42 response (PROTOCOLS.md, from python-pylontech's test suite)
RESP_42 = (b"~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73"
           b"FFFA680EFFFF04FFFF00000174E401B198E906\r")


def pyl_checksum_ok(frame, n):
    """Pylontech CHKSUM over the characters between '~' and the 4 checksum chars."""
    if n < 6 or frame[0] != 0x7E or frame[n - 1] != 0x0D:
        return False
    s = 0
    for i in range(1, n - 5):
        s += frame[i]
    want = ((~s) + 1) & 0xFFFF
    try:
        got = int(bytes(frame[n - 5:n - 1]), 16)
    except ValueError:
        return False
    return got == want


def setup(baud, timeout_ms=200, model=None, seed=1, auto_de=False):
    clk = SimClock()
    wire = FakeRs485Wire(clk, baud, model=model, seed=seed)
    uart = FakeUart(wire, auto_de=auto_de)
    rs = Rs485Master(uart, None if auto_de else uart.de, clk, timeout_ms)
    return clk, wire, uart, rs


def run(clk, uart, rs):
    """The main loop's pattern: poll, then idle until the next deadline or input."""
    while True:
        now = clk.ticks_ms()
        r = rs.poll(now)
        if r != BUSY:
            return r
        w = rs.wait_ms(now)
        clk.advance_us((w if w > 0 else 1) * 1000, lambda: uart.any() > 0)


def test_timing_formulas():
    # char = ceil(1e7 / baud); guard = max(20, ceil(2e6 / baud));
    # gap = max(2, ceil(4 * char / 1000))
    for baud in (9600, 115200):
        clk, wire, uart, rs = setup(baud)
        char = -(-10000000 // baud)
        assert rs.char_us == char
        assert rs.guard_us == max(20, -(-2000000 // baud))
        assert rs.gap_ms == max(2, -(-4 * char // 1000))
    assert rs485.char_time_us(9600) == 1042 and rs485.gap_time_ms(9600) == 5
    assert rs485.char_time_us(115200) == 87 and rs485.gap_time_ms(115200) == 2
    # UART hand-over latency widens the gap (120-char FIFO threshold at 9600: 130 ms)
    assert rs485.gap_time_ms(9600, 120) == -(-124 * 1042 // 1000)


def _roundtrip(baud, resp):
    clk, wire, uart, rs = setup(baud)
    wire.attach(lambda req: resp if req == REQ else None, turnaround_us=2000)
    buf = bytearray(64)
    buf[:len(REQ)] = REQ
    rs.start(buf, len(REQ))
    c = rs.char_us
    tx_end = len(REQ) * c
    # start() returned once the request left and DE dropped after the guard
    assert clk.now_us == tx_end + rs.guard_us
    assert uart.de_history == [(0, 1), (tx_end + rs.guard_us, 0)]
    r = run(clk, uart, rs)
    assert r == DONE
    assert bytes(rs.rx[:rs.n]) == resp
    assert wire.last_request == REQ
    assert uart.lost_tx == 0 and uart.lost_rx == 0
    # the frame completes at tx_end + turnaround + len(resp) char times; the idle
    # loop wakes on that last byte
    t_done = tx_end + 2000 + len(resp) * c
    assert clk.now_us == t_done
    assert rs.latency_ms == t_done // 1000 - (tx_end + rs.guard_us) // 1000
    assert rs.bytes_tx == len(REQ) and rs.bytes_rx == len(resp)
    assert rs.poll(clk.ticks_ms()) == DONE        # sticky outside a transaction
    return rs


def test_roundtrip_9600():
    _roundtrip(9600, RESP_42)


def test_roundtrip_115200():
    _roundtrip(115200, RESP_42)
    _roundtrip(115200, RESP_4F)


def test_de_high_exactly_while_sending():
    for baud in (9600, 115200):
        clk, wire, uart, rs = setup(baud)
        wire.attach(lambda req: RESP_4F, turnaround_us=1000)
        rs.start(bytearray(REQ), len(REQ))
        assert run(clk, uart, rs) == DONE
        (t_on, v_on), (t_off, v_off) = uart.de_history
        first_bit = 0
        last_stop = len(REQ) * rs.char_us
        resp_start = last_stop + 1000
        assert v_on == 1 and v_off == 0
        assert t_on <= first_bit and last_stop <= t_off < resp_start


def test_response_lost_while_de_still_high():
    # a responder answering faster than the guard (turnaround 0 at 9600: the guard
    # is 209 us) loses its first byte to our own driver: the '~' is gone
    clk, wire, uart, rs = setup(9600)
    wire.attach(lambda req: RESP_4F, turnaround_us=0)
    rs.start(bytearray(REQ), len(REQ))
    r = run(clk, uart, rs)
    assert uart.lost_rx == 1
    assert r == NOISE
    assert rs.noise == len(RESP_4F) - 1


def test_request_lost_without_de():
    # the board forgot the DE pin: every request byte is sent with the driver off
    clk, wire, uart, rs0 = setup(115200)
    rs = Rs485Master(uart, None, clk, 100)
    wire.attach(lambda req: RESP_4F)
    rs.start(bytearray(REQ), len(REQ))
    assert run(clk, uart, rs) == TIMEOUT
    assert uart.lost_tx == len(REQ)
    assert wire.last_request == b""


def test_auto_direction_transceiver():
    clk, wire, uart, rs = setup(115200, auto_de=True)
    wire.attach(lambda req: RESP_4F)
    rs.start(bytearray(REQ), len(REQ))
    assert run(clk, uart, rs) == DONE
    assert bytes(rs.rx[:rs.n]) == RESP_4F
    assert uart.de_history == []


def _timeout_at(baud, timeout_ms):
    clk, wire, uart, rs = setup(baud, timeout_ms)
    rs.start(bytearray(REQ), len(REQ))
    t_end = clk.ticks_ms()
    assert rs.wait_ms(t_end) == timeout_ms
    # poll every millisecond: BUSY up to the deadline, TIMEOUT exactly at it
    while True:
        now = clk.ticks_ms()
        r = rs.poll(now)
        if r != BUSY:
            break
        assert now - t_end < timeout_ms
        assert rs.wait_ms(now) == t_end + timeout_ms - now
        clk.advance_us(1000)
    assert r == TIMEOUT
    assert clk.ticks_ms() == t_end + timeout_ms
    assert rs.wait_ms(clk.ticks_ms()) == 0


def test_timeout_9600():
    # request end = 20 chars * 1042 us + 209 us guard = 21049 us -> tick 21
    _timeout_at(9600, 200)
    _timeout_at(9600, 37)


def test_timeout_115200():
    _timeout_at(115200, 200)
    _timeout_at(115200, 20)


def _gap_at(baud):
    partial = RESP_4F[:9]                        # the responder dies mid-frame
    clk, wire, uart, rs = setup(baud, 500)
    wire.attach(lambda req: partial, turnaround_us=3000)
    rs.start(bytearray(REQ), len(REQ))
    c = rs.char_us
    last_us = len(REQ) * c + 3000 + len(partial) * c
    t0 = clk.now_us                              # polls at t0, t0 + 1 ms, ...
    seen_ms = (t0 + -(-(last_us - t0) // 1000) * 1000) // 1000   # the poll that reads it
    while True:
        now = clk.ticks_ms()
        r = rs.poll(now)
        if r != BUSY:
            break
        clk.advance_us(1000)
    assert r == GAP
    # GAP once MORE than gap_ms passed since the last byte was seen
    assert clk.ticks_ms() == seen_ms + rs.gap_ms + 1
    assert bytes(rs.rx[:rs.n]) == partial
    # the idle-loop pattern ends the same way (not with the whole-frame TIMEOUT)
    clk, wire, uart, rs = setup(baud, 500)
    wire.attach(lambda req: partial, turnaround_us=3000)
    rs.start(bytearray(REQ), len(REQ))
    assert run(clk, uart, rs) == GAP
    assert clk.ticks_ms() < rs._t_end + 500


def test_gap_9600():
    _gap_at(9600)


def test_gap_115200():
    _gap_at(115200)


def test_slow_frame_is_not_a_gap():
    # a 120-char frame at 9600 takes 125 ms: longer than gap_ms, but bytes keep coming
    clk, wire, uart, rs = setup(9600, 300)
    wire.attach(lambda req: RESP_42)
    rs.start(bytearray(REQ), len(REQ))
    for _ in range(400):
        now = clk.ticks_ms()
        r = rs.poll(now)
        if r != BUSY:
            break
        clk.advance_us(3000)                     # poll every 3 ms
    assert r == DONE


def test_noise_only_and_leading_glitch():
    clk, wire, uart, rs = setup(115200, 50)
    wire.attach(lambda req: b"\x00\xff\x13")
    rs.start(bytearray(REQ), len(REQ))
    assert run(clk, uart, rs) == NOISE
    assert rs.noise == 3
    clk, wire, uart, rs = setup(115200, 50)
    wire.attach(lambda req: b"\x00" + RESP_4F)     # glitch when the module's driver turns on
    rs.start(bytearray(REQ), len(REQ))
    assert run(clk, uart, rs) == DONE
    assert bytes(rs.rx[:rs.n]) == RESP_4F and rs.noise == 1


def test_overflow():
    clk, wire, uart, rs0 = setup(115200)
    rs = Rs485Master(uart, uart.de, clk, 200, rxbuf_size=32)
    wire.attach(lambda req: b"~" + b"A" * 40 + b"\r")
    rs.start(bytearray(REQ), len(REQ))
    assert run(clk, uart, rs) == OVERFLOW
    assert rs.n == 32


def test_stale_input_flushed():
    clk, wire, uart, rs = setup(115200)
    wire.attach(lambda req: RESP_4F)
    uart.inject(b"~2002460\r junk")               # a late answer from before
    clk.advance_us(5000)
    rs.start(bytearray(REQ), len(REQ))
    assert rs.stale == len(b"~2002460\r junk")
    assert run(clk, uart, rs) == DONE
    assert bytes(rs.rx[:rs.n]) == RESP_4F


def test_restart_on_new_sof():
    clk, wire, uart, rs = setup(115200)
    wire.attach(lambda req: b"~20024" + RESP_4F)  # truncated frame, then a whole one
    rs.start(bytearray(REQ), len(REQ))
    assert run(clk, uart, rs) == DONE
    assert bytes(rs.rx[:rs.n]) == RESP_4F


def test_collision_garbles():
    # duplicate address: two modules answer the same request
    for offset_us in (0, 250, 3 * 87):
        clk, wire, uart, rs = setup(115200, 100)
        wire.attach(lambda req: RESP_42, turnaround_us=2000)
        wire.attach(lambda req: RESP_42, turnaround_us=2000 + offset_us)
        rs.start(bytearray(REQ), len(REQ))
        r = run(clk, uart, rs)
        assert wire.collisions > 0
        assert not (r == DONE and pyl_checksum_ok(rs.rx, rs.n))


def test_bad_arguments_change_nothing():
    clk, wire, uart, rs = setup(115200)
    mptest.raises(ValueError, rs.start, bytearray(REQ), 0)
    mptest.raises(ValueError, rs.start, bytearray(4), 5)
    assert uart.writes == 0 and uart.de_history == [] and not rs.busy()
    mptest.raises(ValueError, Rs485Master, uart, None, clk, 0)


def test_noise_rate_matches_model():
    # Per-byte corruption p (ppm) from the model; a response of L bytes fails its
    # checksum (or framing) with probability P = 1 - (1 - p)^L.  N trials with a
    # fixed seed; the observed rate must lie within 4 standard deviations
    # sqrt(P(1-P)/N) of P (a correct model fails this for 6e-5 of seeds).
    model = ElectricalModel(terminators=2, length_m=10, bitrate=115200, noise_ppm=2000)
    p = model.byte_error_ppm
    assert 2000 <= p <= 2001                      # terminated short bus: noise floor only
    clk, wire, uart, rs = setup(115200, 100, model=model, seed=7)
    wire.attach(lambda req: RESP_42)
    buf = bytearray(REQ)
    n_trials = 400
    bad = 0
    undetected = 0
    for _ in range(n_trials):
        rs.start(buf, len(buf))
        r = run(clk, uart, rs)
        if r == DONE and pyl_checksum_ok(rs.rx, rs.n):
            if bytes(rs.rx[:rs.n]) != RESP_42:
                undetected += 1
        else:
            bad += 1
        clk.advance_us(1000)
    L = len(RESP_42)
    q = 1.0 - p / 1e6
    P = 1.0 - q ** L
    sigma = (P * (1 - P) / n_trials) ** 0.5
    rate = bad / n_trials
    print("p=%d ppm L=%d expected %.4f observed %.4f sigma %.4f" % (p, L, P, rate, sigma))
    assert abs(rate - P) < 4 * sigma
    assert undetected <= 2                        # two flips cancelling in the sum
    assert wire.corrupted > 0


def test_clean_bus_never_fails():
    clk, wire, uart, rs = setup(115200, 100, model=ElectricalModel(bitrate=115200))
    assert wire.error_ppm == 0
    wire.attach(lambda req: RESP_42)
    for _ in range(50):
        rs.start(bytearray(REQ), len(REQ))
        assert run(clk, uart, rs) == DONE
        assert pyl_checksum_ok(rs.rx, rs.n)


class _StubUart:
    """Allocation-free serial port: the response is preloaded, txdone follows time."""

    def __init__(self, clock, baud):
        self.clock = clock
        self.baudrate = baud
        self.char_us = -(-10000000 // baud)
        self.data = bytearray(256)
        self.len = 0
        self.pos = 0
        self.t_done = 0

    def load(self, b):
        self.data[:len(b)] = b
        self.len = len(b)
        self.pos = 0

    def write(self, buf):
        self.t_done = self.clock.now_us + len(buf) * self.char_us
        return len(buf)

    def txdone(self):
        return self.clock.now_us >= self.t_done

    def any(self):
        return self.len - self.pos

    def readinto(self, buf):
        k = self.len - self.pos
        if k <= 0:
            return None
        if k > len(buf):
            k = len(buf)
        for i in range(k):
            buf[i] = self.data[self.pos + i]
        self.pos += k
        return k


class _StubPin:
    def __init__(self):
        self.v = 0
        self.changes = 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        self.changes += 1


def test_no_allocation_in_start_and_poll():
    for baud in (9600, 115200):
        clk = SimClock()
        uart = _StubUart(clk, baud)
        de = _StubPin()
        rs = Rs485Master(uart, de, clk, 100)
        buf = bytearray(64)
        buf[:len(REQ)] = REQ
        n = len(REQ)
        # warm-up: the cached view of buf[:n] is made on the first request
        rs.start(buf, n)
        uart.load(RESP_42)
        assert rs.poll(clk.ticks_ms()) == DONE
        exact = bytearray(REQ)
        for b, k in ((buf, n), (exact, n)):
            mptest.no_alloc(rs.start, b, k)
            assert de.v == 0 and de.changes >= 2
            uart.load(RESP_42[:50])               # half a frame: BUSY
            assert mptest.no_alloc(rs.poll, clk.ticks_ms()) == BUSY
            assert mptest.no_alloc(rs.wait_ms, clk.ticks_ms()) > 0
            uart.data[:len(RESP_42) - 50] = RESP_42[50:]
            uart.len = len(RESP_42) - 50
            uart.pos = 0
            assert mptest.no_alloc(rs.poll, clk.ticks_ms()) == DONE
            assert bytes(rs.rx[:rs.n]) == RESP_42
        # timeout path
        mptest.no_alloc(rs.start, buf, n)
        clk.advance_us(150000)
        assert mptest.no_alloc(rs.poll, clk.ticks_ms()) == TIMEOUT


def test_native_feed_equals_bytecode_feed():
    # the viper byte loop (bankgate.proto.fast.feed) against the bytecode one: the same
    # results, frame bytes, states and noise counts on random streams of frames,
    # noise, cut frames and overflows fed in random chunks
    import random
    random.seed(3)
    rnd = random
    clk = SimClock()
    wire = FakeRs485Wire(clk, 115200)
    a = Rs485Master(FakeUart(wire), None, clk, 200, rxbuf_size=64)
    b = Rs485Master(FakeUart(wire), None, clk, 200, rxbuf_size=64)
    assert a.native, "bankgate.proto.fast did not load (native emitter)"
    b.native = False
    parts = [REQ, RESP_4F, RESP_42, b"~2002", b"xx\x00\xff", b"\r", b"~~", b"0" * 70]
    for trial in range(300):
        stream = b"".join(parts[rnd.getrandbits(3)] for _ in range(1 + rnd.getrandbits(3)))
        for rs in (a, b):
            rs.n = 0
            rs._state = 1           # _ST_SOF: a transaction has started
            rs.noise = 0
            rs._noise_now = 0
        pos = 0
        while pos < len(stream):
            k = 1 + rnd.getrandbits(6)
            chunk = stream[pos:pos + k]
            pos += k
            out = []
            for rs in (a, b):
                rs._scratch[0:len(chunk)] = chunk
                r = rs._feed(len(chunk))
                out.append((r, rs.n, bytes(rs.rx[:rs.n]), rs._state, rs.noise, rs._noise_now))
            assert out[0] == out[1], (trial, stream, out)
            if out[0][0] != BUSY:
                break
