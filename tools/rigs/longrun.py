# The multi-wrap harness: the REAL firmware (bankgate.app.Gateway) on the simulated bank
# (bgsim) for weeks of device time -- at least three 2**30 ms tick wraps (12.43 days
# each, 38 days) -- in minutes, judged by the soak's independent checker on every close
# (tools/rigs/soak.py, Soak._check_close: alarm reply on the wire, alarm age, no alarm
# reply for longer than max_age_ms, |dV| against the busbar, boot hold).
#
#   r = longrun.LongRun(days=38.5, tick_start_ms=0).run()     -> dict; check(r) asserts
#
# How weeks pass in minutes.  The bank is quiet (the main disconnect stays open: the
# branches close onto the busbar only, no load), and time advances in two kinds of
# steps, alternately:
#   window  window_s of ordinary simulation: every bus byte, every control step,
#           physics every step_ms;
#   skip    skip_s at once, while the world stands still: every scheduled event of the
#           simulator (physics, bus, heartbeat, watchdog) moves by skip_s, the physics
#           integrates nothing over it.  The firmware does not run during a skip, so at
#           the next step all its data is skip_s old: it must call it stale and open
#           (it does: CHK_STALE is critical), then rejoin on fresh data.  skip_s stays
#           far below clock.AGE_MAX (2**28 ms), the longest a stamp may go unobserved.
# The device tick counter starts at tick_start_ms (SimClock), so a run can begin just
# past 2**29 (where a wrapped difference changes sign) or 60 s before a wrap.
#
# Judged (check() asserts every count is zero and that the run did its work):
#   closes_bad     the soak's checker, on every coil energisation;
#   silent_closed  the silent module (unplugged at silent_day, never again) has its
#                  output energised or a state that means every check passes (pending,
#                  dwell, closing, admitted) at any observation later than
#                  max_age_ms + LOST_MS after it fell silent (observations: every 100 ms
#                  in the windows; a close is also caught by closes_bad);
#   no_rejoin      the alarm module (a critical alarm for alarm_s in the middle of a
#                  window every alarm_every_days) is not closed again by the window's end,
#                  or was not opened within max_age_ms + 1 s of the alarm;
#   windows_bad    at a window's end a healthy module is not closed (nothing may keep a
#                  healthy bank open: boot hold, a poller that never starts, a wrapped
#                  dwell timer ...);
#   wraps          the device tick counter wrapped this many times (>= 3 for 38 days).
import time

import fwcompat

fwcompat.ensure_firmware()

import soak  # noqa: E402
from bgsim.bms import alarm_bits  # noqa: E402

DAY_US = 86400 * 1000000
TICK_PERIOD = 1 << 30
LOST_MS = 3000          # the poller calls a module lost after LOST_AFTER timeouts (~1 sweep)
_WATCH_US = 100000


def scenario(n=3, tick_start_ms=0, seed=1, max_age_ms=5000):
    addrs = list(range(2, 2 + n))
    mods = [{"soc_pct": 55 + (i % 3) * 0.2, "r_int_mohm": 20 + (i % 4)} for i in range(n)]
    return {
        "name": "longrun", "seed": seed, "duration_s": 1e9, "step_ms": 100,
        "report_s": 1e9, "check_ms": 1000,
        "modules": mods,
        "terminal": {"disconnect": False},
        "bus": {"baud": 115200},
        "inverter": {"heartbeat": True, "profile": [[0, 0]]},
        "device": {"tick_start_ms": tick_start_ms},
        "config": {
            "bank": {"expected_modules": n, "addresses": addrs, "baud": 115200, "scan_to": 2 + n,
                     "approved_models": ["US5000"]},
            "gating": {"max_age_ms": max_age_ms},
            "contactors": {"outputs": ["k%d" % i for i in range(n)],
                           "feedback": ["f%d" % i for i in range(n)],
                           "link_isolated_input": "iso"},
        },
    }


class LongRun:
    def __init__(self, days=38.5, n=3, tick_start_ms=0, seed=1, skip_s=12 * 3600, window_s=40,
                 silent=0, silent_day=3.1, alarm=1, alarm_every_days=1.5, alarm_s=10):
        if not 0 < skip_s * 1000 < (1 << 28) // 2:
            raise ValueError("skip_s must stay far below clock.AGE_MAX")
        self.days = days
        self.skip_us = int(skip_s * 1000000)
        self.window_us = int(window_s * 1000000)
        self.silent = silent            # module index or None
        self.silent_at_us = int(silent_day * DAY_US)
        self.alarm = alarm              # module index or None
        self.alarm_every_us = int(alarm_every_days * DAY_US)
        self.alarm_s = alarm_s
        self.soak = soak.Soak(hours=days * 24, n=n, baud=115200, seed=seed, warmup_h=0,
                              sample_s=days * 86400, scen=scenario(n, tick_start_ms, seed))
        self.sim = self.soak.sim
        self.gw = self.soak.gw
        self.n = n
        cfg = self.sim.cfg
        self.max_age_us = cfg["gating"]["max_age_ms"] * 1000
        self.tick_start_ms = tick_start_ms
        # results
        self.windows = 0
        self.windows_bad = 0
        self.silent_closed = 0
        self.silent_checks = 0
        self.alarms = 0
        self.rejoins = 0
        self.no_rejoin = 0
        self.not_opened = 0
        self.wraps = 0
        self.skips = 0
        self.first_close_s = None
        self.bad = []
        self._silent_since = -1
        self._next_alarm_us = self.alarm_every_us
        self._alarm_on_us = -1
        self._last_tick = self.sim.hw.clock.ticks_ms()

    # ------------------------------------------------------------------ helpers
    def _note(self, what):
        if len(self.bad) < 12:
            self.bad.append("day %.3f (tick %d): %s" % (self.sim.clock.now_us / DAY_US,
                                                        self.sim.hw.clock.ticks_ms(), what))

    def _out(self, i):
        m = self.sim.mods[i]
        return self.sim.hw.outputs[m.contactor.name].value()

    def _tick_seen(self):
        t = self.sim.hw.clock.ticks_ms()
        if t < self._last_tick:
            self.wraps += 1
        self._last_tick = t

    # ------------------------------------------------------------------ observers
    def _watch(self):
        """Every 100 ms of simulated time: the silent module's output and state (the
        soak's own watch, alarm onsets and the watchdog, runs beside it)."""
        self._tick_seen()
        s = self.silent
        if s is not None and self._silent_since >= 0:
            now = self.sim.clock.now_us
            if now - self._silent_since > self.max_age_us + LOST_MS * 1000:
                self.silent_checks += 1
                adm = self.gw.admission
                # closed, or in a state that means "every check passes": pending (waiting for
                # the voltage gate), dwell, closing, admitted
                if self._out(s) or 2 <= adm.mod_state[s] <= 5:
                    self.silent_closed += 1
                    self._note("silent module %d closed or passing every check (state %d reason %d) "
                               "after %.2f days of silence" % (s, adm.mod_state[s], adm.mod_reason[s],
                                                               (now - self._silent_since) / DAY_US))
        if self.first_close_s is None and self.gw.admission.admitted_mask:
            self.first_close_s = self.sim.clock.now_us / 1e6
        self.sim.clock.after_us(_WATCH_US, self._watch)

    def _go_silent(self):
        b = self.sim.bmses[self.silent]
        b.plugged = False
        self._silent_since = self.sim.clock.now_us

    def _alarm_on(self):
        sim = self.sim
        b = sim.bmses[self.alarm]
        b.inject(alarm_bits(["cell_ov"]), False, sim.bank.t_s + self.alarm_s)
        b.update(sim.bank.t_s, 0.0)
        self.alarms += 1
        self._alarm_on_us = sim.clock.now_us
        sim.clock.after_us(self.max_age_us + 1000000, self._alarm_opened)

    def _alarm_opened(self):
        if self._out(self.alarm):
            self.not_opened += 1
            self._note("alarm module %d still closed %d ms after its alarm"
                       % (self.alarm, (self.sim.clock.now_us - self._alarm_on_us) // 1000))

    # ------------------------------------------------------------------ time
    def _skip(self, us):
        """The world stands still for `us`: every scheduled event moves with it."""
        sim = self.sim
        clk = sim.clock
        clk.now_us += us
        clk._q = [(t + us, k, fn, a) for (t, k, fn, a) in clk._q]   # same order: still a heap
        clk._sync()
        sim.t_phys_us += us
        wdt = sim.hw.wdt
        if wdt is not None:
            wdt.last_feed_us += us
        self.skips += 1
        self._tick_seen()

    def _run_until(self, end_us):
        gw = self.gw
        hw = self.sim.hw
        clk = self.sim.clock
        while clk.now_us < end_us:
            w = gw.step()
            if w:
                left = (end_us - clk.now_us) // 1000
                hw.idle(w if w < left else (left if left > 0 else 1))

    def _window(self):
        sim = self.sim
        clk = sim.clock
        start = clk.now_us
        mid = start + self.window_us // 2
        alarm_now = self.alarm is not None and start >= self._next_alarm_us
        if alarm_now:
            self._next_alarm_us += self.alarm_every_us
            clk.at_us(start + self.window_us // 5, self._alarm_on)
        if self.silent is not None and self._silent_since < 0 and start >= self.silent_at_us:
            clk.at_us(mid, self._go_silent)
        self._run_until(start + self.window_us)
        self.windows += 1
        # the window's end: every healthy module closed
        for i in range(self.n):
            if i == self.silent and self._silent_since >= 0:
                continue
            if not self._out(i):
                if alarm_now and i == self.alarm:
                    self.no_rejoin += 1
                    self._note("alarm module %d did not rejoin after its alarm" % i)
                else:
                    self.windows_bad += 1
                    adm = self.gw.admission
                    self._note("healthy module %d open at the window's end (state %d reason %d value %d)"
                               % (i, adm.mod_state[i], adm.mod_reason[i], adm.mod_value[i]))
            elif alarm_now and i == self.alarm:
                self.rejoins += 1

    def run(self):
        sim = self.sim
        clk = sim.clock
        clk.at_us(sim.step_us, sim._tick)
        clk.at_us(0, sim._heartbeat)
        clk.at_us(_WATCH_US, self._watch)
        clk.at_us(_WATCH_US, self.soak._watch_tick)
        t0 = time.ticks_ms()
        end_us = int(self.days * DAY_US)
        while True:
            self._window()
            if clk.now_us >= end_us:
                break
            self._skip(self.skip_us)
        self.wall_s = time.ticks_diff(time.ticks_ms(), t0) / 1000.0
        self.soak.consume_events()
        return self.result()

    def result(self):
        s = self.soak
        return {
            "days": self.sim.clock.now_us / DAY_US, "wall_s": self.wall_s,
            "tick_start_ms": self.tick_start_ms, "tick_end_ms": self.sim.hw.clock.ticks_ms(),
            "wraps": self.wraps, "windows": self.windows, "skips": self.skips,
            "closes": s.closes, "closes_bad": s.closes_bad, "violations": s.bad,
            "windows_bad": self.windows_bad, "silent_closed": self.silent_closed,
            "silent_checks": self.silent_checks, "alarms": self.alarms, "rejoins": self.rejoins,
            "no_rejoin": self.no_rejoin, "not_opened": self.not_opened,
            "first_close_s": self.first_close_s, "wdt_expired": s.wdt_expired,
            "silent_reason": self.gw.admission.mod_reason[self.silent] if self.silent is not None else None,
            "silent_analog_valid": self.gw.bank.modules[self.silent].analog_valid if self.silent is not None else None,
            "resets": sim_resets(self.sim), "exceptions": self.gw.admission.exceptions,
            "notes": self.bad,
        }


def sim_resets(sim):
    return sim.hw.resets


def check(r, min_wraps=0):
    """The pass criteria (AssertionError with the evidence)."""
    assert r["closes_bad"] == 0, r["violations"]
    assert r["silent_closed"] == 0, r["notes"]
    assert r["windows_bad"] == 0, r["notes"]
    assert r["no_rejoin"] == 0 and r["not_opened"] == 0, r["notes"]
    assert r["wdt_expired"] == 0 and r["resets"] == 0 and r["exceptions"] == 0, r
    # the run did its work
    assert r["wraps"] >= min_wraps, r
    assert r["closes"] >= r["windows"], r
    assert r["rejoins"] == r["alarms"], r


def main(argv):
    import json
    kw = {}
    for a in argv[1:]:
        k, _, v = a.partition("=")
        kw[k] = float(v) if "." in v else (None if v == "none" else int(v))
    print(json.dumps(LongRun(**kw).run()))


if __name__ == "__main__":
    import sys
    main(sys.argv)
