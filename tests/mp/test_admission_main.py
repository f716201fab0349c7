# Admission, main topology (bankgate.admission.mainbus): all or nothing, precharge,
# main, spread, opening under load.  The Rig is tests/support/admrig.py.
# mpy-timeout: 900
# mpy-heapsize: 512k
import random

import mptest
import records
from admrig import (Rig, _blocks, _closed_branch, _main_rig, _no_alloc_run, _quiet, all_closed,
                    healthy, set_mv)
from fakehw import FakeAdc, FakeHardware, SimClock

from bankgate import admission as adm
from bankgate import clock, config
from bankgate.events import (EV_CHECK_FAIL, EV_CONTACTOR, EV_MODULE_STATE, EV_PENDING_LONG,
                             EventLog)
from bankgate.model import ALM_CELL_IMB, ALM_CELL_OV, ALM_CHG_OT, ALM_DSG_OC, Bank


# ------------------------------------------------------------------ main topology
def test_main_precharge_then_main_then_release_precharge():
    r = _main_rig()
    pre = r.hw.outputs["pre"]
    mainp = r.hw.outputs["main"]
    r.run(5200)                                   # boot hold 2 s + dwell 3 s
    assert r.out(1) == 1 and r.out(0) == 0 and r.a.state == adm.BANK_JOINING
    assert r.a.mod_state[0] == adm.MOD_CLOSING
    # the link charges through the precharge resistor
    r.hw.link_sensor.mv = 30000
    r.run(1000)
    assert r.out(0) == 0                          # 22 V away: main stays open
    r.hw.link_sensor.mv = 51800
    assert r.run(500, until=lambda: r.out(0) == 1)
    t_pre = [t for t, v in pre.history if v == 1][0]
    t_main = [t for t, v in mainp.history if v == 1][0]
    assert t_main - t_pre >= r.cfg["gating"]["precharge_min_ms"] * 1000
    r.run(100)
    assert r.out(1) == 0 and r.out(0) == 1        # precharge released after main
    assert r.a.state == adm.BANK_CLOSED and r.a.admitted == 3
    assert r.a.chg_limit_ma == 150000


def test_main_precharge_minimum_time():
    r = _main_rig(over={"gating": {"precharge_min_ms": 1000}})
    r.hw.link_sensor.mv = 52000                   # link already up (inverter holds it)
    assert r.run(8000, until=lambda: r.out(1) == 1)
    t0 = r.clock.ms()
    assert r.run(2000, until=lambda: r.out(0) == 1)
    assert r.clock.ms() - t0 >= 1000


def test_main_precharge_timeout_latches():
    r = _main_rig()
    r.run(5200)
    assert r.out(1) == 1
    r.run(r.cfg["gating"]["precharge_timeout_ms"] + 200)
    assert r.out(0) == 0 and r.out(1) == 0
    assert r.a.faults & adm.F_PRECHARGE and r.a.state == adm.BANK_FAULT
    assert all(r.a.mod_state[i] == adm.MOD_FAULT for i in range(3))
    r.hw.link_sensor.mv = 52000
    r.run(20000)
    assert r.out(0) == 0 and r.out(1) == 0 and r.a.state == adm.BANK_FAULT   # latched
    assert r.a.reset_faults(r.now()) and not r.a.faults
    assert r.run(10000, until=lambda: r.a.state == adm.BANK_CLOSED)


def test_main_all_or_nothing_and_spread():
    r = _main_rig()
    r.m(2).protections = ALM_CELL_OV
    r.hw.link_sensor.mv = 52000
    r.run(15000)
    assert r.out(0) == 0 and r.out(1) == 0
    assert r.a.mod_reason[0] == adm.CHK_BANK_WAIT and r.a.mod_value[0] == 1
    assert r.a.mod_reason[2] == adm.CHK_ALARM
    r.m(2).protections = 0
    set_mv(r.m(2), 52700)                         # hard-paralleled modules 700 mV apart
    r.run(8000)
    assert r.out(1) == 0 and r.a.mod_state[0] == adm.MOD_PENDING
    assert r.a.mod_reason[0] == adm.CHK_SPREAD and r.a.mod_value[0] == 700
    set_mv(r.m(2), 52300)
    assert r.run(10000, until=lambda: r.out(1) == 1)


def test_main_without_sensor_never_closes():
    r = Rig(main=True, sensor=False)
    r.run(15000)
    assert r.out(0) == 0 and r.out(1) == 0 and r.a.mod_reason[0] == adm.CHK_LINK


def _closed_main():
    r = _main_rig(physics=True)
    r.hw.link_sensor.mv = 52000
    assert r.run(10000, until=lambda: r.a.state == adm.BANK_CLOSED)
    return r


def test_main_critical_opens_in_the_same_step():
    r = _closed_main()
    r.m(1).protections = ALM_CELL_OV
    r.clock.advance_us(50000)
    r.step()
    assert r.out(0) == 0 and r.out(1) == 0
    assert r.a.state == adm.BANK_WAITING and r.a.chg_limit_ma == 0


def test_main_opening_under_load_waits_for_current():
    r = _closed_main()
    for i in range(3):
        r.m(i).current_ma = -30000
    r.bus = 5                                     # non-critical: ramp first
    r.run(1000)
    assert r.out(0) == 1 and r.a.ramp_down and r.a.state == adm.BANK_OPENING
    assert r.a.chg_limit_ma == 0 and r.a.dsg_limit_ma == 0
    assert all(r.a.mod_state[i] == adm.MOD_OPENING for i in range(3))
    for i in range(3):
        r.m(i).current_ma = -500                  # 1.5 A total < open_current 2 A
    r.run(60)
    assert r.out(0) == 0 and not r.a.ramp_down
