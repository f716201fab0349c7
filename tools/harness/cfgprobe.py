# Device-code probes for tests/host/test_config_safety.py (called through MpWorker,
# JSON in and out): the REAL validator (bankgate.config) and the REAL admission
# step (bankgate.admission) on fake hardware.
#
#   errors(given, board, strict)       -> [[path, message], ...] (validate_all; board: the
#                                         board file's JSON, or None)
#   warnings(given, board)             -> ["path: text", ...]
#   join(given, dv_mv, lim_ma, r_meas, trip) -> {"closed": bool, "reason": name, "value": int,
#                                          "loop_mohm": int, "opened": bool after protection `trip`}
#   schema()                           -> {"schema": SCHEMA, "why": WHY, "required": [...]}
from bankgate import admission as adm
from bankgate import boards, config, config_check
from bankgate.events import EventLog
from bankgate.metrics import Metrics
from bankgate.model import Bank
from fakehw import FakeAdc, FakeHardware, SimClock
import records

def _board(b):
    """A board file's JSON (dict) from the host -> the validated board, or None."""
    if not b:
        return None
    return boards.validate(b, b["name"])


def errors(given, board=None, strict=True):
    cfg, errs = config_check.validate_all(given, strict, _board(board))
    return [[e.path, str(e)] for e in errs]


def warnings(given, board=None):
    b = _board(board)
    return config_check.warnings(config.validate(given, True, b), b)


def _healthy(m, addr, mv, now, lim_ma):
    records.healthy(m, addr, mv, now, chg_ma=lim_ma, dsg_ma=lim_ma)


def schema():
    from bankgate.config_why import WHY
    return {"schema": config.SCHEMA, "why": WHY, "required": list(config.REQUIRED)}


def join(given, dv_mv, lim_ma, r_meas=0, trip=0, link_mv=50000):
    """One module of an accepted configuration (branch topology, measured DC link at
    link_mv) at link_mv + dv_mv, with its own charge/discharge limit lim_ma, and
    (r_meas > 0) a confident loop-resistance estimate from metrics.  Runs the real
    control step every control.period_ms until it closes or 3 x (boot hold + dwell)
    passed.  Returns whether it closed and the reason it waits otherwise."""
    cfg = config.validate(given)
    clock = SimClock()
    outs = cfg["contactors"]["outputs"]
    hw = FakeHardware(clock, outputs=outs, inputs=[])
    hw.link_sensor = FakeAdc(link_mv)
    bank = Bank()
    ev = EventLog(64)
    n = cfg["bank"]["expected_modules"]
    for i in range(n):
        _healthy(bank.modules[i], cfg["bank"]["addresses"][i], link_mv + dv_mv, clock.ticks_ms(), lim_ma)
    a = adm.Admission(hw, cfg, bank, ev)
    if r_meas > 0:
        me = Metrics(cfg, bank)
        for i in range(n):
            me.r_mohm[i] = r_meas
            me.r_conf[i] = 100
        a.use_measured_loop(me, cfg["diagnosis"]["r_conf_min"])
    period = cfg["control"]["period_ms"]
    end = 3 * (cfg["control"]["boot_hold_ms"] + cfg["gating"]["dwell_ms"]) + 2000
    t = 0
    closed = False
    while t < end and not closed:
        clock.advance_us(period * 1000)
        t += period
        now = clock.ticks_ms()
        for i in range(n):
            m = bank.modules[i]
            m.t_analog = now
            m.t_alarm = now
            m.t_mgmt = now
        a.step(now, 0, 0, True)
        closed = hw.outputs[outs[0]].value() == 1
    opened = None
    if closed and trip:
        # a BMS protection bit appears on the closed module: one control step later
        bank.modules[0].protections = trip
        clock.advance_us(period * 1000)
        a.step(clock.ticks_ms(), 0, 0, True)
        opened = hw.outputs[outs[0]].value() == 0
    return {"closed": closed, "reason": adm.CHECK_NAMES[a.mod_reason[0]],
            "value": a.mod_value[0], "loop_mohm": a.loop_mohm[0], "opened": opened}
