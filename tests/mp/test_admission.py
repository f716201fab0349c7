# Admission: the shared Rig (a configured Admission on fake hardware), the happy path,
# zero allocation, and a fuzz that no step closes unless every check holds.  The tests
# of each part of the package are beside it: test_admission_rules.py (checks),
# test_admission_branch.py, test_admission_main.py (topologies), test_admission_core.py.
# The Rig and its helpers live in tests/support/admrig.py (re-exported here for the test
# files that import them from test_admission).
# mpy-timeout: 900
# mpy-heapsize: 512k
import random

import mptest
import records
from admrig import (Rig, _blocks, _closed_branch, _main_rig, _merge, _no_alloc_run,  # noqa: F401
                    _quiet, all_closed, healthy, set_mv)
from fakehw import FakeAdc, FakeHardware, SimClock

from bankgate import admission as adm
from bankgate import clock, config
from bankgate.events import (EV_CHECK_FAIL, EV_CONTACTOR, EV_MODULE_STATE, EV_PENDING_LONG,
                             EventLog)
from bankgate.model import ALM_CELL_IMB, ALM_CELL_OV, ALM_CHG_OT, ALM_DSG_OC, Bank


# ------------------------------------------------------------------ happy path
def test_healthy_branch_bank_joins_one_per_dwell():
    r = Rig()
    r.run(1500)
    assert r.a.state == adm.BANK_BOOT and r.a.bank_reason == adm.CHK_BOOT_HOLD
    assert r.a.admitted == 0 and r.a.expected == 3
    assert r.run(20000, until=lambda: all_closed(r))
    t = sorted(r.close_times(i)[0] for i in range(3))
    dwell = r.cfg["gating"]["dwell_ms"]
    assert t[0] >= r.cfg["control"]["boot_hold_ms"] + dwell
    assert t[1] - t[0] >= dwell and t[2] - t[1] >= dwell
    assert r.a.admitted == 3 and r.a.admitted_mask == 7 and r.a.expected_mask == 7
    assert r.a.chg_limit_ma == 3 * 50000 and r.a.dsg_limit_ma == 3 * 100000
    assert r.a.chg_v_mv == 53500 and r.a.dsg_v_mv == 47000
    assert not r.a.ramp_down
    snap = r.a.snapshot()
    assert snap["state"] == "closed" and snap["admitted"] == 3 and snap["outputs"] == [1, 1, 1]


def test_degraded_reports_admitted_of_expected():
    r = Rig()
    r.m(2).analog_valid = False                  # seed: "one module stays offline"
    r.run(20000)
    assert r.a.state == adm.BANK_DEGRADED
    assert (r.a.admitted, r.a.expected) == (2, 3)
    assert r.a.mod_state[2] == adm.MOD_ABSENT and r.a.mod_reason[2] == adm.CHK_ABSENT
    assert r.a.chg_limit_ma == 2 * 50000       # only admitted modules count


# ------------------------------------------------------------------ zero allocation
def test_step_allocates_nothing_branch():
    r = Rig(physics=True, over={"gating": {"pending_event_ms": 1000}}, n=4,
            fb=False)
    _quiet(r)
    set_mv(r.m(3), 53500)                         # pending, raises EV_PENDING_LONG
    r.m(3).alarms = 0
    _no_alloc_run(r, 16000)                       # boot hold, dwell, closes, events
    assert r.a.admitted == 3 and r.a.mod_state[3] == adm.MOD_PENDING
    assert r.events(EV_PENDING_LONG)
    for i in range(3):
        r.m(i).current_ma = -20000
    r.m(0).mgmt_valid = False                     # ramp-down path
    _no_alloc_run(r, 1000)
    assert r.a.ramp_down
    r.m(1).protections = ALM_CELL_OV              # critical path
    _no_alloc_run(r, 200)
    r.bus = 4
    _no_alloc_run(r, 500)
    assert r.a.admitted < 3


def test_step_allocates_nothing_main_and_faults():
    r = _main_rig(fb=True)
    r.fb_delay_us = 0
    _quiet(r)
    r.hw.link_sensor.mv = 52000
    _no_alloc_run(r, 10000)
    assert r.a.state == adm.BANK_CLOSED
    r.fb_follow[0] = False                        # main contact stays closed after open
    r.m(0).protections = ALM_CELL_OV
    _no_alloc_run(r, 1000)
    assert r.a.faults & adm.F_WELDED and r.a.state == adm.BANK_FAULT


# ------------------------------------------------------------------ fuzz
def _oracle_ok(r, i, now):
    """Independent statement of 'every check holds' for slot i (branch)."""
    a = r.a
    m = r.m(i)
    g = r.cfg["gating"]
    if a.faults or r.bus or (r.idm >> i) & 1:
        return False
    if clock.diff(now, a.t_boot) < r.cfg["control"]["boot_hold_ms"]:
        return False
    if not (m.addr == 2 + i and m.seen and m.analog_valid and m.alarm_valid and m.mgmt_valid
            and m.id_valid):
        return False
    for t in (m.t_analog, m.t_alarm):
        if clock.diff(now, t) > g["max_age_ms"]:
            return False
    if clock.diff(now, m.t_mgmt) > g["limits_max_age_ms"]:
        return False
    if (m.alarms & g["critical_alarms"]) or m.protections:   # a protection always blocks
        return False
    for lim in (m.chg_limit_ma, m.dsg_limit_ma):
        if not 0 <= lim <= g["max_limit_ma"]:
            return False
    if m.chg_limit_ma == 0 and m.dsg_limit_ma == 0:
        return False
    if m.sw_version != 0x0102 or m.n_cells != 15:
        return False
    if not g["module_mv_min"] <= m.voltage_mv <= g["module_mv_max"]:
        return False
    if not g["soc_min_pm"] <= m.soc_pm <= g["soc_max_pm"]:
        return False
    for k in range(m.n_cells):
        if not 2000 <= m.cell_mv[k] <= 3800:
            return False
    vl = r.hw.link_sensor.mv
    if vl < 0:
        return False
    dv = m.voltage_mv - vl
    if abs(dv) > g["max_dv_mv"]:
        return False
    ip = abs(dv) * 1000 // g["loop_resistance_mohm"]
    lim = m.dsg_limit_ma if dv > 0 else m.chg_limit_ma
    if lim < g["min_limit_ma"]:
        lim = 0
    return ip <= g["max_inrush_ma"] and ip <= lim


def _mutate(r, rnd):
    """Change one input: mostly back to a good value, sometimes to a bad one."""
    k = rnd(15)
    i = rnd(3)
    m = r.m(i)
    bad = rnd(3) == 0
    if k == 0:
        m.analog_valid = not bad
    elif k == 1:
        m.alarm_valid = not bad
    elif k == 2:
        m.mgmt_valid = not bad
    elif k == 3:
        m.protections = (1 << rnd(12)) if bad else 0
    elif k == 4:
        m.alarms = (1 << rnd(12)) if bad else 0
    elif k == 5:
        set_mv(m, 51200 + rnd(1800))
    elif k == 6:
        r.hw.link_sensor.mv = (-1, 0, 51500 + rnd(1000))[rnd(3)] if bad else 52000
    elif k == 7:
        r.bus = 1 + rnd(3) if bad else 0
    elif k == 8:
        r.idm = (1 << rnd(3)) if bad else 0
    elif k == 9:
        r.frozen = (1 << rnd(3)) if bad else 0
    elif k == 10:
        m.chg_limit_ma = (0, 500, 10000, 900000)[rnd(4)] if bad else 50000
        m.dsg_limit_ma = (0, 2000, 100000)[rnd(3)] if bad else 100000
    elif k == 11:
        m.soc_pm = (40, 990)[rnd(2)] if bad else 580 + rnd(40)
    elif k == 12:
        m.addr = (9, -1, 2 + (i + 1) % 3)[rnd(3)] if bad else 2 + i
    elif k == 13:
        m.sw_version = 0x0103 if bad else 0x0102
        m.id_valid = not (bad and rnd(2))
    else:
        m.cell_mv[rnd(15)] = 4000 if bad else m.voltage_mv // 15


def test_fuzz_never_closes_unless_every_check_holds():
    random.seed(12345)
    rnd = random.getrandbits

    def rn(n):
        return random.randrange(n)

    over = {"gating": {"dwell_ms": 200, "soc_spread_pm": 1000}, "control": {"boot_hold_ms": 500}}
    r = Rig(over=over)
    closes = 0
    critical_opens = 0
    dwell_from = [-1, -1, -1]                    # observed: DWELL since (ms), -1 not dwelling
    for step in range(4000):
        if rn(4) == 0:
            _mutate(r, rn)
        if rn(25) == 0:                            # a module (or the bus) recovers wholly
            k = rn(4)
            if k == 3:
                r.bus = r.idm = r.frozen = 0
                r.hw.link_sensor.mv = 52000
            else:
                healthy(r.m(k), 2 + k, 51800 + rn(400), r.now(), 580 + rn(40))
        r.clock.advance_us(50000)
        r.refresh()
        before = [r.a.ct.cmd[i] for i in range(3)]
        now = r.now()
        r.a.step(now, r.bus, r.idm, r.inv)
        for i in range(3):
            if r.a.ct.cmd[i] and not before[i]:
                closes += 1
                assert _oracle_ok(r, i, now), (step, i)
                assert r.out(i) == 1
                assert dwell_from[i] >= 0 and r.clock.ms() - dwell_from[i] >= 200, (step, i)
            m = r.m(i)
            # an over-current WARNING (gating.derate_alarms, 0x0300) does not open a branch
            # that was closed; it still keeps an open one out (_oracle_ok)
            al = m.alarms & ~0x0300 if before[i] else m.alarms
            crit = (not m.analog_valid or m.addr != 2 + i or (r.idm >> i) & 1 or not m.alarm_valid
                    or al & 0x07FF or m.protections
                    or clock.diff(now, m.t_analog) > r.cfg["gating"]["max_age_ms"])
            if crit:
                if before[i]:
                    critical_opens += 1
                assert r.out(i) == 0 and not r.a.ct.cmd[i], (step, i)
            assert r.out(i) == r.a.ct.cmd[i]
        for i in range(3):
            if r.a.mod_state[i] != adm.MOD_DWELL:
                dwell_from[i] = -1
            elif dwell_from[i] < 0:
                dwell_from[i] = r.clock.ms()
        if r.a.admitted == 0 or r.a.ramp_down:
            assert r.a.chg_limit_ma == 0 and r.a.dsg_limit_ma == 0
        assert r.a.admitted == sum(1 for i in range(3) if r.a.mod_state[i] == adm.MOD_ADMITTED)
    print("closes", closes, "critical opens", critical_opens)
    assert closes > 20 and critical_opens > 5     # the fuzz did exercise both
    _ = rnd
