# The TWAI register driver (hal/twai_regs.py) against the register-level model
# tools/fakes/faketwai.FakeTwai on a FakeCanBus.
import mptest
from fakehw import SimClock
from fakecan import FakeCan, FakeCanBus
from faketwai import FakeTwai

from bankgate.bus import can
from bankgate.hal import twai_regs as tr
from bankgate.hal.twai_regs import TwaiRegs, TwaiError

_BIT_US = 2                                      # 500 kbit/s
_RECOVERY_US = 128 * 11 * _BIT_US                # 2816 us


def _node(bus, chip="esp32", tx=21, rx=22, mode=tr.MODE_NORMAL, bitrate=500000):
    tw = FakeTwai(bus, chip, tx, rx)
    return tw, TwaiRegs(tw, chip, tx=tx, rx=rx, bitrate=bitrate, mode=mode)


def _bus():
    clk = SimClock()
    return clk, FakeCanBus(clk, 500000)


def test_timing_register_values_and_the_model_decodes_them():
    # ESP-IDF TWAI_TIMING_CONFIG_500KBITS: brp 8 (TQ 100 ns), tseg1 15, tseg2 4, sjw 3
    assert tr.timing("esp32", 500000) == (0x83, 0x3E)
    assert tr.timing("esp32", 250000) == (0x87, 0x3E)
    assert tr.timing("esp32", 125000) == (0x8F, 0x3E)
    assert tr.timing("esp32", 1000000) == (0x81, 0x3E)
    assert tr.timing("esp32s3", 500000) == (0x8003, 0x3E)     # SJW at [15:14] on the S3
    mptest.raises(ValueError, tr.timing, "esp32", 300000)
    mptest.raises(ValueError, tr.timing, "esp8266", 500000)
    for chip in ("esp32", "esp32s3"):
        for rate in (250000, 500000):
            tw, drv = _node(None, chip, 4, 5, bitrate=rate)
            assert tw.bitrate() == (rate, True)


def test_init_clocks_resets_routes_and_opens_the_filter():
    tw, drv = _node(None, "esp32", 21, 22)
    c = tr.CHIPS["esp32"]
    assert tw.other[0x3FF000C0] & (1 << 19)                  # DPORT_CAN_CLK_EN
    assert not tw.other[0x3FF000C4] & (1 << 19)              # reset released
    assert tw.hw_resets == 2                                 # construction + the pulse
    assert tw.other[0x3FF44530 + 4 * 21] == 123 | 0x400      # TWAI_TX on GPIO21
    assert tw.other[0x3FF44130 + 4 * 94] == 22 | 0x80        # GPIO22 -> TWAI_RX
    assert tw.other[0x3FF44024] == 1 << 21                   # output enabled
    assert tw.regs[31] & 0x80                                # CDR.CM: PeliCAN layout
    assert tw.regs[0] == 0x08                                # operating, single filter
    assert bytes(tw.acr) == b"\x00" * 4 + b"\xff" * 4        # accept everything
    assert tw.routed() and not tw.in_reset_mode()
    assert c["twai"] == 0x3FF6B000
    s3, d3 = _node(None, "esp32s3", 15, 16)
    assert s3.other[0x600C0018] & (1 << 19) and not s3.other[0x600C0020] & (1 << 19)
    assert s3.other[0x60004554 + 4 * 15] == 116 | 0x400
    assert s3.other[0x60004154 + 4 * 116] == 16 | 0x80
    assert s3.regs[31] == 0                                  # no CM bit on the S3
    assert s3.routed()
    # high pins use GPIO_ENABLE1_W1TS
    tw, drv = _node(None, "esp32", 33, 32)
    assert tw.other[0x3FF44030] == 1 << 1


def test_bad_arguments_are_refused():
    tw = FakeTwai(None)
    mptest.raises(ValueError, TwaiRegs, tw, "esp8266", 21, 22)
    mptest.raises(ValueError, TwaiRegs, tw, "esp32", 40, 22)
    mptest.raises(ValueError, TwaiRegs, tw, "esp32", 21, None)
    mptest.raises(ValueError, TwaiRegs, tw, "esp32", 21, 22, 300000)
    mptest.raises(ValueError, TwaiRegs, tw, "esp32", 21, 22, 500000, 7)
    tw, drv = _node(None)
    assert not drv.send(0x800, b"x", 1) and not drv.send(0x100, b"x", 9)
    assert not drv.send(0x100, b"x", 2)


def test_a_controller_without_clock_is_an_error():
    tw = FakeTwai(None)
    tw._clk = 0x3FF000FC                 # the model's clock gate sits elsewhere: stays off
    e = mptest.raises(TwaiError, TwaiRegs, tw, "esp32", 21, 22)
    assert "reset mode" in str(e)


def test_round_trip_between_esp32_esp32s3_and_another_controller():
    clk, bus = _bus()
    ta, a = _node(bus, "esp32", 21, 22)
    tb, b = _node(bus, "esp32s3", 15, 16)
    f = FakeCan(bus)
    buf = bytearray(8)
    assert a.send(0x351, b"\x10\x02\x20\x03\x20\x03\x10\x02", 8)
    assert b.recv(buf) == -1                   # 270 us on the wire
    clk.advance_us(300)
    assert b.recv(buf) == (0x351 << 4) | 8 and bytes(buf) == b"\x10\x02\x20\x03\x20\x03\x10\x02"
    assert b.recv(buf) == -1
    assert f.recv(buf) == (0x351 << 4) | 8
    assert f.send(0x305, b"\x01\x02", 2) and b.send(0x7FF, b"", 0)
    clk.advance_us(1000)
    assert a.recv(buf) == (0x305 << 4) | 2 and bytes(buf[:2]) == b"\x01\x02"
    assert a.recv(buf) == (0x7FF << 4) | 0
    assert a.recv(buf) == -1
    for d in (a, b):
        assert d.state() == can.ERROR_ACTIVE and d.tec() == 0 and d.rec() == 0


def test_one_tx_buffer_busy_until_the_frame_is_sent():
    clk, bus = _bus()
    ta, a = _node(bus)
    f = FakeCan(bus)
    assert a.send(0x100, b"a", 1)
    assert not a.send(0x101, b"b", 1) and a.tx_full == 1
    clk.advance_us(300)
    assert a.send(0x101, b"b", 1)
    clk.advance_us(300)
    buf = bytearray(8)
    assert f.recv(buf) == (0x100 << 4) | 1 and f.recv(buf) == (0x101 << 4) | 1


def test_remote_and_extended_frames_are_skipped():
    tw, drv = _node(None)
    tw.inject_rx(0x1ABCDEF, b"\x01", ext=True)
    tw.inject_rx(0x100, b"", rtr=True)
    tw.inject_rx(0x101, b"\x02\x03")
    buf = bytearray(8)
    assert drv.recv(buf) == (0x101 << 4) | 2 and bytes(buf[:2]) == b"\x02\x03"
    assert drv.skipped == 2 and drv.recv(buf) == -1 and tw.count == 0


def test_rx_fifo_overrun_drops_the_fifo_counts_and_clears():
    tw, drv = _node(None)
    for i in range(7):                         # 11 bytes each: 5 fit in 64 bytes
        tw.inject_rx(0x200 + i, b"\x00\x01\x02\x03\x04\x05\x06\x07")
    assert tw.count == 5 and tw.dos and tw.overruns == 2
    buf = bytearray(8)
    assert drv.recv(buf) == -1                 # the FIFO is not trusted after an overrun
    assert drv.rx_overruns == 1 and tw.count == 0 and not tw.dos
    tw.inject_rx(0x210, b"\x09")
    assert drv.recv(buf) == (0x210 << 4) | 1 and buf[0] == 9
    # on the bus: a flood nobody reads; state() notices the overrun too
    clk, bus = _bus()
    ta, a = _node(bus)
    f = FakeCan(bus)
    for i in range(8):
        assert f.send(0x300 + i, bytes(8), 8)
        clk.advance_us(300)
    assert ta.dos and a.state() == can.ERROR_ACTIVE and a.rx_overruns == 1
    assert a.recv(buf) == -1
    assert f.send(0x3FF, b"\x01", 1)
    clk.advance_us(300)
    assert a.recv(buf) == (0x3FF << 4) | 1


def test_error_warning_passive_bus_off_and_recovery():
    clk, bus = _bus()
    ta, a = _node(bus)
    f = FakeCan(bus)
    fu = bus.frame_us[1]                       # one 1-byte frame on the wire
    buf = bytearray(8)
    bus.inject = 12                            # 12 bit errors on a's frame: TEC 96
    assert a.send(0x100, b"x", 1)
    clk.advance_us(12 * fu + 1)
    assert a.tec() == 96 and a.state() == can.ERROR_WARNING
    clk.advance_us(fu)                         # the 13th attempt goes through: TEC 95
    assert a.tec() == 95 and a.state() == can.ERROR_ACTIVE
    assert f.recv(buf) == (0x100 << 4) | 1
    bus.inject = 5                             # 95 + 40 = 135: error passive
    assert a.send(0x101, b"y", 1)
    clk.advance_us(5 * fu + 1)
    assert a.tec() == 135 and a.state() == can.ERROR_PASSIVE
    bus.inject = 1000
    clk.advance_us(20 * fu)
    # [TRM] bus-off: TEC > 255, the controller enters reset mode itself, TEC 127
    assert a.state() == can.BUS_OFF and ta.in_reset_mode() and a.tec() == 127
    assert not a.send(0x102, b"z", 1)
    bus.inject = 0
    clk.advance_us(100000)                      # no recovery without restart()
    assert a.state() == can.BUS_OFF
    a.restart()
    assert a.recoveries == 1 and not ta.in_reset_mode()
    assert a.state() == can.BUS_OFF             # 128 x 11 recessive bits first
    a.restart()                                 # already recovering: no second start
    assert a.recoveries == 1
    clk.advance_us(_RECOVERY_US - 10)
    assert a.state() == can.BUS_OFF
    clk.advance_us(20)
    assert a.state() == can.ERROR_ACTIVE and a.tec() == 0 and a.rec() == 0
    assert a.send(0x103, b"w", 1)
    clk.advance_us(300)
    while f.recv(buf) >= 0 and (buf[0] != ord("w")):
        pass
    assert buf[0] == ord("w")


def test_restart_reinitialises_a_controller_reset_underneath():
    tw, drv = _node(None)
    tw[tr.CHIPS["esp32"]["rst_reg"]] = 1 << 19        # someone resets the peripheral
    tw[tr.CHIPS["esp32"]["rst_reg"]] = 0
    assert tw.in_reset_mode() and drv.state() == can.BUS_OFF
    assert not drv.send(0x100, b"x", 1)
    drv.restart()
    assert drv.inits == 2 and drv.state() == can.ERROR_ACTIVE and tw.regs[31] & 0x80
    assert drv.restarts == 1 and drv.recoveries == 0


def test_listen_only_receives_but_never_sends_or_acks():
    clk, bus = _bus()
    tl, lo = _node(bus, mode=tr.MODE_LISTEN)
    assert tl.regs[0] == 0x0A
    f = FakeCan(bus)
    buf = bytearray(8)
    assert not lo.send(0x100, b"x", 1)
    assert f.send(0x123, b"\x05", 1)
    clk.advance_us(bus.frame_us[1] + 1)
    assert f.tec() == 8 and bus.ack_errors == 1 and bus.frames_ok == 0   # no ACK from the listener
    assert lo.recv(buf) == -1                      # and an unacknowledged frame is void
    clk2, bus2 = _bus()
    tl, lo = _node(bus2, mode=tr.MODE_LISTEN)
    f = FakeCan(bus2)
    FakeCan(bus2)                                  # a normal node acknowledges
    assert f.send(0x124, b"\x06", 1)
    clk2.advance_us(300)
    assert lo.recv(buf) == (0x124 << 4) | 1 and buf[0] == 6
    assert bus2.frames_err == 0


def test_wrong_bit_rate_or_unrouted_pins_see_nothing():
    clk, bus = _bus()
    tw, slow = _node(bus, bitrate=250000)
    f = FakeCan(bus)
    _, good = _node(bus)
    f.send(0x111, b"\x01", 1)
    clk.advance_us(300)
    buf = bytearray(8)
    assert slow.recv(buf) == -1 and good.recv(buf) == (0x111 << 4) | 1
    # the transceiver on other pins than the board file says: nothing arrives
    tw2 = FakeTwai(bus, "esp32", tx=25, rx=26)
    wrong = TwaiRegs(tw2, "esp32", tx=21, rx=22)
    assert not tw2.routed()
    f.send(0x112, b"\x02", 1)
    clk.advance_us(300)
    assert wrong.recv(buf) == -1 and good.recv(buf) == (0x112 << 4) | 1


def test_self_test_loops_a_frame_back_and_restores_the_mode():
    clk, bus = _bus()
    tw, drv = _node(bus)
    res = drv.self_test(clk.sleep_ms)
    assert res["ok"] is True, res
    assert res["tec"] == 0 and res["waited_ms"] <= 1
    assert drv.mode == tr.MODE_NORMAL and tw.regs[0] == 0x08
    # without a bus (nothing else attached) the model loops back internally
    tw, drv = _node(None)
    assert drv.self_test(lambda ms: None)["ok"] is True
    # a board file naming the wrong pins: the frame never comes back
    tw2 = FakeTwai(bus, "esp32", tx=25, rx=26)
    bad = TwaiRegs(tw2, "esp32", tx=21, rx=22)
    res = bad.self_test(clk.sleep_ms)
    assert res["ok"] is False and "no frame came back" in res["error"]
    assert bad.mode == tr.MODE_NORMAL


def test_hot_paths_are_allocation_free():
    for chip, tx, rx in (("esp32", 21, 22), ("esp32s3", 15, 16)):
        clk, bus = _bus()
        ta, a = _node(bus, chip, tx, rx)
        f = FakeCan(bus)
        buf = bytearray(8)
        data = bytearray(b"\x01\x02\x03")
        assert mptest.no_alloc(a.send, 0x351, data, 3)
        assert not mptest.no_alloc(a.send, 0x352, data, 3)        # TX buffer busy
        clk.advance_us(300)
        f.send(0x102, data, 2)
        clk.advance_us(300)
        bus.update()            # the fake bus resolves frames outside the lock
        assert mptest.no_alloc(a.recv, buf) == (0x102 << 4) | 2
        assert mptest.no_alloc(a.recv, buf) == -1
        assert mptest.no_alloc(a.state) == can.ERROR_ACTIVE
        assert mptest.no_alloc(a.tec) == 0 and mptest.no_alloc(a.rec) == 0
        ta.inject_rx(0x1ABCDEF, b"\x01", ext=True)                # skip path
        ta.inject_rx(0x103, b"\x07")
        assert mptest.no_alloc(a.recv, buf) == (0x103 << 4) | 1
        for i in range(7):
            ta.inject_rx(0x200, bytes(8))
        assert mptest.no_alloc(a.recv, buf) == -1 and a.rx_overruns == 1
        bus.inject = 1000
        a.send(0x104, data, 1)
        clk.advance_us(40 * 300)
        bus.update()
        assert mptest.no_alloc(a.state) == can.BUS_OFF
        mptest.no_alloc(a.restart)                                  # starts recovery
        bus.inject = 0
        clk.advance_us(_RECOVERY_US + 10)
        bus.update()
        assert mptest.no_alloc(a.state) == can.ERROR_ACTIVE
        mptest.no_alloc(a.restart)                                  # active: nothing
