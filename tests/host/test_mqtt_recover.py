"""bankgate.telemetry recovering by itself from misbehaving brokers, over real sockets (issue #21).

The device side is tools/harness/mqtt_harness.py under the unix port (real time, one event every
100 ms); the broker is a real mosquitto behind tests/host/mqtt_misbehave.MisbehavingProxy, which
swallows PUBACKs, drips bytes at 1 byte/s or resets connections mid-publish; a paho subscriber
on mosquitto itself collects the events (de-duplicated by seq: QoS 1 is at-least-once).
"""
import json

import pytest

from mqtt_fixtures import Harness, Sub, broker_factory, harness_opt  # noqa: F401
from mqtt_misbehave import MisbehavingProxy

pytestmark = pytest.mark.broker

BASE = "bankgate/bankgate"
R_NOACK = 14
R_SLOW = 15


def _seqs(sub):
    return {json.loads(p)["seq"] for t, p, q, r in sub.get(BASE + "/event")}


def _all_delivered(sub, done):
    last = done["seq"]
    sub.wait(lambda s: _seqs(s) >= set(range(1, last + 1)), 20, "every event 1..%d" % last)


def _drained(h, n):
    """Every one of the n test events emitted and nothing left in the ring."""
    return h.wait(lambda s: s["stats"]["queued"] == 0 and s["seq"] >= n and s["online"], 40,
                  "the ring drained")


def test_broker_that_stops_acknowledging_is_left_and_no_event_is_lost(broker_factory):
    b = broker_factory()
    proxy = MisbehavingProxy(b.port)
    sub = Sub(b.port, topics=(BASE + "/event",), qos=1)
    h = Harness(harness_opt(proxy.port, 0, event_ms=100, event_count=300,
                            mqtt={"discovery": False, "keepalive_s": 30}))
    try:
        h.wait(lambda s: s["online"] and s["seq"] >= 10, 20, "online")
        proxy.drop_puback = True
        s = h.wait(lambda s: s["stats"]["noack_drops"] >= 1, 40, "session declared dead (noack)")
        assert s["stats"]["resends"] >= 1 and proxy.dup_publishes >= 1      # DUP on the wire
        proxy.drop_puback = False
        s = h.wait(lambda s: s["online"] and s["stats"]["connects"] >= 2, 30, "reconnected by itself")
        s = _drained(h, 300)
    finally:
        h.kill()
    done = s
    assert done["stats"]["dropped_events"] == 0
    _all_delivered(sub, done)
    sub.close()
    proxy.close()


def test_slowloris_broker_is_detected_then_left_when_it_recovers(broker_factory):
    b = broker_factory()
    proxy = MisbehavingProxy(b.port)
    proxy.drip = 1.0                                  # 1 byte/s: CONNACK takes 4 s > 3 s
    sub = Sub(b.port, topics=(BASE + "/event",), qos=1)
    h = Harness(harness_opt(proxy.port, 0, event_ms=100, event_count=150,
                            mqtt={"discovery": False, "connect_timeout_ms": 3000}))
    try:
        s = h.wait(lambda s: s["stats"]["slow_connects"] >= 2, 40, "slow connects")
        assert not s["online"] and s["stats"]["last_error"] == R_SLOW
        proxy.drip = 0.0
        h.wait(lambda s: s["online"], 30, "online once the broker is normal")
        s = _drained(h, 150)
    finally:
        h.kill()
    assert s["stats"]["dropped_events"] == 0
    _all_delivered(sub, s)
    sub.close()
    proxy.close()


def test_broker_resetting_mid_publish_loses_no_event(broker_factory):
    b = broker_factory()
    proxy = MisbehavingProxy(b.port)
    sub = Sub(b.port, topics=(BASE + "/event",), qos=1)
    h = Harness(harness_opt(proxy.port, 0, event_ms=100, event_count=200, mqtt={"discovery": False}))
    try:
        h.wait(lambda s: s["online"] and s["seq"] >= 5, 20, "online")
        for k in range(3):
            proxy.reset_publishes = 1
            h.wait(lambda s, k=k: proxy.resets_done > k and s["stats"]["connects"] >= k + 2 and s["online"],
                   30, "reset %d and reconnect" % (k + 1))
        s = _drained(h, 200)
    finally:
        h.kill()
    assert proxy.resets_done == 3 and s["stats"]["dropped_events"] == 0
    _all_delivered(sub, s)
    sub.close()
    proxy.close()


def test_qos2_command_is_refused_and_the_exchange_completed(broker_factory):
    b = broker_factory()
    proxy = MisbehavingProxy(b.port)
    h = Harness(harness_opt(proxy.port, 0, mqtt={"discovery": False}))
    try:
        h.wait(lambda s: s["online"], 20, "online")
        topic = (BASE + "/cmd/rescan").encode()
        body = bytes([0, len(topic)]) + topic + b"\x00\x2a" + b"{}"
        assert proxy.inject(bytes([0x34, len(body)]) + body)     # PUBLISH QoS 2, packet id 42
        s = h.wait(lambda s: s["stats"]["rx_qos_refused"] >= 1, 10, "QoS 2 refused")
        assert s["rescans"] == 0 and s["stats"]["accepted_commands"] == 0
        assert s["stats"]["rejected_commands"] == 1 and s["online"]
    finally:
        h.kill()
    proxy.close()
