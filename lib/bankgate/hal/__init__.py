# The hardware boundary.  bankgate.hal.esp32 is the only module that imports
# `machine`; it builds a Hardware object from a board definition.  Host tests and
# the simulator build the same object from fakes (tools/fakes/fakehw.py).  Every
# other module receives these objects and never asks for hardware itself.
#
# The interfaces (duck-typed, all non-blocking unless stated):
#
# Clock        ticks_ms(), ticks_us()  wrapping tick counters (bankgate.clock)
#              sleep_ms(n)             blocking sleep (only the idle path uses it)
#              sleep_us(n)             optional; the RS485 master's bounded wait for a
#                                      request's wire time (bankgate.bus.rs485)
# Serial port  write(buf) -> n         queue bytes for transmission
#   (UART)     txdone() -> bool        True once every queued byte left the wire
#              any() -> n              bytes waiting
#              readinto(buf) -> n|None read what is waiting, never blocks
#              baudrate                int, bits per second (8N1 assumed)
# Pin (out)    value(v) / value()      energise (1) / release (0); contactor coils,
#                                      RS485 driver enable, terminator switch, LED
# Pin (in)     value() -> 0/1          auxiliary contacts, fault-reset button
# CAN          see bankgate.bus.can    send / recv / state / counters
# Watchdog     feed()                  resets the chip if not fed in time
# ADC          read_mv() -> int        e.g. bus idle voltage for the termination check
# Filesystem   open(path, mode) -> file (read/write/flush/close), rename(old, new),
#   (hw.fs)    remove(path): the device's flash filesystem, for the persisted latched
#              faults (bankgate.latchstore); Files below on the device and the unix
#              port, a simulated one in the simulator; None: nothing persists
#
# Hardware.idle(ms) waits up to ms milliseconds, returning early when a bus has
# input; the main loop's only blocking call.


class Hardware:
    """What the firmware is given.  Attributes absent on a board are None/empty."""

    def __init__(self, clock, board_name="?"):
        self.board_name = board_name
        self.clock = clock
        self.uart = None          # RS485 serial port (module network)
        self.de_pin = None        # RS485 driver enable; None = automatic-direction transceiver
        self.can_modules = None   # CAN controller facing the modules, if any
        self.can_inverter = None  # CAN controller facing the inverter, if any
        self.outputs = {}         # name -> output pin (contactor coils etc.), all start released
        self.inputs = {}          # name -> input pin (auxiliary feedback, reset button)
        self.terminator = None    # output pin switching the gateway's own 120 ohm terminator
        self.idle_adc = None      # ADC reading the RS485/CAN idle differential voltage
        self.link_sensor = None   # read_mv(): DC-link (inverter side) voltage, for closed-loop gating
        self.led = None
        self.wdt = None
        self.net = None           # network adapter (Wi-Fi on the ESP32), see bankgate.net
        self.release_count = 0    # release_all() calls so far (admission notices an external release)
        self.fs = None            # device filesystem (Files) for the latched faults; None: none

    def release_all(self):
        """De-energise every output: the fail-safe state.  Must never raise."""
        self.release_count += 1
        for pin in self.outputs.values():
            try:
                pin.value(0)
            except Exception:
                pass

    def idle(self, ms):
        self.clock.sleep_ms(ms)


class Files:
    """hw.fs on the device: the built-in open() and os.rename/os.remove, paths
    relative to the current directory ("/" on the ESP32)."""

    def open(self, path, mode):
        return open(path, mode)

    def rename(self, old, new):
        import os
        os.rename(old, new)

    def remove(self, path):
        import os
        os.remove(path)
