# The fakes themselves: PRNG, electrical model, wire/UART mechanics, MCP2515 SPI
# register semantics.  (The drivers' tests are in test_rs485/test_can/test_mcp2515.)
import math

import mptest
from fakehw import SimClock
from fakebus import ElectricalModel, FakeMcp2515, FakeRs485Wire, FakeUart, Prng


def test_prng_reproducible_and_uniform():
    a = Prng(5)
    b = Prng(5)
    c = Prng(6)
    sa = [a.next32() for _ in range(20)]
    assert sa == [b.next32() for _ in range(20)]
    assert sa != [c.next32() for _ in range(20)]
    assert all(0 < x <= 0xFFFFFFFF for x in sa)
    # below(10): 20000 draws, each bin within 5 sigma of 2000 (sigma = 42)
    bins = [0] * 10
    for _ in range(20000):
        bins[a.below(10)] += 1
    assert all(abs(k - 2000) < 5 * 42 for k in bins)
    # chance_ppm(100000): rate 0.1 +- 5 sigma (sigma = 0.0021 for 20000 draws)
    hits = sum(1 for _ in range(20000) if a.chance_ppm(100000))
    assert abs(hits / 20000 - 0.1) < 5 * 0.0021
    assert not any(a.chance_ppm(0) for _ in range(1000))


def _formula(T, L, br, floor_ppm, noise_mv=50, nodes=4):
    # docs/bus.md, written out independently of the implementation
    r = 2 * L * 5e-9 * br
    U = max(0, 2 - T)
    p_refl = min(0.5, 0.25 * U * r * r)
    r_load = 120 / T if T else 12000 / nodes
    v = 3000 * r_load / (r_load + 30 + 0.168 * L)
    x = (v - 200) / noise_mv
    p_amp = 0.5 if x <= 0 else min(0.5, 5 * math.exp(-x * x / 2))
    p = 1 - (1 - floor_ppm / 1e6) * (1 - p_refl) * (1 - p_amp)
    return int(min(0.5, p) * 1e6 + 0.5)


def test_electrical_model_formula():
    for T, L, br, fl in ((0, 100, 115200, 0), (1, 300, 115200, 0), (2, 1200, 9600, 10),
                         (3, 1200, 115200, 0), (4, 1000, 9600, 0), (5, 800, 115200, 0),
                         (0, 10, 9600, 500)):
        m = ElectricalModel(terminators=T, length_m=L, bitrate=br, noise_ppm=fl)
        assert abs(m.byte_error_ppm - _formula(T, L, br, fl)) <= 1, (T, L, br)


def test_electrical_model_trends():
    E = lambda **k: ElectricalModel(**k).byte_error_ppm
    # properly terminated: clean up to the RS485 length limit
    assert E(terminators=2, length_m=1200, bitrate=115200) == 0
    # unterminated ends reflect: errors grow with length x bit rate
    assert E(terminators=0, length_m=10, bitrate=9600) < 100
    assert (E(terminators=0, length_m=50, bitrate=115200)
            < E(terminators=0, length_m=200, bitrate=115200))
    assert E(terminators=0, length_m=200, bitrate=9600) < E(terminators=0, length_m=200, bitrate=115200)
    assert E(terminators=1, length_m=200, bitrate=115200) < E(terminators=0, length_m=200, bitrate=115200)
    # too many terminators load the drivers: errors grow with length
    assert E(terminators=4, length_m=100, bitrate=115200) == 0
    assert 0 < E(terminators=4, length_m=1000, bitrate=115200) < E(terminators=5, length_m=1000, bitrate=115200)
    # the noise floor adds
    assert E(terminators=2, length_m=10, bitrate=115200, noise_ppm=300) == 300


def test_idle_voltage_tells_termination():
    mv = [ElectricalModel(terminators=t).idle_mv for t in range(5)]
    assert mv[0] > 2000                           # bias only: receivers' load
    assert mv[0] > mv[1] > mv[2] > mv[3] > mv[4] > 0
    # 2 x 120 ohm with 680 ohm biasing at 3.3 V: 3300 * 60 / 1420
    assert mv[2] == (3300 * 60 + 710) // 1420
    assert ElectricalModel(terminators=2, bias_ohm=0).idle_mv == 0
    mptest.raises(ValueError, ElectricalModel, -1)


def test_byte_corruption_rate():
    # 5 % per byte: 4000 bytes, observed corrupted+dropped within 4 sigma (0.0034)
    clk = SimClock()
    m = ElectricalModel(terminators=2, noise_ppm=50000, bitrate=115200)
    wire = FakeRs485Wire(clk, 115200, model=m, seed=3)
    data = bytes(range(40))
    bad = 0
    total = 0
    for _ in range(100):
        out, t = wire._corrupt(data, list(range(40)))
        total += len(data)
        bad += sum(1 for i in range(len(out)) if out[i] != data[t[i]]) + (len(data) - len(out))
    rate = bad / total
    assert abs(rate - 0.05) < 4 * 0.0034 + 0.02     # + truncations (p >= 5 %)
    assert wire.dropped > 0 and wire.truncated > 0 and wire.corrupted > 0


def test_uart_timing_and_buffers():
    clk = SimClock()
    wire = FakeRs485Wire(clk, 9600)
    uart = FakeUart(wire, rxbuf=8)
    uart.de.value(1)
    assert uart.write(b"abc") == 3
    assert not uart.txdone()
    clk.advance_us(3 * 1042 - 1)
    assert not uart.txdone()
    clk.advance_us(1)
    assert uart.txdone()
    assert wire.last_request == b"abc"
    uart.de.value(0)
    uart.inject(b"0123456789")
    assert uart.any() == 0
    clk.advance_us(1042)
    assert uart.any() == 1
    clk.advance_us(20000)
    assert uart.any() == 8 and uart.overruns == 2   # 8-byte buffer
    buf = bytearray(3)
    assert uart.readinto(buf) == 3 and bytes(buf) == b"012"
    assert uart.readinto(buf, 2) == 2 and bytes(buf[:2]) == b"34"
    assert uart.read() == b"567"
    assert uart.readinto(buf) is None


def test_collision_bytes_differ_from_both_answers():
    clk = SimClock()
    wire = FakeRs485Wire(clk, 115200)
    uart = FakeUart(wire)
    wire.attach(lambda r: b"~AAAAAAAA\r")
    wire.attach(lambda r: b"~AAAAAAAA\r", turnaround_us=2000 + 5 * 87)   # 5 chars late
    uart.de.value(1)
    uart.write(b"~Q\r")
    clk.advance_us(3 * 87)
    uart.de.value(0)
    clk.advance_us(20000)
    got = uart.read()
    assert wire.collisions == 5                     # the overlapping slots
    assert len(got) == 15
    assert got[:5] == b"~AAAA" and got[10:] == b"AAAA\r"
    assert got[5:10] != b"AAAA\r" and got[5:10] != b"~AAAA"
    for i in range(5, 10):                          # every collided byte garbled
        assert got[i] != b"AAAA\r"[i - 5] and got[i] != b"~AAAA"[i - 5]


def _spi(chip, *b):
    out = bytearray(len(b))
    chip.cs.value(0)
    chip.spi.write_readinto(bytes(b), out)
    chip.cs.value(1)
    return out


def test_mcp2515_register_interface():
    chip = FakeMcp2515(None, 16000000)
    assert _spi(chip, 0x03, 0x0F, 0)[2] == 0x87     # CANCTRL after reset
    assert _spi(chip, 0x03, 0x0E, 0)[2] == 0x80     # CANSTAT: configuration mode
    assert _spi(chip, 0x03, 0x3E, 0)[2] == 0x80     # mirrored in every row
    _spi(chip, 0x02, 0x28, 0x01, 0xBC, 0x01)        # WRITE auto-increments: CNF3, 2, 1
    assert chip.regs[0x28] == 0x01 and chip.regs[0x29] == 0xBC and chip.regs[0x2A] == 0x01
    assert chip.bitrate() == (250000, True)          # BRP 1 at 16 MHz
    _spi(chip, 0x02, 0x28, 0x05)
    assert _spi(chip, 0x03, 0x28, 0, 0, 0)[2:] == bytearray([5, 0xBC, 0x01])
    _spi(chip, 0x05, 0x0F, 0xE0, 0x00)              # BIT MODIFY: REQOP normal
    assert chip.opmode() == 0 and _spi(chip, 0x03, 0x0F, 0)[2] == 0x07
    _spi(chip, 0x02, 0x28, 0x07)                    # CNF locked outside config mode
    assert chip.regs[0x28] == 5
    _spi(chip, 0x02, 0x1C, 0x50)                    # TEC read-only
    assert chip.regs[0x1C] == 0
    # LOAD TX BUFFER (TXB1 at SIDH) + RTS: TXREQ; READ STATUS shows it
    _spi(chip, 0x42, 0x24, 0x60, 0, 0, 2, 0xAA, 0xBB)
    assert chip.regs[0x41] == 0x24 and chip.regs[0x45] == 2 and chip.regs[0x46] == 0xAA
    _spi(chip, 0x82)
    assert chip.regs[0x40] & 0x08
    assert _spi(chip, 0xA0, 0)[1] == 0x10
    # a received frame: READ RX BUFFER clears RX0IF when CS rises, not before
    chip.inject_rx(0x123, b"\x01\x02")
    assert _spi(chip, 0xB0, 0)[1] == 0x40 and _spi(chip, 0xA0, 0)[1] & 0x01
    chip.cs.value(0)
    out = bytearray(6)
    chip.spi.write(b"\x90")
    chip.spi.readinto(out)
    assert chip.regs[0x2C] & 0x01
    chip.cs.value(1)
    assert not chip.regs[0x2C] & 0x01
    assert ((out[0] << 3) | (out[1] >> 5)) == 0x123 and out[4] == 2 and out[5] == 1
    # EFLG: RXnOVR only cleared, error bits read-only
    chip.regs[0x2D] = 0xC5
    _spi(chip, 0x02, 0x2D, 0x00)
    assert chip.regs[0x2D] == 0x05
    _spi(chip, 0x02, 0x2D, 0xFF)
    assert chip.regs[0x2D] == 0x05
    # not selected: nothing happens
    chip.spi.write(b"\x02\x36\x99")
    assert chip.regs[0x36] != 0x99
    _spi(chip, 0xC0)                                # RESET
    assert chip.regs[0x0F] == 0x87 and chip.regs[0x40] == 0 and chip.resets == 2


def _xorshift32_reference(seed, n):
    # Marsaglia's xorshift32 (13, 17, 5) on whole words, seeded as Prng documents
    m = 0xFFFFFFFF
    x = (seed * 2654435761 + 0x9E3779B9) & m or 1
    out = []
    for _ in range(n):
        x ^= (x << 13) & m
        x ^= x >> 17
        x ^= (x << 5) & m
        out.append(x)
    return out


def test_prng_is_xorshift32_and_draws_without_allocating():
    # the 16-bit-halves implementation gives the same words as the whole-word algorithm
    # (so every seeded simulation is unchanged), and below()/chance_ppm() stay within small
    # ints on a 32-bit port (31-bit small ints, as on the ESP32): no heap ints
    for seed in (0, 1, 5, 12345, 0x7FFFFFFF):
        p = Prng(seed)
        assert [p.next32() for _ in range(200)] == _xorshift32_reference(seed, 200), seed
    ref = Prng(9)
    p = Prng(9)
    for n in (1, 2, 8, 29, 116, 1000, 0x1FFFF):
        w = ref.next32()
        assert mptest.no_alloc(p.below, n) == ((w >> 8) * n) >> 24, n
    for ppm in (0, 1, 999, 100000, 999999, 1000000):
        w = ref.next32()
        assert mptest.no_alloc(p.chance_ppm, ppm) == (((w * 1000000) >> 32) < ppm), ppm
