# Derate-only controls (bankgate.derate, MQTT cmd/<name>; docs/mqtt.md "Derate controls"):
# each lowers what the inverter is told (0x351 frame, telemetry), expires, is refused with a
# reason when out of range or malformed (changing nothing), allocates nothing on the control
# path, and a hostile command stream never raises a limit, closes an output, clears a latch
# or admits a module while hold_joins is on (checked against a twin gateway that gets no
# commands: same bank, same simulated clock, lock step).
# mpy-heapsize: 768k
# mpy-heapsize32: 576k
import benchrig
import mptest
from bankgate import clock as tk
from bankgate import config
from bankgate import derate as dr
from bankgate.contactor import F_WELDED
from bankgate.telemetry import commands as cmds
from fakecan import FakeCan, FakeCanBus
from fakehw import FakeHardware, SimClock

N = 3


def _cfg(ttl_s=60, mqtt=False):
    c = {
        "bank": {"expected_modules": N, "addresses": list(range(2, 2 + N)), "scan_from": 2,
                 "scan_to": 1 + N},
        "gating": {"dwell_ms": 200},
        "control": {"boot_hold_ms": 500},
        "contactors": {"outputs": ["k%d" % i for i in range(N)]},
        "inverter": {"enabled": True, "period_ms": 100},
        "mqtt": {"enabled": mqtt, "control_ttl_s": ttl_s},
    }
    return config.validate(c)


class Rig:
    """A real Gateway (build_gateway, as the device) on the instant RS485 bank of benchrig,
    with a fake CAN inverter reading the 0x351 frames.  frames: shared reply table (two rigs
    given the same dict see the same bank)."""

    def __init__(self, frames, ttl_s=60, warm=True, net=None, tick_start_ms=0):
        self.clock = SimClock(tick_start_ms=tick_start_ms)
        hw = FakeHardware(self.clock, outputs=["k%d" % i for i in range(N)])
        hw.uart = benchrig.InstantUart(frames)
        hw.link_sensor = benchrig.ConstSensor(sum(benchrig.module_data(0)["pack"]["cells_mv"]))
        self.bus = FakeCanBus(self.clock, 500000)
        hw.can_inverter = FakeCan(self.bus, name="gateway")
        self.inv = FakeCan(self.bus, rx_queue_len=64, name="inverter")
        self.hw = hw
        from bankgate.firmware import build_gateway
        self.gw = build_gateway(hw, _cfg(ttl_s, net is not None), net)
        self.rx = bytearray(8)
        self.f351 = None
        if warm:
            self.run_until(lambda: self.gw.admission.admitted_mask == (1 << N) - 1, 40000)

    def step(self):
        self.gw.step()
        self.clock.advance_us(1000)
        while True:
            r = self.inv.recv(self.rx)
            if r < 0:
                break
            if r >> 4 == 0x351:
                self.f351 = bytes(self.rx[:r & 15])

    def run_ms(self, ms):
        """Simulated milliseconds (a loop iteration itself takes simulated wire time)."""
        end = self.clock.now_us + ms * 1000
        while self.clock.now_us < end:
            self.step()

    def run_until(self, pred, limit_ms):
        end = self.clock.now_us + limit_ms * 1000
        while self.clock.now_us < end:
            if pred():
                return
            self.step()
        raise AssertionError("condition not reached in %d ms" % limit_ms)

    def frame_limits_ma(self):
        """(charge, discharge) current limit the inverter was last told, mA (0x351: s16 0.1 A)."""
        f = self.f351
        return (f[2] | f[3] << 8) * 100, (f[4] | f[5] << 8) * 100

    def cmd(self, name, payload):
        gw = self.gw
        nm = name.encode() if isinstance(name, str) else name
        pl = payload.encode() if isinstance(payload, str) else payload
        code, args, reason = cmds.parse(memoryview(nm), memoryview(pl))
        if reason == cmds.OK:
            reason = cmds.execute(gw, code, args, lambda: None, gw.hw.clock.ticks_ms())
        return reason


def _state(gw):
    a = gw.admission
    return (tuple(gw.derate.val), tuple(gw.derate.t_set), a.chg_limit_ma, a.dsg_limit_ma,
            a.admitted_mask, a.faults, tuple(gw.outputs().items()), a.hold_joins)


# ------------------------------------------------------------ each control lowers and expires
def test_charge_and_discharge_caps_lower_the_0x351_limits_and_expire():
    r = Rig(benchrig.build_frames(N), ttl_s=30)
    r.run_ms(300)
    chg0, dsg0 = r.frame_limits_ma()
    assert chg0 > 20000 and dsg0 > 20000, (chg0, dsg0)      # 3 modules x 50 A, share rule
    assert r.cmd("chg_cap_a", '{"value": 12}') == cmds.OK
    assert r.cmd("dsg_cap_a", '{"value": 7}') == cmds.OK
    r.run_ms(300)
    assert r.frame_limits_ma() == (12000, 7000)
    assert r.gw.admission.chg_limit_ma == 12000 and r.gw.admission.dsg_limit_ma == 7000
    assert r.gw.bank_fields(0)["limits"]["chg_ma"] == 12000          # telemetry sees it too
    # a cap above what the BMSes allow changes nothing (min, never a raise)
    assert r.cmd("chg_cap_a", '{"value": %d}' % (chg0 // 1000 + 5)) == cmds.OK
    r.run_ms(300)
    assert r.frame_limits_ma()[0] == chg0, (r.frame_limits_ma(), chg0, r.gw.admission.chg_limit_ma, r.gw.derate.val[0])
    # expiry: 30 s after the last command, back to the BMS values (by design)
    r.run_ms(28000)
    assert r.frame_limits_ma()[1] == 7000, (r.frame_limits_ma(), r.gw.admission.dsg_limit_ma, tuple(r.gw.derate.t_set), r.clock.ticks_ms(), r.gw.admission.admitted_mask, r.gw.derate.expired)
    r.run_ms(2500)
    assert r.frame_limits_ma() == (chg0, dsg0), r.frame_limits_ma()
    assert r.gw.derate.expired == 2 and not r.gw.derate.active()
    assert r.gw.derate.snapshot(0) == {"chg_cap_a": dr.max_amps(r.gw.cfg), "dsg_cap_a": dr.max_amps(r.gw.cfg),
                                       "chg_stop_soc": 100, "dsg_stop_soc": 0, "hold_joins": 0,
                                       "expires_s": 0}


def test_a_refresh_extends_the_control_and_the_off_value_ends_it():
    r = Rig(benchrig.build_frames(N), ttl_s=20)
    chg0 = r.gw.admission.chg_limit_ma
    assert r.cmd("chg_cap_a", '{"value": 5}') == cmds.OK
    r.run_ms(15000)
    assert r.gw.derate.expires_s(r.clock.ticks_ms()) == 5
    assert r.cmd("chg_cap_a", '{"value": 5}') == cmds.OK           # refresh
    r.run_ms(15000)
    assert r.gw.admission.chg_limit_ma == 5000
    assert r.cmd("chg_cap_a", '{"value": %d}' % dr.max_amps(r.gw.cfg)) == cmds.OK   # "off"
    r.run_ms(200)
    assert r.gw.admission.chg_limit_ma == chg0 and not r.gw.derate.active()


def test_soc_stops_zero_the_limit_in_their_direction_and_drop_the_enable_bit():
    r = Rig(benchrig.build_frames(N))
    soc = r.gw.bank.soc_pm                     # the instant bank sits at about 60 %
    assert 550 < soc < 650, soc
    chg0, dsg0 = r.gw.admission.chg_limit_ma, r.gw.admission.dsg_limit_ma
    assert r.cmd("chg_stop_soc", '{"value": %d}' % (soc // 10 + 2)) == cmds.OK   # above: no effect
    assert r.cmd("dsg_stop_soc", '{"value": %d}' % (soc // 10 - 2)) == cmds.OK   # below: no effect
    r.run_ms(300)
    assert r.frame_limits_ma() == (chg0 // 100 * 100, dsg0 // 100 * 100)
    assert r.cmd("chg_stop_soc", '{"value": %d}' % (soc // 10)) == cmds.OK       # SOC >= value
    r.run_ms(300)
    assert r.frame_limits_ma()[0] == 0 and r.gw.admission.chg_limit_ma == 0
    assert r.gw.inverter.enabled_flags & 0xC0 == 0x40                       # discharge only
    assert r.cmd("chg_stop_soc", '{"value": 100}') == cmds.OK                # off
    assert r.cmd("dsg_stop_soc", '{"value": %d}' % (soc // 10 + 1)) == cmds.OK   # SOC <= value
    r.run_ms(300)
    assert r.frame_limits_ma()[1] == 0 and r.frame_limits_ma()[0] > 0
    assert r.gw.inverter.enabled_flags & 0xC0 == 0x80                       # charge only
    assert r.gw.admission.admitted_mask == (1 << N) - 1   # a derate never opens anything


def test_hold_joins_keeps_modules_out_and_leaves_admitted_ones_in():
    frames = benchrig.build_frames(N)
    r = Rig(frames, warm=False)
    assert r.cmd("hold_joins", '{"value": 1}') == cmds.OK
    r.run_ms(5000)                                 # boot hold 0.5 s, dwell 0.2 s: long past
    a = r.gw.admission
    assert a.admitted_mask == 0 and not any(r.gw.outputs().values())
    assert a.mod_reason[0] == 33, a.mod_reason[0]            # CHK_JOIN_HOLD "join_hold"
    assert r.cmd("hold_joins", '{"value": 0}') == cmds.OK
    r.run_until(lambda: a.admitted_mask == (1 << N) - 1, 5000)
    # set while admitted: nothing opens; a module that leaves does not come back while held
    assert r.cmd("hold_joins", '{"value": 1}') == cmds.OK
    r.run_ms(2000)
    assert a.admitted_mask == (1 << N) - 1
    good = frames[3 << 8 | 0x44]
    frames[3 << 8 | 0x44] = benchrig.build_frames(N, alarm_slot=1)[3 << 8 | 0x44]
    r.run_until(lambda: not (a.admitted_mask >> 1) & 1, 3000)
    frames[3 << 8 | 0x44] = good
    r.run_ms(5000)
    assert a.admitted_mask == 0b101 and r.hw.outputs["k1"].value() == 0
    assert r.gw.derate.snapshot(r.clock.ticks_ms())["hold_joins"] == 1
    # hold_joins expires like the others (ttl 60 s): then slot 1 joins again
    r.run_until(lambda: a.admitted_mask == (1 << N) - 1, 70000)
    assert not a.hold_joins


class MainRig:
    """Admission alone, main topology (precharge + main contactor), 3 healthy modules whose
    records are refreshed every step, and a DC-link sensor the test sets."""

    def __init__(self):
        import records
        from bankgate.admission import Admission
        from bankgate.events import EventLog
        from bankgate.model import Bank
        from fakehw import FakeAdc
        self.cfg = config.validate({"bank": {"expected_modules": 3, "addresses": [2, 3, 4]},
                                    "gating": {"topology": "main"},
                                    "contactors": {"outputs": ["main", "pre"]}})
        self.clock = SimClock()
        self.hw = FakeHardware(self.clock, outputs=["main", "pre"])
        self.hw.link_sensor = FakeAdc(0)
        self.bank = Bank()
        for i in range(3):
            records.healthy(self.bank.modules[i], 2 + i, 52000, self.clock.ticks_ms())
        self.a = Admission(self.hw, self.cfg, self.bank, EventLog(64))

    def out(self, name):
        return self.hw.outputs[name].value()

    def run(self, ms, until=None):
        end = self.clock.now_us + ms * 1000
        while self.clock.now_us < end:
            self.clock.advance_us(50000)
            t = self.clock.ticks_ms()
            for i in range(3):
                m = self.bank.modules[i]
                m.t_analog = m.t_alarm = m.t_mgmt = t
            self.a.step(t, 0, 0, True)
            if until is not None and until():
                return True
        return False


def test_main_topology_hold_joins_keeps_the_bank_open_and_a_closed_bank_closed():
    r = MainRig()
    r.a.hold_joins = True
    r.run(8000)                                   # boot hold 2 s + dwell 3 s: long past
    assert r.out("main") == 0 and r.out("pre") == 0 and r.a.admitted == 0
    assert r.a.mod_reason[0] == 33 and r.a.check_names[33] == "join_hold"
    r.a.hold_joins = False
    assert r.run(4000, until=lambda: r.out("pre") == 1)      # dwell, then precharge
    r.hw.link_sensor.mv = 51800
    assert r.run(3000, until=lambda: r.a.admitted == 3)
    assert r.out("main") == 1
    r.a.hold_joins = True                         # a closed bank stays closed
    r.run(5000)
    assert r.a.admitted == 3 and r.out("main") == 1


# ------------------------------------------------------------ refused, nothing changes
def test_out_of_range_and_malformed_commands_are_refused_and_change_nothing():
    r = Rig(benchrig.build_frames(N))
    assert r.cmd("dsg_cap_a", '{"value": 9}') == cmds.OK
    r.run_ms(200)
    mx = dr.max_amps(r.gw.cfg)
    bad = [
        ("chg_cap_a", '{"value": -1}', cmds.E_RANGE),
        ("chg_cap_a", '{"value": %d}' % (mx + 1), cmds.E_RANGE),
        ("dsg_cap_a", '{"value": 1073741823}', cmds.E_RANGE),
        ("chg_stop_soc", '{"value": 101}', cmds.E_RANGE),
        ("dsg_stop_soc", '{"value": -5}', cmds.E_RANGE),
        ("hold_joins", '{"value": 2}', cmds.E_RANGE),
        ("hold_joins", '{"value": true}', cmds.E_FIELD),
        ("chg_cap_a", '{"value": 5.0}', cmds.E_FIELD),
        ("chg_cap_a", '{"value": "5"}', cmds.E_FIELD),
        ("chg_cap_a", '{"value": null}', cmds.E_FIELD),
        ("chg_cap_a", '{"value": 5, "x": 1}', cmds.E_SHAPE),
        ("chg_cap_a", '{"val": 5}', cmds.E_SHAPE),
        ("chg_cap_a", '[5]', cmds.E_SHAPE),
        ("chg_cap_a", '5', cmds.E_SHAPE),
        ("chg_cap_a", '', cmds.E_JSON),
        ("chg_cap_a", '{"value": 5', cmds.E_JSON),
        ("chg_cap_a", b'{"value": \xff}', cmds.E_ENCODING),
        ("chg_cap_a", '{"value": %s}' % ("1" * 300), cmds.E_SIZE),
        ("chg_cap", '{"value": 5}', cmds.E_UNKNOWN),
        ("close", '{"value": 1}', cmds.E_UNKNOWN),
    ]
    for name, payload, want in bad:
        before = _state(r.gw)
        v0 = r.gw.derate.version
        got = r.cmd(name, payload)
        assert got == want, (name, payload, got, want)
        assert _state(r.gw) == before and r.gw.derate.version == v0, (name, payload)
    r.run_ms(200)
    assert r.gw.admission.dsg_limit_ma == 9000


def test_unit_ranges_follow_the_configuration_and_the_wrap():
    cfg = _cfg(ttl_s=10)
    d = dr.Derate(cfg)
    assert d.max_a == N * cfg["gating"]["max_limit_ma"] // 1000
    assert d.set(dr.CHG_CAP, d.max_a, 5) == dr.OK and not d.active()      # off value: nothing
    assert d.set(dr.CHG_STOP, 100, 5) == dr.OK and not d.active()
    assert d.set(dr.DSG_STOP, 0, 5) == dr.OK and not d.active()
    assert d.set(5, 1, 5) == dr.E_UNKNOWN and d.set(-1, 1, 5) == dr.E_UNKNOWN
    # across the 2**30 tick wrap: set just before it, expires exactly ttl later
    t0 = tk.PERIOD - 3000
    assert d.set(dr.DSG_CAP, 4, t0) == dr.OK

    class A:
        hold_joins = False
        chg_limit_ma = 100000
        dsg_limit_ma = 100000
    a = A()
    for dt in (0, 3000, 9999):
        d.step(tk.add(t0, dt), a)
        d.limit(a, 500)
        assert a.dsg_limit_ma == 4000, dt
        a.dsg_limit_ma = 100000
    d.step(tk.add(t0, 10000), a)
    d.limit(a, 500)
    assert a.dsg_limit_ma == 100000 and d.expired == 1
    # a stamp from "the future" (the tick counter restarted) expires at once: safe default
    assert d.set(dr.HOLD, 1, 50000) == dr.OK
    d.step(1000, a)
    assert not a.hold_joins and d.expired == 2
    # the TTL is bounded by the configuration below the clock's saturated age
    assert 86400 * 1000 < tk.AGE_MAX
    e = mptest.raises(config.ConfigError, _cfg, 86401)
    assert "control_ttl_s" in str(e)
    mptest.raises(config.ConfigError, _cfg, 9)


def test_step_and_limit_allocate_nothing():
    r = Rig(benchrig.build_frames(N))
    d = r.gw.derate
    a = r.gw.admission
    now = r.clock.ticks_ms()
    for i, v in ((dr.CHG_CAP, 3), (dr.DSG_CAP, 4), (dr.CHG_STOP, 50), (dr.DSG_STOP, 70), (dr.HOLD, 1)):
        assert d.set(i, v, now) == dr.OK
    mptest.no_alloc(d.step, now, a)
    mptest.no_alloc(d.limit, a, 600)
    assert a.chg_limit_ma == 0 and a.dsg_limit_ma == 0 and a.hold_joins
    mptest.no_alloc(d.step, tk.add(now, 10 ** 6), a)      # everything expires, still no alloc
    assert not a.hold_joins and not d.active()
    # the whole control step with every control in force
    for i, v in ((dr.CHG_CAP, 3), (dr.DSG_STOP, 70), (dr.HOLD, 1)):
        assert d.set(i, v, r.clock.ticks_ms()) == dr.OK
    r.gw._control(r.clock.ticks_ms())
    mptest.no_alloc(r.gw._control, r.clock.ticks_ms())
    assert a.chg_limit_ma == 3000 and a.dsg_limit_ma == 0


# ------------------------------------------------------------ the hostile publisher
class Prng:
    def __init__(self, seed):
        self.s = seed or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n

    def pick(self, seq):
        return seq[self.below(len(seq))]


def _hostile_payload(rnd, mx):
    k = rnd.below(10)
    if k < 5:      # well-formed: in range, at the edges, just outside, far outside
        v = rnd.pick((0, 1, 2, 5, 50, 99, 100, 101, -1, mx - 1, mx, mx + 1, 2 ** 29, -(2 ** 29),
                      rnd.below(mx + 2)))
        return '{"value": %d}' % v
    return rnd.pick(('{"value": true}', '{"value": 1.5}', '{"value": "1"}', '{}', '',
                     '{"value": 1, "force": 1}', '{"value": [1]}', b'\xff\xfe', '{"value": 1',
                     '{"close": 1}', '{"value": 99999999999999999999}', 'null',
                     '{"value": %s}' % ("9" * 280)))


NAMES = dr.NAMES + ("discovery", "ack", "close", "reset", "clear_fault", "chg_cap", "limits", "")


def _hostile_run(seed, steps, latch_at=-1):
    frames_a = benchrig.build_frames(N)
    frames_b = benchrig.build_frames(N)
    hostile = Rig(frames_a, warm=False, ttl_s=10)
    twin = Rig(frames_b, warm=False, ttl_s=10)
    rnd = Prng(seed)
    mx = dr.max_amps(hostile.gw.cfg)
    alarm = benchrig.build_frames(N, alarm_slot=1)[3 << 8 | 0x44]
    good = frames_a[3 << 8 | 0x44]
    accepted = 0
    held_seen = 0
    ha, hb = hostile.gw.admission, twin.gw.admission
    for t in range(steps):
        if rnd.below(40) == 0:
            name = rnd.pick(NAMES)
            payload = _hostile_payload(rnd, mx)
            if name == "hold_joins" and rnd.below(2):
                payload = '{"value": %d}' % rnd.below(3)
            reason = hostile.cmd(name, payload)
            accepted += reason == cmds.OK
        if t % 4000 == 2000:                       # module 1 trips and recovers: leaves, rejoins
            frames_a[3 << 8 | 0x44] = frames_b[3 << 8 | 0x44] = alarm
        elif t % 4000 == 3000:
            frames_a[3 << 8 | 0x44] = frames_b[3 << 8 | 0x44] = good
        if t == latch_at:
            for r in (hostile, twin):
                r.gw.admission._latch(F_WELDED, 0, 0, r.clock.ticks_ms())
        mask0 = ha.admitted_mask
        held = ha.hold_joins
        hostile.step()
        twin.step()
        assert hostile.clock.ticks_ms() == twin.clock.ticks_ms()
        # never above the no-derate value (the twin's), in admission and on the CAN wire
        assert ha.chg_limit_ma <= hb.chg_limit_ma and ha.dsg_limit_ma <= hb.dsg_limit_ma, t
        if ha.admitted_mask == hb.admitted_mask:
            assert ha.chg_v_mv == hb.chg_v_mv and ha.dsg_v_mv == hb.dsg_v_mv, t
        if hostile.f351 is not None and twin.f351 is not None:
            fa, fb = hostile.frame_limits_ma(), twin.frame_limits_ma()
            assert fa[0] <= fb[0] and fa[1] <= fb[1], (t, fa, fb)
        # never closes anything the twin does not, never clears a latch
        oa, ob = hostile.gw.outputs(), twin.gw.outputs()
        for k in oa:
            assert oa[k] <= ob[k], (t, k)
        assert ha.faults & hb.faults == hb.faults, t
        assert ha.admitted_mask & ~hb.admitted_mask == 0, t
        # never admits a module while hold_joins is in force
        if held:
            held_seen += 1
            assert ha.admitted_mask & ~mask0 == 0, (t, mask0, ha.admitted_mask)
    return accepted, held_seen, hostile, twin


def test_hostile_publisher_never_raises_closes_clears_or_admits():
    for seed in (1, 0xBEEF, 12345):
        accepted, held_seen, h, t = _hostile_run(seed, 16000)
        assert accepted > 20 and held_seen > 100, (seed, accepted, held_seen)
        assert h.gw.derate.refused > 0


def test_hostile_publisher_cannot_clear_a_latched_fault():
    accepted, held_seen, h, t = _hostile_run(77, 9000, latch_at=3000)
    assert h.gw.admission.faults == t.gw.admission.faults == 1
    assert not any(h.gw.outputs().values())


def test_hostile_publisher_through_the_mqtt_client():
    # the same commands as PUBLISH packets from a (fake) broker into the real client and
    # Telemetry, as a hostile publisher on the broker would send them; the retained
    # <base>/derate state follows every change
    import json
    import fakemqtt
    base = "bankgate/bankgate"
    t_derate = (base + "/derate").encode()
    t_bank = (base + "/bank").encode()
    t_reply = (base + "/cmd_result").encode()
    retain = {t_derate: set(), t_bank: set()}

    class Broker(fakemqtt.FakeBroker):
        def packet(self, sock, typ, flags, body):
            if typ == 3:                               # note the RETAIN flag of each PUBLISH
                tl = (body[0] << 8) | body[1]
                t = bytes(body[2:2 + tl])
                if t in retain:
                    retain[t].add(flags & 1)
            fakemqtt.FakeBroker.packet(self, sock, typ, flags, body)
    broker = Broker()
    got = {"states": 0, "first": None, "last": None, "range": 0, "ok": 0}   # no growing lists:

    def on_publish(topic, payload):                                 # the heap stays flat
        if topic == t_derate:
            d = json.loads(payload)
            got["states"] += 1
            got["last"] = d
            if got["first"] is None:
                got["first"] = d
        elif topic == t_reply:
            d = json.loads(payload)
            got["range"] += d["reason"] == cmds.E_RANGE
            got["ok"] += d["ok"] and d["cmd"] in dr.NAMES
    broker.on_publish = on_publish
    frames = benchrig.build_frames(N)
    r = Rig(frames, net=fakemqtt.fake_net(broker))
    twin = Rig(benchrig.build_frames(N))
    r.run_until(lambda: r.gw.telemetry.online, 5000)
    rnd = Prng(99)
    mx = dr.max_amps(r.gw.cfg)
    for k in range(400):
        name = rnd.pick(NAMES)
        c = r.gw.telemetry.client
        assert broker.inject(base + "/cmd/" + name, _hostile_payload(rnd, mx)), \
            (k, c.last_error, c.state, c.connects, repr(r.gw.telemetry.last_exception))
        for _ in range(20):
            r.step()
            twin.step()
            a, b = r.gw.admission, twin.gw.admission
            assert a.chg_limit_ma <= b.chg_limit_ma and a.dsg_limit_ma <= b.dsg_limit_ma
            assert a.admitted_mask & ~b.admitted_mask == 0
    tel = r.gw.telemetry
    assert tel.accepted_commands > 20 and tel.rejected_commands > 20
    assert got["states"] > 10
    assert retain[t_derate] == {1}                                # the state is retained
    assert got["first"] == {"chg_cap_a": mx, "dsg_cap_a": mx, "chg_stop_soc": 100, "dsg_stop_soc": 0,
                         "hold_joins": 0, "expires_s": 0}          # at boot: every control off
    last = dict(got["last"])
    now = r.gw.derate.snapshot(r.clock.ticks_ms())
    assert last.pop("expires_s") >= now.pop("expires_s") and last == now
    assert got["range"] > 0 and got["ok"] > 0


def test_every_command_that_can_be_accepted_fits_the_rx_buffer_a_longer_one_is_skipped():
    # heap: Telemetry's MQTT receive buffer is 512 bytes (was 1 KiB; docs/mqtt.md "Commands").
    # Every command that can be accepted fits: a payload of commands.CMD_MAX_BYTES under the
    # longest topic (prefix 32 + gateway_id 32 + "/cmd/" + a 16-character name) is < 400 bytes.
    # A larger payload is refused (E_SIZE, rejected_commands); a PUBLISH longer than the buffer is
    # also skipped unread and counted (client.rx_oversize); the next command is taken.
    import fakemqtt
    base = "bankgate/bankgate"
    broker = fakemqtt.FakeBroker()
    r = Rig(benchrig.build_frames(N), net=fakemqtt.fake_net(broker))
    r.run_until(lambda: r.gw.telemetry.online, 5000)
    tel, c = r.gw.telemetry, r.gw.telemetry.client
    assert len(c.t.rx) == 512 and 5 + 2 + 32 + 1 + 32 + 5 + 16 + cmds.CMD_MAX_BYTES < 400

    def send(payload):
        a0, j0, o0 = tel.accepted_commands, tel.rejected_commands, c.rx_oversize
        assert broker.inject(base + "/cmd/chg_cap_a", payload)
        for _ in range(50):
            r.step()
        return tel.accepted_commands - a0, tel.rejected_commands - j0, c.rx_oversize - o0

    def cap():
        return r.gw.derate.snapshot(r.clock.ticks_ms())["chg_cap_a"]

    big = '{"value": 5' + " " * (cmds.CMD_MAX_BYTES - 12) + "}"
    assert len(big) == cmds.CMD_MAX_BYTES
    assert send(big) == (1, 0, 0) and cap() == 5                       # the largest accepted
    assert send('{"value": 6' + " " * 288 + "}") == (0, 1, 0) and cap() == 5     # E_SIZE
    got = send('{"value": 7' + " " * 588 + "}")
    assert got == (0, 1, 1) and cap() == 5, got        # 600 bytes: skipped unread, refused (E_SIZE)
    assert send('{"value": 8}') == (1, 0, 0) and cap() == 8 and tel.online
