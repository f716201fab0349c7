# ESP32 hardware layer: the only bankgate module that imports `machine`.
# Builds a bankgate.hal.Hardware from a board definition (boards/*.json, copied to
# the device as /board.json).  Outputs are created released (value 0) before
# anything else, so a reset always leaves every contactor open.
import time

import machine
from micropython import const

from bankgate.hal import Files, Hardware

_UART_RXBUF = const(1024)


class Clock:
    ticks_ms = staticmethod(time.ticks_ms)
    ticks_us = staticmethod(time.ticks_us)
    sleep_ms = staticmethod(time.sleep_ms)
    sleep_us = staticmethod(time.sleep_us)   # RS485 master: request wire time


class Uart:
    """machine.UART plus the attributes the RS485 master reads (machine.UART
    objects take no new attributes).  rx_latency_chars: bytes the ESP32 UART may
    hold in its hardware FIFO before software sees them (docs/bus.md)."""

    def __init__(self, uart, baudrate, rx_latency_chars=0):
        self._u = uart
        self.baudrate = baudrate
        self.rx_latency_chars = rx_latency_chars
        self.write = uart.write
        self.any = uart.any
        self.readinto = uart.readinto
        self.read = uart.read
        self.txdone = uart.txdone if hasattr(uart, "txdone") else self._txdone_flush

    def _txdone_flush(self):
        self._u.flush()
        return True

    # No ioctl(): machine.UART on the esp32 port exposes none to Python (its stream
    # ioctl is C-level only, ports/esp32 machine_uart.c / extmod/machine_uart.c), so
    # Esp32Hardware registers the raw machine.UART with select.poll, not this wrapper.


class Adc:
    def __init__(self, pin):
        self._adc = machine.ADC(machine.Pin(pin))
        self._adc.atten(machine.ADC.ATTN_11DB)

    def read_mv(self):
        return self._adc.read_uv() // 1000


class LinkSensor:
    """DC-link voltage through a divider: link_mv = adc_mv * mul // div."""

    def __init__(self, spec):
        self._adc = Adc(spec["pin"])
        self._mul = spec.get("mul", 1)
        self._div = spec.get("div", 1)

    def read_mv(self):
        return self._adc.read_mv() * self._mul // self._div


class Esp32Hardware(Hardware):
    def __init__(self, board):
        Hardware.__init__(self, Clock(), board.get("name", "?"))
        # Fail-safe first: every contactor coil released before anything can fail.
        for name, pin in board.get("outputs", {}).items():
            self.outputs[name] = machine.Pin(pin, machine.Pin.OUT, value=0)
        chip = board.get("chip", "esp32")
        for name, pin in board.get("inputs", {}).items():
            # GPIO 34-39 of the ESP32 have no pull resistors: the board file lists
            # them in "external_pullups" (bankgate.boards refuses them otherwise)
            # and no pull is requested there (the port would silently ignore it)
            if has_internal_pull(chip, pin):
                self.inputs[name] = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
            else:
                self.inputs[name] = machine.Pin(pin, machine.Pin.IN)
        self.fs = Files()         # the latched faults persist on the flash filesystem ("/")
        rs = board.get("rs485")
        if rs:
            baud = rs.get("baud", 115200)
            raw = machine.UART(rs.get("uart", 1), baudrate=baud, tx=rs["tx"], rx=rs["rx"],
                               rxbuf=_UART_RXBUF, timeout=0, timeout_char=0)
            self._raw_uart = raw
            self.uart = Uart(raw, baud, rs.get("rx_latency_chars", 0))
            if rs.get("de") is not None:
                self.de_pin = machine.Pin(rs["de"], machine.Pin.OUT, value=0)
            for pin in rs.get("enable_high", ()):  # transceiver power/enable lines
                machine.Pin(pin, machine.Pin.OUT, value=1)
        # CAN controllers (docs/bus.md "Board keys"): "can" faces the inverter unless
        # its "role" says "modules" or "both"; "can_modules" is a second controller.
        c = board.get("can")
        if c:
            ctl = open_can(c, chip)
            role = c.get("role", "inverter")
            if role in ("inverter", "both"):
                self.can_inverter = ctl
            if role in ("modules", "both"):
                self.can_modules = ctl
        if board.get("can_modules"):
            self.can_modules = open_can(board["can_modules"], chip)
        if board.get("terminator") is not None:
            self.terminator = machine.Pin(board["terminator"], machine.Pin.OUT, value=0)
        if board.get("link_adc"):
            self.link_sensor = LinkSensor(board["link_adc"])
        if board.get("idle_adc") is not None:
            self.idle_adc = Adc(board["idle_adc"])
        if board.get("led") is not None:
            self.led = machine.Pin(board["led"], machine.Pin.OUT, value=0)
        self._poll = None
        if self.uart is not None:
            import select
            self._poll = select.poll()
            self._poll.register(self._raw_uart, select.POLLIN)

    def start_watchdog(self, timeout_ms):
        self.wdt = machine.WDT(timeout=timeout_ms)

    def idle(self, ms):
        if self._poll is not None:
            self._poll.poll(ms)
        else:
            time.sleep_ms(ms)

    def reset(self):
        machine.reset()


def has_internal_pull(chip, pin):
    """False for the ESP32's GPIO 34-39 (input-only pads without pull resistors,
    ESP32 datasheet "Pin Definitions" / TRM "IO_MUX Pad List")."""
    return not (chip == "esp32" and 34 <= pin <= 39)


def open_can(c, chip="esp32"):
    """A bankgate.bus.can controller from a board "can" entry:
    {"backend": "twai", "id": 1, "tx": 5, "rx": 4, "bitrate": 500000} or
    {"backend": "mcp2515", "spi": {"id": 1, "sck": 18, "mosi": 23, "miso": 19,
     "baudrate": 8000000}, "cs": 5, "int": 21, "crystal_hz": 8000000, "bitrate": 500000}
    TWAI: MicroPython's generic machine.CAN when the firmware has it (1-based id, no
    pin arguments: the pins belong to the firmware build), else the register
    driver bankgate.hal.twai_regs on machine.mem32 with the board's tx/rx pins."""
    backend = c.get("backend", "mcp2515")
    bitrate = c.get("bitrate", 500000)
    for pin in c.get("enable_low", ()):   # e.g. SN65HVD231 Rs pin: low = high-speed mode
        machine.Pin(pin, machine.Pin.OUT, value=0)
    if backend == "twai":
        if hasattr(machine, "CAN"):
            from bankgate.hal.twai import TwaiCan
            return TwaiCan(machine.CAN(c.get("id", 1), bitrate))
        tx = c.get("tx")
        rx = c.get("rx")
        if tx is None or rx is None:
            raise OSError("this firmware has no machine.CAN and the board file names no "
                          "can.tx/can.rx pins for the TWAI register driver")
        from bankgate.hal.twai_regs import TwaiRegs
        # make both pads GPIOs first (IO_MUX function select, input enable, TX idle
        # recessive high); the driver then routes them through the GPIO matrix
        machine.Pin(tx, machine.Pin.OUT, value=1)
        machine.Pin(rx, machine.Pin.IN)
        return TwaiRegs(machine.mem32, chip, tx=tx, rx=rx, bitrate=bitrate)
    if backend == "mcp2515":
        from bankgate.bus.mcp2515 import Mcp2515
        s = c.get("spi", {})
        spi = machine.SPI(s.get("id", 1), baudrate=s.get("baudrate", 8000000), polarity=0, phase=0,
                          sck=machine.Pin(s.get("sck", 18)), mosi=machine.Pin(s.get("mosi", 23)),
                          miso=machine.Pin(s.get("miso", 19)))
        cs = machine.Pin(c.get("cs", 5), machine.Pin.OUT, value=1)
        irq = None
        if c.get("int") is not None:           # open-drain INT: pull-up here or on the board
            if has_internal_pull(chip, c["int"]):
                irq = machine.Pin(c["int"], machine.Pin.IN, machine.Pin.PULL_UP)
            else:
                irq = machine.Pin(c["int"], machine.Pin.IN)
        return Mcp2515(spi, cs, crystal_hz=c.get("crystal_hz", 8000000), bitrate=bitrate,
                       int_pin=irq)
    raise ValueError("unknown CAN backend %r (twai or mcp2515)" % (backend,))


def open_board(board):
    return Esp32Hardware(board)
