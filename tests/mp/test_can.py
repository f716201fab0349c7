# The CAN interface: bus/can.py helpers, the FakeCanBus rules, and the machine.CAN
# back end (hal/twai.py) against FakeMachineCan.
import mptest
from fakehw import SimClock
from fakebus import ElectricalModel, FakeCan, FakeCanBus, FakeMachineCan

from bankgate.bus import can
from bankgate.hal.twai import TwaiCan


def test_state_from_counters_boundaries():
    S = can.state_from_counters
    assert S(0, 0) == can.ERROR_ACTIVE and S(95, 95) == can.ERROR_ACTIVE
    assert S(96, 0) == can.ERROR_WARNING and S(0, 96) == can.ERROR_WARNING
    assert S(127, 127) == can.ERROR_WARNING
    assert S(128, 0) == can.ERROR_PASSIVE and S(0, 128) == can.ERROR_PASSIVE
    assert S(255, 255) == can.ERROR_PASSIVE
    assert S(256, 0) == can.BUS_OFF
    r = (0x351 << 4) | 8
    assert can.frame_id(r) == 0x351 and can.frame_dlc(r) == 8
    # 44 + 8*dlc + 3 IFS + worst-case stuffing (33 + 8*dlc) // 4
    assert can.frame_bits(8) == 44 + 64 + 3 + (33 + 64) // 4
    assert can.frame_bits(0) == 47 + 33 // 4


def _bus(n=2, **kw):
    clk = SimClock()
    bus = FakeCanBus(clk, 500000, **kw)
    return clk, bus, [FakeCan(bus, name="n%d" % i) for i in range(n)]


def test_frame_round_trip_with_wire_time():
    clk, bus, (a, b) = _bus()
    buf = bytearray(8)
    assert a.send(0x351, b"\x10\x02\x20\x03\x20\x03", 6)
    t_frame = -(-can.frame_bits(6) * 1000000 // 500000)
    clk.advance_us(t_frame - 1)
    assert b.recv(buf) == -1                      # still on the wire
    clk.advance_us(1)
    r = b.recv(buf)
    assert r == (0x351 << 4) | 6
    assert bytes(buf[:6]) == b"\x10\x02\x20\x03\x20\x03"
    assert b.recv(buf) == -1
    assert a.recv(buf) == -1                      # a normal node does not hear itself
    assert a.tec() == 0 and b.rec() == 0 and a.state() == can.ERROR_ACTIVE


def test_arbitration_lowest_id_first():
    clk, bus, (a, b, c) = _bus(3)
    bus.log = []
    # frames queued at the same instant arbitrate against each other
    assert a.send(0x356, b"\x01", 1)
    assert b.send(0x351, b"\x02", 1)
    assert a.send(0x355, b"\x03", 1)
    clk.advance_us(5000)
    bus.update()                                  # the bus is evaluated lazily
    assert [x[1] for x in bus.log] == [0x351, 0x355, 0x356]
    buf = bytearray(8)
    got = []
    while True:
        r = c.recv(buf)
        if r < 0:
            break
        got.append(r >> 4)
    assert got == [0x351, 0x355, 0x356]
    # frames follow each other back to back at the bit rate
    t = [x[0] for x in bus.log]
    assert t[1] - t[0] == -(-can.frame_bits(1) * 1000000 // 500000)
    # a frame queued while another is on the wire waits for its end, whatever its ID
    bus.log = []
    assert b.send(0x700, bytes(8), 8)
    clk.advance_us(10)
    assert a.send(0x100, b"\x04", 1)
    clk.advance_us(5000)
    bus.update()
    assert [x[1] for x in bus.log] == [0x700, 0x100]
    assert bus.log[1][0] - bus.log[0][0] == -(-can.frame_bits(1) * 1000000 // 500000)


def test_tx_queue_full_and_bad_args():
    clk, bus, (a, b) = _bus()
    for i in range(3):
        assert a.send(0x100 + i, b"x", 1)
    assert not a.send(0x200, b"x", 1)
    assert a.pending() == 3
    assert not a.send(0x800, b"x", 1)            # not an 11-bit ID
    assert not a.send(0x100, b"123456789", 9)
    assert not a.send(0x100, b"12", 3)
    assert a.pending() == 3
    clk.advance_us(2000)
    assert a.pending() == 0 and a.send(0x200, b"x", 1)


def test_lone_node_ack_errors_stop_at_error_passive():
    # nobody acknowledges: TEC +8 per attempt up to error passive, then unchanged
    clk, bus, (a,) = _bus(1)
    assert a.send(0x305, bytes(8), 8)
    clk.advance_us(100000)
    assert a.tec() == 128 and a.state() == can.ERROR_PASSIVE
    assert bus.ack_errors > 16


def test_bus_off_via_errors_and_restart():
    clk, bus, (a, b) = _bus()
    bus.inject = 32                               # 32 destroyed attempts: TEC 256
    assert a.send(0x351, b"\x00\x01", 2)
    clk.advance_us(100000)
    assert a.state() == can.BUS_OFF
    assert a.tec() == 256 and b.rec() == 32
    assert not a.send(0x351, b"\x00\x01", 2)
    a.restart()
    # ISO 11898-1: back only after 128 x 11 recessive bits (2816 us at 500 kbit/s)
    assert a.state() == can.BUS_OFF and a.pending() == 0
    clk.advance_us(2800)
    assert a.state() == can.BUS_OFF
    clk.advance_us(20)
    assert a.state() == can.ERROR_ACTIVE and a.tec() == 0 and a.pending() == 0
    assert a.send(0x351, b"\x00\x01", 2)
    clk.advance_us(1000)
    buf = bytearray(8)
    assert b.recv(buf) == (0x351 << 4) | 2


def test_warning_state_from_receive_errors():
    clk, bus, (a, b) = _bus()
    bus.inject = 12                               # receivers: REC +1 each
    for i in range(3):
        a.send(0x10 + i, b"", 0)
    clk.advance_us(10000)
    assert b.rec() == 12 - 3                      # then -1 per good frame
    bus.inject = 1000
    for _ in range(3):                            # a goes bus-off after 32 attempts
        a.restart()
        clk.advance_us(2820)                      # rejoins after 128 x 11 recessive bits
        a.send(0x20, b"", 0)
        clk.advance_us(4000)
    assert a.state() == can.BUS_OFF
    assert b.rec() == 9 + 3 * 32 and b.state() in (can.ERROR_WARNING, can.ERROR_PASSIVE)


def test_unterminated_bus_goes_bus_off():
    # no terminator: the recessive level decays with tau = R_in * C >> bit time,
    # every frame is destroyed (docs/bus.md)
    model = ElectricalModel(terminators=0, length_m=5, bitrate=500000, nodes=2)
    assert model.can_frame_error_ppm(can.frame_bits(8)) == 1000000
    clk, bus, (a, b) = _bus(model=model)
    a.send(0x351, bytes(8), 8)
    clk.advance_us(200000)
    assert a.state() == can.BUS_OFF and b.rec() > 0
    # the same bus properly terminated carries the frame
    good = ElectricalModel(terminators=2, length_m=5, bitrate=500000, nodes=2)
    assert good.can_frame_error_ppm(can.frame_bits(8)) == 0
    clk, bus, (a, b) = _bus(model=good)
    a.send(0x351, bytes(8), 8)
    clk.advance_us(1000)
    assert b.recv(bytearray(8)) == (0x351 << 4) | 8 and a.tec() == 0


def test_duplicate_id_collides():
    # two nodes sending the same ID with different data: bit errors for both,
    # both climb to bus-off while the listener counts receive errors
    clk, bus, (a, b, c) = _bus(3)
    a.send(0x355, b"\x50\x00", 2)
    b.send(0x355, b"\x51\x00", 2)
    clk.advance_us(20000)
    bus.update()
    assert bus.collisions >= 32
    assert a.state() == can.BUS_OFF and b.state() == can.BUS_OFF
    assert c.rec() > 0 and c.recv(bytearray(8)) == -1
    # identical frames from two nodes merge on the wire (indistinguishable)
    clk, bus, (a, b, c) = _bus(3)
    a.send(0x355, b"\x50\x00", 2)
    b.send(0x355, b"\x50\x00", 2)
    clk.advance_us(1000)
    assert bus.collisions == 0 and c.recv(bytearray(8)) == (0x355 << 4) | 2
    assert a.pending() == 0 and b.pending() == 0


def test_fake_can_is_allocation_free():
    clk, bus, (a, b) = _bus()
    data = bytearray(b"\x01\x02\x03\x04\x05\x06\x07\x08")
    buf = bytearray(8)
    a.send(0x100, data, 8)
    clk.advance_us(1000)
    b.recv(buf)
    assert mptest.no_alloc(a.send, 0x351, data, 8)
    clk.advance_us(1000)
    assert mptest.no_alloc(b.recv, buf) == (0x351 << 4) | 8
    assert mptest.no_alloc(b.recv, buf) == -1
    assert mptest.no_alloc(a.state) == can.ERROR_ACTIVE


# ---------------------------------------------------------------- hal/twai.py
def _twai():
    clk, bus, (a, b) = _bus()
    mc = FakeMachineCan(a)
    return clk, bus, TwaiCan(mc), mc, b


def test_twai_round_trip():
    clk, bus, t, mc, other = _twai()
    assert mc.filters_set                          # set_filters(None): receive all
    buf = bytearray(8)
    assert t.send(0x351, b"\x10\x02\x20\x03\x20\x03\x00\x00", 8)
    clk.advance_us(1000)
    assert other.recv(buf) == (0x351 << 4) | 8 and buf[0] == 0x10
    assert other.send(0x305, bytes(8), 8)
    assert other.send(0x123, b"\xAA", 1)        # same instant: wins arbitration
    clk.advance_us(1000)
    assert t.recv(buf) == (0x123 << 4) | 1 and buf[0] == 0xAA
    assert t.recv(buf) == (0x305 << 4) | 8
    assert t.recv(buf) == -1
    assert t.state() == can.ERROR_ACTIVE and t.tec() == 0 and t.rec() == 0


def test_twai_skips_remote_and_extended_and_counts_overrun():
    clk, bus, t, mc, other = _twai()
    mc.injected.append((0x1ABCDEF, mc.FLAG_EXT_ID, b"\x01"))
    mc.injected.append((0x100, mc.FLAG_RTR, b""))
    mc.injected.append((0x101, 0, b"\x02\x03"))
    buf = bytearray(8)
    assert t.recv(buf) == (0x101 << 4) | 2 and bytes(buf[:2]) == b"\x02\x03"
    assert t.skipped == 2
    for i in range(40):                            # the RX FIFO holds 32
        other.send(0x200 + (i % 3), b"z", 1)
        clk.advance_us(400)
    while t.recv(buf) >= 0:
        pass
    assert mc.node.rx_overruns > 0 and t.rx_overruns == 1


def test_twai_queue_full_bus_off_and_stopped():
    clk, bus, t, mc, other = _twai()
    for i in range(3):
        assert t.send(0x300 + i, b"q", 1)
    assert not t.send(0x310, b"q", 1) and t.tx_full == 1
    bus.inject = 1000
    clk.advance_us(100000)
    assert t.state() == can.BUS_OFF
    assert not t.send(0x311, b"q", 1)              # no OSError escapes
    bus.inject = 0
    t.restart()
    assert t.restarts == 1 and t.state() == can.BUS_OFF   # recovering: 128 x 11 recessive bits
    clk.advance_us(2820)
    assert t.state() == can.ERROR_ACTIVE and t.tec() == 0
    mc.stopped = True
    assert t.state() == can.BUS_OFF                # not initialised: cannot talk
    t.restart()                                    # machine.CAN raises OSError: counted only
    assert t.restart_errors == 1


def test_twai_is_allocation_free():
    clk, bus, t, mc, other = _twai()
    buf = bytearray(8)
    data = bytearray(b"\x01\x02\x03")
    t.send(0x100, data, 3)                         # warm the fake's view cache
    other.send(0x101, data, 3)
    clk.advance_us(1000)
    t.recv(buf)
    assert mptest.no_alloc(t.send, 0x351, data, 3)
    other.send(0x102, data, 2)
    clk.advance_us(1000)
    assert mptest.no_alloc(t.recv, buf) == (0x102 << 4) | 2
    assert mptest.no_alloc(t.recv, buf) == -1
    assert mptest.no_alloc(t.state) == can.ERROR_ACTIVE
    assert mptest.no_alloc(t.tec) == 0


def _traffic(plain, steps=400):
    # three senders and a receiver, pseudo-random sends, errors injected and one node
    # forced bus-off: every received frame (time, id, data) and the counters
    clk = SimClock()
    bus = FakeCanBus(clk, 500000, seed=7)
    nodes = [FakeCan(bus, tx_queue_len=3, name="n%d" % i) for i in range(4)]
    if not plain:
        bus._plain = False                 # the full evaluation at every call
    bus.log = []
    buf = bytearray(8)
    x = 12345
    for k in range(steps):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        i = x % 3
        if x & 0x100:
            nodes[i].send(0x300 + (x >> 8) % 64, b"\x01\x02\x03\x04", 1 + (x >> 4) % 4)
        if k == 150:
            bus.inject = 2
        if k == 250:
            nodes[2].force_bus_off()
        if k == 300:
            nodes[2].restart()
        while nodes[3].recv(buf) >= 0:
            pass
        nodes[0].state()
        clk.advance_us((x >> 3) % 400)
    clk.advance_us(10000)
    nodes[3].any()
    return (bus.log, bus.frames_ok, bus.frames_err, [(n.sent, n.received, n.tec_n, n.rec_n,
                                                      n.bus_off_count) for n in nodes])


def test_quiet_fast_path_changes_nothing():
    # FakeCanBus.update returns at once while nothing can happen (simulator speed,
    # issue 15): the same traffic gives the same frames at the same times as the
    # evaluation at every call
    a = _traffic(True)
    b = _traffic(False)
    assert len(a[0]) > 50 and a[2] > 0
    assert a == b
