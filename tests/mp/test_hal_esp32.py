# Every board in boards/ opened through bankgate.hal.esp32.open_board on a strict
# model of the official ESP32 port's machine module (tools/fakes/strict_machine.py:
# no machine.CAN, TypeError on unknown keywords, ValueError("invalid pin") on pins
# the chip / module variant does not have), CAN included via the TWAI register
# driver on the register model tools/fakes/faketwai.py.
import os
import sys

import mptest
import strict_machine as sm

sys.modules["machine"] = sm          # before bankgate.hal.esp32 imports it

from fakecan import FakeCan, FakeMachineCan
from fakemcp2515 import FakeMcp2515
from faketwai import FakeTwai

from bankgate import boards as B
from bankgate.bus import can
from bankgate.bus.mcp2515 import Mcp2515
from bankgate.hal import esp32 as E
from bankgate.hal.twai import TwaiCan
from bankgate.hal.twai_regs import TwaiRegs


def _root():
    for marker in ("/build/host-mpy", "/tests/mp/"):   # host-mpy[-<arch>]/
        if marker in __file__:
            return __file__.rsplit(marker, 1)[0]
    return "."


ROOT = _root()
NAMES = sorted([f[:-5] for f in os.listdir(ROOT + "/boards") if f.endswith(".json")])


def _board(name):
    return B.load(ROOT + "/boards/%s.json" % name, name)


def _firmware_for(board):
    """strict_machine configured as the official image the board file names, with
    register / SPI device models where the board's CAN controller sits."""
    c = board.get("can") or {}
    tw = None
    if c.get("backend") == "twai":
        tw = FakeTwai(None, board["chip"], c["tx"], c["rx"])
    sm.configure(board["chip"], board["psram"], tw)
    chip = None
    if c.get("backend") == "mcp2515":
        chip = FakeMcp2515(None, crystal_hz=c["crystal_hz"])
        sm.spi_devices[c["spi"]["id"]] = chip.spi
        sm.pin_hooks[c["cs"]] = chip.cs.value
    return tw, chip


def test_the_model_is_the_stock_firmware():
    assert not hasattr(sm, "CAN")
    sm.configure("esp32", "none")
    e = mptest.raises(TypeError, lambda: sm.UART(2, baudrate=115200, tx=17, rx=16, pins=(1, 2)))
    assert "pins" in str(e)
    mptest.raises(ValueError, sm.UART, 3)
    mptest.raises(ValueError, sm.Pin, 24)
    mptest.raises(ValueError, sm.Pin, 34, sm.Pin.OUT)
    sm.configure("esp32", "quad")
    mptest.raises(ValueError, sm.Pin, 16)
    sm.configure("esp32s3", "octal")
    mptest.raises(ValueError, sm.Pin, 36)
    sm.configure("esp32s3", "none")
    assert sm.Pin(36, sm.Pin.OUT).id == 36


def test_every_board_opens_its_hardware_on_stock_firmware():
    real = [n for n in NAMES if n != "sim"]
    assert len(real) >= 5
    for name in real:
        board = _board(name)
        tw, chip = _firmware_for(board)
        hw = E.open_board(board)
        for k, pin in hw.outputs.items():
            assert pin.value() == 0 and sm.pins[board["outputs"][k]].mode == sm.Pin.OUT, (name, k)
        assert sorted(hw.inputs) == sorted(board.get("inputs", {}))
        assert sm.ignored_pulls == [], (name, sm.ignored_pulls)   # none silently absent
        for k, p in board.get("inputs", {}).items():
            want = None if p in board.get("external_pullups", []) else sm.Pin.PULL_UP
            assert sm.pins[p].pull == want, (name, k)
        ctl = hw.can_inverter
        if board["can"]["backend"] == "twai":
            assert isinstance(ctl, TwaiRegs), name
            assert tw.routed() and tw.clock_on() and not tw.in_reset_mode()
            assert tw.bitrate() == (board["can"].get("bitrate", 500000), True)
            assert ctl.state() == can.ERROR_ACTIVE
            assert sm.pins[board["can"]["tx"]].value() == 1          # recessive while idle
            assert ctl.self_test(lambda ms: None)["ok"] is True, name
        else:
            assert isinstance(ctl, Mcp2515) and chip.opmode() == 0, name
            assert ctl.state() == can.ERROR_ACTIVE
        for p in board["can"].get("enable_low", []):
            assert sm.pins[p].value() == 0
        if board.get("rs485"):
            assert hw.uart is not None and not hasattr(hw.uart, "ioctl")
            for p in board["rs485"].get("enable_high", []):
                assert sm.pins[p].value() == 1
            hw.idle(0)                               # select.poll on the raw UART
        hw.start_watchdog(8000)
        assert sm.wdt.timeout == 8000


def test_wroom_wiring_on_spiram_firmware_fails_as_the_validator_says():
    board = _board("devkitc-sn65hvd230-max3485")
    tw, _ = _firmware_for(board)
    sm.configure("esp32", "quad", tw)                # the WROVER image: GPIO16/17 are PSRAM
    e = mptest.raises(ValueError, E.open_board, board)
    assert "invalid pin" in str(e)
    for k, p in board["outputs"].items():            # opened before the failure: released
        assert sm.pins[p].value() == 0
    bad = dict(board)
    bad["psram"], bad["firmware"] = "quad", "ESP32_GENERIC-SPIRAM"
    e = mptest.raises(B.ConfigError, B.validate, bad)
    assert "17 (PSRAM" in str(e)


class _GenericCan(FakeMachineCan):
    """machine.CAN as the generic API defines it: CAN(id, *args, **kwargs), id
    1-based, the init() keywords only (no pin keywords)."""
    made = []

    def __init__(self, id, *args, **kw):
        for k in kw:
            if k not in ("mode", "sample_point", "sjw", "tseg1", "tseg2", "bitrate"):
                raise TypeError("unexpected keyword argument '%s'" % k)
        if type(id) is not int or id < 1:
            raise ValueError("CAN(%s) doesn't exist" % (id,))
        _GenericCan.made.append((id, args))
        FakeMachineCan.__init__(self, FakeCan(None))


def test_firmware_with_machine_can_uses_the_generic_api():
    board = _board("lilygo-t-can485")
    _firmware_for(board)
    sm.CAN = _GenericCan
    try:
        hw = E.open_board(board)
    finally:
        del sm.CAN
    assert isinstance(hw.can_inverter, TwaiCan)
    assert _GenericCan.made == [(1, (500000,))]
    # a board written for machine.CAN only (no pins) on stock firmware: clear error
    b = dict(board)
    b["can"] = dict(board["can"])
    del b["can"]["tx"], b["can"]["rx"]
    B.validate(b)
    _firmware_for(board)
    e = mptest.raises(OSError, E.open_board, b)
    assert "no machine.CAN" in str(e) and "can.tx" in str(e)
