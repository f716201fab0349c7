"""bankgate.telemetry against a real mosquitto broker.

The device side is tools/harness/mqtt_harness.py running under the unix port (a gateway-like
50 ms control loop + Telemetry); the observer is a paho-mqtt subscriber.  Latency numbers
are real time on this machine: they are I/O behaviours, not simulated physics.
"""
import json
import os
import subprocess
import time

import pytest

from bankgate_host import mpy
from mqtt_fixtures import (Harness, SlowProxy, StallServer, Sub, broker_factory,  # noqa: F401
                           harness_opt, wait_for)

pytestmark = pytest.mark.broker

BASE = "bankgate/bankgate"


def _events(sub):
    return [json.loads(p) for t, p, q, r in sub.get(BASE + "/event")]


def _assert_latency(s, what):
    """Telemetry never waits on the network.  Proven by the sockets' mode on every call the harness
    made (tools/fakes/spysock.py), not by the latencies: those are real time and depend on whatever
    else the machine runs, so they are printed here and measured by `bankgate bench`."""
    print("latency %s: worst iteration %d us, worst control lateness %d us, telemetry %d us"
          % (what, s["loop_max_us"], s["late_max_us"], s["tel_max_us"]))
    assert s["blocking_ops"] == 0, "%s: %d socket calls in blocking mode" % (what, s["blocking_ops"])


def test_topics_payloads_discovery_retained_status_qos1_events(broker_factory):
    b = broker_factory()
    sub = Sub(b.port, qos=1)
    h = Harness(harness_opt(b.port, 6, event_ms=100, mqtt={"module_period_ms": 1000,
                                                         "metrics_period_ms": 1000}))
    try:
        sub.wait(lambda s: len(s.get("/metrics")) >= 1 and len(s.get("/event")) >= 10, 15,
                 "metrics and events")
        # a subscriber arriving later gets the retained status and discovery
        late = Sub(b.port, topics=(BASE + "/status", "homeassistant/#"), qos=0)
        late.wait(lambda s: s.get("/status") and len(s.get("/config")) >= 40, 10, "retained")
        st = late.get("/status")[0]
        assert st[1] == b"online" and st[3] is True
        assert all(m[3] for m in late.get("/config"))
        late.close()
    finally:
        done = h.finish()
    # bank: compact JSON, integer units
    bank = json.loads(sub.get(BASE + "/bank")[-1][1])
    for k in ("state", "mv", "ma", "soc_pm", "admitted", "expected", "limits", "outputs", "seq"):
        assert k in bank, k
    assert type(bank["mv"]) is int and type(bank["limits"]["chg_ma"]) is int
    assert b" " not in sub.get(BASE + "/bank")[-1][1].split(b'"state"')[0]
    assert "modules" not in bank
    for addr in (2, 3, 4):
        m = json.loads(sub.get(BASE + "/module/%d" % addr)[-1][1])
        assert m["addr"] == addr and type(m["mv"]) is int
    assert "mqtt" in json.loads(sub.get(BASE + "/metrics")[-1][1])
    assert json.loads(sub.get(BASE + "/diagnoses")[-1][1])["active"][0]["code"] == "imbalance"
    # events: QoS 1, contiguous sequence numbers from the boot of the log
    evs = sub.get(BASE + "/event")
    assert all(q == 1 for _, _, q, _ in evs)
    seqs = sorted(set(e["seq"] for e in _events(sub)))
    assert seqs == list(range(1, seqs[-1] + 1))
    assert seqs[-1] >= 30
    # discovery (HA's abbreviated keys, "~" = BASE): a gateway device and one device per module
    # (via the gateway), device/state classes and units, availability on the status topic
    cfgs = {t: json.loads(p) for t, p, q, r in sub.get("/config")}
    volt = cfgs["homeassistant/sensor/bankgate/bank_voltage/config"]
    assert volt["dev_cla"] == "voltage" and volt["unit_of_meas"] == "V" and volt["~"] == BASE
    assert volt["stat_cla"] == "measurement" and volt["stat_t"] == "~/bank"
    assert volt["avty"] == [{"t": "~/status"}]
    soc = cfgs["homeassistant/sensor/bankgate/m3_soc/config"]
    assert soc["dev_cla"] == "battery" and soc["unit_of_meas"] == "%" and soc["stat_t"] == "~/module/3"
    assert soc["dev"]["via_device"] == "bankgate_bankgate" and soc["dev"]["ids"] == ["bankgate_bankgate_m3"]
    assert cfgs["homeassistant/binary_sensor/bankgate/contactor_k2/config"]["dev_cla"] == "power"
    assert cfgs["homeassistant/binary_sensor/bankgate/bank_fault/config"]["dev_cla"] == "problem"
    devs = {c["dev"]["ids"][0] for c in cfgs.values()}
    assert devs == {"bankgate_bankgate"} | {"bankgate_bankgate_m%d" % a for a in (2, 3, 4)}, devs
    # orderly stop: retained offline
    assert sub.get("/status")[-1][1] == b"offline"
    assert done["stats"]["dropped"] == 0
    _assert_latency(done, "normal operation")
    sub.close()


def test_last_will_when_the_firmware_is_killed(broker_factory):
    b = broker_factory()
    sub = Sub(b.port, topics=(BASE + "/status",), qos=1)
    h = Harness(harness_opt(b.port, 0))
    try:
        sub.wait(lambda s: s.get("/status") and s.get("/status")[-1][1] == b"online", 15, "online")
        h.kill()
        sub.wait(lambda s: s.get("/status")[-1][1] == b"offline", 15, "last will")
    finally:
        h.kill()
    late = Sub(b.port, topics=(BASE + "/status",), qos=0)
    late.wait(lambda s: s.get("/status"), 5, "retained will")
    assert late.get("/status")[0][1:] == (b"offline", 0, True)
    late.close()
    sub.close()


def test_home_assistant_birth_republishes_discovery(broker_factory):
    b = broker_factory()
    sub = Sub(b.port, topics=("homeassistant/+/bankgate/#",), qos=0)
    h = Harness(harness_opt(b.port, 0))
    try:
        n0 = sub.wait(lambda s: len(s.get("/config")) >= 40 and len(s.get("/config")), 15, "discovery")
        sub.publish("homeassistant/status", b"online")
        sub.wait(lambda s: len(s.get("/config")) >= 2 * n0, 10, "republished discovery")
    finally:
        h.kill()
    sub.close()


def test_broker_restarts_lose_no_event_and_never_delay_control(broker_factory):
    b = broker_factory()
    # the gateway reaches the broker through a gate (a plain proxy) so that after each restart the
    # observer is subscribed again before the gateway can reconnect and replay its ring
    gate = SlowProxy(b.port, chunk=4096, delay=0)
    sub = Sub(b.port, topics=(BASE + "/event",), qos=1)
    h = Harness(harness_opt(gate.port, 0, event_ms=100))
    try:
        h.wait(lambda s: s["online"], 15, "first connection")
        for outage in range(3):
            seq0 = h.last()["seq"]
            sub.wait(lambda s: {e["seq"] for e in _events(s)} >= set(range(1, seq0 + 1)), 20,
                     "events up to %d (replayed after the previous outage)" % seq0)
            gate.gate.clear()
            b.stop()
            h.wait(lambda s: not s["online"], 20, "gateway noticing the outage")
            # stay down while 15 more events are produced (about 1.5 s of the harness's clock)
            h.wait(lambda s: s["seq"] >= seq0 + 15, 20, "events during the outage")
            acks = sub.subacks
            b.start()
            wait_for(lambda: sub.subacks > acks, 20, "observer resubscribed")
            gate.gate.set()
            h.wait(lambda s: s["online"] and s["stats"]["reconnects"] >= outage + 1, 20, "reconnect")
        last = h.last()["seq"]
        sub.wait(lambda s: {e["seq"] for e in _events(s)} >= set(range(1, last + 1)), 30,
                 "every event up to %d" % last)
    finally:
        h.kill()
        gate.close()
    st = h.last()
    got = sorted({e["seq"] for e in _events(sub)})
    assert got[:last] == list(range(1, last + 1)), "gap in event sequence numbers"
    assert st["stats"]["dropped_events"] == 0
    assert st["stats"]["reconnects"] >= 3
    # the gateway reported its own disconnects as events (code 17, a=0) with the reason
    assert any(e["code"] == 17 and e["a"] == 0 for e in _events(sub))
    _assert_latency(st, "broker restarts")
    sub.close()


def test_overflow_drops_telemetry_first_and_counts(broker_factory):
    b = broker_factory()
    # a tiny ring and a long outage: telemetry must go first, the drops are counted
    h = Harness(harness_opt(b.port, 0, event_ms=500, mqtt={"ring_bytes": 1024, "bank_period_ms": 200}))
    try:
        h.wait(lambda s: s["online"], 15, "online")
        b.stop()
        h.wait(lambda s: s["stats"]["dropped_telemetry"] >= 5 and not s["online"], 20, "telemetry drops")
        s = h.last()
        assert s["stats"]["dropped_events"] == 0
    finally:
        h.kill()


def _passwd(tmp_path, user, pw):
    f = tmp_path / "passwd"
    f.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(f), user, pw], check=True)
    os.chmod(f, 0o600)
    return str(f)


def test_username_password(broker_factory, tmp_path):
    b = broker_factory(password_file=_passwd(tmp_path, "gw", "s3cret"))
    good = Harness(harness_opt(b.port, 0, user="gw", password="s3cret"))
    bad = Harness(harness_opt(b.port, 0, user="gw", password="wrong"))
    try:
        good.wait(lambda s: s["online"], 15, "authenticated connection")
        s = bad.wait(lambda s: s["stats"]["attempts"] >= 2, 15, "refused attempts")
        assert not s["online"] and s["stats"]["connects"] == 0
        assert s["stats"]["last_error"] == 6          # transport.R_REFUSED (CONNACK rc 5)
    finally:
        good.kill()
        bad.kill()


def _cert(tmp_path):
    crt, key = str(tmp_path / "srv.crt"), str(tmp_path / "srv.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    os.chmod(key, 0o644)
    return crt, key


@pytest.mark.parametrize("form", ["ssl_params", "ssl_context"])
def test_tls_listener(broker_factory, tmp_path, form):
    crt, key = _cert(tmp_path)
    b = broker_factory(tls=(crt, key))
    sub = Sub(b.port, topics=(BASE + "/bank",), qos=0, tls_ca=crt)
    opt = harness_opt(b.port, 0, ca_file=crt, mqtt={"tls": True})
    if form == "ssl_context":
        opt["ssl_context"] = True
    h = Harness(opt)
    try:
        s = h.wait(lambda s: s["online"], 20, "TLS connection")
        sub.wait(lambda x: x.get("/bank"), 10, "data over TLS")
        s = h.wait(lambda s: s["t"] > 1000, 10, "a second of operation")
        # the TLS handshake's public-key work happens inside ONE non-blocking read (mbedtls): it is
        # the largest unit of work telemetry has (10-30 ms here; `bankgate bench` measures it)
        _assert_latency(s, "TLS (%s)" % form)
        assert s["sockets"] >= 1 and s["socket_ops"] > 0, s
    finally:
        h.kill()
    sub.close()


def test_hostile_publisher_cannot_change_anything(broker_factory):
    b = broker_factory()
    sub = Sub(b.port, topics=(BASE + "/cmd_result",), qos=0)
    h = Harness(harness_opt(b.port, 0, event_ms=0))
    garbage = [b"", b"\x00\xff\xfe", b"{", b"[]", b"null", b"1", b'"x"', b"{}" * 200,
               b'{"code": 1, "addr": 3}', b'{"code": "imbalance"}', b'{"code": "imbalance", "addr": "3"}',
               b'{"code": "imbalance", "addr": 3, "close": true}', b"A" * 5000, b"\xc3\x28"]
    names = ["close", "contactor", "k1", "limits", "set_limit", "reset", "clear_fault", "config",
             "ack", "rescan", "discovery", "x" * 40, ""]
    sent = 0
    try:
        h.wait(lambda s: s["online"] and s["stats"]["published"] > 40, 15, "online")
        before = h.last()
        for n in names:
            for p in garbage:
                if n in ("rescan", "discovery") and p == b"":
                    continue          # the one valid form of these two
                sub.publish(BASE + "/cmd/" + n, p)
                sent += 1
        sub.publish("homeassistant/status", b"\xff" * 3000)   # oversized: skipped unread, counted
        sent += 1
        s = h.wait(lambda s: s["stats"]["rejected_commands"] >= sent, 20, "%d rejections" % sent)
        assert s["stats"]["rejected_commands"] == sent
        assert s["stats"]["accepted_commands"] == 0
        assert s["rescans"] == 0 and s["acks"] == [] and s["outputs"] == before["outputs"]
        assert s["online"] and s["stats"]["reconnects"] == 0
        sub.wait(lambda x: x.get("/cmd_result"), 10, "replies")
        r = json.loads(sub.get("/cmd_result")[0][1])
        assert r["ok"] is False and r["reason"]
        # the legitimate commands still work
        sub.publish(BASE + "/cmd/rescan", b"")
        sub.publish(BASE + "/cmd/ack", b'{"code": "imbalance", "addr": 3}')
        s = h.wait(lambda s: s["stats"]["accepted_commands"] == 2, 10, "accepted commands")
        assert s["rescans"] == 1 and s["acks"] == [["imbalance", 3]]
        _assert_latency(s, "hostile publisher")
    finally:
        h.kill()
    sub.close()


def test_isolation_broker_accepts_tcp_then_stalls():
    stall = StallServer()
    h = Harness(harness_opt(stall.port, 0, mqtt={"connect_timeout_ms": 1000, "reconnect_max_ms": 1000}))
    try:
        s = h.wait(lambda s: s["stats"]["attempts"] >= 3 and s["t"] > 4000, 30, "repeated timeouts")
        assert not s["online"] and s["stats"]["last_error"] == 3     # R_TIMEOUT
        _assert_latency(s, "stalled broker")
    finally:
        h.kill()
        stall.close()


def test_isolation_hung_dns():
    h = Harness(harness_opt(0, 0, dns="hang", mqtt={"host": "broker.example", "port": 1883,
                                                   "connect_timeout_ms": 500}))
    try:
        s = h.wait(lambda s: s["t"] > 3000 and s["stats"]["attempts"] >= 2, 20, "3 s with DNS hung")
        assert not s["online"] and s["stats"]["last_error"] == 1     # R_DNS
        _assert_latency(s, "hung DNS")
    finally:
        h.kill()


def test_isolation_wifi_loss_then_recovery_loses_no_event(broker_factory):
    b = broker_factory()
    sub = Sub(b.port, topics=(BASE + "/event",), qos=1)
    h = Harness(harness_opt(b.port, 8, event_ms=100, link_down_ms=[2000, 4500]))
    try:
        h.wait(lambda s: not s["online"] and s["t"] > 2000, 20, "link loss noticed")
        h.wait(lambda s: s["online"] and s["t"] > 4500, 20, "back online")
    finally:
        done = h.finish()
    last = done["seq"]
    sub.wait(lambda s: {e["seq"] for e in _events(s)} >= set(range(1, last + 1)), 15, "all events")
    assert done["stats"]["dropped_events"] == 0 and done["stats"]["last_error"] == 10   # R_LINK
    _assert_latency(done, "Wi-Fi loss")
    sub.close()


def test_isolation_slow_link(broker_factory):
    b = broker_factory()
    proxy = SlowProxy(b.port, chunk=64, delay=0.05)     # ~1.3 kB/s, 50 ms per hop
    sub = Sub(b.port, topics=(BASE + "/event",), qos=1)
    h = Harness(harness_opt(proxy.port, 0, event_ms=200, mqtt={"discovery": False}))
    try:
        h.wait(lambda s: s["online"], 20, "online through the slow link")
        sub.wait(lambda x: len(x.get("/event")) >= 5, 30, "events through the slow link")
        s = h.wait(lambda s: s["t"] > 5000, 20, "5 s on the slow link")
        _assert_latency(s, "slow link")
    finally:
        h.kill()
        proxy.close()
    sub.close()


def test_long_arguments_are_refused_before_they_crash_the_unix_port(tmp_path):
    # why the harness takes its options on stdin: the unix port dies on a >255-byte argument
    script = tmp_path / "hello.py"
    script.write_text("print('ran')\n")
    argv = [mpy.micropython_binary(), str(script)]
    ok = subprocess.run(argv + ["x" * mpy.MAX_ARG_BYTES], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout == "ran\n", ok.stderr
    dead = subprocess.run(argv + ["x" * (mpy.MAX_ARG_BYTES + 1)], capture_output=True, text=True, timeout=30)
    assert dead.returncode != 0 and "uncaught NLR" in dead.stderr, (dead.returncode, dead.stderr)
    with pytest.raises(ValueError, match="limit 255"):
        mpy.command([str(script), "x" * (mpy.MAX_ARG_BYTES + 1)])
    assert mpy.command(["-c", "x = '%s'" % ("x" * 400)])[-1].endswith("'")   # -c code: any length
