# Telemetry streams each message from the live records (issue 17): never a whole
# gw.snapshot(), and each message's JSON is written in place into its ring record.
# mpy-heapsize: 2m
import gc
import json

import benchrig
import fakemqtt
import mptest
from bankgate.telemetry import bank_fields
from bankgate.telemetry import ring as rg

N = 16
# what telemetry adds to module_snapshot() for Home Assistant (bankgate.telemetry.hadata)
HA_FIELDS = ("avail", "cell_delta_mv", "limit", "alarm_names", "protection_names", "share_pm", "r_mohm",
             "e_chg_wh", "e_dsg_wh")


def _gateway():
    frames = benchrig.build_frames(N)
    broker = fakemqtt.FakeBroker()
    got = []
    # the state messages (the ~400 discovery configs of 16 modules are not kept: heap)
    broker.on_publish = lambda topic, payload: None if topic.startswith(b"homeassistant/") else \
        got.append((topic, payload))
    gw, clock, uart = benchrig.make_gateway(N, frames, fakemqtt.fake_net(broker))
    return gw, clock, broker, got


def _run(gw, clock, steps):
    for _ in range(steps):
        gw.step()
        clock.advance_us(1000)


def test_bank_fields_are_the_snapshot_without_the_big_parts():
    gw, clock, broker, got = _gateway()
    _run(gw, clock, 200)
    snap = gw.snapshot()
    d = bank_fields(gw, snap["t_ms"])
    want = {k: v for k, v in snap.items() if k not in ("modules", "metrics", "diagnoses")}
    assert sorted(d) == sorted(want), (sorted(d), sorted(want))
    for k in want:
        assert d[k] == want[k], k


def test_telemetry_never_builds_a_whole_snapshot():
    gw, clock, broker, got = _gateway()

    def whole_snapshot():
        raise AssertionError("telemetry called gw.snapshot()")
    gw.snapshot = whole_snapshot
    del got[:]
    tel = gw.telemetry
    period = max(tel.bank_period, tel.module_period, tel.metrics_period)
    _run(gw, clock, 2 * period + 500)
    assert tel.internal_errors == 0, tel.last_exception
    topics = [t for t, p in got]
    base = tel.base.encode()
    assert base + b"/bank" in topics
    assert base + b"/metrics" in topics and base + b"/diagnoses" in topics
    mods = set(t for t in topics if t.startswith(base + b"/module/"))
    assert len(mods) == N, mods
    # the last message of each module is that module's record, as JSON
    last = {}
    for t, p in got:
        last[t] = p
    for m in gw.bank.modules:
        if m.addr >= 0:
            sent = json.loads(last[base + b"/module/%d" % m.addr])
            now = gw.module_snapshot(m)
            assert set(sent) - set(now) == set(HA_FIELDS), sorted(set(sent) - set(now))
            sent = {k: v for k, v in sent.items() if k in now}
            assert sent == now, (sorted(sent), sorted(now), [(k, sent.get(k), now.get(k)) for k in now if sent.get(k) != now.get(k)])
    bank = json.loads(last[base + b"/bank"])
    assert bank["admitted"] == gw.admission.snapshot()["admitted"] and bank["expected"] == N, bank
    assert "modules" not in bank and "metrics" not in bank and "diagnoses" not in bank


def test_a_message_is_encoded_into_the_ring_without_allocating():
    gw, clock, broker, got = _gateway()
    tel = gw.telemetry
    for _ in range(20):                 # discovery sent and the ring drained: a record fits
        _run(gw, clock, 100)            # without moving others (a compaction makes a view)
        if tel._disc_i < 0 and tel.ring.n_records == 0:
            break
    else:
        raise AssertionError("discovery never finished / ring never drained")
    d = {"metrics": gw.metrics.snapshot(), "bus": gw.health.snapshot(), "t_ms": 5}
    text = json.dumps(d, separators=(",", ":"))
    assert len(text) > 1000                     # a large message (16 modules' metrics)
    r = tel.ring
    end = r.end
    gc.collect()
    mptest.no_alloc(tel._put, rg.K_METRICS, d, 7)
    assert r.end > end and r.kind(end) == rg.K_METRICS and r.tag(end) == 7
    assert bytes(r.payload(end)) == text.encode()


def test_the_metrics_message_is_streamed_from_the_live_arrays():
    # issue 17: the metrics message is written key by key from Metrics' arrays (one small list
    # at a time), never from Metrics.snapshot()'s whole dict; the JSON object is the same
    gw, clock, broker, got = _gateway()
    tel = gw.telemetry
    _run(gw, clock, tel.metrics_period + 500)
    calls = []
    real = gw.metrics.snapshot

    def counted():
        calls.append(1)
        return real()
    gw.metrics.snapshot = counted
    seen = []
    put = tel._put_stream

    def spy(kind, write):
        r = tel.ring
        end = r.end
        put(kind, write)
        if r.end > end and r.kind(end) == kind:
            seen.append((kind, json.loads(bytes(r.payload(end))), json.loads(json.dumps(real()))))
    tel._put_stream = spy
    _run(gw, clock, tel.metrics_period + 500)
    assert tel.internal_errors == 0, tel.last_exception
    assert calls == [], "telemetry built Metrics.snapshot()"
    assert seen and seen[-1][0] == rg.K_METRICS, seen
    kind, m, want = seen[-1]
    assert sorted(m) == ["bus", "inverter", "metrics", "mqtt", "t_ms"], sorted(m)
    assert m["metrics"] == want, [(k, m["metrics"].get(k), want[k]) for k in want if m["metrics"].get(k) != want[k]]
    assert len(m["metrics"]["v_dev_mv"]) == N and m["metrics"]["n"] == N, m["metrics"]
    base = tel.base.encode()
    assert any(t == base + b"/metrics" for t, p in got)
