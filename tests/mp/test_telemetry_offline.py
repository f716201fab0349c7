# Telemetry without a reachable network: store-and-forward, commands, isolation bound.
# mpy-heapsize: 256k
import time

from bankgate import config
from bankgate.events import EV_CHECK_FAIL, EV_COMMAND, EventLog
from bankgate.net import Net
from bankgate.telemetry import Telemetry


class _Link:
    up = False

    def isconnected(self):
        return self.up

    def service(self, now):
        pass


class _Poller:
    rescans = 0

    def rescan(self):
        self.rescans += 1


class _Diag:
    def __init__(self):
        self.acks = []

    def acknowledge(self, code, addr):
        if code == "imbalance":
            self.acks.append((code, addr))
            return True
        return False


class _Gw:
    def __init__(self, cfg):
        self.cfg = cfg
        self.events = EventLog(64)
        self.poller = _Poller()
        self.diagnoser = _Diag()

    def snapshot(self):
        return {"t_ms": 0, "state": "running", "mv": 52000, "ma": 0, "soc_pm": 500,
                "limits": {"chg_ma": 1, "dsg_ma": 1, "chg_v_mv": 1, "dsg_v_mv": 1},
                "outputs": {"k1": 1}, "faults": [],
                "modules": [{"slot": 0, "addr": 2, "mv": 52000}], "metrics": {}, "diagnoses": []}


def _make(**mqtt):
    m = {"enabled": True, "bank_period_ms": 200}
    m.update(mqtt)
    cfg = config.validate({"mqtt": m})
    gw = _Gw(cfg)
    link = _Link()
    return Telemetry(Net(link), cfg, gw), gw, link


def test_offline_events_are_kept_in_order_and_telemetry_dropped_first():
    tel, gw, link = _make(ring_bytes=2048)
    for i in range(400):                       # 40 s of 100 ms steps, link down throughout
        now = i * 100
        if i % 10 == 0:
            gw.events.emit(now, EV_CHECK_FAIL, 2, 7, i)
        tel.service(now, 5)
    r = tel.ring
    assert not tel.online and tel.client.last_error == 10, (tel.client.last_error, tel.internal_errors, tel.last_exception)
    assert r.dropped_telemetry > 0, r.dropped_telemetry
    assert r.dropped_events == 0 and tel.events_lost == 0, (r.dropped_events, tel.events_lost)
    seqs = []
    off = r.head
    while off < r.end:
        if r.kind(off) == 1:
            seqs.append(r.event(off)[0])
        off += r.rec_len(off)
    assert seqs == list(range(1, gw.events.seq + 1))             # every event, in order
    assert tel.dropped == r.dropped_telemetry
    assert tel.client.attempts == 0      # link down: not even a socket was made, so nothing could wait


def test_commands_reject_garbage_and_change_nothing():
    tel, gw, link = _make()
    base = b"bankgate/bankgate/cmd/"
    bad = [(b"close", b"{}"), (b"ack", b"{"), (b"ack", b'{"code":"zz","addr":1}'), (b"rescan", b"1"),
           (b"limits", b'{"chg_ma": 999999}'), (b"reset", b"")]
    for name, payload in bad:
        tel._on_message(memoryview(base + name), memoryview(payload))
    assert tel.rejected_commands == len(bad) and tel.accepted_commands == 0
    assert gw.poller.rescans == 0 and gw.diagnoser.acks == []
    rej = [0]
    rec = [0] * 5
    for s in range(1, gw.events.seq + 1):
        if gw.events.get(s, rec) and rec[1] == EV_COMMAND:
            assert rec[4] == 0
            rej[0] += 1
    assert rej[0] == len(bad)
    tel._on_message(memoryview(base + b"rescan"), memoryview(b""))
    tel._on_message(memoryview(base + b"ack"), memoryview(b'{"code":"imbalance","addr":3}'))
    assert gw.poller.rescans == 1 and gw.diagnoser.acks == [("imbalance", 3)]
    assert tel.accepted_commands == 2


def test_rejection_reports_are_rate_limited_but_all_counted():
    tel, gw, link = _make()
    seq0 = gw.events.seq
    for i in range(100):
        tel._on_message(memoryview(b"bankgate/bankgate/cmd/x"), memoryview(b""))
    assert tel.rejected_commands == 100
    assert gw.events.seq - seq0 <= 10          # a flood cannot push real events out of the log


def test_an_exception_inside_telemetry_never_escapes():
    tel, gw, link = _make()
    link.up = True

    def boom():
        raise ValueError("bug")
    gw.snapshot = boom
    tel.service(0, 5)
    assert tel.internal_errors == 1
