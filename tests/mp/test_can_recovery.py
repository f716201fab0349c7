# CAN bus-off recovery (bankgate.bus.can.BusOffRecovery) on every back end: machine.CAN
# (hal/twai.py over FakeMachineCan), the MCP2515 driver (over FakeMcp2515) and the
# simulated controller itself (FakeCan, as the simulator wires it).  Simulated time.
from bankgate.bus import can
from bankgate.bus.mcp2515 import Mcp2515
from bankgate.events import EV_CAN, EventLog
from bankgate.hal.twai import TwaiCan
from fakebus import FakeCan, FakeCanBus, FakeMachineCan
from fakehw import SimClock
from fakemcp2515 import FakeMcp2515
from mptest import no_alloc


def _twai():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    node = FakeCan(bus, name="gw")
    other = FakeCan(bus, name="other")
    return clk, bus, TwaiCan(FakeMachineCan(node)), node, other


def _mcp():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    chip = FakeMcp2515(bus)
    dev = Mcp2515(chip.spi, chip.cs, crystal_hz=8000000, bitrate=500000)
    other = FakeCan(bus, name="other")
    return clk, bus, dev, chip, other


def _plain():
    clk = SimClock()
    bus = FakeCanBus(clk, 500000)
    node = FakeCan(bus, name="gw")
    other = FakeCan(bus, name="other")
    return clk, bus, node, node, other


BACKENDS = (("machine.CAN", _twai), ("mcp2515", _mcp), ("fakecan", _plain))


def _events(ev, a=None):
    out = []
    rec = [0, 0, 0, 0, 0]
    for s in range(1, ev.seq + 1):
        if ev.get(s, rec) and rec[1] == EV_CAN and (a is None or rec[3] == a):
            out.append((rec[0], rec[3], rec[4]))
    return out


def _run(clk, rec, t_ms, step_ms=5):
    while clk.ticks_ms() < t_ms:
        clk.advance_us(step_ms * 1000)
        rec.service(clk.ticks_ms())


def test_iso_minimum_wait():
    assert can.iso_recovery_ms(500000) == 3 and can.iso_recovery_ms(250000) == 6
    assert can.iso_recovery_ms(125000) == 12
    r = can.BusOffRecovery(None, bitrate=10000)           # 1408 bits at 10 kbit/s = 141 ms
    assert r.min_backoff_ms == 142
    assert can.BusOffRecovery(None, bitrate=500000).min_backoff_ms == can.MIN_BACKOFF_MS


def test_single_bus_off_is_restarted_after_the_backoff_on_every_backend():
    for name, make in BACKENDS:
        clk, bus, dev, node, other = make()
        ev = EventLog(64)
        rec = can.BusOffRecovery(dev, ev, can.BUS_MODULES, 500000)
        _run(clk, rec, 50)
        assert rec.ok and rec.bus_offs == 0, name
        if name == "mcp2515":
            node.auto_recover = False     # the chip would also recover by itself; test the restart
        node.force_bus_off()
        t0 = clk.ticks_ms()
        _run(clk, rec, t0 + 60)
        assert not rec.ok and rec.bus_off and rec.bus_offs == 1 and rec.restarts == 0, name
        _run(clk, rec, t0 + 200)
        assert rec.restarts == 1, (name, rec.restarts)
        assert rec.ok and rec.recoveries == 1 and dev.state() != can.BUS_OFF, name
        back = _events(ev, can.CAN_RECOVERED)
        assert len(back) == 1 and 100 <= back[0][2] <= 100 + 2 * can.CHECK_MS + 10, (name, back)
        assert _events(ev, can.CAN_BUS_OFF)[0][2] >= 255, name      # TEC when seen
        # the controller talks again
        assert dev.send(0x123, b"\x01", 1), name
        clk.advance_us(1000)
        buf = bytearray(8)
        assert other.recv(buf) == (0x123 << 4) | 1, name
        assert not rec.fault


def test_persistent_fault_backs_off_is_diagnosed_and_ends_without_reboot():
    for name, make in BACKENDS:
        clk, bus, dev, node, other = make()
        ev = EventLog(128)
        rec = can.BusOffRecovery(dev, ev, can.BUS_INVERTER, 500000)
        _run(clk, rec, 20)
        node.force_bus_off(hold=True)
        t0 = clk.ticks_ms()
        _run(clk, rec, t0 + 30000)
        assert rec.bus_off and not rec.ok, name
        # 100, 200, 400, ... ms, capped at 5 s: 0.1+0.2+0.4+0.8+1.6+3.2 = 6.3 s, then every 5 s
        assert 9 <= rec.restarts <= 11, (name, rec.restarts)
        assert rec.backoff_ms == can.MAX_BACKOFF_MS
        assert rec.fault, name
        f = _events(ev, can.CAN_BUS_FAULT)
        assert len(f) == 1 and f[0][0] - t0 <= can.FAULT_AFTER_MS + can.MAX_BACKOFF_MS, (name, f)
        assert "inverter" in rec.diagnosis() and "terminator" in rec.diagnosis()
        # the fault ends: back within one capped backoff (+ the ISO wait), no reboot
        node.hold_bus_off = False
        t1 = clk.ticks_ms()
        _run(clk, rec, t1 + can.MAX_BACKOFF_MS + 100)
        assert rec.ok and rec.recoveries == 1, (name, rec.recoveries)
        assert dev.send(0x351, b"\x02", 1), name
        # the fault clears after STABLE_MS without bus-off, and the backoff resets
        _run(clk, rec, clk.ticks_ms() + can.STABLE_MS + 100)
        assert not rec.fault and rec.backoff_ms == rec.min_backoff_ms, name
        assert len(_events(ev, can.CAN_FAULT_CLEARED)) == 1


def test_bouncing_controller_is_a_bus_fault_after_three_in_a_row():
    clk, bus, dev, node, other = _twai()
    ev = EventLog(64)
    rec = can.BusOffRecovery(dev, ev, can.BUS_MODULES, 500000)
    _run(clk, rec, 20)
    for k in range(3):
        node.force_bus_off()
        _run(clk, rec, clk.ticks_ms() + 3000)
        assert rec.ok, k
        assert rec.fault == (k == 2), (k, rec.in_row)
    assert rec.in_row == 3 and rec.bus_offs == 3
    # the backoff grew: 100, 200, 400 ms
    back = [b for t, a, b in _events(ev, can.CAN_RECOVERED)]
    assert back[0] < back[1] < back[2], back


def test_isolated_bus_offs_are_no_fault():
    clk, bus, dev, node, other = _twai()
    rec = can.BusOffRecovery(dev, None, can.BUS_MODULES, 500000)
    for k in range(4):
        node.force_bus_off()
        _run(clk, rec, clk.ticks_ms() + can.STABLE_MS + 1000)
        assert rec.ok and not rec.fault and rec.in_row == 0 and rec.bus_offs == k + 1, k
        assert rec.backoff_ms == rec.min_backoff_ms


def test_service_allocates_nothing():
    for name, make in BACKENDS:
        clk, bus, dev, node, other = make()
        ev = EventLog(64)
        rec = can.BusOffRecovery(dev, ev, can.BUS_MODULES, 500000)
        rec.service(clk.ticks_ms())
        node.auto_recover = False     # (the MCP2515 model would recover by itself)
        node.force_bus_off()
        clk.advance_us(1000)
        dev.state()                   # warm the fake bus model (host side: allocates once)
        for _ in range(60):
            clk.advance_us(5000)
            try:
                no_alloc(rec.service, clk.ticks_ms())
            except AssertionError:
                raise AssertionError("%s: restarts %d" % (name, rec.restarts))
        assert rec.recoveries == 1, name


def test_wrapping_ticks():
    # ticks_ms wraps at 2**30: a bus-off across the wrap is restarted on time
    clk, bus, dev, node, other = _twai()
    rec = can.BusOffRecovery(dev, None, can.BUS_MODULES, 500000)
    t = (1 << 30) - 150
    rec.service(t)
    node.force_bus_off()
    for _ in range(60):
        clk.advance_us(5000)
        t = (t + 5) & ((1 << 30) - 1)
        rec.service(t)
    assert rec.restarts == 1 and rec.recoveries == 1 and rec.ok
