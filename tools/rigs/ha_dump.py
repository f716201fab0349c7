# Every Home Assistant discovery config the firmware publishes, and the state messages it
# publishes next to them, for a 16-module bank with every option on (mqtt.ha_cells, a
# contactor per module, energy counters on a simulated filesystem): the real Gateway on
# fake hardware (benchrig) publishing to the in-process fake broker.
#
#   micropython ha_dump.py [N]      JSON lines [topic, payload]: every discovery config, then
#                                   the newest payload of every state topic
#
# Used by tests/ha/test_ha_schema.py (Home Assistant's own schemas, `make test-ha`) and
# tests/host/test_ha_discovery.py.
import json
import sys

import benchrig
import fakemqtt
from simfs import SimFS

n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
cfg = benchrig.bench_config(n, True)
cfg["mqtt"]["ha_cells"] = True
broker = fakemqtt.FakeBroker()
last = {}


def _publish(topic, payload):
    if last is not None:                    # discovery printed at once, state: the newest kept
        if bytes(topic).startswith(b"homeassistant/"):
            print(json.dumps([bytes(topic).decode(), bytes(payload).decode()]))
        else:
            last[bytes(topic)] = bytes(payload)


broker.on_publish = _publish
frames = benchrig.build_frames(n)
gw, clock, uart = benchrig.make_gateway(n, frames, fakemqtt.fake_net(broker), cfg)
tel = gw.telemetry
last.clear()                                # only what is published from here on
from bankgate.energy import Energy  # noqa: E402
tel.hax.energy = Energy(SimFS(), step_wh=1)
tel.disc.set_addresses([m.addr for m in gw.bank.modules if m.addr >= 0])
tel.republish_discovery()
period = max(tel.bank_period, tel.module_period, tel.metrics_period)
for _ in range(2 * period + 500):
    gw.step()
    clock.advance_us(1000)
if tel.internal_errors:
    raise tel.last_exception
for topic in sorted(last):
    print(json.dumps([topic.decode(), last[topic].decode()]))
