# Freeze bankgate into a custom MicroPython build:
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/bankgate/firmware/manifest.py
# (run from micropython/ports/esp32).  umqtt.simple comes from micropython-lib.
# The same manifest builds the 32-bit unix port with the firmware frozen in (heap figures
# as on the device: ../shared/micropython32/build.sh OUTDIR firmware/manifest.py, which
# `bankgate bench` runs): the unix port has no boards/manifest.py, so its standard
# variant's manifest stands in for the board's.
try:
    include("$(PORT_DIR)/boards/manifest.py")
except Exception as e:  # noqa: F821 (manifest globals)
    if "No such file" not in str(e):
        raise
    include("$(PORT_DIR)/variants/standard/manifest.py")
# umqtt.simple: the release the tests run (lib/umqtt/, fetched by `make setup`: pinned
# micropython-umqtt.simple 1.3.4); newer micropython-lib releases call sock.settimeout(),
# which bankgate's non-blocking stream (telemetry/client.py) does not offer.
import os  # noqa: E402 (manifests are Python; cwd is this file's directory)
if os.path.isfile("../lib/umqtt/simple.py"):
    package("umqtt", base_path="../lib")  # noqa: F821
else:
    raise Exception("lib/umqtt/simple.py missing: run `make setup` (tools/dev/fetch_umqtt.py) first")
package("bankgate", base_path="../lib")  # relative to this manifest
module("main.py")
