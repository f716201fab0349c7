"""Host-side tools for bankgate: CLI, MicroPython runner, test harness, deploy.

The firmware itself lives in lib/bankgate (MicroPython).  Everything here runs
under CPython and drives the unix MicroPython port for anything that executes
firmware logic.
"""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _device_version():
    path = os.path.join(REPO, "lib", "bankgate", "__init__.py")
    with open(path) as f:
        m = re.search(r'^VERSION\s*=\s*"([^"]+)"', f.read(), re.M)
    return m.group(1)


VERSION = _device_version()
