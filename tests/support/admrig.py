# The admission test rig, shared by tests/mp/test_admission*.py and the tests of the parts
# around admission (contactor, plausible, latchstore, familycaps, timemodel): a configured
# Admission on fake hardware with n healthy modules, on a SimClock (module records are
# filled directly, no bus), and the helpers the test files share.
import random

import mptest
import records
from fakehw import FakeAdc, FakeHardware, SimClock

from bankgate import admission as adm
from bankgate import clock, config
from bankgate.events import (EV_CHECK_FAIL, EV_CONTACTOR, EV_MODULE_STATE, EV_PENDING_LONG,
                             EventLog)
from bankgate.model import ALM_CELL_IMB, ALM_CELL_OV, ALM_CHG_OT, ALM_DSG_OC, Bank


def _merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


class Rig:
    """A configured Admission on fake hardware with n healthy modules."""

    def __init__(self, over=None, n=3, main=False, sensor=True, link_mv=52000, fb=False,
                 mv=52000, physics=False):
        outs = ["main", "pre"] if main else ["k%d" % (i + 1) for i in range(n)]
        d = {"bank": {"expected_modules": n, "addresses": [2 + i for i in range(n)]},
             "gating": {"topology": "main" if main else "branch"},
             "contactors": {"outputs": outs}}
        if fb:
            d["contactors"]["feedback"] = ["fb_" + o for o in outs]
        _merge(d, over or {})
        self.cfg = config.validate(d)
        inputs = ["fb_" + o for o in outs] + ["rst", "iso"]
        self.clock = SimClock()
        self.hw = FakeHardware(self.clock, outputs=outs, inputs=inputs)
        self.outs = outs
        if sensor:
            self.hw.link_sensor = FakeAdc(link_mv)
        self.bank = Bank()
        self.ev = EventLog(512)
        self.n = n
        self.frozen = 0           # bit i: slot i's data is not refreshed (poller lost it)
        self.mgmt_frozen = 0      # bit i: only slot i's limits (0x92) are not refreshed
        for i in range(n):
            healthy(self.bank.modules[i], 2 + i, mv, self.now())
        self.a = adm.Admission(self.hw, self.cfg, self.bank, self.ev)
        self.bus = 0
        self.idm = 0
        self.inv = True
        self.physics = physics    # branch: link follows the closed modules; main: see below
        self.fb_follow = [True] * len(outs)
        self.fb_delay_us = 20000
        if fb:
            for k, o in enumerate(outs):
                self._wire_fb(k, o)

    def _wire_fb(self, k, name):
        pin = self.hw.outputs[name]
        fbp = self.hw.inputs["fb_" + name]
        rig = self

        def follow(v):
            if rig.fb_follow[k]:
                if rig.fb_delay_us:
                    rig.clock.after_us(rig.fb_delay_us, fbp.value, v)   # contact follows the coil
                else:
                    fbp.value(v)                  # immediately (allocation-free tests)
        pin.on_change = follow

    def now(self):
        return self.clock.ticks_ms()

    def m(self, i):
        return self.bank.modules[i]

    def out(self, i):
        return self.hw.outputs[self.outs[i]].value()

    def step(self):
        self.a.step(self.now(), self.bus, self.idm, self.inv)

    def refresh(self):
        t = self.now()
        for i in range(self.n):
            if not (self.frozen >> i) & 1:
                m = self.bank.modules[i]
                m.t_analog = t
                m.t_alarm = t
                if not (self.mgmt_frozen >> i) & 1:
                    m.t_mgmt = t
        if self.physics and self.hw.link_sensor is not None:
            a = self.a
            if a.branch:
                s = 0
                k = 0
                for i in range(self.n):
                    if a.ct.cmd[i]:
                        s += self.bank.modules[i].voltage_mv
                        k += 1
                if k:
                    self.hw.link_sensor.mv = s // k
            elif self.out(0) or self.out(1):
                self.hw.link_sensor.mv = a._vbank()

    def run(self, ms, period=50, until=None):
        end = self.clock.ms() + ms
        while self.clock.ms() < end:
            self.clock.advance_us(period * 1000)
            self.refresh()
            self.step()
            if until is not None and until():
                return True
        return False

    def events(self, code):
        out = []
        rec = [0, 0, 0, 0, 0]
        for s in range(self.ev.oldest(), self.ev.seq + 1):
            if self.ev.get(s, rec) and rec[1] == code:
                out.append((rec[0], rec[2], rec[3], rec[4]))
        return out

    def close_times(self, i):
        """Simulated ms of every close of output i."""
        return [t // 1000 for t, v in self.hw.outputs[self.outs[i]].history if v == 1]


def healthy(m, addr, mv, now, soc=600):
    records.healthy(m, addr, mv, now, soc)


def set_mv(m, mv):
    m.voltage_mv = mv
    for k in range(m.n_cells):
        m.cell_mv[k] = mv // m.n_cells


def all_closed(r):
    return r.a.state == adm.BANK_CLOSED


# ---------------------------------------------------------------- shared rigs
def _main_rig(**kw):
    return Rig(main=True, link_mv=0, **kw)


def _blocks(mutate, code, slot=1, over=None, rig_kw=None, everyone=False, t_ms=12000):
    r = Rig(over=over, **(rig_kw or {}))
    mutate(r)
    r.run(t_ms)
    ok = []
    for i in range(r.n):
        blocked = not r.close_times(i) if (everyone or i == slot) else True
        ok.append(blocked)
    assert all(ok), (code, [r.close_times(i) for i in range(r.n)])
    s = slot if slot >= 0 else 0
    assert r.a.mod_reason[s] == code, (adm.CHECK_NAMES[code], adm.CHECK_NAMES[r.a.mod_reason[s]],
                                       r.a.mod_value[s])
    fails = [e for e in r.events(EV_CHECK_FAIL) if e[2] == code and e[1] == 2 + s]
    assert fails, code
    if not everyone:                              # the others were not held back
        assert r.a.admitted == r.n - 1, (code, r.a.admitted)
    return r


def _closed_branch(**kw):
    r = Rig(physics=True, **kw)
    assert r.run(20000, until=lambda: all_closed(r))
    return r


# ---------------------------------------------------------------- zero allocation
def _quiet(r):
    for name in r.outs:
        r.hw.outputs[name].clock = None           # the fake's history list would allocate
    for name in r.hw.inputs:
        r.hw.inputs[name].clock = None


def _no_alloc_run(r, ms, period=50):
    a = r.a
    for _ in range(ms // period):
        r.clock.advance_us(period * 1000)
        r.refresh()
        mptest.no_alloc(a.step, r.now(), r.bus, r.idm, r.inv)
