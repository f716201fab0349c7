# The fault matrix probes (docs/faults.md is generated from them by
# tools/bankgate_host/faults.py; tests/host/test_fault_matrix.py runs them).
#
#   micropython faultprobe.py [id ...]    -> one line per probe: "\x1ePROBE {json row}"
#
# One short, deterministic probe per fault the product knows: the real firmware
# (bankgate.app.Gateway) on the simulated bank (bgsim), or the real component for the
# rows that are not physical (configuration, MQTT commands).  A row:
#   {"id", "fault", "injected", "expected", "measured", "time", "ok"}
# `expected` is the documented reaction (fixed text), `measured` what the probe saw,
# `time` the reaction time in SIMULATED time (or "-"), `ok` whether the measured
# reaction is the expected one.  Every number in a row is simulated, so the table is
# the same on every run.
#
# Set-up of the physical probes (unless a probe says otherwise): 3 modules, Pylontech
# RS485 at 9600 baud, branch topology with feedback contacts, the main disconnect open
# (the "link isolated" input tells the firmware the DC link is isolated), no load.
import json
import random
import sys

from bankgate import config as bgconfig
from bankgate.events import EVENT_NAMES
from bgsim import runner
from bgsim import scenario as sc
from bgsim.bms import alarm_bits

S = 1000000     # us per s


def _noop(line):
    pass


class ProbeSim(runner.Simulation):
    """The scenario runner keeping every event with its time (short runs only)."""

    def __init__(self, scen, net=None):
        self.evlog = []
        self._evn = 0
        runner.Simulation.__init__(self, scen, _noop, net=net)

    def _drain_events(self):
        gw = self.gw
        if gw is None:
            return
        ev = gw.events
        buf = self._evbuf
        start = max(self._evn + 1, ev.oldest())
        for seq in range(start, ev.seq + 1):
            if ev.get(seq, buf):
                self.evlog.append((buf[0], EVENT_NAMES.get(buf[1], "?"), buf[2], buf[3], buf[4]))
        self._evn = ev.seq

    def report(self):
        pass

    # -- helpers
    def at(self, t_s, fn, *args):
        self.clock.at_us(int(t_s * S), fn, *args)

    def do(self, t_s, **action):
        action["at"] = t_s
        self.clock.at_us(int(t_s * S), self._action, action)

    def opened_after(self, out, t_us):
        """Time (us) output `out` was released at or after t_us, or None."""
        for t, v in self.hw.outputs[out].history:
            if v == 0 and t >= t_us:
                return t
        return None

    def value_at(self, out, t_us):
        """Level of output `out` at t_us, from its change history."""
        v = 0
        for t, x in self.hw.outputs[out].history:
            if t > t_us:
                break
            v = x
        return v

    def end_us(self):
        """Just before the end of the run (Gateway.run releases every output on exit)."""
        return int(self.s["duration_s"] * S) - 1000

    def closed_ever(self, out, after_us=0):
        return any(v == 1 and t >= after_us for t, v in self.hw.outputs[out].history)

    def event_after(self, name, t_us, addr=None, pred=None):
        self._drain_events()
        for t, n, a, x, y in self.evlog:
            if n == name and t * 1000 >= t_us and (addr is None or a == addr) and (pred is None or pred(x, y)):
                return t * 1000, a, x, y
        return None

    def mod(self, i):
        snap = self.gw.snapshot()
        addr = self.bmses[i].addr
        for m in snap["modules"]:
            if m["addr"] == addr:
                return m
        return {}


def scenario(n=3, baud=9600, dur=40, modules=None, config=None, **top):
    addrs = list(range(2, 2 + n))
    cfg = {
        "bank": {"expected_modules": n, "addresses": addrs, "baud": baud, "scan_to": 1 + n},
        "gating": {"max_age_ms": 5000},
        "contactors": {"outputs": ["k%d" % i for i in range(n)], "feedback": ["f%d" % i for i in range(n)],
                       "link_isolated_input": "iso"},
    }
    for sec, d in (config or {}).items():
        if isinstance(d, dict):
            cfg.setdefault(sec, {}).update(d)
        else:
            cfg[sec] = d
    s = {"name": "probe", "duration_s": dur, "report_s": 3600, "check_ms": 200,
         "modules": modules or [{"soc_pct": 60} for _ in range(n)],
         "terminal": {"disconnect": False}, "bus": {"baud": baud}, "config": cfg}
    s.update(top)
    return s


def sim_of(s, net=None):
    random.seed(1)
    return ProbeSim(sc.validate(s), net)


def _s(us):
    return "%.2f s" % (us / S)


def row(fid, fault, injected, expected, measured, time, ok):
    return {"id": fid, "fault": fault, "injected": injected, "expected": expected,
            "measured": measured, "time": time, "ok": bool(ok)}


T_FAULT = 20.0      # every module is admitted well before this (boot hold, scan, identity, dwell)


def _closed_all(sim, n=3, t_us=None):
    """Every listed output closed at t_us (default: the end of the run) and not opened
    since T_FAULT."""
    t1 = sim.end_us() if t_us is None else t_us
    for i in range(n):
        o = "k%d" % i
        if not sim.value_at(o, t1):
            return False
        op = sim.opened_after(o, int(T_FAULT * S))
        if op is not None and op <= t1:
            return False
    return True


def _stays(sim, outs):
    t1 = sim.end_us()
    for o in outs:
        if not sim.value_at(o, t1):
            return False
        op = sim.opened_after(o, int(T_FAULT * S))
        if op is not None and op <= t1:
            return False
    return True


def _all_open(sim):
    t1 = sim.end_us()
    return not any(sim.value_at(o, t1) for o in sim.hw.outputs)


# ------------------------------------------------------------------ physical faults
def p_lost_module():
    sim = sim_of(scenario(dur=40))
    sim.do(T_FAULT, do="unplug", module=1)
    sim.run()
    t = sim.opened_after("k1", int(T_FAULT * S))
    others = _stays(sim, ("k0", "k2"))
    m = sim.mod(1)
    ok = t is not None and others and m.get("reason") in ("stale", "absent")
    return row("lost_module", "Lost module (BMS stops answering)", "module 1 unplugged at 20 s",
               "its branch opens once its data is older than max_age_ms (5 s); the others stay closed",
               "k1 opened, reason %s; k0/k2 %s" % (m.get("reason"), "closed" if others else "OPENED"),
               _s(t - int(T_FAULT * S)) if t else "never", ok and t - T_FAULT * S <= 6.5 * S)


def p_duplicate_address():
    sim = sim_of(scenario(dur=45))
    sim.do(T_FAULT, do="address", module=2, value=3)      # modules 1 and 2 both at address 3
    sim.run()
    t0 = int(T_FAULT * S)
    t1 = sim.opened_after("k1", t0)
    t2 = sim.opened_after("k2", t0)
    tb = sim.opened_after("k0", t0)
    ev = sim.event_after("bus", t0, pred=lambda a, b: a == 3)
    m1 = sim.mod(1)
    ok = t1 is not None and t2 is not None and ev is not None and tb is not None and tb <= sim.end_us()
    return row("duplicate_address", "Duplicate address", "module 2 re-addressed to 3 (= module 1) at 20 s",
               "replies at the shared address collide (modules 1 and 2 lose their data); bus verdict "
               "duplicate_address makes the bus untrusted (docs/bus_health.md): the whole bank opens",
               "k1, k2 opened (reason %s), verdict %s, k0 opened %s" % (
                   m1.get("reason"), "duplicate_address" if ev else "MISSING",
                   _s(tb - t0) if tb is not None and tb <= sim.end_us() else "never"),
               _s(max(t1, t2, tb) - t0) + " (whole bank open)" if ok else "-", ok)


def p_missing_terminator():
    sim = sim_of(scenario(dur=60, baud=115200, bus={"baud": 115200, "cable_m": 200}))
    sim.do(T_FAULT, do="set", bus="terminators", value=0)
    sim.run()
    ev = sim.event_after("bus", int(T_FAULT * S), pred=lambda a, b: a == 1)
    ok = ev is not None
    return row("missing_terminator", "Missing terminator", "both 120 ohm terminators removed at 20 s "
               "(200 m cable, 115200 baud)",
               "bus verdict termination_suspect (event, telemetry); modules with fresh data stay in",
               "verdict termination_suspect" if ok else "no termination verdict",
               _s(ev[0] - int(T_FAULT * S)) if ev else "-", ok)


def p_noise():
    sim = sim_of(scenario(dur=60))
    sim.do(T_FAULT, do="set", bus="noise", value=0.02)
    sim.run()
    t0 = int(T_FAULT * S)
    ev = sim.event_after("bus", t0, pred=lambda a, b: a == 2)
    opened = [o for o in ("k0", "k1", "k2") if sim.opened_after(o, t0) is not None
              and sim.opened_after(o, t0) <= sim.end_us()]
    reasons = sorted(set([sim.mod(i).get("reason") for i in range(3)]))
    ok = ev is not None
    return row("noise", "Noise on the module bus", "2 % of bytes corrupted from 20 s",
               "corrupt frames rejected and counted; bus verdict wiring_noise blocks new joins; a closed "
               "module stays while its data is fresh (opens when it goes stale)",
               "verdict wiring_noise; outputs opened: %s; reasons now: %s" % (
                   ", ".join(opened) or "none", ", ".join([str(x) for x in reasons])),
               _s(ev[0] - t0) + " (verdict)" if ev else "-", ok)


def p_voltage_difference():
    mods = [{"soc_pct": 60}, {"soc_pct": 60}, {"soc_pct": 98}]
    sim = sim_of(scenario(dur=40, modules=mods, config={"gating": {"soc_spread_pm": 1000}}))
    sim.run()
    m = sim.mod(2)
    ok = not sim.closed_ever("k2") and m.get("reason") == "dv" and _closed_all(sim, 2)
    return row("voltage_difference", "Voltage difference at join", "module 2 at 98 % SOC, the others at "
               "60 % (SOC-spread rule widened so only the voltage rule can stop it)",
               "module 2 stays pending (reason dv) and never closes; the matched modules join",
               "k2 never closed, state %s reason %s dV %s mV" % (m.get("state"), m.get("reason"), m.get("dv_mv")),
               "-", ok)


def p_soc_spread():
    mods = [{"soc_pct": 50}, {"soc_pct": 50}, {"soc_pct": 70}]
    sim = sim_of(scenario(dur=40, modules=mods, config={"gating": {"max_dv_mv": 2000, "hysteresis_mv": 100}}))
    sim.run()
    m = sim.mod(2)
    ok = not sim.closed_ever("k2") and m.get("reason") == "soc_spread"
    return row("soc_spread", "SOC spread", "module 2 at 70 % SOC, the others at 50 % (dV gate widened to "
               "2 V so only the SOC rule can stop it)",
               "module 2 blocked (reason soc_spread, spread > 150 permille)",
               "k2 never closed, reason %s value %s" % (m.get("reason"), m.get("value")), "-", ok)


def p_critical_alarm():
    sim = sim_of(scenario(dur=35))
    crit = sim.cfg["gating"]["critical_alarms"]
    vis = {"t": None}
    r = sim.wire.responders[1]
    f, ta, cu = r[0], r[1], sim.wire.char_us

    def w(q):
        o = f(q)
        b = sim.bmses[1]
        if o and vis["t"] is None and q[7] == 0x34 and q[8] == 0x34 and (b.alarms | b.protections) & crit:
            vis["t"] = sim.clock.now_us + ta + len(o) * cu
        return o
    r[0] = w
    sim.do(T_FAULT, do="alarm", module=1, alarms=["cell_ov"], protect=True)
    sim.run()
    t = sim.opened_after("k1", int(T_FAULT * S))
    ok = t is not None and vis["t"] is not None and t - vis["t"] <= 50000
    return row("critical_alarm", "Critical BMS alarm / protection", "cell over-voltage protection on module 1 "
               "at 20 s", "its branch opens at once (no ramp-down), in the loop iteration that decodes the "
               "alarm reply; others stay closed",
               "k1 opened %s after the alarm reply ended (%s after the BMS raised it)" % (
                   _s(t - vis["t"]) if ok else "?", _s(t - int(T_FAULT * S)) if t else "?"),
               _s(t - vis["t"]) if ok else "-", ok and _stays(sim, ("k0", "k2")))


def p_stale_data():
    sim = sim_of(scenario(dur=40))
    r = sim.wire.responders[0]
    f = r[0]
    st = {"on": False}

    def w(q):
        if st["on"] and q[7] == 0x34 and q[8] == 0x34:
            return None                     # the alarm status (0x44) stops coming
        return f(q)
    r[0] = w
    sim.at(T_FAULT, st.__setitem__, "on", True)
    sim.run()
    t = sim.opened_after("k0", int(T_FAULT * S))
    m = sim.mod(0)
    ok = t is not None and m.get("reason") == "stale"
    return row("stale_data", "Stale data", "module 0 keeps answering 0x42/0x92 but its alarm status (0x44) "
               "stops at 20 s", "branch opens once the alarm data is older than max_age_ms (5 s), reason stale",
               "k0 opened, reason %s" % m.get("reason"), _s(t - int(T_FAULT * S)) if t else "never",
               ok and t - T_FAULT * S <= 6.5 * S)


def p_welded():
    sim = sim_of(scenario(dur=40))
    sim.do(T_FAULT - 1, do="weld", output="k1")
    sim.do(T_FAULT, do="alarm", module=1, alarms=["cell_ov"], protect=True)   # forces k1 to open
    sim.run()
    t_cmd = sim.opened_after("k1", int(T_FAULT * S))
    ev = sim.event_after("fault_latched", int(T_FAULT * S))
    allopen = _all_open(sim)
    snap = sim.gw.snapshot()
    ok = t_cmd is not None and ev is not None and allopen and snap["state"] == "fault"
    return row("welded_contactor", "Welded contactor", "k1 welded, then opened by an alarm at 20 s",
               "feedback still closed after feedback_ms: fault welded latched, every output opens, bank "
               "state fault until a local reset",
               "fault latched (code %s), bank %s, all outputs %s" % (
                   ev[2] if ev else "-", snap["state"], "open" if allopen else "NOT open"),
               _s(ev[0] - t_cmd) + " after the open command" if ok else "-", ok)


def p_failed_to_close():
    sim = sim_of(scenario(dur=30))
    sim.do(0.5, do="stick", output="k1")
    sim.run()
    t_close = None
    for t, v in sim.hw.outputs["k1"].history:
        if v == 1:
            t_close = t
            break
    ev = sim.event_after("fault_latched", 0)
    snap = sim.gw.snapshot()
    allopen = _all_open(sim)
    ok = t_close is not None and ev is not None and allopen and snap["state"] == "fault"
    return row("failed_to_close", "Contactor fails to close", "k1 stuck open (coil energised, contacts "
               "do not move)", "feedback still open after feedback_ms (200 ms): fault failed_to_close "
               "latched, every output opens",
               "fault latched (code %s), bank %s" % (ev[2] if ev else "-", snap["state"]),
               _s(ev[0] - t_close) + " after the close command" if ok else "-", ok)


def p_precharge_timeout():
    s = scenario(dur=40, config={"gating": {"topology": "main"},
                                 "contactors": {"outputs": ["main", "pre"], "feedback": [],
                                                "link_isolated_input": ""}})
    s["terminal"] = {"precharge_ohm": 100000.0, "link_sensor": "link"}
    sim = sim_of(s)
    sim.run()
    t_pre = None
    for t, v in sim.hw.outputs["pre"].history:
        if v == 1:
            t_pre = t
            break
    ev = sim.event_after("fault_latched", 0)
    ok = t_pre is not None and ev is not None and not sim.closed_ever("main") and \
        not sim.value_at("pre", sim.end_us())
    return row("precharge_timeout", "Precharge timeout", "main topology, precharge resistor 100 kohm "
               "(DC link cannot charge in time)", "precharge released and fault precharge_timeout latched "
               "after precharge_timeout_ms (5 s); the main contactor never closes",
               "fault latched (code %s), main %s" % (ev[2] if ev else "-",
                                                      "never closed" if not sim.closed_ever("main") else "CLOSED"),
               _s(ev[0] - t_pre) + " after precharge start" if ok else "-", ok)


def _loaded(dur, amps=-90.0):
    s = scenario(dur=dur, inverter={"heartbeat": True, "profile": [[0, 0], [12, amps]]},
                 timeline=[{"at": 10, "do": "disconnect", "value": True}])
    return s


def p_fuse_trip():
    sim = sim_of(_loaded(60))
    sim.do(T_FAULT + 5, do="blow_fuse", module=1)
    sim.run()
    ev = sim.event_after("diagnosis", int((T_FAULT + 5) * S), pred=lambda a, b: a == 10)
    ok = ev is not None
    return row("fuse_trip", "Branch fuse trip", "module 1's branch fuse blown at 25 s under a 90 A discharge",
               "diagnosis branch_fuse_trip for that module (after hold_raise_ms, 10 s)",
               "diagnosis branch_fuse_trip raised" if ok else "no branch_fuse_trip diagnosis",
               _s(ev[0] - int((T_FAULT + 5) * S)) if ok else "-", ok)


def p_loose_lug():
    sim = sim_of(_loaded(170, -90.0))
    sim.do(T_FAULT + 5, do="loosen_lug", module=1, mohm=40)
    sim.run()
    t0 = int((T_FAULT + 5) * S)
    evs = []
    for code, name in ((1, "current_high"), (2, "soc_falling_fast"), (3, "running_warm"),
                       (4, "resistance_rising"), (15, "voltage_fluctuation")):
        e = sim.event_after("diagnosis", t0, pred=lambda a, b, c=code: a == c)
        if e is not None:
            evs.append((e[0], "%s (address %d)" % (name, e[1])))
    evs.sort()
    addr = sim.bmses[1].addr
    ok = len(evs) > 0 and ("address %d)" % addr) in evs[0][1]
    return row("loose_lug", "Loose lug (high-resistance joint)", "module 1's lug at 40 mohm from 25 s, "
               "90 A discharge (no DC-link sensor)",
               "a diagnosis naming that module once its terminal heats up: resistance_rising (hot "
               "terminal suspected) or running_warm",
               "diagnoses: %s" % (", ".join(n for _, n in evs) if evs else "none"),
               _s(evs[0][0] - t0) if ok else "-", ok)


def p_heartbeat():
    s = scenario(dur=45, config={"inverter": {"require_heartbeat": True}},
                 inverter={"heartbeat": True})
    sim = sim_of(s)
    sim.do(T_FAULT, do="heartbeat", value=False)
    sim.run()
    ev = sim.event_after("inverter", int(T_FAULT * S), pred=lambda a, b: a == 0)
    t = sim.opened_after("k0", int(T_FAULT * S))
    m = sim.mod(0)
    ok = ev is not None and t is not None
    return row("inverter_heartbeat_loss", "Inverter heartbeat loss", "0x305 stops at 20 s "
               "(inverter.require_heartbeat on)", "event inverter lost heartbeat_timeout_ms (3 s) after the last 0x305; "
               "with require_heartbeat the bank opens after ramp-down (reason inverter)",
               "event after %s, outputs opened after %s, reason %s" % (
                   _s(ev[0] - int(T_FAULT * S)) if ev else "-", _s(t - int(T_FAULT * S)) if t else "never",
                   m.get("reason")), _s(t - int(T_FAULT * S)) if ok else "-", ok)


# ------------------------------------------------------------------ network faults
def _mqtt_sim(dur):
    from fakemqtt import FakeBroker, FakeLink, fake_net
    broker = FakeBroker()
    link = FakeLink()
    net = fake_net(broker, link)
    s = scenario(dur=dur, config={"mqtt": {"enabled": True}})
    sim = sim_of(s, net)
    return sim, broker, link


def _mqtt_events(sim, t_us):
    """(t_us, connected?, reason) of the mqtt events after t_us."""
    sim._drain_events()
    return [(t * 1000, a, y) for t, n, addr, a, y in sim.evlog if n == "mqtt" and t * 1000 >= t_us]


def _control_ok(sim):
    """The bank stayed closed through the network fault, every control step on time."""
    return _closed_all(sim) and sim.hw.wdt.feeds > 0 and not sim.hw.wdt.expired() and \
        sim.gw.loop_max_us < 1000 * sim.cfg["control"]["period_ms"]


def _reason(code):
    from bankgate.telemetry.transport import REASON_NAMES
    return REASON_NAMES[code] if 0 <= code < len(REASON_NAMES) else str(code)


def p_broker_down():
    sim, broker, link = _mqtt_sim(90)
    sim.at(T_FAULT, broker.set_broker, False)
    sim.at(T_FAULT + 30, broker.set_broker, True)
    sim.run()
    evs = _mqtt_events(sim, int(T_FAULT * S))
    down = [e for e in evs if e[1] == 0]
    up = [e for e in evs if e[1] == 1 and e[0] >= (T_FAULT + 30) * S]
    tel = sim.gw.telemetry
    lost = tel.ring.dropped_events + tel.events_lost
    ok = down and up and _control_ok(sim) and lost == 0
    return row("broker_down", "MQTT broker down", "broker stopped at 20 s, back at 50 s",
               "disconnect noticed, events and telemetry kept in the store-and-forward ring (oldest "
               "telemetry dropped first when full), reconnect with backoff; control unaffected; no "
               "event lost",
               "disconnect (%s) after %s, reconnected %s after the broker returned; events lost %d; "
               "bank closed throughout: %s" % (
                   _reason(down[0][2]) if down else "-", _s(down[0][0] - int(T_FAULT * S)) if down else "-",
                   _s(up[0][0] - int((T_FAULT + 30) * S)) if up else "never", lost,
                   "yes" if _control_ok(sim) else "NO"),
               _s(down[0][0] - int(T_FAULT * S)) if down else "-", ok)


def p_broker_stalled():
    sim, broker, link = _mqtt_sim(120)
    sim.at(T_FAULT, setattr, broker, "stalled", True)
    sim.at(T_FAULT + 70, setattr, broker, "stalled", False)
    sim.run()
    evs = _mqtt_events(sim, int(T_FAULT * S))
    down = [e for e in evs if e[1] == 0]
    ok = down and down[0][2] in (8, 9) and _control_ok(sim)
    return row("broker_stalled", "MQTT broker stalled", "broker stops reading and answering at 20 s "
               "(for 70 s)", "connection declared dead (no PINGRESP / silence / stalled writes, bounded by "
               "the keepalive, 30 s), reconnect; the control loop never waits",
               "disconnect (%s) after %s; bank closed throughout: %s" % (
                   _reason(down[0][2]) if down else "-", _s(down[0][0] - int(T_FAULT * S)) if down else "never",
                   "yes" if _control_ok(sim) else "NO"),
               _s(down[0][0] - int(T_FAULT * S)) if down else "-", ok)


def p_wifi_down():
    sim, broker, link = _mqtt_sim(70)
    sim.at(T_FAULT, setattr, link, "connected", False)
    sim.at(T_FAULT + 20, setattr, link, "connected", True)
    sim.run()
    evs = _mqtt_events(sim, int(T_FAULT * S))
    down = [e for e in evs if e[1] == 0]
    up = [e for e in evs if e[1] == 1]
    ok = down and down[0][2] == 10 and up and _control_ok(sim)
    return row("wifi_down", "Wi-Fi down", "link lost at 20 s, back at 40 s",
               "disconnect (reason link) at once, telemetry buffered, reconnect when the link returns; "
               "control unaffected",
               "disconnect (%s) after %s, reconnected %s after the link returned; bank closed "
               "throughout: %s" % (
                   _reason(down[0][2]) if down else "-", _s(down[0][0] - int(T_FAULT * S)) if down else "-",
                   _s(up[0][0] - int((T_FAULT + 20) * S)) if up else "never",
                   "yes" if _control_ok(sim) else "NO"),
               _s(down[0][0] - int(T_FAULT * S)) if down else "-", ok)


def p_hostile_commands():
    sim, broker, link = _mqtt_sim(40)
    tel_topic = "%s/%s/cmd/" % (sim.cfg["mqtt"]["prefix"], sim.cfg["gateway_id"])
    bad = [("reset_faults", "{}"), ("open", "{}"), ("close", '{"output":"k1"}'), ("rescan", "x" * 300),
           ("ack", "{not json"), ("ack", '{"code":"nope","addr":99}'), ("ack", "[1,2,3]"),
           ("../../x", "{}"), ("rescan", b"\xff\xfe")]
    before = {}

    def fire():
        before["outputs"] = sim.gw.outputs()
        before["state"] = sim.gw.admission.snapshot()["state"]
        for name, payload in bad:
            broker.inject(tel_topic + name, payload)
    after = {}

    def check():
        after["outputs"] = sim.gw.outputs()
        after["state"] = sim.gw.admission.snapshot()["state"]
    sim.at(T_FAULT, fire)
    sim.at(T_FAULT + 10, check)
    sim.run()
    tel = sim.gw.telemetry
    rejected = tel.rejected_commands
    same = after["outputs"] == before["outputs"] and after["state"] == before["state"]
    ok = rejected == len(bad) and tel.accepted_commands == 0 and same
    return row("hostile_mqtt_commands", "Hostile MQTT commands", "%d commands at 20 s: unknown names "
               "(reset_faults, open, close, path tricks), oversize, non-UTF-8, bad JSON, wrong shape, "
               "unknown target" % len(bad),
               "every one rejected with a reason (reply + event), counted; no state change (fault reset "
               "is local only)",
               "%d/%d rejected, %d accepted, outputs and bank state unchanged: %s" % (
                   rejected, len(bad), tel.accepted_commands, "yes" if same else "NO"), "-", ok)


# ------------------------------------------------------------------ software faults
def p_invalid_config():
    bads = [
        ({"bank": {"expected_modules": 3, "addresses": [2, 3]}}, "bank.addresses"),
        ({"bank": {"baud": 12345}}, "bank.baud"),
        ({"gating": {"max_dv_mv": 5}}, "gating.max_dv_mv"),
        ({"contactors": {"outputs": ["k1", "k1", "k2"]}}, "contactors.outputs[1]"),
        ({"gating": {"hysteresis_mv": 900}}, "gating.hysteresis_mv"),
        ({"bogus": 1}, "bogus"),
        ({"control": {"watchdog_ms": 500, "period_ms": 400}}, "control.watchdog_ms"),
    ]
    named = 0
    for given, path in bads:
        try:
            bgconfig.validate(given)
        except bgconfig.ConfigError as e:
            if e.path == path:
                named += 1
    # the device entry: an invalid file keeps every output released (the Gateway is
    # never built); checked on fake hardware with outputs energised beforehand
    from fakehw import FakeHardware
    hw = FakeHardware(outputs=["k0", "k1"])
    for p in hw.outputs.values():
        p.value(1)
    released = _device_rejects(hw)
    ok = named == len(bads) and released
    return row("invalid_configuration", "Invalid configuration", "%d invalid configurations (missing/"
               "duplicate/out-of-range values, unknown key, contradicting settings); an invalid "
               "config.json at boot" % len(bads),
               "rejected with the field path, nothing built; at boot every output stays released",
               "%d/%d rejected naming the field; boot with the invalid file: error names the field, "
               "outputs %s" % (
                   named, len(bads), "released" if released else "NOT released"), "-", ok)


def _repo():
    """The repository (boards/ lives there): $BANKGATE_REPO, set by the generator, else
    derived from this module's place in build/host-mpy/rigs/."""
    import os
    r = os.getenv("BANKGATE_REPO")
    if r:
        return r
    parts = __file__.split("/")
    return "/".join(parts[:-4]) or "."


def _device_rejects(hw):
    """The device start-up path (bankgate.firmware) with an invalid config.json: load()
    must return an error naming the field, and hold() must keep every output released
    (it runs forever on the device; stopped here after its first pass)."""
    import os
    from bankgate import firmware
    REPO = _repo()
    path = "/tmp/bankgate-probe-config.json"
    with open(path, "w") as f:
        f.write('{"board": "sim", "bank": {"expected_modules": 3, "addresses": [2]}, '
                '"contactors": {"outputs": ["k1", "k2", "k3"]}}')
    try:
        board, cfg, values, error = firmware.load(REPO + "/boards/sim.json", path, None)
    finally:
        os.remove(path)
    passes = [0]

    def once():
        passes[0] += 1
        return passes[0] > 1
    firmware.hold(hw, None, error or "?", stop=once)
    return cfg is None and error is not None and "bank.addresses" in error and \
        not any(p.value() for p in hw.outputs.values())


def p_malformed_frames():
    sim = sim_of(scenario(dur=40))
    r = sim.wire.responders[2]
    f = r[0]
    st = {"on": False, "n": 0}

    def w(q):
        o = f(q)
        if o and st["on"]:
            o = bytearray(o)
            o[len(o) - 3] = 0x30 if o[len(o) - 3] != 0x30 else 0x31    # checksum digit wrong
            st["n"] += 1
            return bytes(o)
        return o
    r[0] = w
    mv = {}

    def snap():
        m = sim.gw.bank.modules[2]
        mv["v"] = m.voltage_mv
        mv["soc"] = m.soc_pm
        mv["ck"] = m.st_checksum
        st["on"] = True
    sim.at(T_FAULT, snap)
    sim.run()
    m = sim.gw.bank.modules[2]
    t = sim.opened_after("k2", int(T_FAULT * S))
    unchanged = m.voltage_mv == mv["v"] and m.soc_pm == mv["soc"]
    counted = m.st_checksum - mv["ck"]
    ok = unchanged and counted >= st["n"] - 1 and t is not None
    return row("malformed_frames", "Malformed frames", "every reply of module 2 with a wrong checksum "
               "from 20 s", "each frame rejected and counted (checksum), the module record unchanged; "
               "its branch opens (stale; a third of all replies corrupt also makes the bus untrusted, "
               "> 250 permille: the bank opens)",
               "%d frames rejected, record unchanged: %s; k2 opened" % (counted, "yes" if unchanged else "NO"),
               _s(t - int(T_FAULT * S)) if t else "never", ok)


def p_loop_hang():
    sim = sim_of(scenario(dur=30))
    gw = sim.gw
    st = {"t": None, "expired": None}
    real = gw.diagnoser.step

    def hang(*a):
        if st["t"] is None and sim.clock.now_us >= T_FAULT * S:
            st["t"] = sim.clock.now_us
            wdt = sim.hw.wdt
            # the loop is stuck: time passes, nothing feeds the watchdog
            while not wdt.expired():
                sim.clock.advance_us(10000)
            st["expired"] = sim.clock.now_us
            sim.hw.reset()                 # what the hardware watchdog does: reset, coils released
        return real(*a)
    gw.diagnoser.step = hang
    sim.run(T_FAULT + 1)
    released = sim.hw.resets == 1 and sim.opened_after("k0", int(T_FAULT * S)) is not None
    ok = st["expired"] is not None and released
    return row("control_loop_hang", "Control-loop hang", "a component stops returning at 20 s",
               "the watchdog (fed only after a completed control step) expires after watchdog_ms (2 s): "
               "chip reset, every coil released",
               "watchdog expired %s after the hang; outputs released by the reset: %s" % (
                   _s(st["expired"] - st["t"]) if ok else "-", "yes" if released else "NO"),
               _s(st["expired"] - st["t"]) if ok else "-", ok)


def p_loop_exception():
    sim = sim_of(scenario(dur=30))
    gw = sim.gw
    st = {"t": None}
    real = gw.metrics.update

    def boom(*a):
        if st["t"] is None and sim.clock.now_us >= T_FAULT * S:
            st["t"] = sim.clock.now_us
            raise ValueError("probe: a bug")
        return real(*a)
    gw.metrics.update = boom
    raised = False
    try:
        sim.run()
    except ValueError:
        raised = True
    t = sim.opened_after("k0", int(T_FAULT * S))
    allopen = not any(p.value() for p in sim.hw.outputs.values())   # (the run stopped at the exception)
    ok = raised and t is not None and t == st["t"] and allopen
    return row("control_loop_exception", "Exception in the control loop", "a component raises at 20 s",
               "every output released in the same iteration, the exception propagates (device: reset)",
               "outputs released at the exception: %s, exception propagated: %s" % (
                   "yes" if allopen else "NO", "yes" if raised else "NO"),
               _s(t - st["t"]) if ok else "-", ok)


# ------------------------------------------------------------------ rejoin after a bus fault (issue #21)
# Each probe runs the fault from 20 s to 30 s and measures the time from the END of the
# fault until every branch is closed again (the "time" column).  The bounds that make
# up that time (docs/bus_health.md "Rejoin"): lost modules are asked again every
# REPROBE_MS (5 s); the bus verdict clears after CONFIRM evaluations of the newest
# CLEAR_SAMPLES samples with no error (96 clean transactions: ~11 s for 3 modules at
# 9600 baud); then gating.dwell_ms (3 s) per close, one close at a time (3 modules:
# 9 s).  On CAN, the bus-off backoff (bankgate.bus.can: <= 5 s) comes first.
T_END = T_FAULT + 10


def _last_close(sim, out):
    lc = None
    for t, v in sim.hw.outputs[out].history:
        if v == 1:
            lc = t
    return lc


def _rejoin(sim, n=3):
    """(every branch opened during the fault?, fault end -> all closed us or None)."""
    t0 = int(T_FAULT * S)
    t1 = int(T_END * S)
    opened = all(sim.opened_after("k%d" % i, t0) is not None for i in range(n))
    closed = all(sim.value_at("k%d" % i, sim.end_us()) for i in range(n))
    if not closed:
        return opened, None
    last = max(_last_close(sim, "k%d" % i) for i in range(n))
    return opened, last - t1


def _verdict_clear(sim):
    ev = sim.event_after("bus", int(T_END * S), pred=lambda a, b: a == 0)
    return ev[0] - int(T_END * S) if ev else None


def _rs485_rejoin(fid, fault, injected, inject):
    import fakefault
    sim = sim_of(scenario(dur=75))
    getattr(fakefault, inject)(sim, T_FAULT, T_END)
    sim.run()
    opened, dt = _rejoin(sim)
    vc = _verdict_clear(sim)
    ok = opened and dt is not None and dt <= 25 * S
    return row(fid, fault, injected + " from 20 s to 30 s",
               "branches open (stale data / bus verdict); once the fault ends the bus verdict clears on "
               "96 clean transactions and the branches close again, one per dwell_ms (3 s), no reboot",
               "every branch opened: %s; bus verdict healthy %s after the fault ended; all closed again: %s"
               % ("yes" if opened else "NO", _s(vc) if vc is not None else "never",
                  "yes" if dt is not None else "NO"),
               (_s(dt) + " (fault end -> closed)") if dt is not None else "never", ok)


def p_rejoin_silent():
    return _rs485_rejoin("rejoin_silent_bus", "Silent RS485 bus, then back", "no module answers (cable cut)",
                         "silent")


def p_rejoin_junk():
    return _rs485_rejoin("rejoin_junk", "Junk at line rate on RS485, then gone",
                         "a node sends random bytes at line rate (every reply drowned)", "junk")


def p_rejoin_held():
    return _rs485_rejoin("rejoin_held_line", "RS485 line held, then released",
                         "a transceiver holds the pair dominant (UART reads 0x00 at line rate)", "held")


def p_rejoin_master():
    return _rs485_rejoin("rejoin_second_master", "Second master on RS485, then removed",
                         "another master polls the modules every 200 ms (foreign frames, a third of the "
                         "replies collide)", "second_master")


def p_rejoin_noise():
    sim = sim_of(scenario(dur=75))
    sim.do(T_FAULT, do="set", bus="noise", value=0.02)
    sim.do(T_END, do="set", bus="noise", value=0.0)
    sim.run()
    opened, dt = _rejoin(sim)
    vc = _verdict_clear(sim)
    ok = dt is not None and dt <= 25 * S
    return row("rejoin_noise", "Noise on RS485, then gone", "2 % of bytes corrupted from 20 s to 30 s",
               "bus verdict wiring_noise; once the noise ends it clears on 96 clean transactions and every "
               "branch is closed again (one close per dwell_ms)",
               "branches opened: %s; bus verdict healthy %s after the noise ended; all closed again: %s"
               % ("yes" if opened else "no", _s(vc) if vc is not None else "never",
                  "yes" if dt is not None else "NO"),
               (_s(dt) + " (fault end -> closed)") if dt is not None else "never", ok)


def _can_bank(dur, **top):
    return scenario(dur=dur, config={"bank": {"family": "pylontech-can", "bus": "can", "baud": 500000,
                                              "firmware_same": False}}, **top)


def _fresh_after(sim, t_us):
    """Every module's analog data younger than 1.5 s at the end of the run (data flows)."""
    gw = sim.gw
    now = gw.hw.clock.ticks_ms()
    for i in range(gw.bank.n_used):
        m = gw.bank.modules[i]
        if not m.analog_valid or now - m.t_analog > 1500:
            return False
    return True


def _can_module_rejoin(fid, fault, injected, expected, inject):
    import fakefault
    sim = sim_of(_can_bank(75))
    t0 = int(T_FAULT * S)
    was_closed = [sim.closed_ever("k%d" % i) for i in range(3)]
    node = inject(fakefault, sim)
    sim.run()
    vc = _verdict_clear(sim)
    fresh = _fresh_after(sim, int(T_END * S))
    opened, dt = _rejoin(sim)
    closed_before = any(v for t, v in sim.hw.outputs["k0"].history if t < t0)
    rec = sim.gw.poller.can_recovery
    ok = fresh and vc is not None and (dt is not None or not closed_before)
    what = ("all closed again %s after the fault ended" % _s(dt)) if dt is not None else (
        "no branch was closed before the fault (CAN module admission: issue #15)" if not closed_before
        else "NOT closed again")
    return row(fid, fault, injected, expected,
               "data from every module again, bus verdict healthy %s after the fault ended; bus-offs %d, "
               "restarts %d, bus fault diagnosed: %s; %s" % (
                   _s(vc) if vc is not None else "never", rec.bus_offs, rec.restarts,
                   "yes" if rec.bus_offs and sim.event_after("can", t0, pred=lambda a, b: a == 3) else "no",
                   what),
               (_s(dt) + " (fault end -> closed)") if dt is not None else (
                   (_s(vc) + " (fault end -> bus healthy)") if vc is not None else "never"), ok)


def p_can_flood():
    return _can_module_rejoin(
        "rejoin_can_flood", "CAN module bus flooded, then quiet",
        "a node sends ID 0x001 back to back from 20 s to 30 s (CAN module bus, 3 modules, 500 kbit/s)",
        "module frames lost: modules go stale (branches open), verdict module_offline; once the flood "
        "ends data flows, the verdict clears and the bank closes again (one close per dwell_ms)",
        lambda ff, sim: ff.can_flood(sim, T_FAULT, T_END))


def p_can_bus_off_modules():
    return _can_module_rejoin(
        "can_bus_off_modules", "CAN bus-off, module bus",
        "the gateway's module-bus controller bus-off (TEC 256) at 20 s, every recovery failing until "
        "30 s (held fault)",
        "restart after 100 ms, backoff doubling to 5 s, counted; repeated bus-off is a bus fault (event, "
        "diagnosis); once the fault ends the next restart rejoins (after 128 x 11 recessive bits) and the "
        "bank closes again without a reboot",
        lambda ff, sim: ff.can_bus_off(sim, sim.hw.can_modules, T_FAULT, T_END))


def p_can_bus_off_inverter():
    import fakefault
    s = scenario(dur=75, config={"inverter": {"require_heartbeat": True}}, inverter={"heartbeat": True})
    sim = sim_of(s)
    fakefault.can_bus_off(sim, sim.hw.can_inverter, T_FAULT, T_END)
    sim.run()
    t0 = int(T_FAULT * S)
    opened, dt = _rejoin(sim)
    rec = sim.gw.inverter.recovery
    back = sim.event_after("can", int(T_END * S), pred=lambda a, b: a == 2)
    fault = sim.event_after("can", t0, pred=lambda a, b: a == 3)
    ok = opened and dt is not None and back is not None and fault is not None and dt <= 20 * S
    return row("can_bus_off_inverter", "CAN bus-off, inverter link",
               "the gateway's inverter-side controller bus-off (TEC 256) at 20 s, every recovery failing "
               "until 30 s (inverter.require_heartbeat on)",
               "no 0x305 heard: the bank opens (reason inverter); restarts with backoff (100 ms doubling to "
               "5 s), repeated bus-off diagnosed as a bus fault; once the fault ends the controller rejoins, "
               "the heartbeat returns and the bank closes again without a reboot",
               "branches opened: %s; bus-offs %d, restarts %d, bus fault event: %s; controller back %s after "
               "the fault ended; all closed again: %s" % (
                   "yes" if opened else "NO", rec.bus_offs, rec.restarts, "yes" if fault else "NO",
                   _s(back[0] - int(T_END * S)) if back else "never", "yes" if dt is not None else "NO"),
               (_s(dt) + " (fault end -> closed)") if dt is not None else "never", ok)


def p_rejoin_lost_module():
    sim = sim_of(scenario(dur=60))
    sim.do(T_FAULT, do="unplug", module=1)
    sim.do(T_END, do="plug", module=1)
    sim.run()
    t = sim.opened_after("k1", int(T_FAULT * S))
    lc = _last_close(sim, "k1")
    dt = lc - int(T_END * S) if lc is not None and lc > int(T_END * S) and sim.value_at("k1", sim.end_us()) \
        else None
    ok = t is not None and dt is not None and dt <= 15 * S and _stays(sim, ("k0", "k2"))
    return row("rejoin_lost_module", "Lost module, then back", "module 1 unplugged from 20 s to 30 s",
               "its branch opens (stale); once it answers again (re-probed every 5 s) its identity is re-read "
               "and it closes after dwell_ms; the others stay closed",
               "k1 opened %s after the unplug, closed again: %s; k0/k2 closed throughout: %s" % (
                   _s(t - int(T_FAULT * S)) if t else "never", "yes" if dt is not None else "NO",
                   "yes" if _stays(sim, ("k0", "k2")) else "NO"),
               (_s(dt) + " (fault end -> closed)") if dt is not None else "never", ok)


def p_rejoin_duplicate():
    sim = sim_of(scenario(dur=75))
    sim.do(T_FAULT, do="address", module=2, value=3)
    sim.do(T_END, do="address", module=2, value=4)
    sim.at(T_END, lambda: sim.gw.poller.rescan())    # the installer's rescan (MQTT command / console)
    sim.run()
    opened, dt = _rejoin(sim)
    vc = _verdict_clear(sim)
    ok = opened and dt is not None and dt <= 30 * S
    return row("rejoin_duplicate_address", "Duplicate address, then fixed",
               "module 2 re-addressed to 3 (= module 1) at 20 s; at 30 s set back to 4 and a rescan asked "
               "(MQTT rescan command)",
               "the whole bank opens (duplicate_address); a duplicate found by discovery stays until a rescan "
               "finds the addresses unique (an address plan error is fixed by a person, remotely: rescan); "
               "then the verdict clears on clean transactions and the bank closes again, one close per "
               "dwell_ms",
               "whole bank opened: %s; bus verdict healthy %s after the fix + rescan; all closed again: %s" % (
                   "yes" if opened else "NO", _s(vc) if vc is not None else "never",
                   "yes" if dt is not None else "NO"),
               (_s(dt) + " (fault end -> closed)") if dt is not None else "never", ok)


# ------------------------------------------------------------------ broker misbehaviour (issue #21)
def _mqtt_seqs(broker):
    got = set()
    import json as _j

    def on_pub(topic, payload):
        if topic.endswith(b"/event"):
            got.add(_j.loads(payload)["seq"])
    broker.on_publish = on_pub
    return got


def _missing(sim, got):
    ev = sim.gw.events
    return [s for s in range(1, ev.seq + 1) if s not in got]


def _within(us, bound_s):
    """A telemetry time as a bound: telemetry works within a REAL-time budget per loop
    iteration (docs/mqtt.md), so its exact simulated times vary by a few ms with the host's
    load; the table states the bound it met, which does not."""
    return ("<= %d s" % bound_s) if us <= bound_s * S else _s(us)


def _event_source(sim, rate, t0, t1):
    """`rate` events per second from t0 to t1 (EV_COMMAND a=0 b=0: a stand-in for a busy bank,
    as the issue's 10 events/s), so there is QoS 1 traffic to acknowledge."""
    from bankgate.events import EV_COMMAND
    step = S // rate
    end = int(t1 * S)

    def tick(t):
        sim.gw.events.emit(sim.gw.hw.clock.ticks_ms(), EV_COMMAND, -1, 0, 0)
        if t + step < end:
            sim.clock.at_us(t + step, tick, t + step)
    sim.clock.at_us(int(t0 * S), tick, int(t0 * S))


def p_broker_noack():
    sim, broker, link = _mqtt_sim(100)
    broker.clock = sim.clock.ms
    got = _mqtt_seqs(broker)
    _event_source(sim, 10, T_FAULT - 5, T_FAULT + 25)
    sim.at(T_FAULT, setattr, broker, "no_puback", True)
    sim.at(T_FAULT + 40, setattr, broker, "no_puback", False)
    sim.run()
    c = sim.gw.telemetry.client
    tel = sim.gw.telemetry
    evs = _mqtt_events(sim, int(T_FAULT * S))
    down = [e for e in evs if e[1] == 0 and e[2] == 14]
    lost = tel.ring.dropped_events + tel.events_lost
    miss = _missing(sim, got)
    dt = down[0][0] - int(T_FAULT * S) if down else None
    ok = down and c.resends > 0 and broker.dups > 0 and lost == 0 and not miss and c.online and \
        _control_ok(sim) and dt <= 16 * S
    return row("broker_noack", "MQTT broker stops acknowledging",
               "broker takes every PUBLISH, answers PINGREQ, sends no PUBACK from 20 s to 40 s (10 events/s "
               "from 15 s to 45 s)",
               "each QoS 1 event re-sent with DUP after 5 s without PUBACK; a session without PUBACK for "
               "15 s declared dead (noack) and reconnected; no event lost while the ring has room",
               "events re-sent with DUP: %s; disconnect (noack) %s after PUBACKs stopped; reconnected by "
               "itself: %s; events lost %d, undelivered %d; bank closed throughout: %s" % (
                   "yes" if c.resends and broker.dups else "NO", _within(dt, 16) if down else "never",
                   "yes" if tel.reconnects and c.online else "NO", lost, len(miss),
                   "yes" if _control_ok(sim) else "NO"),
               _within(dt, 16) if down else "-", ok)


def _mqtt_sim_cfg(dur, mqtt):
    from fakemqtt import FakeBroker, FakeLink, fake_net
    broker = FakeBroker()
    link = FakeLink()
    m = {"enabled": True}
    m.update(mqtt)
    sim = sim_of(scenario(dur=dur, config={"mqtt": m}), fake_net(broker, link))
    return sim, broker, link


def p_broker_slowloris():
    # reconnect_max_ms 2 s: after the recovery the next attempt is at most 2 s away (with the
    # default 30 s backoff the reconnect time measured where in its backoff the client happened to be)
    sim, broker, link = _mqtt_sim_cfg(90, {"connect_timeout_ms": 3000, "reconnect_max_ms": 2000})
    broker.clock = sim.clock.ms
    got = _mqtt_seqs(broker)
    sim.at(T_FAULT, broker.set_broker, False)           # drop the session ...
    # ... it comes back at 1 byte per 2 s: a 4-byte CONNACK takes >= 6 s, twice the connect
    # timeout (at 1 byte/s it took exactly the 3 s timeout, and which came first was chance)
    sim.at(T_FAULT + 0.5, broker.set_broker, True)
    sim.at(T_FAULT + 0.5, setattr, broker, "drip_ms", 2000)
    sim.at(T_FAULT + 40, setattr, broker, "drip_ms", 0)
    _event_source(sim, 5, T_FAULT - 5, T_FAULT + 45)
    sim.run()
    c = sim.gw.telemetry.client
    tel = sim.gw.telemetry
    lost = tel.ring.dropped_events + tel.events_lost
    miss = _missing(sim, got)
    up = [e for e in _mqtt_events(sim, int((T_FAULT + 40) * S)) if e[1] == 1]
    ok = c.slow_connects > 0 and up and lost == 0 and not miss and _control_ok(sim) and \
        up[0][0] - int((T_FAULT + 40) * S) <= 3 * S
    return row("broker_slowloris", "Slowloris MQTT broker",
               "broker drops the session at 20 s and answers at 1 byte per 2 s until 60 s (connect_timeout_ms 3 s, reconnect_max_ms 2 s; "
               "5 events/s from 15 s to 65 s)",
               "connect attempts time out (connect_timeout_ms) with the CONNACK incomplete: reason slow, "
               "counted; events kept in the ring, reconnect by itself when the broker is normal again; no "
               "event lost while the ring has room",
               "connects ended slow: %s; reconnected %s after the broker recovered; events lost %d, "
               "undelivered %d; bank closed throughout: %s" % (
                   "yes" if c.slow_connects else "NO",
                   _within(up[0][0] - int((T_FAULT + 40) * S), 3) if up else "never", lost, len(miss),
                   "yes" if _control_ok(sim) else "NO"),
               _within(up[0][0] - int((T_FAULT + 40) * S), 3) + " (recovered -> online)" if up else "-", ok)


def p_broker_reset():
    sim, broker, link = _mqtt_sim(60)
    broker.clock = sim.clock.ms
    got = _mqtt_seqs(broker)
    for k in range(4):
        sim.at(T_FAULT + 3 * k, broker.reset_mid_publish, 1)
    _event_source(sim, 10, T_FAULT - 5, T_FAULT + 20)
    sim.run()
    c = sim.gw.telemetry.client
    tel = sim.gw.telemetry
    lost = tel.ring.dropped_events + tel.events_lost
    miss = _missing(sim, got)
    ok = broker.resets_done == 4 and tel.reconnects >= 4 and lost == 0 and not miss and c.online and \
        _control_ok(sim)
    return row("broker_reset_mid_publish", "MQTT broker resets mid-publish",
               "4 connection resets, each cutting a PUBLISH in half, from 20 s (every 3 s)",
               "each reset noticed (io), reconnect with backoff, every unacknowledged event re-sent: none lost",
               "resets %d, reconnected after each: %s; events lost %d, undelivered %d; bank closed "
               "throughout: %s" % (broker.resets_done, "yes" if tel.reconnects >= 4 else "NO", lost,
                                   len(miss), "yes" if _control_ok(sim) else "NO"),
               "-", ok)


def p_broker_loss_report():
    sim, broker, link = _mqtt_sim(120)
    broker.clock = sim.clock.ms
    tel = sim.gw.telemetry
    from bankgate.telemetry import ring as rg
    tel.ring = rg.Ring(1024)             # a small ring so the outage overflows it
    sim.at(T_FAULT, setattr, broker, "no_puback", True)
    sim.at(T_FAULT + 70, setattr, broker, "no_puback", False)
    _event_source(sim, 10, T_FAULT - 5, T_FAULT + 60)
    sim.run()
    rep = sim.event_after("telemetry_loss", int(T_FAULT * S))
    lost = tel.ring.dropped_events + tel.events_lost
    # (rep: t, addr = cause code, a = events dropped, b = seconds since the last PUBACK)
    ok = lost > 0 and rep is not None and rep[1] == 14 and rep[2] == lost and rep[3] >= 60 and \
        rep[0] - int((T_FAULT + 70) * S) <= 3 * S and _control_ok(sim)
    return row("telemetry_loss_reported", "Events lost beyond the ring",
               "broker sends no PUBACK from 20 s to 90 s; store-and-forward ring cut to 1 kB",
               "when the ring must drop events the cause is recorded; on the first PUBACK afterwards an event "
               "telemetry_loss (cause noack, count, seconds) and a diagnosis message (telemetry_loss topic)",
               "events dropped: %s; telemetry_loss event: %s (cause %s, count = every drop: %s, no PUBACK "
               "for >= 60 s: %s)" % (
                   "yes" if lost else "NO", "yes" if rep else "NO", _reason(rep[1]) if rep else "-",
                   "yes" if rep and rep[2] == lost else "NO", "yes" if rep and rep[3] >= 60 else "NO"),
               _within(rep[0] - int((T_FAULT + 70) * S), 3) + " (acks back -> report)" if rep else "-", ok)


def p_qos2_command():
    sim, broker, link = _mqtt_sim(30)
    topic = "%s/%s/cmd/rescan" % (sim.cfg["mqtt"]["prefix"], sim.cfg["gateway_id"])
    st = {}

    def fire():
        st["scans"] = sim.gw.poller.sweep_count
        broker.inject(topic, "{}", qos=2, pid=9)
    sim.at(T_FAULT, fire)
    sim.run()
    c = sim.gw.telemetry.client
    tel = sim.gw.telemetry
    ok = c.rx_qos_refused == 1 and tel.accepted_commands == 0 and tel.rejected_commands == 1 and \
        (5, 9) in broker.acks2 and (7, 9) in broker.acks2 and c.online
    return row("qos2_command", "QoS 2 PUBLISH to the gateway",
               "a rescan command published at QoS 2 at 20 s",
               "refused: never executed, counted and reported (reject reply + event); the exchange completed "
               "per MQTT 3.1.1 (PUBREC, PUBREL, PUBCOMP) so the broker does not retransmit; session stays up",
               "refused %d, accepted %d, rejected %d; PUBREC and PUBCOMP sent: %s; online: %s" % (
                   c.rx_qos_refused, tel.accepted_commands, tel.rejected_commands,
                   "yes" if (5, 9) in broker.acks2 and (7, 9) in broker.acks2 else "NO",
                   "yes" if c.online else "NO"), "-", ok)


PROBES = [
    ("lost_module", p_lost_module), ("duplicate_address", p_duplicate_address),
    ("missing_terminator", p_missing_terminator), ("noise", p_noise),
    ("voltage_difference", p_voltage_difference), ("soc_spread", p_soc_spread),
    ("critical_alarm", p_critical_alarm), ("stale_data", p_stale_data),
    ("welded_contactor", p_welded), ("failed_to_close", p_failed_to_close),
    ("precharge_timeout", p_precharge_timeout), ("fuse_trip", p_fuse_trip),
    ("loose_lug", p_loose_lug), ("inverter_heartbeat_loss", p_heartbeat),
    ("broker_down", p_broker_down), ("broker_stalled", p_broker_stalled), ("wifi_down", p_wifi_down),
    ("invalid_configuration", p_invalid_config), ("malformed_frames", p_malformed_frames),
    ("hostile_mqtt_commands", p_hostile_commands), ("control_loop_hang", p_loop_hang),
    ("control_loop_exception", p_loop_exception),
    ("broker_noack", p_broker_noack), ("broker_slowloris", p_broker_slowloris),
    ("broker_reset_mid_publish", p_broker_reset), ("telemetry_loss_reported", p_broker_loss_report),
    ("qos2_command", p_qos2_command),
    ("rejoin_lost_module", p_rejoin_lost_module), ("rejoin_duplicate_address", p_rejoin_duplicate),
    ("rejoin_noise", p_rejoin_noise), ("rejoin_silent_bus", p_rejoin_silent), ("rejoin_junk", p_rejoin_junk),
    ("rejoin_held_line", p_rejoin_held), ("rejoin_second_master", p_rejoin_master),
    ("rejoin_can_flood", p_can_flood), ("can_bus_off_modules", p_can_bus_off_modules),
    ("can_bus_off_inverter", p_can_bus_off_inverter),
]


def main(argv):
    want = argv[1:]
    for pid, fn in PROBES:
        if want and pid not in want:
            continue
        try:
            r = fn()
        except Exception as e:      # a probe that cannot run is a row that says so
            import io
            buf = io.StringIO()
            sys.print_exception(e, buf)
            r = row(pid, pid, "-", "-", "not measured: probe failed: %s" % (repr(e),), "-", False)
            r["traceback"] = buf.getvalue()
        sys.stdout.write("\x1ePROBE " + json.dumps(r) + "\n")


if __name__ == "__main__":
    main(sys.argv)
