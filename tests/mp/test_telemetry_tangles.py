# Telemetry untangled (issue 20): the client encodes CONNECT itself (no swap of umqtt's
# module-global `socket`), and telemetry takes its time from the injected clock (never
# time.ticks_us() directly).  The import side is in tests/host/test_telemetry_tangles.py.
# mpy-heapsize: 512k
import sys

from bankgate import config
from bankgate.events import EventLog
from bankgate.net import Net
from bankgate.telemetry import client as cl


def _connect_bytes(**kw):
    c = cl.Client(Net(), "127.0.0.1", 1883, b"gw-test", keepalive_s=10, tx_size=1024, rx_size=256, **kw)
    c._encode_connect(True)
    return bytes(c.t.tx[:c.t.tx_len])


def _s(b):
    return bytes((len(b) >> 8, len(b) & 0xFF)) + b


def test_connect_packet_is_mqtt_3_1_1_built_from_the_spec():
    # MQTT 3.1.1 section 3.1: fixed header 0x10 + remaining length; "MQTT", level 4, flags,
    # keepalive; payload: client id, will topic, will message, user name, password
    vh = b"\x00\x04MQTT\x04"
    got = _connect_bytes()
    body = vh + bytes((0x02, 0, 10)) + _s(b"gw-test")
    assert got == bytes((0x10, len(body))) + body, got
    got = _connect_bytes(will_topic=b"p/g/status", will_msg=b"offline", user=b"u", password=b"pw")
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02      # user, password, will retain, will QoS 1, will, clean
    body = vh + bytes((flags, 0, 10)) + _s(b"gw-test") + _s(b"p/g/status") + _s(b"offline") + \
        _s(b"u") + _s(b"pw")
    assert got == bytes((0x10, len(body))) + body, got
    # a remaining length above 127 takes two bytes (7 bits each, continuation bit)
    pw = b"x" * 200
    got = _connect_bytes(user=b"u", password=pw)
    body = vh + bytes((0xC2, 0, 10)) + _s(b"gw-test") + _s(b"u") + _s(pw)
    n = len(body)
    assert n > 127 and got == bytes((0x10, (n & 0x7F) | 0x80, n >> 7)) + body


def test_connect_leaves_umqtt_alone():
    # umqtt.simple's module globals are the same objects before and after a whole connect
    # through a fake broker; and a umqtt whose `socket` global is unusable does not matter,
    # since the client never goes through it
    import fakemqtt
    import umqtt.simple as um
    before = dict(um.__dict__)

    class Unusable:
        def __getattr__(self, name):
            raise AssertionError("umqtt's socket global used: " + name)
    um.socket = Unusable()
    try:
        broker = fakemqtt.FakeBroker()
        c = cl.Client(fakemqtt.fake_net(broker), "127.0.0.1", 1883, b"gw", keepalive_s=10,
                      will_topic=b"t/status", tx_size=1024, rx_size=256)
        # whatever umqtt writes (and whenever the client encodes through it), its global
        # is still ours: no swap in progress (the old client swapped it around connect())
        seen = []
        write = c.stream.write

        def spy(buf, n=-1):
            seen.append(type(um.socket) is Unusable)
            return write(buf, n)
        c.stream.write = spy
        for now in range(0, 200, 10):
            c.service(now)
            c.flush(now)
        assert c.online and broker.connects == 1
        c.subscribe(b"t/cmd/+", 0)
        assert seen and all(seen), seen
        assert type(um.socket) is Unusable
    finally:
        um.socket = before["socket"]
    assert dict(um.__dict__) == before


class _StepClock:
    """ticks_us() advances by `step` per read: the budget is used up by the clock alone."""

    def __init__(self, step):
        self.step = step
        self.us = 0
        self.reads = 0

    def ticks_ms(self):
        return 1000

    def ticks_us(self):
        self.reads += 1
        self.us = (self.us + self.step) & 0x3FFFFFFF
        return self.us


class _Gw:
    def __init__(self):
        self.events = EventLog(16)

    def snapshot(self):
        return {"state": "x"}


def test_telemetry_times_its_budget_with_the_injected_clock():
    import fakemqtt
    cfg = config.validate({"mqtt": {"enabled": True}})
    clk = _StepClock(6000)                       # every read: 6 ms later
    from bankgate.telemetry import Telemetry
    tel = Telemetry(fakemqtt.fake_net(fakemqtt.FakeBroker()), cfg, _Gw(), clock=clk)
    assert tel.clock is clk
    tel.service(1000, 5)
    # the first check already finds the 5 ms budget spent: no client work, one overrun, and
    # the worst call is exactly what the injected clock says (two reads: 12 ms)
    assert tel.client.attempts == 0
    assert tel.overruns == 1 and tel.service_max_us == 12000, (tel.overruns, tel.service_max_us)
    assert clk.reads == 3
    clk.step = 1
    tel.service(1000, 5)
    assert tel.client.attempts == 1 and tel.overruns == 1


def test_telemetry_uses_the_gateway_clock_by_default():
    import fakemqtt
    cfg = config.validate({"mqtt": {"enabled": True}})
    gw = _Gw()

    class Hw:
        clock = _StepClock(1)
    gw.hw = Hw()
    from bankgate.telemetry import Telemetry
    tel = Telemetry(fakemqtt.fake_net(fakemqtt.FakeBroker()), cfg, gw)
    assert tel.clock is gw.hw.clock
    tel2 = Telemetry(fakemqtt.fake_net(fakemqtt.FakeBroker()), cfg, _Gw())   # no hardware: the port's ticks
    from bankgate import clock as tk
    assert isinstance(tel2.clock, tk.PortTicks)
    t = tel2.clock.ticks_us()
    assert 0 <= t < tk.PERIOD
    assert "time" not in dir(sys.modules["bankgate.telemetry"])
