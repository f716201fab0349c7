# The MCP2515 driver (bus/mcp2515.py) against the register model FakeMcp2515.
import mptest
from fakehw import SimClock
from fakebus import FakeCan, FakeCanBus, FakeMcp2515

from bankgate.bus import can
from bankgate.bus import mcp2515 as mcp
from bankgate.bus.mcp2515 import Mcp2515, Mcp2515Error


def _chip(bus, crystal=8000000, mode=mcp.MODE_NORMAL, use_int=False, cnf_crystal=None):
    chip = FakeMcp2515(bus, crystal_hz=crystal)
    drv = Mcp2515(chip.spi, chip.cs, crystal_hz=cnf_crystal or crystal, bitrate=500000,
                  mode=mode, int_pin=chip.int_pin if use_int else None)
    return chip, drv


def test_cnf_values_documented_and_decoded():
    assert mcp.cnf_for(16000000, 500000) == (0x00, 0xBC, 0x01)
    assert mcp.cnf_for(8000000, 500000) == (0x00, 0x98, 0x01)
    assert mcp.cnf_for(16000000, 250000) == (0x01, 0xBC, 0x01)
    assert mcp.cnf_for(8000000, 250000) == (0x00, 0xBC, 0x01)
    mptest.raises(ValueError, mcp.cnf_for, 8000000, 1000000)   # 4 TQ: impossible
    # the register model turns the CNF bytes back into the bit rate (datasheet formula)
    for xtal in (8000000, 16000000):
        chip, drv = _chip(None, xtal)
        assert chip.bitrate() == (500000, True)
        assert chip.opmode() == mcp.MODE_NORMAL
        assert chip.regs[0x60] == 0x64 and chip.regs[0x2B] == 0x03


def test_round_trip_between_two_drivers():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    ca, a = _chip(bus, 8000000)
    cb, b = _chip(bus, 16000000, use_int=True)
    buf = bytearray(8)
    assert a.send(0x351, b"\x10\x02\x20\x03\x20\x03\x10\x02", 8)
    assert b.recv(buf) == -1                      # on the wire for 270 us
    assert cb.int_pin.value() == 1
    clk.advance_us(300)
    assert cb.int_pin.value() == 0
    assert b.recv(buf) == (0x351 << 4) | 8
    assert bytes(buf) == b"\x10\x02\x20\x03\x20\x03\x10\x02"
    assert b.recv(buf) == -1 and cb.int_pin.value() == 1
    assert b.send(0x305, bytes(8), 8) and b.send(0x7FF, b"\x01", 1)
    clk.advance_us(1000)
    # one chip's buffers go out by TXP, then buffer number (TXB1 before TXB0):
    # not in ID order, not in queue order (documented)
    assert a.recv(buf) == (0x7FF << 4) | 1 and buf[0] == 1
    assert a.recv(buf) == (0x305 << 4) | 8
    assert a.recv(buf) == -1
    assert a.state() == can.ERROR_ACTIVE and a.tec() == 0 and b.rec() == 0
    # and with a FakeCan (another controller type) on the same bus
    f = FakeCan(bus)
    assert f.send(0x123, b"\xAB\xCD", 2)
    clk.advance_us(1000)
    assert a.recv(buf) == (0x123 << 4) | 2 and b.recv(buf) == (0x123 << 4) | 2


def test_loopback_mode_needs_no_bus():
    chip, drv = _chip(None, 16000000, mode=mcp.MODE_LOOPBACK)
    assert chip.opmode() == mcp.MODE_LOOPBACK
    buf = bytearray(8)
    assert drv.send(0x356, b"\x01\x02", 2)
    assert drv.recv(buf) == (0x356 << 4) | 2 and bytes(buf[:2]) == b"\x01\x02"


def test_listen_only_receives_but_never_acks():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    f = FakeCan(bus)
    cl, lst = _chip(bus, 8000000, mode=mcp.MODE_LISTEN)
    assert not lst.send(0x100, b"x", 1)           # cannot transmit
    f.send(0x100, b"x", 1)
    clk.advance_us(2000)
    assert f.tec() > 0 and bus.ack_errors > 0     # nobody acknowledged
    assert lst.recv(bytearray(8)) == -1
    cn, normal = _chip(bus, 8000000)              # a real receiver joins and ACKs
    f.restart()
    f.send(0x101, b"y", 1)
    clk.advance_us(2000)
    assert lst.recv(bytearray(8)) == (0x101 << 4) | 1
    assert normal.recv(bytearray(8)) == (0x101 << 4) | 1


def test_tx_buffers_full():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    ca, a = _chip(bus)
    cb, b = _chip(bus)
    for i in range(3):
        assert a.send(0x200 + i, b"t", 1)
    assert not a.send(0x210, b"t", 1) and a.tx_full == 1
    buf = bytearray(8)
    ids = []
    for _ in range(20):                           # the receiver drains as frames come
        clk.advance_us(100)
        r = b.recv(buf)
        if r >= 0:
            ids.append(r >> 4)
    assert a.send(0x210, b"t", 1)
    clk.advance_us(1000)
    ids.append(b.recv(buf) >> 4)
    assert sorted(ids) == [0x200, 0x201, 0x202, 0x210]
    assert not a.send(0x800, b"t", 1) and not a.send(0x100, b"123456789", 9)


def test_bus_off_via_tec_over_255_and_restart():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    ca, a = _chip(bus)
    cb, b = _chip(bus)
    bus.inject = 32                               # 32 x (TEC + 8) = 256
    assert a.send(0x351, b"\x01\x02", 2)
    clk.advance_us(200)
    assert a.state() == can.ERROR_ACTIVE
    clk.advance_us(2000)
    assert a.state() == can.ERROR_WARNING or a.state() == can.ERROR_PASSIVE
    clk.advance_us(5000)
    assert a.state() == can.BUS_OFF
    assert a.tec() == 255                          # the 8-bit register saturates
    assert b.rec() == 32 and b.state() == can.ERROR_ACTIVE
    assert not a.send(0x352, b"", 0)
    a.restart()
    assert a.state() == can.ERROR_ACTIVE and a.tec() == 0 and a.restarts == 1
    assert a.send(0x352, b"\x05", 1)
    clk.advance_us(1000)
    assert b.recv(bytearray(8)) == (0x352 << 4) | 1


def test_bus_off_recovers_by_itself_after_128x11_bits():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    ca, a = _chip(bus)
    cb, b = _chip(bus)
    bus.inject = 32
    a.send(0x351, b"\x01", 1)
    clk.advance_us(10000)
    assert a.state() == can.BUS_OFF
    clk.advance_us(128 * 11 * 2)                   # 2 us per bit at 500 kbit/s
    assert a.state() == can.ERROR_ACTIVE and a.tec() == 0
    clk.advance_us(1000)                           # the frame still pending goes out
    assert b.recv(bytearray(8)) == (0x351 << 4) | 1


def test_rx_overflow_flag():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    ca, a = _chip(bus)
    cb, b = _chip(bus)
    for i in range(3):
        a.send(0x300 + i, bytes([i]), 1)
        clk.advance_us(500)
    # RXB0 then RXB1 (rollover) filled, the third frame overflowed
    bus.update()                                  # (peeking at registers directly)
    assert cb.regs[0x2D] & 0x80
    assert b.state() == can.ERROR_ACTIVE and b.rx_overflows == 1
    assert not cb.regs[0x2D] & 0xC0               # cleared by state()
    buf = bytearray(8)
    got = []
    while True:
        r = b.recv(buf)
        if r < 0:
            break
        got.append((r >> 4, buf[0]))
    assert got == [(0x300, 0), (0x301, 1)]


def test_wrong_crystal_setting_sees_nothing():
    # an 8 MHz board configured as 16 MHz runs at 250 kbit/s: no ACK, no frames
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    f = FakeCan(bus)
    chip, drv = _chip(bus, 8000000, cnf_crystal=16000000)
    assert chip.bitrate() == (250000, True)
    f.send(0x351, b"\x01", 1)
    clk.advance_us(5000)
    assert drv.recv(bytearray(8)) == -1 and f.tec() > 0


def test_remote_and_extended_frames_skipped():
    chip, drv = _chip(None)
    chip.inject_rx(0x100, b"\x01")
    chip.regs[0x62] |= 0x08                       # IDE: an extended frame in RXB0
    chip.inject_rx(0x101, b"\x02")
    buf = bytearray(8)
    assert drv.recv(buf) == (0x101 << 4) | 1 and buf[0] == 2
    assert drv.skipped == 1


class _DeadSpi:
    def write(self, buf):
        pass

    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = 0xFF


class _Pin:
    def value(self, v=None):
        return 1


def test_absent_chip_raises_clear_error():
    e = mptest.raises(Mcp2515Error, Mcp2515, _DeadSpi(), _Pin())
    assert "no MCP2515" in str(e)
    mptest.raises(ValueError, Mcp2515, _DeadSpi(), _Pin(), 8000000, 500000, mcp.MODE_CONFIG)


def test_driver_is_allocation_free():
    for use_int in (False, True):
        chip, drv = _chip(None, use_int=use_int)
        buf = bytearray(8)
        data = bytearray(b"\x01\x02\x03\x04\x05\x06\x07\x08")
        assert mptest.no_alloc(drv.send, 0x351, data, 8)
        assert chip.regs[0x30] & 0x08             # TXREQ set in TXB0
        assert mptest.no_alloc(drv.recv, buf) == -1
        chip.inject_rx(0x305, bytes(8))
        chip.inject_rx(0x306, b"\x09")
        assert mptest.no_alloc(drv.recv, buf) == (0x305 << 4) | 8
        assert mptest.no_alloc(drv.recv, buf) == (0x306 << 4) | 1
        assert mptest.no_alloc(drv.state) == can.ERROR_ACTIVE
        assert mptest.no_alloc(drv.tec) == 0 and mptest.no_alloc(drv.rec) == 0
