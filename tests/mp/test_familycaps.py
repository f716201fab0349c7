# Every bus and family closes a bank (issue 15): checks whose data a family does not
# carry are declared not available (and reported), never failed for want of a field;
# PACE's missing limits stand in from its cell voltages.
# mpy-heapsize: 1024k
import mptest
from test_admission import Rig, all_closed

from bankgate import admission as adm
from bankgate import familycaps as fc
from bankgate.model import Module


def _can_like(r):
    # what a Pylontech CAN frame set leaves in the record: no version, no cells, no model
    for i in range(r.n):
        m = r.m(i)
        m.sw_version = -1
        m.n_cells = 0
        m.model_len = 0
        m.params_valid = False


def test_can_module_bus_bank_closes_with_na_checks_reported():
    over = {"bank": {"bus": "can", "family": "pylontech-can", "baud": 500000,
                     "approved_models": ["US5000"], "firmware_min": 0x0100}}
    r = Rig(over=over)
    _can_like(r)
    assert r.run(30000, until=lambda: all_closed(r)), [adm.CHECK_NAMES[x] for x in r.a.mod_reason[:3]]
    names = r.a.snapshot()["na_checks"]
    assert set(names) == {"model", "firmware_min", "firmware_same", "cells"}, names
    # the same record on a Pylontech RS485 bank fails exactly for the missing fields
    r2 = Rig()
    _can_like(r2)
    r2.run(15000)
    # (model and firmware were never read: no_identity, not a wrong firmware)
    assert r2.a.admitted == 0 and r2.a.mod_reason[0] == adm.CHK_NO_ID
    assert r2.a.snapshot()["na_checks"] == []


def test_can_bank_still_refuses_what_it_can_see():
    # n/a checks are not a blanket pass: a wrong module voltage (wrong series count) or a
    # critical alarm still blocks
    over = {"bank": {"bus": "can", "family": "pylontech-can", "baud": 500000}}
    r = Rig(over=over)
    _can_like(r)
    r.m(1).voltage_mv = 60000                  # a 16s NMC module on a 15s LFP bank
    r.run(15000)
    assert not r.close_times(1) and r.a.mod_reason[1] in (adm.CHK_VOLTAGE, adm.CHK_DV)


def test_pace_limits_stand_in_from_the_cells():
    m = Module(0)
    m.n_cells = 15
    for k in range(15):
        m.cell_mv[k] = 3300
    fc.pace_limits(m, 1234, 50000, "lfp")
    assert m.mgmt_valid and m.t_mgmt == 1234
    assert m.chg_limit_ma == 50000 and m.dsg_limit_ma == 50000
    assert m.chg_v_mv == 15 * 3500 and m.dsg_v_mv == 15 * 2900
    m.cell_mv[3] = 3500                        # half-way through the charge taper
    fc.pace_limits(m, 0, 50000, "lfp")
    assert m.chg_limit_ma == 25000 and m.dsg_limit_ma == 50000
    m.cell_mv[3] = 3549
    fc.pace_limits(m, 0, 50000, "lfp")
    assert 0 < m.chg_limit_ma < 1000           # below min_limit_ma: plausible (taper)
    m.cell_mv[3] = 3560
    fc.pace_limits(m, 0, 50000, "lfp")
    assert m.chg_limit_ma == 0
    m.cell_mv[3] = 3300
    m.cell_mv[7] = 2900                        # empty cell: no discharge
    fc.pace_limits(m, 0, 50000, "lfp")
    assert m.dsg_limit_ma == 0 and m.chg_limit_ma == 50000
    mptest.no_alloc(fc.pace_limits, m, 0, 2000000, "nmc")
    assert m.chg_limit_ma == 2000000 and m.dsg_limit_ma == 0   # LFP cells read as NMC: empty


def test_pace_bank_closes_and_reports_firmware_na():
    over = {"bank": {"family": "pace"}}
    r = Rig(over=over)
    for i in range(r.n):
        r.m(i).sw_version = -1
    assert r.run(30000, until=lambda: all_closed(r))
    assert set(r.a.snapshot()["na_checks"]) == {"firmware_min", "firmware_same"}
