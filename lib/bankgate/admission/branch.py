# Admission, branch topology: one contactor per module (docs/admission.md, "Branch
# topology").  Modules join one at a time against the measured DC link (or, without a
# sensor, the closed modules' mean / an input proving the link isolated): the DWELL
# module with the smallest |dV| closes once its dwell is complete, at most one close
# per step and per dwell_ms.  A closed module with a critical reason opens in the same
# step; any other reason ramps its current down first.  Measured weld: current through
# an opened branch.  Imported only when gating.topology is "branch".
from micropython import const

from bankgate import clock
from bankgate.admission.checks import (
    MOD_PENDING, MOD_DWELL, MOD_CLOSING, MOD_ADMITTED, MOD_OPENING, MOD_BLOCKED,
    CHK_LINK, CHK_DV, CHK_INRUSH, CHK_MOD_LIMIT, CHK_JOIN_HOLD, critical)
from bankgate.admission.core import AdmissionCore
from bankgate.contactor import F_WELD_CURRENT

_V_UNKNOWN = const(-1)
_V_ISOLATED = const(-2)
_BIG = const(0x3FFFFFFF)


class BranchAdmission(AdmissionCore):
    branch = True
    topology = "branch"

    # ---------------------------------------------------------------- hooks
    def _joining(self, i):
        return not self.ct.cmd[i]

    def _is_closed(self, i):
        return bool(self.ct.cmd[i])

    def _closed_mask(self):
        closed = 0
        cmd = self.ct.cmd
        for i in range(self.n_exp):
            if cmd[i]:
                closed |= 1 << i
        return closed

    def _soc_set(self):
        return self._closed_mask()   # the SOC spread is judged against the connected modules

    def _weld(self, now):
        ct = self.ct
        mods = self.bank.modules
        vb = self.link_mv
        for i in range(self.n_exp):
            m = mods[i]
            if self.dq.frozen[i]:
                self.weld_on[i] = 0                       # a replayed current proves nothing
                continue
            cond = False
            if not ct.cmd[i] and m.analog_valid and m.addr >= 0:
                # a sample taken after the contact must have opened, and fresh
                if clock.diff(m.t_analog, ct.t_cmd[i]) > self.fb_ms and \
                        clock.diff(now, m.t_analog) <= self.max_age:
                    a = m.current_ma
                    if a < 0:
                        a = -a
                    if a > self.weld_ma:
                        cond = True
                        if vb >= 0:
                            d = m.voltage_mv - vb
                            if d > self.weld_mv or d < -self.weld_mv:
                                cond = False
            if cond:
                if not self.weld_on[i]:
                    self.weld_on[i] = 1
                    self.t_weld[i] = now
                if clock.diff(now, self.t_weld[i]) >= self.weld_confirm:
                    self._latch(F_WELD_CURRENT, i, m.current_ma, now)
            else:
                self.weld_on[i] = 0

    def _decide(self, now):
        ct = self.ct
        mods = self.bank.modules
        vbus = self._bus_ref()
        self.bus_mv = vbus if vbus >= 0 else -1
        shift = self._ocv_shift() if vbus >= 0 else 0
        best = -1
        best_a = _BIG
        busy = 0                      # closings / openings in progress
        self.ramp_down = False
        for i in range(self.n_exp):
            m = mods[i]
            if ct.cmd[i]:
                busy += self._closed_slot(i, m, now)
                continue
            # output open: full checks, then the gate
            code = self.rules.check(i, m, now, True)
            self._codes[i] = code
            if code:
                self._set(i, self._state_for(code, i), code, self.rules.v, now)
                continue
            dwelling = self.mod_state[i] == MOD_DWELL
            code = self._gate(i, m, vbus, shift, 0 if dwelling else self.hyst)
            if code == CHK_LINK:
                self._set(i, MOD_BLOCKED, code, 0, now)
            elif code:
                self._set(i, MOD_PENDING, code, self._v, now)
            elif self.hold_joins:
                self._set(i, MOD_PENDING, CHK_JOIN_HOLD, self._v, now)   # ready, held
            else:
                if not dwelling:
                    self.t_state[i] = now
                self._set(i, MOD_DWELL, 0, self._v, now)
                a = self.dv_mv[i]
                if a < 0:
                    a = -a
                if a < best_a:
                    best_a = a
                    best = i
        if self.faults:
            self.ramp_down = True
            return
        # at most one close per step: the smallest |dV|, its dwell complete, one per dwell
        if best >= 0 and not busy and clock.diff(now, self.t_state[best]) >= self.dwell \
                and clock.diff(now, self.t_last_close) >= self.dwell:
            ct.set(best, 1, now)
            self.t_last_close = now
            self._set(best, MOD_CLOSING, 0, best_a, now)

    def _closed_slot(self, i, m, now):
        """Slot i's output is closed: stay checks; open at once (critical), ramp down
        then open (any other reason), or confirm.  Returns 1 while a closing or an
        opening is in progress, else 0."""
        ct = self.ct
        st = self.mod_state[i]
        code = self.rules.check(i, m, now, False)
        self._codes[i] = code
        v = self.rules.v
        if critical(code):
            ct.set(i, 0, now)                             # critical: open at once
            self._set(i, self._state_for(code, i), code, v, now)
            return 0
        if code:
            if st != MOD_OPENING:
                self.t_state[i] = now
            self._set(i, MOD_OPENING, code, v, now)
            a = m.current_ma
            if a < 0:
                a = -a
            if a < self.open_ma or clock.diff(now, self.t_state[i]) >= self.open_wait:
                ct.set(i, 0, now)
                self._set(i, self._state_for(code, i), code, v, now)
                return 0
            self.ramp_down = True
            return 1
        if st == MOD_CLOSING and ct.fb_closed(i) == 0:
            return 1                                      # ct.check() latches after feedback_ms
        self._set(i, MOD_ADMITTED, 0, 0, now)             # confirmed, or opening cancelled
        return 0

    # ---------------------------------------------------------------- the gate
    def _bus_ref(self):
        """The voltage a joining branch is compared with (mV), or _V_UNKNOWN /
        _V_ISOLATED.  Measured DC link when the board has a sensor; without one,
        the mean of the closed modules' own readings, and for the first module only
        an input proving the DC link isolated (docs/admission.md)."""
        if self.sensor is not None:
            return self.link_mv if self.link_mv >= 0 else _V_UNKNOWN
        s = 0
        n = 0
        mods = self.bank.modules
        for i in range(self.n_exp):
            if self.ct.cmd[i] and mods[i].analog_valid:
                s += mods[i].voltage_mv
                n += 1
        if n:
            return s // n
        if self.iso_pin is not None and self.iso_pin.value() == 1:
            return _V_ISOLATED
        return _V_UNKNOWN

    def _ocv_shift(self):
        """The closed modules' mean IR drop (mV, + while they charge): their currents
        times their loop resistance (measured where below the configured one), so that
        bus reference - shift estimates the bank's open-circuit voltage, the voltage a
        joining module meets once the load stops.  0 when nothing is closed or no
        current flows.
        |I| <= 2 x rating (check current_range) <= 4e6 mA, R <= 100 mOhm: each product
        < 2**29, divided to mV before summing."""
        mods = self.bank.modules
        s = 0
        n = 0
        for i in range(self.n_exp):
            m = mods[i]
            if self.ct.cmd[i] and m.analog_valid:
                r = self.loop_mohm[i]
                if r <= 0:
                    r = self.r_cfg
                s += m.current_ma * r // 1000
                n += 1
        return s // n if n else 0

    def _gate(self, i, m, vbus, shift, margin):
        """Join gate of slot i against vbus; margin = hysteresis when entering.
        The voltage limit (max_dv_mv) holds when the difference from the measured bus
        OR from the bank's open-circuit estimate (vbus - shift) is within it, whichever
        is smaller (dv_mv[i]): a bus that sags or rises under load is no reason to keep
        a module out (docs/admission.md, "Joining a bank under load").  The current
        limits always apply to the difference from the measured bus itself: the
        current at the instant of closing."""
        if vbus == _V_UNKNOWN:
            self._v = 0
            return CHK_LINK
        if vbus == _V_ISOLATED:
            self.dv_mv[i] = 0
            self._v = 0
            return 0
        dv = m.voltage_mv - vbus
        a = dv if dv >= 0 else -dv
        do = dv + shift
        ao = do if do >= 0 else -do
        if ao < a:
            self.dv_mv[i] = do
            self._v = ao
        else:
            self.dv_mv[i] = dv
            self._v = a
        if self._v + margin > self.max_dv:
            return CHK_DV
        x = a + margin
        r = self.loop_mohm[i]
        if r <= 0:
            r = self.r_cfg
        ip = x * 1000 // r            # x < 2**18 -> < 2**28
        lim = m.dsg_limit_ma if dv > 0 else m.chg_limit_ma
        if lim < self.lim_min:
            lim = 0                   # tapered (nearly) to 0: no join in that direction
        if ip > self.inrush:
            self._v = a * 1000 // r
            return CHK_INRUSH
        if ip > lim:
            self._v = a * 1000 // r
            return CHK_MOD_LIMIT
        return 0
