# bankgate main.py -- the device entry point.  Loads the board, configuration and
# secrets, builds the hardware layer and runs the gateway.  Any exception that
# escapes the gateway releases every output and resets the chip (open on crash);
# a hang is caught by the watchdog the gateway feeds only from a healthy loop.
import sys

from bankgate import firmware

firmware.device_main()
