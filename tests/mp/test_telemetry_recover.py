# Telemetry against misbehaving brokers (issue #21): a broker that stops acknowledging,
# a slowloris broker, a broker that resets mid-publish, QoS 2 commands.  Simulated time:
# the test drives `now`; the scripted broker is tools/fakes/fakemqtt.py.
# mpy-heapsize: 256k
import json

from bankgate import config
from bankgate.events import EV_CHECK_FAIL, EV_TELEMETRY_LOSS, EventLog
from bankgate.telemetry import Telemetry
from bankgate.telemetry import transport as tr
from fakemqtt import FakeBroker, fake_net


class _Clock:
    def __init__(self):
        self.ms = 0

    def ticks_ms(self):
        return self.ms


class _Hw:
    def __init__(self, clock):
        self.clock = clock


class _Poller:
    rescans = 0

    def rescan(self):
        self.rescans += 1


class _Diag:
    def acknowledge(self, code, addr):
        return False


class _Gw:
    def __init__(self, cfg, clock):
        self.cfg = cfg
        self.events = EventLog(256)
        self.poller = _Poller()
        self.diagnoser = _Diag()
        self.hw = _Hw(clock)

    def snapshot(self):
        return {"t_ms": 0, "state": "running", "mv": 52000, "ma": 0, "soc_pm": 500,
                "modules": [{"slot": 0, "addr": 2, "mv": 52000}], "metrics": {}, "diagnoses": []}


class _Run:
    """Telemetry + scripted broker; events at `rate` per second; every event seq the
    broker received is collected (a set: QoS 1 is at-least-once)."""

    def __init__(self, rate=10, **mqtt):
        m = {"enabled": True, "discovery": False, "connect_timeout_ms": 3000}
        m.update(mqtt)
        self.cfg = config.validate({"mqtt": m})
        self.clock = _Clock()
        self.broker = FakeBroker()
        self.broker.clock = self.clock.ticks_ms
        self.broker.on_publish = self._on_publish
        self.gw = _Gw(self.cfg, self.clock)
        self.tel = Telemetry(fake_net(self.broker), self.cfg, self.gw)
        self.rate = rate
        self.got = set()
        self.copies = 0
        self.loss_msgs = []
        self.loss_events = []
        self.emitted = 0

    def _on_publish(self, topic, payload):
        if topic.endswith(b"/event"):
            d = json.loads(payload)
            self.copies += 1
            self.got.add(d["seq"])
            if d["code"] == EV_TELEMETRY_LOSS:
                self.loss_events.append(d)
        elif topic.endswith(b"/telemetry_loss"):
            self.loss_msgs.append(json.loads(payload))

    def run_until(self, t_ms, step_ms=20, events=True):
        period = 1000 // self.rate if self.rate else 0
        while self.clock.ms < t_ms:
            now = self.clock.ms
            if events and period and now % period == 0:
                self.gw.events.emit(now, EV_CHECK_FAIL, 2, 7, now)
                self.emitted += 1
            self.tel.service(now, 50)
            self.clock.ms = now + step_ms

    def check_fail_seqs(self):
        """Sequence numbers of the test's own events (not connect/loss events)."""
        out = []
        ev = self.gw.events
        rec = [0, 0, 0, 0, 0]
        for s in range(1, ev.seq + 1):
            if ev.get(s, rec) and rec[1] == EV_CHECK_FAIL:
                out.append(s)
        return out


def _all_delivered(run):
    ev = run.gw.events
    assert ev.overwritten == 0 and run.tel.events_lost == 0, (ev.overwritten, run.tel.events_lost)
    missing = [s for s in range(1, ev.seq + 1) if s not in run.got]
    return missing


def test_unacknowledged_publish_is_resent_with_dup_and_same_packet_id():
    run = _Run(rate=1)
    run.run_until(3000)
    c = run.tel.client
    assert c.online and c.inflight == 0
    run.broker.no_puback = True
    seen = []
    run.broker.on_publish = lambda t, p: seen.append(bytes(p))
    run.run_until(3000 + c.puback_timeout_ms + 500)
    assert c.resends >= 1 and run.broker.dups >= 1, (c.resends, run.broker.dups)
    assert c.online and c.disconnects == 0          # a resend is not yet a dead session
    run.broker.no_puback = False
    run.run_until(3000 + 2 * c.puback_timeout_ms + 1500)   # each one resent once more, then acked
    assert c.online and c.inflight == 0 and c.disconnects == 0, (c.inflight, c.disconnects)
    assert run.tel.ring.inflight() == 0


def test_broker_that_stops_acknowledging_is_dropped_and_nothing_is_lost():
    # 10 events/s; the broker takes publishes but sends no PUBACK for 20 s
    run = _Run(rate=10)
    run.run_until(10000)
    c = run.tel.client
    assert c.online and c.connects == 1
    run.broker.no_puback = True
    run.run_until(30000)
    assert c.noack_drops >= 1, c.noack_drops
    assert c.disconnects >= 1
    run.broker.no_puback = False
    run.run_until(45000)
    assert c.online, tr.REASON_NAMES[c.last_error]
    assert c.connects >= 2                        # reconnected by itself
    r = run.tel.ring
    assert r.dropped_events == 0, r.dropped_events
    missing = _all_delivered(run)
    assert not missing, missing[:10]
    assert r.inflight() == 0 and c.inflight == 0
    assert run.broker.dups >= 1                   # in-session resends carried DUP
    assert not run.loss_events                    # nothing lost: nothing to report


def test_loss_beyond_the_ring_is_reported_with_its_cause():
    run = _Run(rate=10, ring_bytes=2048)
    run.run_until(5000)
    c = run.tel.client
    run.broker.no_puback = True
    run.run_until(60000)
    r = run.tel.ring
    assert r.dropped_events > 0
    assert run.tel.loss.cause == tr.R_NOACK, run.tel.loss.cause
    dropped = r.dropped_events
    run.broker.no_puback = False
    run.run_until(75000, events=False)
    assert c.online
    assert len(run.loss_events) >= 1, run.loss_events
    le = run.loss_events[0]
    assert le["addr"] == tr.R_NOACK and le["a"] > 0, le
    assert 30 <= le["b"] <= 60, le                # seconds since the broker's last PUBACK
    assert run.loss_msgs and run.loss_msgs[0]["cause"] == "noack", run.loss_msgs
    assert "PUBACK" in run.loss_msgs[0]["text"]
    # every event the ring did not have to drop arrived (some it dropped had been sent, unacked)
    missing = _all_delivered(run)
    assert 0 < len(missing) <= r.dropped_events == dropped, (len(missing), r.dropped_events)
    assert c.connects >= 3 and c.noack_drops >= 2, (c.connects, c.noack_drops)
    assert sum(e["a"] for e in run.loss_events) == dropped


def test_slowloris_broker_is_detected_and_the_offline_loss_reported():
    run = _Run(rate=10, ring_bytes=2048)
    run.broker.drip_ms = 1000                     # 1 byte/s from the first CONNACK on
    run.run_until(40000)
    c = run.tel.client
    assert not c.online and c.connects == 0
    assert c.last_error == tr.R_SLOW and c.slow_connects >= 2, (c.last_error, c.slow_connects)
    r = run.tel.ring
    assert r.dropped_events > 0                   # 40 s of events do not fit 2 kB
    assert run.tel.loss.cause == tr.R_SLOW
    run.broker.drip_ms = 0
    run.run_until(80000, events=False)
    assert c.online
    le = run.loss_events[0]
    assert le["addr"] == tr.R_SLOW and le["b"] >= 10, le     # offline for b seconds
    assert run.loss_msgs[0]["cause"] == "slow"
    missing = _all_delivered(run)
    assert 0 < len(missing) <= r.dropped_events, (len(missing), r.dropped_events)
    assert sum(e["a"] for e in run.loss_events) == r.dropped_events


def test_slowloris_within_the_ring_loses_nothing():
    run = _Run(rate=2)
    run.broker.drip_ms = 1000
    run.run_until(30000)
    c = run.tel.client
    assert not c.online and c.last_error == tr.R_SLOW
    run.broker.drip_ms = 0
    run.run_until(60000)
    assert c.online
    assert run.tel.ring.dropped_events == 0
    assert not _all_delivered(run)


def test_broker_resetting_mid_publish_loses_no_event():
    run = _Run(rate=10)
    run.run_until(5000)
    c = run.tel.client
    for k in range(4):
        run.broker.reset_mid_publish(1)
        run.run_until(8000 + 4000 * k)
    run.run_until(40000)
    assert run.broker.resets_done == 4
    assert c.online and c.disconnects >= 4 and c.connects >= 5, (c.disconnects, c.connects)
    assert run.tel.ring.dropped_events == 0
    assert not _all_delivered(run)


def test_qos2_command_is_refused_counted_and_never_executed():
    run = _Run(rate=0)
    run.run_until(2000, events=False)
    c = run.tel.client
    assert c.online
    topic = b"bankgate/bankgate/cmd/rescan"
    assert run.broker.inject(topic, b"{}", qos=2, pid=7)
    run.run_until(3000, events=False)
    assert run.gw.poller.rescans == 0             # never executed
    assert c.rx_qos_refused == 1 and run.tel.rejected_commands == 1
    assert (5, 7) in run.broker.acks2 and (7, 7) in run.broker.acks2, run.broker.acks2   # PUBREC, PUBCOMP
    assert c.online and c.protocol_errors == 0
    # the same command at QoS 0 is executed (the refusal is about the QoS only)
    assert run.broker.inject(topic, b"{}")
    run.run_until(4000, events=False)
    assert run.gw.poller.rescans == 1


def test_qos3_publish_is_a_protocol_error():
    run = _Run(rate=0)
    run.run_until(2000, events=False)
    c = run.tel.client
    run.broker.send_raw(b"\x36\x06\x00\x01a\x00\x01x")
    run.run_until(2500, events=False)
    assert c.last_error == tr.R_PROTOCOL and run.gw.poller.rescans == 0
