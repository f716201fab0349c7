# A module record as a healthy Pylontech-style BMS leaves it after a full poll (analog, alarms,
# limits, identity, parameters), written straight into a bankgate.model.Module: for tests and
# probes that drive admission without a bus.  One copy for all of them (tests/mp/test_admission.py,
# tools/harness/cfgprobe.py).


def healthy(m, addr, mv, now, soc=600, chg_ma=50000, dsg_ma=100000):
    m.addr = addr
    m.seen = True
    m.n_cells = 15
    for k in range(15):
        m.cell_mv[k] = mv // 15
    m.voltage_mv = mv
    m.current_ma = 0
    m.soc_pm = soc
    m.analog_valid = True
    m.t_analog = now
    m.alarms = 0
    m.protections = 0
    m.alarm_valid = True
    m.t_alarm = now
    m.chg_limit_ma = chg_ma
    m.dsg_limit_ma = dsg_ma
    m.chg_v_mv = 53500
    m.dsg_v_mv = 47000
    m.mgmt_valid = True
    m.t_mgmt = now
    m.id_valid = True
    m.sw_version = 0x0102
    name = b"US3000C"
    m.model[: len(name)] = name
    m.model_len = len(name)
    m.params_valid = True
    m.cell_hi_mv = 3650
