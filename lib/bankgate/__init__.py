# bankgate -- MicroPython firmware for a parallel battery-bank gateway.
# The device package: bus drivers, protocols, admission, metrics, telemetry.
# Only bankgate.hal.esp32 imports `machine`; everything else gets its hardware
# injected (see docs/architecture.md).
VERSION = "0.1.0"
