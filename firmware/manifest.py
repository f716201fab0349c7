# Freeze bankgate into a custom MicroPython build:
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/bankgate/firmware/manifest.py
# (run from micropython/ports/esp32).  umqtt.simple comes from micropython-lib.
include("$(PORT_DIR)/boards/manifest.py")
require("umqtt.simple")
package("bankgate", base_path="../lib")  # relative to this manifest
module("main.py")
