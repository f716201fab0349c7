# ESP32 hardware layer: the only bankgate module that imports `machine`.
# Builds a bankgate.hal.Hardware from a board definition (boards/*.json, copied to
# the device as /board.json).  Outputs are created released (value 0) before
# anything else, so a reset always leaves every contactor open.
import time

import machine
from micropython import const

from bankgate.hal import Hardware

_UART_RXBUF = const(1024)


class Clock:
    ticks_ms = staticmethod(time.ticks_ms)
    ticks_us = staticmethod(time.ticks_us)
    sleep_ms = staticmethod(time.sleep_ms)


class Adc:
    def __init__(self, pin):
        self._adc = machine.ADC(machine.Pin(pin))
        self._adc.atten(machine.ADC.ATTN_11DB)

    def read_mv(self):
        return self._adc.read_uv() // 1000


class Esp32Hardware(Hardware):
    def __init__(self, board):
        Hardware.__init__(self, Clock(), board.get("name", "?"))
        # Fail-safe first: every contactor coil released before anything can fail.
        for name, pin in board.get("outputs", {}).items():
            self.outputs[name] = machine.Pin(pin, machine.Pin.OUT, value=0)
        for name, pin in board.get("inputs", {}).items():
            self.inputs[name] = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        rs = board.get("rs485")
        if rs:
            self.uart = machine.UART(rs.get("uart", 1), baudrate=rs.get("baud", 115200),
                                     tx=rs["tx"], rx=rs["rx"], rxbuf=_UART_RXBUF,
                                     timeout=0, timeout_char=0)
            self.uart.baudrate = rs.get("baud", 115200)
            if rs.get("de") is not None:
                self.de_pin = machine.Pin(rs["de"], machine.Pin.OUT, value=0)
            for pin in rs.get("enable_high", ()):  # transceiver power/enable lines
                machine.Pin(pin, machine.Pin.OUT, value=1)
        if board.get("terminator") is not None:
            self.terminator = machine.Pin(board["terminator"], machine.Pin.OUT, value=0)
        if board.get("idle_adc") is not None:
            self.idle_adc = Adc(board["idle_adc"])
        if board.get("led") is not None:
            self.led = machine.Pin(board["led"], machine.Pin.OUT, value=0)
        self._poll = None
        if self.uart is not None:
            import select
            self._poll = select.poll()
            self._poll.register(self.uart, select.POLLIN)

    def start_watchdog(self, timeout_ms):
        self.wdt = machine.WDT(timeout=timeout_ms)

    def idle(self, ms):
        if self._poll is not None:
            self._poll.poll(ms)
        else:
            time.sleep_ms(ms)

    def reset(self):
        machine.reset()


def open_board(board):
    return Esp32Hardware(board)
