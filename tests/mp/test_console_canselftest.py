# The console's `can-selftest` command (bankgate.console) on the TWAI register
# driver and its register model: the installer's check on a board.
import io
import json

from fakecan import FakeCan, FakeCanBus
from fakehw import FakeHardware
from faketwai import FakeTwai

from bankgate import console as K
from bankgate.hal.twai_regs import TwaiRegs


class _In(io.IOBase):
    def __init__(self, data):
        self.data = bytearray(data)
        self.pos = 0

    def readinto(self, buf):
        n = min(len(buf), len(self.data) - self.pos)
        for i in range(n):
            buf[i] = self.data[self.pos + i]
        self.pos += n
        return n

    def ioctl(self, req, arg):
        return arg & 1 if req == 3 and self.pos < len(self.data) else 0


class _Out:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def replies(self):
        return [json.loads(l[len(K.PREFIX):]) for l in self.text.split("\n")
                if l.startswith(K.PREFIX)]


def _run(hw, line=b"can-selftest\n"):
    out = _Out()
    con = K.Console(None, _In(line), out, hw=hw)
    con.service(0)
    return out.replies()[-1]


def _hw(tx_wired=21):
    hw = FakeHardware(outputs=("k1", "k2"))
    bus = FakeCanBus(hw.clock, 500000)
    FakeCan(bus)                                   # the inverter on the bus
    tw = FakeTwai(bus, "esp32", tx_wired, 22)
    hw.can_inverter = TwaiRegs(tw, "esp32", tx=21, rx=22)
    return hw, bus, tw


def test_selftest_passes_on_a_correctly_wired_controller():
    hw, bus, tw = _hw()
    r = _run(hw)
    assert r["cmd"] == "can-selftest" and r["ok"] is True, r
    assert r["result"]["tx"] == 21 and r["result"]["tec"] == 0
    assert hw.can_inverter.mode == 0 and tw.regs[0] == 0x08     # back to normal mode
    assert "can-selftest" in K.COMMANDS and "can-selftest" in K.HELP


def test_selftest_reports_a_wiring_fault():
    hw, bus, tw = _hw(tx_wired=25)                 # transceiver on another pin
    r = _run(hw)
    assert r["ok"] is False and "no frame came back" in r["error"]


def test_selftest_refused_while_an_output_is_energised_or_without_support():
    hw, bus, tw = _hw()
    hw.outputs["k2"].value(1)
    r = _run(hw)
    assert r["ok"] is False and "k2 is energised" in r["error"]
    assert tw.writes_n > 0
    n = tw.writes_n
    assert _run(hw)["ok"] is False and tw.writes_n == n       # controller untouched
    hw2 = FakeHardware(outputs=("k1",))
    hw2.can_inverter = FakeCan(None)
    r = _run(hw2)
    assert r["ok"] is False and "no self-test" in r["error"]
    hw3 = FakeHardware(outputs=("k1",))
    assert "no CAN controller" in _run(hw3)["error"]


def test_listen_counts_the_frames_heard_then_returns_to_normal():
    hw = FakeHardware(outputs=("k1",))
    bus = FakeCanBus(hw.clock, 500000)
    inv = FakeCan(bus)                              # the inverter
    acker = FakeCan(bus)                            # another node that ACKs
    tw = FakeTwai(bus, "esp32", 21, 22)
    drv = TwaiRegs(tw, "esp32", tx=21, rx=22)
    hw.can_inverter = drv

    def chatter(ms):                                # the inverter sends every 100 ms
        for _ in range(ms):
            if hw.clock.now_us % 100000 == 0:
                inv.send(0x305, b"\x01", 1)
            hw.clock.advance_us(1000)
    hw.clock.sleep_ms = chatter
    r = _run(hw, b"can-listen\n")
    assert r["cmd"] == "can-listen" and r["ok"] is True, r
    assert r["result"]["frames"] == 5 and r["result"]["ids"] == [0x305]
    assert drv.mode == 0 and tw.regs[0] == 0x08                 # normal mode again
    assert tw.tx_errors == 0 and drv.send(0x7FF, b"", 0)        # sends again
    # nothing on the bus: ok false with the hint
    hw.clock.sleep_ms = lambda ms: hw.clock.advance_us(ms * 1000)
    r = _run(hw, b"can-listen\n")
    assert r["ok"] is False and "no frame heard" in r["error"]
