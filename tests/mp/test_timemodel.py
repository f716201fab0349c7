# The time model (bankgate.clock.hold, docs/architecture.md "Time model"): no age or
# deadline in the device code wraps, for any uptime and any starting tick.  Multi-day
# runs step admission every minute (or hour) of simulated time on the Rig of
# test_admission.py, the device tick counter starting where each test says.  The
# whole-gateway version over three tick wraps is tools/rigs/longrun.py
# (tests/host/test_longrun.py).
# mpy-timeout: 900
# mpy-heapsize: 2m
import mptest
from fakehw import FakeHardware, SimClock

import test_admission as ta
from bankgate import admission as adm
from bankgate import clock, config
from bankgate.contactor import F_FAIL_CLOSE, F_WELD_CURRENT
from bankgate.events import EventLog
from bankgate.model import ALM_CELL_OV, Bank

DAY = 86400000
HOUR = 3600000
HALF = 1 << 29
MASK = (1 << 30) - 1


def rig(tick_start_ms=0, **kw):
    """test_admission.Rig on a device clock that starts at tick_start_ms."""
    saved = ta.SimClock
    ta.SimClock = lambda: SimClock(tick_start_ms=tick_start_ms)
    try:
        return ta.Rig(**kw)
    finally:
        ta.SimClock = saved


# ---------------------------------------------------------------- clock helpers
def test_hold_keeps_young_stamps_and_saturates_old_ones():
    for now in (0, 5, HALF - 1, HALF, HALF + 1, MASK - 60000, MASK):
        for age in (0, 1, 1000, clock.AGE_MAX - 1):
            t = clock.add(now, -age)
            assert clock.hold(now, t) == t, (now, age)
        for age in (clock.AGE_MAX, clock.AGE_MAX + 1, HALF - 1, HALF, HALF + clock.AGE_MAX - 1):
            t = (now - age) & MASK
            h = clock.hold(now, t)
            assert clock.diff(now, h) == clock.AGE_MAX, (now, age, h)
        # a little in the future (a frame stamped after the caller read the clock): kept
        t = clock.add(now, 5)
        assert clock.hold(now, t) == t
        assert clock.hold(now, -1) == -1        # a sentinel stays


def test_hold_range_in_place_and_allocation_free():
    import array
    now = MASK - 10
    a = array.array("i", [now, clock.add(now, -clock.AGE_MAX), (now - HALF) & MASK, -1, 7])
    mptest.no_alloc(clock.hold_range, now, a, 0, 9)     # j clipped to len(a)
    assert a[0] == now and a[3] == -1
    for k in (1, 2):
        assert clock.diff(now, a[k]) == clock.AGE_MAX
    assert a[4] == 7         # 2**30 - 18 ms old reads as 18 ms ahead: kept (a stamp never gets
    #                          that old: the aging passes hold it long before)
    old = (now - HALF) & MASK
    assert mptest.no_alloc(clock.hold, now, old) == clock.add(now, -clock.AGE_MAX)
    assert mptest.no_alloc(clock.pass_due, now, now) is False
    assert clock.pass_due(now, clock.add(now, -clock.AGE_PASS_MS)) is True
    assert clock.pass_due(now, clock.add(now, 100)) is True    # ahead: the clock restarted


def test_every_configured_time_limit_is_below_age_max():
    # hold() saturates an age at AGE_MAX: right only while every limit is below it
    n = 0
    for sec, fields in config.SCHEMA.items():
        if not isinstance(fields, dict):
            continue
        for name, spec in fields.items():
            if name.endswith("_ms") and isinstance(spec, tuple) and spec[0] == "int":
                n += 1
                assert spec[3] < clock.AGE_MAX, (sec, name, spec[3])
    assert n >= 20
    assert clock.AGE_MAX + clock.AGE_SWEEP_MS < HALF


# ---------------------------------------------------------------- admission over days
def _silent_module_never_closes(tick_start_ms):
    r = rig(tick_start_ms)
    assert r.run(30000, until=lambda: ta.all_closed(r))
    r.run(int(3.1 * DAY) - r.clock.ms(), period=60000)
    assert ta.all_closed(r)
    r.frozen = 1                     # slot 0's BMS stops answering at day 3.1
    t_silent = r.clock.ms()
    limit = r.cfg["gating"]["max_age_ms"] + 2 * r.cfg["control"]["period_ms"]
    r.run(limit, period=50)
    assert r.out(0) == 0
    # (its BMS drains meanwhile; the gateway's record keeps the last data it heard)

    def closed():
        return r.out(0) == 1 or r.a.mod_state[0] == adm.MOD_ADMITTED
    # 13 days of device time, a control step every minute: never closed, never admitted
    assert not r.run(13 * DAY - r.clock.ms(), period=60000, until=closed), \
        "silent module closed at day %.2f on data %.2f days old" % (
            r.clock.ms() / DAY, (r.clock.ms() - t_silent) / DAY)
    # stale, with the saturated age (the round-robin pass holds slot 0 every 17 steps)
    v = r.a.mod_value[0]
    assert r.a.mod_reason[0] == adm.CHK_STALE, r.a.mod_reason[0]
    assert clock.AGE_MAX <= v <= clock.AGE_MAX + 17 * 60000, v
    # the others stayed closed throughout
    assert r.out(1) == 1 and r.out(2) == 1


def test_silent_module_never_closes_over_13_days():
    # issue 14: a module silent since day 3.1 was closed at day 12.5 on 9-day-old data
    _silent_module_never_closes(0)


def test_silent_module_never_closes_started_past_half_period():
    _silent_module_never_closes(HALF + 1)


def _rejoin_after_alarm(r, day):
    r.run(int(day * DAY) - r.clock.ms(), period=HOUR // 4)
    assert ta.all_closed(r), (day, r.a.bank_reason)
    r.m(1).alarms = ALM_CELL_OV
    r.run(200)
    assert r.out(1) == 0
    r.m(1).alarms = 0
    ok = r.run(30000, until=lambda: ta.all_closed(r))
    assert ok, "module 1 did not rejoin at day %.1f: reason %d value %d bank %d %d" % (
        day, r.a.mod_reason[1], r.a.mod_value[1], r.a.bank_reason, r.a.bank_value)


def test_module_rejoins_after_an_alarm_in_every_window():
    # issue 14: from day 6.2 to 12.4 of every 12.4-day cycle the boot hold blocked joins
    r = rig(0)
    assert r.run(30000, until=lambda: ta.all_closed(r))
    for day in (1, 5, 6.3, 8, 11, 12.3, 13, 19, 25.5):
        _rejoin_after_alarm(r, day)


def test_rejoin_after_alarm_started_just_before_a_wrap():
    r = rig(MASK + 1 - 60000)
    assert r.run(30000, until=lambda: ta.all_closed(r))
    for day in (0.01, 3, 6.3, 7):
        _rejoin_after_alarm(r, day)


def test_feedback_fault_latches_after_days_closed():
    # the feedback check counts a late disagreement from now; with a command stamp
    # older than 2**29 ms its wrapped age read "just commanded" and the fault waited
    r = rig(0, fb=True)
    assert r.run(30000, until=lambda: ta.all_closed(r))
    r.run(7 * DAY - r.clock.ms(), period=60000)
    assert ta.all_closed(r)
    r.fb_follow[0] = False
    r.hw.inputs["fb_k1"].value(0)           # the contact drops out by itself
    r.run(r.cfg["contactors"]["feedback_ms"] + 200)
    assert r.a.faults & F_FAIL_CLOSE, r.a.faults
    assert r.out(0) == 0 and r.out(1) == 0 and r.out(2) == 0


def test_measured_weld_detected_days_after_the_open():
    # a sample taken after the open command (t_analog - t_cmd > feedback_ms) with current
    # through the opened branch is a weld, however long ago the open was
    r = rig(0)
    assert r.run(30000, until=lambda: ta.all_closed(r))
    r.m(0).alarms = ALM_CELL_OV               # module 0 opens and stays out
    r.run(1000)
    assert r.out(0) == 0
    r.run(int(7.5 * DAY) - r.clock.ms(), period=60000)
    r.m(0).current_ma = 20000                 # current through the open branch: welded
    r.run(r.cfg["contactors"]["weld_confirm_ms"] + 500)
    assert r.a.faults & F_WELD_CURRENT, r.a.faults


def test_admission_aging_step_allocation_free():
    r = rig(HALF + 1)
    assert r.run(30000, until=lambda: ta.all_closed(r))
    a = r.a
    now = clock.add(r.now(), 5 * DAY)          # every stamp older than AGE_MAX
    for _ in range(20):
        mptest.no_alloc(a._age, now)
    for i in range(3):
        assert clock.diff(now, r.m(i).t_analog) == clock.AGE_MAX
        assert clock.diff(now, a.ct.t_cmd[i]) == clock.AGE_MAX
    assert clock.diff(now, a.t_boot) == clock.AGE_MAX


# ---------------------------------------------------------------- every timer starts at now
def test_poller_polls_at_once_at_any_starting_tick():
    # issue 14: a gateway started at ticks >= 2**29 (a soft reset after 6.2 days of
    # uptime) did not poll until the ticks wrapped: its first deadline was tick 0
    from bms_stub import Rig
    for start in (0, HALF - 1, HALF + 1, MASK + 1 - 60000, MASK):
        r = Rig(addresses=(2, 3), health=False, tick_start_ms=start)
        r.poller.service(r.clock.ticks_ms())
        assert r.poller.busy(), "no request at tick %d" % start
        r.run_sweeps(2, limit_ms=60000)
        assert r.bank.modules[1].analog_valid, start


def test_sim_clock_ticks_start_and_stay_small():
    c = SimClock(tick_start_ms=MASK - 1)
    assert c.ticks_ms() == MASK - 1 and c.ticks_us() == ((MASK - 1) * 1000) & MASK
    c.advance_us(3000)
    assert c.ticks_ms() == 1
    c.advance_us(2000 * 1000 * 1000)          # 2000 s: now_us is past 2**30
    assert c.ticks_ms() == (MASK - 1 + 2000003) & MASK
    assert c.ticks_us() == ((MASK - 1) * 1000 + c.now_us) & MASK
    assert mptest.no_alloc(c.ticks_ms) == c.ticks_ms()
    assert mptest.no_alloc(c.ticks_us) == c.ticks_us()
    c.set_ticks_ms(0)                          # a hard reset: the counters restart
    assert c.ticks_ms() == 0 and c.ticks_us() == 0
    c.advance_us(1500)
    assert c.ticks_ms() == 1 and c.ticks_us() == 1500
    mptest.raises(ValueError, c.set_ticks_ms, 1 << 30)
    mptest.raises(ValueError, SimClock, 0, 1 << 30)
    mptest.raises(ValueError, SimClock, 0, -1)


def test_hold_intermediates_are_esp32_small_ints():
    from checkedint import CheckedInt
    edges = (0, 1, HALF - 1, HALF, HALF + 1, MASK - 1, MASK)
    for now in edges:
        for t in edges + (clock.AGE_MAX, MASK - clock.AGE_MAX):
            h = clock.hold(CheckedInt(now), CheckedInt(t))
            assert 0 <= int(h) <= MASK


def test_every_aging_pass_of_the_gateway_is_allocation_free():
    import longrun
    from bgsim import runner
    from bgsim import scenario as sc
    sim = runner.Simulation(sc.validate(longrun.scenario(3, HALF + 1)), out=lambda d: None)
    gw = sim.gw
    while sim.clock.now_us < 5000000:
        w = gw.step()
        sim.hw.idle(w if w else 1)
    assert gw.diagnoser._started
    now = clock.add(sim.hw.clock.ticks_ms(), 4 * DAY)
    for k in range(20):
        t = clock.add(now, k * clock.AGE_PASS_MS)
        mptest.no_alloc(gw.admission._age, t)
        mptest.no_alloc(gw.poller._age, t)
        mptest.no_alloc(gw.diagnoser._age, t)
    assert clock.diff(t, gw.poller._t_next) <= clock.AGE_MAX
    assert clock.diff(t, gw.diagnoser._t_start) == clock.AGE_MAX
    assert clock.diff(t, gw.admission.t_boot) == clock.AGE_MAX
