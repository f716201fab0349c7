# The soak: the REAL firmware (bankgate.app.Gateway, MQTT telemetry included) on the
# simulated bank (bgsim) for hours of simulated time with random faults, watched by
# checkers that do not trust the firmware.  Used by tests/mp/test_soak_short.py
# (`make test`) and tests/mp/test_soak_long.py (`make soak`, 24 simulated hours).
#
#   res = soak.run(hours=24, n=16, seed=1)      -> dict (see Soak.result)
#
# Set-up: n modules (Pylontech RS485, `baud`), branch topology with feedback contacts and
# the "link isolated" input, the main disconnect closed at 30 s, an inverter cycling a
# gentle charge/discharge profile with heartbeat, MQTT telemetry to a recording broker
# stand-in (tools/fakes/fakemqtt.py).
#
# Faults (seeded xorshift PRNG, reproducible): one new fault every 20..120 s of
# simulated time, each undone after its duration:
#   drop     a module's communication cable unplugged 5..120 s (module lost, returns)
#   noise    bus noise burst: 0.2..5 % byte errors for 2..30 s
#   alarm    a critical BMS alarm (or protection) on one module for 5..60 s
#   broker   the broker is down 10..300 s
#   stall    the broker stops reading/answering 10..120 s
#   wifi     the Wi-Fi link is down 10..180 s
#   heartbeat  the inverter heartbeat (0x305) stops 5..60 s
#
# Checks (each counted; the tests assert the counts are zero):
#   closes_bad    an independent checker on every coil energisation (output pin 0 -> 1)
#                 against the MODEL and the WIRE, never the firmware's own state:
#                   - the last alarm reply (0x44) the module put on the wire before the close
#                     carried a critical alarm/protection bit (cfg gating.critical_alarms),
#                   - the module has had a critical alarm in its BMS for longer than
#                     max_age_ms + one control period (the firmware must have seen it),
#                   - no alarm reply from the module reached the wire for more than max_age_ms,
#                   - another branch conducts and |V_module(open circuit) - V_busbar| exceeds
#                     gating.max_dv_mv + DV_TOL_MV (quantisation and one poll cycle of drift),
#                   - during the boot hold.
#   events_lost   the EventLog consumer (like telemetry: reads every check_ms) found a
#                 sequence number that should still be in the ring but was not, or a gap.
#   broker_gaps   sequence numbers missing at the broker (events arrive in order; duplicates
#                 after a reconnect are allowed: QoS 1, at least once).  A gap is allowed
#                 only for an event telemetry itself counted as dropped, and a drop only
#                 when the store-and-forward ring was full of events while offline (beyond
#                 its capacity): drops_unjustified counts the others.
#   wdt_expired   FakeWdt.expired() seen true at any 100 ms sample or at the end.
#   heap          live heap (gc.mem_alloc() right after gc.collect()) sampled every
#                 sample_s; "flat after warm-up": the largest sample after warm-up exceeds
#                 the largest sample of the first window after warm-up by at most
#                 HEAP_SLACK bytes (a leak of a few bytes per minute shows up over hours).
#                 What the sample must NOT measure (both found by the 24 h soak):
#                   - the harness's own records: the samples go into arrays preallocated
#                     for the whole run (a list of (t, bytes) tuples grew by 32 B + list
#                     growth per sample: ~6.6 KB over 144 samples, a fake 280 B/h "leak");
#                   - telemetry's snapshot in progress: Telemetry._produce takes one
#                     gw.snapshot() (16 module dicts + metrics + diagnoses, ~14 KB on the
#                     64-bit unix port) and encodes it one message per service() call over
#                     the next ~18 loop iterations (bounded work per call, by design), so a
#                     sample that falls inside that window is 8..15 KB high.  A sample due
#                     while telemetry holds it (_mods / _metrics_snap) is deferred by
#                     _HEAP_DEFER_US until it is released (at most _HEAP_DEFER_MAX times);
#                     the value at the nominal instant is kept too (heap_raw_peak, reported,
#                     not judged: transient state, not a leak).
import gc
import time
from array import array

import fwcompat

fwcompat.ensure_firmware()

import fakebus  # noqa: E402
from bgsim import runner  # noqa: E402
from bgsim import scenario as sc  # noqa: E402
from bgsim.bms import alarm_bits  # noqa: E402
from fakemqtt import FakeBroker, FakeLink, fake_net  # noqa: E402

DV_TOL_MV = 100
_EV_RECORD = 6 + 20               # ring record of one event: header + packed event (ring.py)
HEAP_SLACK = 4096
_HEAP_DEFER_US = 10000            # re-try a busy heap sample after 10 ms of simulated time
_HEAP_DEFER_MAX = 500             # ... for at most 5 s (the snapshot is released within ~1 s)
_ALARMS = (["cell_ov"], ["cell_uv"], ["charge_ot"], ["discharge_oc"], ["internal"], ["module_ov"])


def _noop(line):
    pass


def scenario(n=16, baud=9600, seed=1, hours=1.0):
    addrs = list(range(2, 2 + n))
    max_age = 5000 if baud >= 115200 else 15000
    mods = []
    for i in range(n):
        mods.append({"soc_pct": 55 + (i % 3) * 0.2, "r_int_mohm": 20 + (i % 4)})
    return {
        "name": "soak", "seed": seed, "duration_s": hours * 3600.0, "step_ms": 100,
        "report_s": 3600, "check_ms": 200,
        "modules": mods,
        "terminal": {"disconnect": False},
        "bus": {"baud": baud},
        "inverter": {"heartbeat": True, "interp": "linear", "repeat_s": 3600,
                     "profile": [[0, 0], [300, 0], [600, 12], [1500, 12], [1800, 0],
                                 [2100, -12], [3000, -12], [3300, 0]]},
        "config": {
            "bank": {"expected_modules": n, "addresses": addrs, "baud": baud, "scan_to": 2 + n,
                     "approved_models": ["US5000"]},
            "gating": {"max_age_ms": max_age},
            "contactors": {"outputs": ["k%d" % i for i in range(n)],
                           "feedback": ["f%d" % i for i in range(n)],
                           "link_isolated_input": "iso"},
            "mqtt": {"enabled": True, "host": "127.0.0.1"},
        },
        "timeline": [{"at": 30, "do": "disconnect", "value": True}],
    }


class SoakSim(runner.Simulation):
    """The scenario runner without its unbounded records: events are consumed by
    the checker (nothing kept), no state lines."""

    def __init__(self, scen, net, soak):
        self.soak = soak
        runner.Simulation.__init__(self, scen, _noop, net=net)

    def _drain_events(self):
        self.soak.consume_events()

    def report(self):
        pass


class Soak:
    def __init__(self, hours=1.0, n=16, baud=9600, seed=1, warmup_h=None, sample_s=600, scen=None):
        # scen: another scenario dict (n modules, branch topology with feedback) to judge
        # with the same checkers, e.g. tools/rigs/longrun.py's multi-day bank
        self.hours = hours
        self.seed = seed
        self.rng = fakebus.Prng(seed * 7919 + 17)
        self.broker = FakeBroker()
        self.link = FakeLink()
        self.net = fake_net(self.broker, self.link)
        s = sc.validate(scen if scen is not None else scenario(n, baud, seed, hours))
        self.sim = sim = SoakSim(s, self.net, self)
        if sim.gw is None:
            raise RuntimeError("firmware did not start: %s" % sim.failed_start)
        self.gw = gw = sim.gw
        cfg = sim.cfg
        self.n = n
        self.crit = cfg["gating"]["critical_alarms"]
        self.max_dv = cfg["gating"]["max_dv_mv"]
        self.max_age_us = cfg["gating"]["max_age_ms"] * 1000
        self.period_us = cfg["control"]["period_ms"] * 1000
        self.boot_hold_us = cfg["control"]["boot_hold_ms"] * 1000
        self.warmup_us = int((warmup_h if warmup_h is not None else min(2.0, hours / 4.0)) * 3.6e9)
        self.sample_us = int(sample_s * 1e6)
        # results
        self.closes = 0
        self.closes_bad = 0
        self.bad = []                    # first few violations, for the report
        self.dv_max_mv = 0               # largest |dV| seen at a close with another branch conducting
        self.events_seen = 0
        self.events_lost = 0
        self.ev_next = 1
        self.broker_events = 0
        self.broker_gaps = 0
        self.broker_dups = 0
        self.broker_next = 1
        self.wdt_expired = 0
        # heap samples, preallocated for the whole run (see the header): t_s, live bytes at a
        # quiet instant, live bytes at the nominal instant; n_heap used; results build the list
        n_samples = int(hours * 3600 / sample_s) + 2
        self.heap_t = array("i", bytes(4 * n_samples))
        self.heap_b = array("i", bytes(4 * n_samples))
        self.heap_raw = array("i", bytes(4 * n_samples))
        self.n_heap = 0
        self.heap_deferred = 0           # samples taken later than due (telemetry busy)
        self._heap_due_us = 0
        self._heap_tries = 0
        self.faults = {}
        self.active = 0
        self._evbuf = [0, 0, 0, 0, 0]
        self.drops_unjustified = 0       # ring event drops while it still had room / was online
        self.operator = 0                # disconnect operations by the simulated installer
        self._open_since = -1
        # per module: onset of a critical BMS alarm (us, -1 none), last alarm reply on the wire
        self.alarm_since = [-1] * n
        self.unplug_since = [-1] * n
        self.last_alarm_reply_us = [0] * n
        self.last_alarm_reply_bits = [0] * n
        self._install()

    # ------------------------------------------------------------- wiring
    def _install(self):
        sim = self.sim
        for name, pin in sim.hw.outputs.items():
            idx = -1
            for i, m in enumerate(sim.mods):
                if m.contactor is not None and m.contactor.name == name:
                    idx = i
            pin.on_change = self._coil_watch(idx, pin.on_change)
        char_us = sim.wire.char_us
        for i, r in enumerate(sim.wire.responders):
            r[0] = self._reply_watch(i, r[0], r[1], char_us)
        tel = self.gw.telemetry
        if tel is not None:
            tel.ring.append_event = self._ring_watch(tel.ring, tel.ring.append_event)
        self.topic_event = ("%s/%s/event" % (sim.cfg["mqtt"]["prefix"], sim.cfg["gateway_id"])).encode()
        self.broker.on_publish = self._on_publish

    def _ring_watch(self, ring, append_event):
        """An event evicted from the store-and-forward ring is allowed only when the ring
        held nothing but events at that instant (its capacity is exhausted: the broker is
        unreachable or not acknowledging); checked at the append that evicts it."""
        def w(*a):
            held = ring.n_events
            d0 = ring.dropped_events
            r = append_event(*a)
            if ring.dropped_events > d0 and (held + 2) * _EV_RECORD < ring.capacity:
                self.drops_unjustified += ring.dropped_events - d0
            return r
        return w

    def _reply_watch(self, i, responder, turnaround_us, char_us):
        sim = self.sim

        def w(req):
            out = responder(req)
            # a reply to 0x44 (CID2 at request chars 7..8 = "44"): remember when it will have
            # reached the gateway and which bits it carried
            if out and len(req) > 8 and req[7] == 0x34 and req[8] == 0x34 and out[7:9] == b"00":
                b = sim.bmses[i]
                self.last_alarm_reply_us[i] = sim.clock.now_us + turnaround_us + len(out) * char_us
                self.last_alarm_reply_bits[i] = (b.alarms | b.protections) & self.crit
            return out
        return w

    def _coil_watch(self, idx, handler):
        def h(v):
            if v and idx >= 0:
                self._check_close(idx)
            handler(v)
        return h

    def _violation(self, what):
        self.closes_bad += 1
        if len(self.bad) < 10:
            self.bad.append("%.3f s: %s" % (self.sim.clock.now_us / 1e6, what))

    def _check_close(self, i):
        sim = self.sim
        sim.advance()
        now = sim.clock.now_us
        self.closes += 1
        b = sim.bmses[i]
        m = sim.mods[i]
        if now < self.boot_hold_us:
            self._violation("module %d closed during the boot hold" % i)
        t_rep = self.last_alarm_reply_us[i]
        if t_rep <= now and self.last_alarm_reply_bits[i]:
            self._violation("module %d closed after its alarm reply carried 0x%x"
                            % (i, self.last_alarm_reply_bits[i]))
        if now - t_rep > self.max_age_us:
            self._violation("module %d closed with no alarm reply for %d ms" % (i, (now - t_rep) // 1000))
        since = self.alarm_since[i]
        if since >= 0 and now - since > self.max_age_us + self.period_us:
            self._violation("module %d closed with a critical BMS alarm for %d ms" % (i, (now - since) // 1000))
        others = [k for k, o in enumerate(sim.mods) if k != i and o.conducting()]
        if others:
            dv = int(abs(m.ocv() - sim.bank.bus_v) * 1000)
            if dv > self.dv_max_mv:
                self.dv_max_mv = dv
            if dv > self.max_dv + DV_TOL_MV:
                self._violation("module %d closed at |dV| = %d mV" % (i, dv))

    # ------------------------------------------------------------- events
    def consume_events(self):
        ev = self.gw.events
        buf = self._evbuf
        oldest = ev.oldest()
        if self.ev_next < oldest and ev.seq >= self.ev_next:
            self.events_lost += oldest - self.ev_next      # overwritten before we read it
            self.ev_next = oldest
        while self.ev_next <= ev.seq:
            if not ev.get(self.ev_next, buf):
                self.events_lost += 1
            self.events_seen += 1
            self.ev_next += 1

    def _on_publish(self, topic, payload):
        if topic != self.topic_event:
            return
        # payload: {"seq":N,...}
        i = payload.find(b'"seq":')
        if i < 0:
            self.broker_gaps += 1
            return
        j = i + 6
        k = j
        while k < len(payload) and 0x30 <= payload[k] <= 0x39:
            k += 1
        seq = int(payload[j:k])
        self.broker_events += 1
        if seq == self.broker_next:
            self.broker_next = seq + 1
        elif seq < self.broker_next:
            self.broker_dups += 1
        else:
            self.broker_gaps += seq - self.broker_next
            self.broker_next = seq + 1

    # ------------------------------------------------------------- faults
    def _fault_tick(self):
        sim = self.sim
        rng = self.rng
        kinds = ("drop", "noise", "alarm", "broker", "stall", "wifi", "heartbeat")
        kind = kinds[rng.below(len(kinds))]
        self.faults[kind] = self.faults.get(kind, 0) + 1
        clk = sim.clock
        i = rng.below(self.n)
        if kind == "drop":
            dur = 5 + rng.below(116)
            if sim.bmses[i].plugged:
                sim.bmses[i].plugged = False
                self.unplug_since[i] = clk.now_us
                clk.after_us(dur * 1000000, self._replug, i)
        elif kind == "noise":
            dur = 2 + rng.below(29)
            sim._set_bus("noise", (2 + rng.below(49)) / 1000.0)
            clk.after_us(dur * 1000000, sim._set_bus, "noise", 0.0)
        elif kind == "alarm":
            dur = 5 + rng.below(56)
            names = _ALARMS[rng.below(len(_ALARMS))]
            protect = rng.below(2) == 1
            b = sim.bmses[i]
            b.inject(alarm_bits(names), protect, sim.bank.t_s + dur)
            b.update(sim.bank.t_s, 0.0)
        elif kind == "broker":
            dur = 10 + rng.below(291)
            self.broker.set_broker(False)
            clk.after_us(dur * 1000000, self.broker.set_broker, True)
        elif kind == "stall":
            dur = 10 + rng.below(111)
            self.broker.stalled = True
            clk.after_us(dur * 1000000, self._unstall)
        elif kind == "wifi":
            dur = 10 + rng.below(171)
            self.link.connected = False
            clk.after_us(dur * 1000000, self._wifi_up)
        else:
            dur = 5 + rng.below(56)
            sim.inverter.heartbeat = False
            clk.after_us(dur * 1000000, self._heartbeat_on)
        clk.after_us((20 + rng.below(101)) * 1000000, self._fault_tick)

    def _replug(self, i):
        self.sim.bmses[i].plugged = True
        self.unplug_since[i] = -1

    def _unstall(self):
        self.broker.stalled = False

    def _wifi_up(self):
        self.link.connected = True

    def _heartbeat_on(self):
        self.sim.inverter.heartbeat = True

    def _operator_tick(self):
        """The installer's routine (docs/faults.md, "bank open with the DC link dead"):
        without a DC-link sensor the firmware never closes the first branch onto a
        closed main disconnect (it cannot know the link voltage), so when every branch
        has been open for 30 s the operator opens the disconnect; once the bank is
        closed again the disconnect is closed."""
        sim = self.sim
        now = sim.clock.now_us
        closed = 0
        for pin in sim.hw.outputs.values():
            closed += pin.value()
        disc = sim.disconnect
        if closed == 0 and disc.closed:
            if self._open_since < 0:
                self._open_since = now
            elif now - self._open_since >= 30000000:
                sim._action({"at": 0, "do": "disconnect", "value": False})
                self.operator += 1
                self._open_since = -1
        else:
            self._open_since = -1
            if closed == len(sim.hw.outputs) and not disc.closed:
                sim._action({"at": 0, "do": "disconnect", "value": True})
                self.operator += 1
        sim.clock.after_us(5000000, self._operator_tick)

    # ------------------------------------------------------------- sampling
    def _watch_tick(self):
        sim = self.sim
        now = sim.clock.now_us
        wdt = sim.hw.wdt
        if wdt is not None and wdt.expired():
            self.wdt_expired += 1
        for i, b in enumerate(sim.bmses):
            if (b.alarms | b.protections) & self.crit:
                if self.alarm_since[i] < 0:
                    self.alarm_since[i] = now
            else:
                self.alarm_since[i] = -1
        sim.clock.after_us(100000, self._watch_tick)

    def telemetry_busy(self):
        """True while telemetry holds a snapshot it is still encoding (transient, bounded)."""
        tel = self.gw.telemetry
        return tel is not None and (tel._mods is not None or tel._metrics_snap is not None)

    def _heap_tick(self):
        # due every sample_s on a fixed grid (a deferred sample does not shift the next one)
        self._heap_due_us += self.sample_us
        self.sim.clock.at_us(self._heap_due_us, self._heap_tick)
        i = self.n_heap
        if i >= len(self.heap_b) or self._heap_tries:
            return                       # storage full, or the previous sample still deferred
        # the fake pins record every change (t, v) for tests that read them; the soak does
        # not, and an ever-growing list would hide (or fake) a leak in the firmware
        hw = self.sim.hw
        for pin in hw.outputs.values():
            pin.history = []
        for pin in hw.inputs.values():
            pin.history = []
        gc.collect()
        self.heap_t[i] = self.sim.clock.now_us // 1000000
        self.heap_raw[i] = gc.mem_alloc()
        self._heap_tries = 0
        self._heap_quiet()

    def _heap_quiet(self):
        if self.telemetry_busy() and self._heap_tries < _HEAP_DEFER_MAX:
            if self._heap_tries == 0:
                self.heap_deferred += 1
            self._heap_tries += 1
            self.sim.clock.after_us(_HEAP_DEFER_US, self._heap_quiet)
            return
        self._heap_tries = 0
        gc.collect()
        i = self.n_heap
        self.heap_b[i] = gc.mem_alloc()
        self.n_heap = i + 1

    @property
    def heap(self):
        """[(t_s, live bytes at a quiet instant)] (allocates: for results, not during the run)."""
        return [(self.heap_t[i], self.heap_b[i]) for i in range(self.n_heap)]

    # ------------------------------------------------------------- running
    def run(self):
        clk = self.sim.clock
        clk.at_us(60 * 1000000, self._fault_tick)
        clk.at_us(100000, self._watch_tick)
        self._heap_due_us = self.sample_us
        clk.at_us(self.sample_us, self._heap_tick)
        clk.at_us(40 * 1000000, self._operator_tick)
        t0 = time.ticks_ms()
        self.rc = self.sim.run()
        self.wall_s = time.ticks_diff(time.ticks_ms(), t0) / 1000.0
        wdt = self.sim.hw.wdt
        if wdt is not None and wdt.expired():
            self.wdt_expired += 1
        self.consume_events()
        return self.result()

    def heap_verdict(self):
        after = [(t, b) for t, b in self.heap if t * 1000000 >= self.warmup_us]
        if len(after) < 2:
            return None, None, None
        k = max(1, len(after) // 4)
        base = max([b for _, b in after[:k]])
        peak = max([b for _, b in after])
        return base, peak, peak - base

    def result(self):
        gw = self.gw
        tel = gw.telemetry
        base, peak, growth = self.heap_verdict()
        sim_s = self.sim.clock.now_us / 1e6
        return {
            "sim_s": sim_s, "wall_s": self.wall_s,
            "speed": round(sim_s / self.wall_s, 1) if self.wall_s > 0 else None,
            "modules": self.n, "seed": self.seed, "faults": self.faults,
            "closes": self.closes, "operator": self.operator, "closes_bad": self.closes_bad, "violations": self.bad,
            "dv_max_mv": self.dv_max_mv,
            "events_seen": self.events_seen, "events_lost": self.events_lost,
            "broker_events": self.broker_events, "broker_gaps": self.broker_gaps,
            "broker_dups": self.broker_dups,
            "telemetry_dropped_events": tel.ring.dropped_events + tel.events_lost if tel else None,
            "telemetry_dropped": tel.ring.dropped_telemetry if tel else None,
            "drops_unjustified": self.drops_unjustified,
            "reconnects": tel.reconnects if tel else None,
            "wdt_expired": self.wdt_expired, "wdt_feeds": self.sim.hw.wdt.feeds,
            "resets": self.sim.hw.resets,
            "heap_samples": self.heap, "heap_base": base, "heap_peak": peak, "heap_growth": growth,
            "heap_raw_peak": max(self.heap_raw[:self.n_heap]) if self.n_heap else None,
            "heap_deferred": self.heap_deferred,
            "heap_slack": HEAP_SLACK, "warmup_s": self.warmup_us // 1000000,
            "loop_max_us": gw.loop_max_us, "cycles": gw.cycles, "sweeps": gw.poller.sweep_count,
            "bank_state": gw.admission.snapshot()["state"],
            "missing": list(fwcompat.MISSING),
        }


def run(hours=1.0, n=16, baud=9600, seed=1, warmup_h=None, sample_s=600):
    return Soak(hours, n, baud, seed, warmup_h, sample_s).run()


def check(r, min_closes=16):
    """The soak's pass criteria on a result dict (AssertionError with the evidence)."""
    print("soak: %.0f s simulated in %.1f s wall (x%s), %d closes, faults %s, events %d (broker %d, "
          "gaps %d, telemetry drops %s), heap base %s peak %s growth %s (at the nominal instants: "
          "peak %s, %d samples deferred while telemetry held a snapshot)" % (
              r["sim_s"], r["wall_s"], r["speed"], r["closes"], r["faults"], r["events_seen"],
              r["broker_events"], r["broker_gaps"], r["telemetry_dropped_events"], r["heap_base"],
              r["heap_peak"], r["heap_growth"], r["heap_raw_peak"], r["heap_deferred"]))
    assert r["closes_bad"] == 0, r["violations"]
    assert r["events_lost"] == 0, "EventLog records lost within its capacity"
    assert r["drops_unjustified"] == 0, "store-and-forward dropped events while it had room"
    assert r["broker_gaps"] == r["telemetry_dropped_events"], "events lost without being counted"
    assert r["wdt_expired"] == 0 and r["resets"] == 0, "watchdog expired"
    assert r["heap_growth"] is not None
    assert r["heap_growth"] <= r["heap_slack"], r["heap_samples"]
    # the run did something: the bank closed, faults of several kinds hit it, events flowed
    assert r["closes"] >= min_closes, r["closes"]
    assert len(r["faults"]) >= 3, r["faults"]
    assert r["broker_events"] > 0 and r["wdt_feeds"] > 0
