"""Derate controls through a REAL mosquitto: `bankgate run --sim` (the real Gateway on the
simulated bank, real time) and hostile publishers -- a paho client and a raw socket speaking
MQTT by hand -- sending random derate commands, valid and invalid, plus junk.  While a retained
`hold_joins` is in force nothing may close; the caps show up in the bank limits; every refusal
is answered with a reason.  The strong "never above the no-derate value" oracle (a twin gateway
in lock step) is tests/mp/test_derate.py; this is the same path end to end over the network."""
import json
import os
import random
import signal
import socket
import subprocess
import sys

import pytest

from mqtt_fixtures import Sub, broker_factory, wait_for  # noqa: F401

pytestmark = pytest.mark.broker
BASE = "bankgate/bankgate"
DERATE = ("chg_cap_a", "dsg_cap_a", "chg_stop_soc", "dsg_stop_soc")


def _raw_publish(port, items):
    """A second hostile publisher without any MQTT library: CONNECT, then PUBLISH packets
    (QoS 0, 1 and 2, retained or not) built here byte by byte."""
    def s(b):
        return bytes((len(b) >> 8, len(b) & 0xFF)) + b

    def rl(n):
        out = b""
        while True:
            d = n & 0x7F
            n >>= 7
            out += bytes((d | (0x80 if n else 0),))
            if not n:
                return out
    k = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + s(b"raw-hostile")
    k.sendall(b"\x10" + rl(len(body)) + body)
    assert k.recv(4)[:2] == b"\x20\x02"
    pid = 1
    for topic, payload, qos in items:
        body = s(topic.encode()) + (bytes((pid >> 8, pid)) if qos else b"") + payload
        k.sendall(bytes((0x30 | qos << 1,)) + rl(len(body)) + body)
        pid += 1
    k.sendall(b"\xe0\x00")
    k.close()


def _hostile(rnd):
    name = rnd.choice(DERATE + ("close", "limits", "reset", "clear_fault", "set", "chg_cap", ""))
    p = rnd.choice([b'{"value": %d}' % rnd.choice((0, 1, 5, 50, 100, 101, -1, 1499, 1500, 1501, 2 ** 31)),
                    b'{"value": true}', b'{"value": 2.5}', b'{"value": "5"}', b"{}", b"", b"\xff\xfe",
                    b'{"value": 5, "force": true}', b"[5]", b"5", b"{" * 300])
    return BASE + "/cmd/" + name, p


def test_hostile_publishers_through_mosquitto_cannot_close_or_raise(broker_factory, tmp_path):
    b = broker_factory()
    obs = Sub(b.port, topics=(BASE + "/bank", BASE + "/derate", BASE + "/cmd_result"), qos=0)
    pub = Sub(b.port, topics=())
    # a retained hold before the gateway even exists: it gets it on subscribing
    pub.c.publish(BASE + "/cmd/hold_joins", b'{"value": 1}', qos=1, retain=True).wait_for_publish(5)
    scen = tmp_path / "derate.json"
    # a bank that joins (main disconnect open: the first module may close onto the isolated link)
    scen.write_text(json.dumps({
        "name": "derate", "duration_s": 86400, "terminal": {"disconnect": False},
        "modules": [{"addr": 2, "soc_pct": 60}, {"addr": 3, "soc_pct": 61}, {"addr": 4, "soc_pct": 62}],
        "config": {"bank": {"expected_modules": 3, "addresses": [2, 3, 4]},
                   "contactors": {"outputs": ["k1", "k2", "k3"], "link_isolated_input": "iso"},
                   "control": {"boot_hold_ms": 4000}, "mqtt": {"control_ttl_s": 600}}}))
    exe = os.path.join(os.path.dirname(sys.executable), "bankgate")
    proc = subprocess.Popen([exe, "run", "--sim", str(scen), "--mqtt", "127.0.0.1:%d" % b.port,
                             "--seconds", "90"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        obs.wait(lambda x: any(json.loads(p).get("hold_joins") == 1 for _, p, _, _ in x.get("/derate")),
                 20, "retained hold received")
        rnd = random.Random(2026)
        sent = 0
        for _ in range(150):
            t, p = _hostile(rnd)
            pub.publish(t, p)
            sent += 1
        _raw_publish(b.port, [_hostile(rnd) + (rnd.choice((0, 1, 2)),) for _ in range(60)]
                     + [(BASE + "/cmd/chg_cap_a", b"\x00" * 2000, 1)])
        obs.wait(lambda x: len(x.get("/cmd_result")) >= 10, 20, "command replies")   # refusals: <= 10/s reported
        # hold well past the time this bank joins without it (boot hold 4 s + dwell 3 s: the
        # first close at ~7 s, every module by ~13 s)
        obs.wait(lambda x: any(json.loads(p)["t_ms"] >= 16000 for _, p, _, _ in x.get("/bank")), 40,
                 "16 s of gateway time")
        banks = [json.loads(p) for _, p, _, _ in obs.get("/bank")]
        assert banks and all(d["admitted"] == 0 for d in banks), [d["admitted"] for d in banks]
        assert all(not any(d["outputs"].values()) for d in banks)
        assert all(d["limits"]["chg_ma"] == 0 and d["limits"]["dsg_ma"] == 0 for d in banks)
        replies = [json.loads(p) for _, p, _, _ in obs.get("/cmd_result")]
        refused = [r for r in replies if not r["ok"]]
        assert refused and all(r["reason"] for r in refused)
        # (refusals are reported at most 10 per second: one more, seconds after the flood)
        pub.publish(BASE + "/cmd/chg_stop_soc", b'{"value": 101}')
        obs.wait(lambda x: any(json.loads(p) == {"cmd": "chg_stop_soc", "ok": False, "reason": "out of range",
                                                 "rejected": json.loads(p)["rejected"]}
                               for _, p, _, _ in x.get("/cmd_result")), 10, "the out-of-range reply")
        # now caps, then the hold released (retained message cleared too): the bank joins,
        # and its limits are the caps
        pub.publish(BASE + "/cmd/chg_cap_a", b'{"value": 3}')
        pub.publish(BASE + "/cmd/dsg_cap_a", b'{"value": 4}')
        pub.publish(BASE + "/cmd/chg_stop_soc", b'{"value": 100}')
        pub.publish(BASE + "/cmd/dsg_stop_soc", b'{"value": 0}')
        pub.c.publish(BASE + "/cmd/hold_joins", b"", qos=1, retain=True).wait_for_publish(5)
        pub.publish(BASE + "/cmd/hold_joins", b'{"value": 0}')
        try:
            obs.wait(lambda x: any(json.loads(p)["admitted"] >= 1 for _, p, _, _ in x.get("/bank")), 40,
                     "the bank joins once the hold is off")
        except AssertionError:
            last = json.loads(obs.get("/bank")[-1][1])
            raise AssertionError((last["state"], last["reason"], last["value"], last["admitted"],
                                  obs.get("/derate")[-1][1], proc.poll()))
        n0 = len(obs.get("/bank"))
        obs.wait(lambda x: len(x.get("/bank")) >= n0 + 2, 20, "bank messages")
        joined = [json.loads(p) for _, p, _, _ in obs.get("/bank")[n0:]]
        full = [d["limits"] for d in joined if d["admitted"] >= 1]
        assert full and all(x["chg_ma"] <= 3000 and x["dsg_ma"] <= 4000 for x in full), full
        assert any(x["chg_ma"] > 0 or x["dsg_ma"] > 0 for x in full), full
        state = json.loads(obs.get("/derate")[-1][1])
        assert state["chg_cap_a"] == 3 and state["dsg_cap_a"] == 4 and state["hold_joins"] == 0
        assert state["chg_stop_soc"] == 100 and state["dsg_stop_soc"] == 0 and 0 < state["expires_s"] <= 600
        # retained: a subscriber that comes later gets the state at once
        late = Sub(b.port, topics=(BASE + "/derate",), qos=0)
        late.wait(lambda x: x.get("/derate"), 10, "the retained derate state")
        m = late.get("/derate")[0]
        late.close()
        assert m[3] and json.loads(m[1])["chg_cap_a"] == 3
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)       # the CLI and its micropython child
        out, err = proc.communicate(timeout=60)
        obs.close()
        pub.close()
    assert "Traceback" not in err, err[-2000:]
