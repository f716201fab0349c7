# The soak (`make soak` = pytest -m slow -k soak): 24 simulated hours, 16 modules,
# random faults (modules dropping and returning, noise bursts, alarms, broker outages
# and stalls, Wi-Fi loss, inverter heartbeat loss), the real firmware with MQTT
# telemetry.  Definitions of every check: tools/rigs/soak.py.  The speed (simulated /
# wall time) is printed; docs/performance.md has the latest figures.
# mpy-mark: slow
# mpy-heapsize: 8m
# mpy-timeout: 14400
# mpy-emit: native
import soak


def test_soak_24h():
    soak.check(soak.run(hours=24.0, n=16, baud=9600, seed=1, warmup_h=2.0, sample_s=600))
