# Admission core (bankgate.admission.core and the package face): robustness (exceptions,
# external release, watchdog reset), the read-only view, the pending mask, hold_joins,
# and the topology factory importing only the configured topology.
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


# ------------------------------------------------------------------ the package face
def test_only_the_configured_topology_is_imported():
    # first in this file: nothing here has imported a topology module yet; to be sure,
    # forget both, then build each topology and look at what was loaded
    import sys
    for name in ("bankgate.admission.branch", "bankgate.admission.mainbus"):
        if name in sys.modules:
            del sys.modules[name]
    r = Rig()
    assert r.a.topology == "branch" and r.a.branch
    assert "bankgate.admission.branch" in sys.modules
    assert "bankgate.admission.mainbus" not in sys.modules
    del sys.modules["bankgate.admission.branch"]
    r = _main_rig()
    assert r.a.topology == "main" and not r.a.branch
    assert "bankgate.admission.mainbus" in sys.modules
    assert "bankgate.admission.branch" not in sys.modules


def test_view_and_pending_mask():
    r = Rig(link_mv=52000)
    set_mv(r.m(2), 52900)                         # dV 900: pending
    r.run(15000)
    assert r.a.view(0) == (adm.MOD_ADMITTED, 0, 0, -1, r.a.dv_mv[0])
    st, reason, value, since, dv = r.a.view(2)
    assert (st, reason, value, dv) == (adm.MOD_PENDING, adm.CHK_DV, 900, 900)
    assert since == r.a.pending_since[2] and since != -1
    assert r.a.pending_mask() == 1 << 2
    assert r.a.view(3) is None and r.a.view(-1) is None    # not expected
    mptest.no_alloc(r.a.pending_mask)


# ------------------------------------------------------------------ hold_joins
def test_hold_joins_keeps_a_converged_module_pending_until_released():
    r = Rig(link_mv=52000)
    set_mv(r.m(2), 52900)                         # pending on dV
    r.run(15000)
    assert r.out(0) and r.out(1) and not r.out(2)
    assert not r.a.hold_joins                     # default
    r.a.hold_joins = True
    set_mv(r.m(2), 52100)                         # it converges while held
    r.run(20000)
    assert not r.out(2)                           # never admitted while held
    assert r.a.mod_state[2] == adm.MOD_PENDING and r.a.mod_reason[2] == adm.CHK_JOIN_HOLD
    assert r.a.mod_value[2] == 100 and r.a.pending_mask() == 1 << 2
    assert r.out(0) and r.out(1) and r.a.admitted == 2     # admitted modules stay
    assert r.a.state == adm.BANK_DEGRADED and r.a.snapshot()["hold_joins"] is True
    r.a.hold_joins = False                        # released: the dwell, then the close
    t0 = r.now()
    assert r.run(20000, until=lambda: r.out(2))
    assert r.now() - t0 >= r.cfg["gating"]["dwell_ms"]
    r.run(200)
    assert r.a.state == adm.BANK_CLOSED and r.a.pending_mask() == 0


def test_hold_joins_never_opens_anything():
    r = _closed_branch()
    r.a.hold_joins = True
    r.run(10000)
    assert all_closed(r) and [r.out(i) for i in range(3)] == [1, 1, 1]
    # a real reason still opens while held (hold changes nothing of the stay checks)
    r.m(1).protections = ALM_CELL_OV
    r.run(100)
    assert not r.out(1) and r.out(0) and r.out(2)


def test_hold_joins_main_topology():
    r = _main_rig()
    r.hw.link_sensor.mv = 52000
    r.a.hold_joins = True
    r.run(15000)
    assert not r.out(0) and not r.out(1)          # no precharge, no main
    assert r.a.state == adm.BANK_JOINING
    assert [r.a.mod_reason[i] for i in range(3)] == [adm.CHK_JOIN_HOLD] * 3
    assert r.a.pending_mask() == 7
    r.a.hold_joins = False
    assert r.run(20000, until=lambda: all_closed(r))
    r.a.hold_joins = True                         # closed: holding opens nothing
    r.run(5000)
    assert all_closed(r) and r.out(0)


def test_step_with_hold_joins_allocates_nothing():
    r = Rig(physics=True)
    _quiet(r)
    r.a.hold_joins = True
    _no_alloc_run(r, 8000)
    assert r.a.admitted == 0 and r.a.pending_mask() == 7


# ------------------------------------------------------------------ robustness
class _Boom:
    def __init__(self):
        self.armed = False
        self.mv = 52000

    def read_mv(self):
        if self.armed:
            raise OSError(5)
        return self.mv


def test_exception_in_step_releases_and_rejoins_with_dwell():
    r = _closed_branch()
    boom = _Boom()
    r.hw.link_sensor = boom
    r.a.sensor = boom
    boom.armed = True
    r.clock.advance_us(50000)
    mptest.raises(OSError, r.step)
    assert not any(r.out(i) for i in range(3)) and r.a.exceptions == 1
    assert r.a.admitted == 0 and r.a.chg_limit_ma == 0
    r.hw.release_all()                            # what the main loop also does
    boom.armed = False
    t0 = r.clock.ms()
    assert r.run(20000, until=lambda: all_closed(r))
    first = min(r.close_times(i)[-1] for i in range(3))
    assert first - t0 >= r.cfg["gating"]["dwell_ms"]


def test_external_release_all_is_noticed():
    r = _closed_branch()
    r.hw.release_all()                            # e.g. another component raised
    r.clock.advance_us(50000)
    r.refresh()
    r.step()
    assert r.a.admitted == 0 and r.a.chg_limit_ma == 0
    assert all(r.a.mod_state[i] == adm.MOD_DWELL for i in range(3))
    assert sum(1 for e in r.events(EV_CONTACTOR) if e[3] == 0) == 3


def test_watchdog_reset_starts_open_with_boot_hold():
    r = _closed_branch()
    r.hw.start_watchdog(r.cfg["control"]["watchdog_ms"])
    r.hw.wdt.feed()
    # the loop hangs: no step, no feed
    r.clock.advance_us((r.cfg["control"]["watchdog_ms"] + 1) * 1000)
    assert r.hw.wdt.expired()
    r.hw.reset()                                  # the chip resets: pins released
    assert not any(r.out(i) for i in range(3))
    for i in range(3):                            # pretend the pins came up energised
        r.hw.outputs[r.outs[i]].value(1)
    a2 = adm.Admission(r.hw, r.cfg, r.bank, r.ev)  # the firmware starts again
    assert not any(r.out(i) for i in range(3))
    r.a = a2
    r.run(r.cfg["control"]["boot_hold_ms"] - 100)
    assert not any(r.out(i) for i in range(3)) and a2.state == adm.BANK_BOOT


def test_bad_output_name_is_a_clear_error():
    d = {"contactors": {"outputs": ["k1", "k2", "nope"]}}
    cfg = config.validate(d)
    hw = FakeHardware(SimClock(), outputs=["k1", "k2", "k3"])
    e = mptest.raises(Exception, adm.Admission, hw, cfg, Bank(), EventLog())
    assert "nope" in str(e)
