# The speed work of issue 4 (docs/scenarios.md, "Speed") changed how things are
# computed, never what: each fast path is checked here against the straightforward
# computation it replaces.
#   - frame.parse (one table look-up per character) against the per-character
#     nibble() reference, on valid and randomly damaged frames;
#   - Admission's firmware reference (O(n) when every version agrees) against the
#     O(n^2) count, on random version mixes;
#   - the RS485 wire's single-clean-answer path: every byte readable exactly when the
#     general path makes it readable; idle wake-ups with wake_first_byte off;
#   - the emulated BMSes: one parse per request, only the addressed one called.
# mpy-heapsize: 512k
import random

import mptest
from fakehw import FakeHardware, SimClock
from fakebus import FakeRs485Wire, FakeUart

from bankgate import config
from bankgate.admission import Admission
from bankgate.events import EventLog
from bankgate.model import Bank
from bankgate.proto import errors as perr
from bankgate.proto import frame

import bmsproto


# ------------------------------------------------------------ frame.parse
def _ref_parse(buf, n, hdr, info, diag):
    # the per-character implementation frame.parse had before the table
    nb = frame.nibble

    def hx(i):
        return (nb(buf[i]) << 4) | nb(buf[i + 1])
    diag[0] = -1
    diag[1] = -1
    if n <= 0 or n > len(buf):
        return perr.E_TRUNCATED
    if buf[0] != frame.SOI:
        return perr.E_SOI
    if buf[n - 1] != frame.EOI:
        return perr.E_EOI
    if n < frame.OVERHEAD:
        return perr.E_TRUNCATED
    for i in range(1, n - 1):
        if nb(buf[i]) < 0:
            return perr.E_HEX
    for k in range(4):
        hdr[k] = hx(1 + 2 * k)
    length = (hx(9) << 8) | hx(11)
    lenid = length & 0xFFF
    if (length >> 12) != frame.lchksum(lenid):
        diag[0] = frame.lchksum(lenid)
        diag[1] = length >> 12
        return perr.E_LCHKSUM
    diag[0] = lenid
    diag[1] = n - frame.OVERHEAD
    if lenid > n - frame.OVERHEAD:
        return perr.E_TRUNCATED
    if lenid < n - frame.OVERHEAD or (lenid & 1) or (lenid >> 1) > frame.MAX_INFO:
        return perr.E_LENGTH
    s = 0
    for i in range(1, n - 5):
        s += buf[i]
    cs = (-s) & 0xFFFF
    found = (hx(n - 5) << 8) | hx(n - 3)
    if cs != found:
        diag[0] = cs
        diag[1] = found
        return perr.E_CHKSUM
    diag[0] = -1
    diag[1] = -1
    for k in range(lenid >> 1):
        info[k] = hx(13 + 2 * k)
    return lenid >> 1


def _frames():
    pack = {"cells_mv": [3300 + i for i in range(15)], "temps_dc": [250, 251, 252, 253, 260],
            "current_ma": -12300, "voltage_mv": 49650, "remaining_mah": 61000, "total_mah": 100000,
            "cycles": 12}
    out = [bmsproto.analog_response("pylontech", 2, pack), bmsproto.analog_response("pace", 3, pack),
           bmsproto.error_response("pylontech", 5, 0x02), bmsproto.version_response("pylontech", 2)]
    return [bytearray(f) for f in out]


def test_parse_table_equals_per_character_reference():
    random.seed(4)
    rnd = random
    hdr = bytearray(4)
    info = bytearray(frame.MAX_INFO)
    diag = [0, 0]
    cases = 0
    for f in _frames():
        variants = [f, bytearray(f.lower())]
        for _ in range(60):
            g = bytearray(f)
            k = rnd.randrange(len(g))
            g[k] = rnd.choice(b"0123456789ABCDEFabcdefGZ~\r \x00\xff")
            variants.append(g)
        variants.append(f[:len(f) - 3] + b"\r")
        for g in variants:
            for n in (len(g), len(g) - 1, 0):
                want = _ref_parse(g, n, hdr, info, diag)
                got = frame.parse(g, n)
                assert got == want, (bytes(g), n, got, want)
                assert frame.DIAG[0] == diag[0] and frame.DIAG[1] == diag[1]
                if want >= 0:
                    assert bytes(frame.HDR) == bytes(hdr)
                    assert bytes(frame.INFO[:want]) == bytes(info[:want])
                cases += 1
    assert cases > 700


def test_parse_still_allocation_free():
    f = _frames()[0]
    assert mptest.no_alloc(frame.parse, f, len(f)) > 0


# ------------------------------------------------------------ firmware reference
def _ref_fw(mods, n):
    ref = -1
    best = 0
    for i in range(n):
        if not mods[i].id_valid or mods[i].sw_version < 0:
            continue                       # a version not read yet is no reference
        cnt = 0
        for j in range(n):
            if mods[j].id_valid and mods[j].sw_version == mods[i].sw_version:
                cnt += 1
        if cnt > best:
            best = cnt
            ref = mods[i].sw_version
    return ref


def test_firmware_reference_fast_path_equals_count():
    n = 16
    cfg = config.validate({"bank": {"expected_modules": n, "addresses": list(range(2, 2 + n))},
                           "contactors": {"outputs": ["k%d" % (i + 1) for i in range(n)]}})
    hw = FakeHardware(SimClock(), outputs=["k%d" % (i + 1) for i in range(n)])
    bank = Bank()
    a = Admission(hw, cfg, bank, EventLog(64))
    random.seed(7)
    rnd = random
    mods = bank.modules
    for trial in range(300):
        kinds = rnd.choice((1, 1, 2, 3))
        for i in range(n):
            m = mods[i]
            m.id_valid = rnd.getrandbits(10) < 820
            m.sw_version = rnd.choice((-1, 0x104, 0x105, 0x200)[:kinds + 1]) if kinds > 1 else 0x104
            if trial % 7 == 0 and i == 0:
                m.sw_version = -1          # an unknown version in the lowest slot
        assert a.rules._fw_reference(mods) == _ref_fw(mods, n), [(m.id_valid, m.sw_version) for m in mods[:n]]


# ------------------------------------------------------------ RS485 wire
def _rig(wake_first):
    clk = SimClock()
    wire = FakeRs485Wire(clk, 115200)
    uart = FakeUart(wire)
    uart.wake_first_byte = wake_first
    answer = b"~20024600C0060102030405FC8D\r"
    wire.attach(lambda req: answer, turnaround_us=2000)
    return clk, wire, uart, answer


def test_single_clean_answer_bytes_arrive_at_their_char_time():
    for wake_first in (True, False):
        clk, wire, uart, answer = _rig(wake_first)
        c = wire.char_us
        uart.de.value(1)
        uart.write(b"~Q\r")
        clk.advance_us(3 * c)
        uart.de.value(0)
        t_end = clk.now_us
        assert wire.requests == 1
        got = bytearray()
        buf = bytearray(64)
        for i in range(len(answer)):
            # byte i becomes readable at t_end + 2000 + (i + 1) * c, not a microsecond earlier
            t = t_end + 2000 + (i + 1) * c
            clk.advance_us(t - 1 - clk.now_us)
            assert uart.any() == 0
            clk.advance_us(1)
            assert uart.any() == 1
            assert uart.readinto(buf) == 1
            got.append(buf[0])
        assert bytes(got) == answer


def test_idle_wakes_at_the_last_byte_without_first_byte_wake():
    for wake_first, want in ((True, 2), (False, 1)):
        clk, wire, uart, answer = _rig(wake_first)
        c = wire.char_us
        uart.write(b"~Q\r")              # auto-DE not set: DE pin driven below
        uart.de.value(1)
        clk.advance_us(3 * c)
        uart.de.value(0)
        wakes = 0
        stop_at = []
        hw = FakeHardware(clk)
        hw.input_ready = lambda: uart.any() > 0
        t_last = clk.now_us + 2000 + len(answer) * c
        while clk.now_us < t_last:
            before = clk.now_us
            hw.idle(200)
            wakes += 1
            stop_at.append(clk.now_us - before)
            uart.readinto(bytearray(64))
        assert wakes == want, (wake_first, stop_at)
        assert clk.now_us == t_last


def test_general_path_still_used_for_two_answers():
    clk = SimClock()
    wire = FakeRs485Wire(clk, 115200)
    uart = FakeUart(wire)
    uart.wake_first_byte = False
    wire.attach(lambda r: b"~AAAA\r")
    wire.attach(lambda r: b"~AAAA\r", turnaround_us=2000 + 3 * wire.char_us)
    uart.de.value(1)
    uart.write(b"~Q\r")
    clk.advance_us(3 * wire.char_us)
    uart.de.value(0)
    clk.advance_us(20000)
    assert wire.collisions == 3 and len(uart.read()) == 9


# ------------------------------------------------------------ emulated BMSes
def test_route_calls_only_the_addressed_bms_and_parses_once():
    from bgsim import emu
    from bgsim import runner
    from bgsim import scenario as sc
    s = sc.validate({"name": "r", "duration_s": 1, "modules": [{}, {}, {}],
                     "config": {"bank": {"expected_modules": 3, "addresses": [2, 3, 4]},
                                "contactors": {"outputs": ["k1", "k2", "k3"]}}})
    sim = runner.Simulation(s, lambda d: None)
    calls = [0, 0, 0]
    for i, r in enumerate(sim.wire.responders):
        f = r[0]

        def w(q, f=f, i=i):
            calls[i] += 1
            return f(q)
        r[0] = w
    from bankgate.proto import pylontech as py
    buf = bytearray(64)
    n = py.encode_request(0x42, 3, buf)
    req = bytes(buf[:n])
    parsed = []
    real = emu._parse_request

    def counting(q):
        parsed.append(q)
        return real(q)
    emu._parse_request = counting
    try:
        assert sim.wire.route(req) == [1]
        sim.wire._request_done(sim.uart, req)               # route + responder: one parse
        assert len(parsed) == 1
        sim.wire._request_done(sim.uart, bytes(buf[:n]))    # an equal but new object: parsed again
        assert len(parsed) == 2
    finally:
        emu._parse_request = real
    assert calls == [0, 2, 0]
    sim.bmses[2].addr = 3                                    # two modules at one address: both asked
    assert sim.wire.route(req) == [1, 2]
    sim.bmses[1].plugged = False
    assert sim.wire.route(req) == [2]
    assert sim.wire.route(b"not a frame") == []
