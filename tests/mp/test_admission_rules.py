# Admission, the read-only checks (bankgate.admission.rules): every check code blocks
# what it must, in its order, with its value; identity judged only on what was read.
# The Rig is tests/support/admrig.py.
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


# ------------------------------------------------------------------ each check
def test_check_absent():
    _blocks(lambda r: setattr(r.m(1), "analog_valid", False), adm.CHK_ABSENT)


def test_check_address_not_approved():
    r = _blocks(lambda r: setattr(r.m(1), "addr", 9), adm.CHK_ADDR)
    assert r.a.mod_value[1] == 9


def test_check_stale():
    def f(r):
        r.frozen = 2
    r = _blocks(f, adm.CHK_STALE)
    assert r.a.mod_value[1] > r.cfg["gating"]["max_age_ms"]


def test_check_identity_fault_mask():
    def f(r):
        r.idm = 1 << 1
    _blocks(f, adm.CHK_ID_FAULT)


def test_check_no_alarm_data():
    r = _blocks(lambda r: setattr(r.m(1), "alarm_valid", False), adm.CHK_NO_ALARM_DATA)
    assert r.a.mod_state[1] == adm.MOD_CHECKING


def test_check_critical_alarm_and_protection():
    r = _blocks(lambda r: setattr(r.m(1), "alarms", ALM_CHG_OT), adm.CHK_ALARM)
    assert r.a.mod_value[1] == ALM_CHG_OT
    _blocks(lambda r: setattr(r.m(1), "protections", ALM_CELL_OV), adm.CHK_ALARM)


def test_protection_opens_whatever_the_critical_mask():
    # issue 16: critical_alarms narrows WARNING bits only; a BMS protection (trip) with
    # a bit outside the mask still blocks a join and opens a closed branch at once
    r = Rig(over={"gating": {"critical_alarms": 0x04FF}})
    assert r.run(20000, until=lambda: all_closed(r))
    r.m(1).protections = ALM_CELL_IMB              # outside the mask (0x0800)
    r.step()
    assert r.out(1) == 0 and r.a.mod_reason[1] == adm.CHK_ALARM
    assert r.a.mod_value[1] == ALM_CELL_IMB
    r.m(1).protections = 0
    r.m(2).protections = 0x0100                    # over-current trip, not in the mask
    r.step()
    assert r.out(2) == 0 and r.a.mod_reason[2] == adm.CHK_ALARM


def test_non_critical_alarm_does_not_block():
    r = Rig()
    r.m(1).alarms = ALM_CELL_IMB                 # not in the default critical mask
    assert r.run(20000, until=lambda: all_closed(r))


def test_check_bus_fault_blocks_everyone():
    def f(r):
        r.bus = 3
    r = _blocks(f, adm.CHK_BUS, slot=0, everyone=True)
    assert r.a.mod_value[0] == 3 and r.a.bank_reason == adm.CHK_BUS
    assert r.a.state == adm.BANK_WAITING


def test_degraded_bus_blocks_joins_but_keeps_closed_modules():
    # termination suspect / wiring noise: nothing new joins; closed modules stay
    r = _blocks(lambda r: setattr(r.a, "bus_join_block", 1), adm.CHK_BUS, slot=0, everyone=True)
    assert r.a.mod_value[0] == 1
    r = Rig()
    assert r.run(20000, until=lambda: all_closed(r))
    r.a.bus_join_block = 2
    r.run(5000)
    assert all_closed(r) and r.a.ramp_down is False


def test_check_inverter_heartbeat_when_required():
    def f(r):
        r.inv = False
    _blocks(f, adm.CHK_INVERTER, slot=0, everyone=True, over={"inverter": {"require_heartbeat": True}})
    r = Rig()                                     # not required: ignored
    r.inv = False
    assert r.run(20000, until=lambda: all_closed(r))


def test_check_limits_missing_and_implausible():
    r = _blocks(lambda r: setattr(r.m(1), "mgmt_valid", False), adm.CHK_NO_LIMITS)
    assert r.a.mod_state[1] == adm.MOD_CHECKING
    _blocks(lambda r: setattr(r.m(1), "dsg_limit_ma", 600000), adm.CHK_LIMITS)   # > max_limit_ma
    _blocks(lambda r: setattr(r.m(1), "chg_limit_ma", -5000), adm.CHK_LIMITS)    # wrong sign

    def both_zero(r):
        r.m(1).chg_limit_ma = 0
        r.m(1).dsg_limit_ma = 0
    _blocks(both_zero, adm.CHK_LIMITS)


def test_full_module_with_zero_charge_limit_may_join_when_discharging():
    # 0 = direction disabled (a full module), plausible; it may join only when it
    # would discharge into the bus, never be charged by it
    r = Rig()
    m = r.m(1)
    m.chg_limit_ma = 0
    set_mv(m, 51900)                              # below the link: would be charged
    r.run(15000)
    assert not r.close_times(1) and r.a.mod_reason[1] == adm.CHK_MOD_LIMIT
    set_mv(m, 52100)                              # above the link: would discharge
    assert r.run(10000, until=lambda: r.out(1) == 1)


def test_tapering_limit_below_min_limit_keeps_closed_module_and_stops_joins():
    # issue 15: a BMS tapers its charge limit to 0 at the end of charge, passing through
    # 0 < limit < min_limit_ma (1 A): normal, not implausible.  Closed modules stay closed
    # (no ramp-down), the combined charge limit follows the BMSes down to 0, and a module
    # at 900 mA cannot be charged through a join (it may still discharge into the bus).
    r = _closed_branch()
    for i in range(3):
        r.m(i).chg_limit_ma = 900
    r.run(3000)
    assert all_closed(r) and not r.a.ramp_down and r.a.state == adm.BANK_CLOSED
    assert 0 < r.a.chg_limit_ma <= 3 * 900 and r.a.dsg_limit_ma > 0
    for i in range(3):
        assert r.a.mod_reason[i] == 0, adm.CHECK_NAMES[r.a.mod_reason[i]]
    for i in range(3):
        r.m(i).chg_limit_ma = 0
    r.run(3000)
    assert all_closed(r) and r.a.chg_limit_ma == 0 and r.a.dsg_limit_ma > 0
    r2 = Rig()
    r2.m(1).chg_limit_ma = 900
    set_mv(r2.m(1), 51950)                        # 50 mV below the link: would be charged 2 A
    r2.run(15000)
    assert not r2.close_times(1) and r2.a.mod_reason[1] == adm.CHK_MOD_LIMIT
    assert r2.a.admitted == 2


def test_check_old_limits_count_as_missing():
    r = Rig(over={"gating": {"limits_max_age_ms": 1000}})
    r.mgmt_frozen = 2                             # 0x92 no longer refreshed for slot 1
    r.run(12000)
    assert not r.close_times(1) and r.a.admitted == 2
    assert r.a.mod_reason[1] == adm.CHK_NO_LIMITS and r.a.mod_value[1] > 1000


def test_check_identity_missing_model_firmware():
    r = _blocks(lambda r: setattr(r.m(1), "id_valid", False), adm.CHK_NO_ID)
    assert r.a.mod_state[1] == adm.MOD_CHECKING

    def other_model(r):
        r.m(1).model[:7] = b"US2000B"
    _blocks(other_model, adm.CHK_MODEL, over={"bank": {"approved_models": ["US3000C"]}})
    # padding in the record does not matter
    r = Rig(over={"bank": {"approved_models": ["US3000C"]}})
    r.m(0).model[7:10] = b"  \x00"
    r.m(0).model_len = 10
    assert r.run(20000, until=lambda: all_closed(r))
    _blocks(lambda r: None, adm.CHK_FIRMWARE_MIN, slot=0, everyone=True,
            over={"bank": {"firmware_min": 0x0200}})
    _blocks(lambda r: setattr(r.m(1), "sw_version", 0x0103), adm.CHK_FIRMWARE_SAME)


def test_firmware_same_can_be_disabled():
    r = Rig(over={"bank": {"firmware_same": False}})
    r.m(1).sw_version = 0x0105
    assert r.run(20000, until=lambda: all_closed(r))


def test_check_cells_chemistry_nominal():
    def cells(r):
        r.m(1).n_cells = 16
    _blocks(cells, adm.CHK_CELLS)

    def nmc_cell(r):
        r.m(1).cell_mv[3] = 4100                 # no LFP cell reads 4.1 V
    r = _blocks(nmc_cell, adm.CHK_CHEMISTRY)
    assert r.a.mod_value[1] == 4100
    _blocks(lambda r: setattr(r.m(1), "cell_hi_mv", 4200), adm.CHK_CHEMISTRY)
    # cells x chemistry nominal far from nominal_mv: the validator refuses such a
    # configuration; admission checks it again (belt and braces)
    r = Rig()
    cfg = r.cfg
    cfg["bank"]["nominal_mv"] = 24000
    hw = FakeHardware(SimClock(), outputs=r.outs)
    hw.link_sensor = FakeAdc(52000)
    a = adm.Admission(hw, cfg, r.bank, EventLog())
    hw.clock.advance_us(10000000)
    for i in range(3):
        healthy(r.m(i), 2 + i, 52000, hw.clock.ticks_ms())
    a.step(hw.clock.ticks_ms(), 0, 0, True)
    assert a.mod_reason[0] == adm.CHK_NOMINAL and a.mod_value[0] == 15 * 3200


def test_check_parallel_count():
    def extra(r):
        healthy(r.m(5), 7, 52000, r.now())     # a fourth module answers
    r = _blocks(extra, adm.CHK_PARALLEL, slot=0, everyone=True)
    assert r.a.mod_value[0] == 4


def test_check_voltage_soc_range():
    r = _blocks(lambda r: set_mv(r.m(1), 43000), adm.CHK_VOLTAGE, rig_kw={})
    assert r.a.mod_value[1] == 43000
    _blocks(lambda r: setattr(r.m(1), "soc_pm", 20), adm.CHK_SOC)


def test_check_soc_spread_against_admitted():
    def f(r):
        r.m(1).soc_pm = 900                       # 300 permille above the others
        set_mv(r.m(1), 52200)                     # larger dV: joins last
    r = _blocks(f, adm.CHK_SOC_SPREAD)
    assert r.a.mod_value[1] == 300


def test_check_link_unknown_without_sensor():
    r = _blocks(lambda r: None, adm.CHK_LINK, slot=0, everyone=True, rig_kw={"sensor": False})
    assert r.a.mod_state[0] == adm.MOD_BLOCKED and r.a.bank.link_mv == -1


def test_no_sensor_first_module_only_onto_isolated_link():
    r = Rig(sensor=False)
    set_mv(r.m(0), 52300)
    set_mv(r.m(1), 52100)
    set_mv(r.m(2), 53000)                         # 800 mV from the others
    r.run(8000)
    assert r.a.admitted == 0                     # never blind
    r.hw.inputs["iso"].value(1)
    r = Rig(sensor=False, over={"contactors": {"link_isolated_input": "iso"}})
    set_mv(r.m(0), 52300)
    set_mv(r.m(1), 52100)
    set_mv(r.m(2), 53000)
    r.run(8000)
    assert r.a.admitted == 0                     # input says "not isolated"
    r.hw.inputs["iso"].value(1)
    r.run(20000)
    # one module closed onto the isolated link, the second gated against it,
    # the third pending (800/700 mV away from the admitted ones)
    assert r.a.admitted == 2 and r.a.mod_state[2] == adm.MOD_PENDING
    assert r.a.mod_reason[2] == adm.CHK_DV


def test_boot_hold_blocks():
    r = Rig()
    r.run(1900)
    assert r.a.mod_reason[0] == adm.CHK_BOOT_HOLD and r.a.state == adm.BANK_BOOT
    assert not any(r.close_times(i) for i in range(3))


def test_identity_without_the_manufacturer_info_is_no_identity_not_model():
    # the serial number (0x93) answered but the manufacturer info (0x51: model, firmware)
    # was lost: id_valid is set, the model is empty and the version unknown (-1)
    def serial_only(r):
        m = r.m(1)
        m.model_len = 0
        m.sw_version = -1
    r = _blocks(serial_only, adm.CHK_NO_ID, over={"bank": {"approved_models": ["US3000C"]}})
    assert r.a.mod_state[1] == adm.MOD_CHECKING and r.a.mod_value[1] == 0
    # a firmware rule alone: the unknown version is no_identity too (not firmware_min)
    r = _blocks(lambda r: setattr(r.m(1), "sw_version", -1), adm.CHK_NO_ID,
                over={"bank": {"firmware_min": 0x0100, "firmware_same": False}})
    # the 0x51 read arrives: it joins
    records.healthy(r.m(1), 3, 52000, r.now())
    assert r.run(20000, until=lambda: all_closed(r))


def test_unread_versions_do_not_outvote_the_read_ones():
    # slots 1 and 2 read only their serial numbers (version -1): the firmware_same
    # reference is slot 0's 1.2, which joins; the others wait as no_identity
    r = Rig()
    for i in (1, 2):
        r.m(i).sw_version = -1
    r.run(12000)
    assert r.a.mod_state[0] == adm.MOD_ADMITTED, adm.CHECK_NAMES[r.a.mod_reason[0]]
    assert r.a.mod_reason[1] == adm.CHK_NO_ID and r.a.mod_reason[2] == adm.CHK_NO_ID
    assert r.a.rules.fw_ref == 0x0102
    # a version that differs from the read ones is still refused
    r.m(1).sw_version = 0x0103
    r.run(3000)
    assert r.a.mod_reason[1] == adm.CHK_FIRMWARE_SAME and not r.out(1)
