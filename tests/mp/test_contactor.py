# Contactor interlock: release at construction, failed-to-close and welded contacts
# via auxiliary feedback and via measurement, latching, and local-only reset.
# mpy-heapsize: 512k
import mptest
from fakehw import FakeHardware, SimClock
from test_admission import ALM_CELL_OV, Rig, adm, config

from bankgate.contactor import F_FAIL_CLOSE, F_WELD_CURRENT, F_WELD_LINK, F_WELDED, Contactors
from bankgate.events import EV_FAULT_CLEARED, EV_FAULT_LATCHED, EventLog


def _closed(**kw):
    r = Rig(physics=True, **kw)
    assert r.run(20000, until=lambda: r.a.state == adm.BANK_CLOSED)
    return r


def test_every_output_released_at_construction():
    hw = FakeHardware(SimClock(), outputs=["k1", "k2", "k3", "led"])
    for p in hw.outputs.values():
        p.value(1)
    Contactors(hw, config.validate({}), EventLog(), [2, 3, 4])
    assert all(p.value() == 0 for p in hw.outputs.values())
    assert hw.release_count == 1


def test_missing_feedback_input_is_a_clear_error():
    cfg = config.validate({"contactors": {"feedback": ["a", "b", "c"]}})
    hw = FakeHardware(SimClock(), outputs=["k1", "k2", "k3"], inputs=["a", "b"])
    e = mptest.raises(Exception, Contactors, hw, cfg, EventLog(), [2, 3, 4])
    assert "'c'" in str(e)


def test_feedback_confirms_close_before_admitted():
    r = Rig(fb=True, physics=True)
    r.fb_delay_us = 120000                       # slow contactor: 120 ms
    assert r.run(20000, until=lambda: r.out(0) or r.out(1) or r.out(2))
    i = [k for k in range(3) if r.out(k)][0]
    assert r.a.mod_state[i] == adm.MOD_CLOSING
    r.run(50)
    assert r.a.mod_state[i] == adm.MOD_CLOSING   # aux contact not yet closed
    r.run(150)
    assert r.a.mod_state[i] == adm.MOD_ADMITTED and not r.a.faults


def test_failed_to_close_latches_and_opens_everything():
    r = Rig(fb=True, physics=True)
    r.fb_follow[1] = False                        # k2's contact never closes
    r.run(30000, until=lambda: r.a.faults != 0)
    assert r.a.faults == F_FAIL_CLOSE and r.a.fault_slot == 1
    assert not any(r.out(i) for i in range(3))
    assert r.a.state == adm.BANK_FAULT and r.a.mod_state[1] == adm.MOD_FAULT
    assert r.a.ramp_down and r.a.chg_limit_ma == 0
    ev = r.events(EV_FAULT_LATCHED)
    assert len(ev) == 1 and ev[0][1] == 3 and ev[0][2] == F_FAIL_CLOSE
    t_close = r.close_times(1)[0]
    t_fault = ev[0][0]
    fb_ms = r.cfg["contactors"]["feedback_ms"]
    assert fb_ms <= t_fault - t_close <= fb_ms + 50
    # latched: nothing closes again, whatever the data says
    r.run(30000)
    assert r.a.faults and not any(r.out(i) for i in range(3))
    assert r.a.mod_reason[0] == adm.CHK_FAULT


def test_welded_via_feedback_after_open_command():
    r = _closed(fb=True)
    r.fb_follow[2] = False                        # k3 welded: aux contact stays closed
    r.m(2).protections = ALM_CELL_OV              # critical: opened at once
    r.run(50)
    assert r.out(2) == 0 and not r.a.faults
    r.run(r.cfg["contactors"]["feedback_ms"] + 50)
    assert r.a.faults == F_WELDED and r.a.fault_slot == 2
    assert not any(r.out(i) for i in range(3)) and r.a.state == adm.BANK_FAULT


def test_contact_dropping_out_while_closed_is_failed_to_close():
    r = _closed(fb=True)
    r.hw.inputs["fb_k1"].value(0)                 # aux contact opens by itself
    r.fb_follow[0] = False
    r.run(300)
    assert r.a.faults == F_FAIL_CLOSE and r.a.fault_slot == 0


def test_feedback_polarity_active_low():
    r = Rig(fb=True, physics=True, over={"contactors": {"feedback_active": 0}})
    for o in r.outs:                              # pulled-up inputs read 1 when open
        r.hw.inputs["fb_" + o].value(1)
    r.fb_follow = [False] * 3
    for k, o in enumerate(r.outs):
        pin = r.hw.outputs[o]
        fbp = r.hw.inputs["fb_" + o]
        pin.on_change = (lambda p: (lambda v: p.value(0 if v else 1)))(fbp)
    assert r.run(20000, until=lambda: r.a.state == adm.BANK_CLOSED)
    assert not r.a.faults


def test_weld_measured_current_through_opened_branch():
    r = _closed()
    r.m(1).protections = ALM_CELL_OV
    r.run(50)
    assert r.out(1) == 0
    r.m(1).protections = 0
    r.m(1).current_ma = -20000                    # still carries 20 A at the bus voltage
    confirm = r.cfg["contactors"]["weld_confirm_ms"]
    r.run(confirm + r.cfg["contactors"]["feedback_ms"] + 200)
    assert r.a.faults == F_WELD_CURRENT and r.a.fault_slot == 1 and r.a.fault_value == -20000
    assert not any(r.out(i) for i in range(3))


def test_weld_measured_needs_persistence_and_bus_voltage():
    r = _closed()
    r.m(1).protections = ALM_CELL_OV
    r.run(50)
    r.m(1).protections = 0
    r.m(1).current_ma = -20000
    r.run(1000)                                   # shorter than weld_confirm_ms
    r.m(1).current_ma = 0
    r.run(3000)
    assert not r.a.faults
    # current reported but the module sits 3 V away from the bus: not a weld
    r.m(1).current_ma = -20000
    r.m(1).voltage_mv = 49000
    r.run(5000)
    assert not r.a.faults


def test_never_closed_branch_carrying_current_is_welded():
    r = Rig()
    r.m(2).current_ma = 8000
    r.run(1000)
    assert not r.a.faults
    r.run(r.cfg["contactors"]["weld_confirm_ms"] + 500)
    assert r.a.faults & F_WELD_CURRENT and r.a.fault_slot == 2


def test_main_weld_measured_by_current_and_by_link():
    r = Rig(main=True, link_mv=52000, physics=True)
    assert r.run(10000, until=lambda: r.a.state == adm.BANK_CLOSED)
    r.m(0).protections = ALM_CELL_OV
    r.run(50)
    assert r.out(0) == 0 and r.out(1) == 0
    r.m(0).protections = 0
    for i in range(3):
        r.m(i).current_ma = -3000                 # 9 A still flowing through the open main
    r.run(3000)
    assert r.a.faults == F_WELD_CURRENT and r.a.fault_slot == -1
    # link held at bank voltage with everything open and no current
    r = Rig(main=True, link_mv=52000, over={"contactors": {"weld_link_ms": 4000},
                                           "control": {"boot_hold_ms": 60000}})
    r.run(3500)
    assert not r.a.faults
    r.run(1000)
    assert r.a.faults == F_WELD_LINK
    # a link that decays (capacitors bleeding) is not a weld
    r = Rig(main=True, link_mv=52000, over={"contactors": {"weld_link_ms": 4000},
                                           "control": {"boot_hold_ms": 60000}})
    for _ in range(20):
        r.run(250)
        r.hw.link_sensor.mv -= 600
    assert not r.a.faults


def test_latched_fault_clears_only_by_local_reset():
    r = Rig(fb=True, physics=True, over={"contactors": {"reset_input": "rst"}})
    r.fb_follow[0] = False
    r.run(30000, until=lambda: r.a.faults != 0)
    assert r.a.faults == F_FAIL_CLOSE
    r.fb_follow[0] = True                         # repaired
    r.run(20000)
    assert r.a.faults and r.a.state == adm.BANK_FAULT   # no self-clearing
    rst = r.hw.inputs["rst"]
    rst.value(1)                                  # the local button
    r.run(50)
    assert not r.a.faults and r.events(EV_FAULT_CLEARED)
    r.run(50)
    rst.value(0)
    assert r.run(20000, until=lambda: r.a.state == adm.BANK_CLOSED)
    assert not r.a.reset_faults(r.now())          # nothing to clear: False


def test_reset_input_held_at_boot_is_not_an_edge():
    r = Rig(fb=True, over={"contactors": {"reset_input": "rst"}})
    r.hw.inputs["rst"].value(1)
    r.fb_follow[0] = False
    r.a = adm.Admission(r.hw, r.cfg, r.bank, r.ev)
    r.run(30000, until=lambda: r.a.faults != 0)
    r.run(1000)
    assert r.a.faults                              # held button did not clear it


def test_fault_persisting_after_reset_latches_again():
    r = _closed(fb=True)
    r.fb_follow[2] = False
    r.m(2).protections = ALM_CELL_OV
    r.run(400)
    assert r.a.faults == F_WELDED
    assert r.a.reset_faults(r.now())
    r.run(400)
    assert r.a.faults == F_WELDED                 # still welded: latched again
    assert not any(r.out(i) for i in range(3))


def test_no_network_path_to_reset():
    # the only ways in are reset_faults() (USB console) and the reset input
    r = Rig()
    names = [n for n in dir(r.a) if "reset" in n]
    assert sorted(names) == ["reset_faults", "reset_pin"]
