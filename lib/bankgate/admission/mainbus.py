# Admission, main topology (common bus): every expected module hard-paralleled behind
# one main contactor with a precharge (docs/admission.md, "Main topology").  All or
# nothing: every module passes every check and their voltage spread is within
# max_dv_mv, then dwell -> precharge -> main (measured DC link within the join limit of
# the bank) -> main confirmed -> precharge off.  Measured welds: current with the main
# open, DC link held at bank voltage with everything open.  Imported only when
# gating.topology is "main".
import array

from micropython import const

from bankgate import clock
from bankgate.admission.checks import (
    MOD_PENDING, MOD_DWELL, MOD_CLOSING, MOD_ADMITTED, MOD_OPENING, MOD_BLOCKED,
    CHK_LINK, CHK_BANK_WAIT, CHK_DV, CHK_INRUSH, CHK_MOD_LIMIT, CHK_SPREAD, CHK_JOIN_HOLD, critical)
from bankgate.admission.core import AdmissionCore
from bankgate.contactor import F_WELD_CURRENT, F_WELD_LINK, F_PRECHARGE

# phases
_P_IDLE = const(0)
_P_DWELL = const(1)
_P_PRECHARGE = const(2)
_P_CLOSING = const(3)         # main energised, precharge still on until main confirmed
_P_CLOSED = const(4)
_P_OPENING = const(5)

_BIG = const(0x3FFFFFFF)


class MainAdmission(AdmissionCore):
    branch = False
    topology = "main"

    def __init__(self, hw, cfg, bank, events):
        self.phase = _P_IDLE
        AdmissionCore.__init__(self, hw, cfg, bank, events)
        n = self.n_slots
        self.t_phase = hw.clock.ticks_ms()
        self._vals = array.array("i", bytes(4 * n))
        self._n_bad = 0               # this step: modules failing a check
        self._imm = False             # ... one of them critically
        self._vmin = _BIG             # ... voltage range of the others
        self._vmax = -1
        self._gcode = 0               # the bank-wide gate reason while idle
        self._gval = 0

    # ---------------------------------------------------------------- hooks
    def _joining(self, i):
        return self.phase < _P_CLOSING

    def _is_closed(self, i):
        return self.phase >= _P_CLOSING

    def _closed_mask(self):
        return self.expected_mask if self.phase >= _P_CLOSING else 0

    def _soc_set(self):
        mask = 0                      # every present module (all join together)
        mods = self.bank.modules
        for i in range(self.n_exp):
            if mods[i].addr >= 0:
                mask |= 1 << i
        return mask

    def _forget(self):
        self.phase = _P_IDLE

    def _age_topo(self, now):
        self.t_phase = clock.hold(now, self.t_phase)

    # ---------------------------------------------------------------- weld
    def _vbank(self):
        """Mean voltage of the present expected modules (-1: none)."""
        s = 0
        n = 0
        mods = self.bank.modules
        for i in range(self.n_exp):
            m = mods[i]
            if m.addr >= 0 and m.analog_valid:
                s += m.voltage_mv
                n += 1
        return s // n if n else -1

    def _weld(self, now):
        ct = self.ct
        if ct.cmd[0] or ct.cmd[1]:
            self.weld_on[self.n_slots] = 0
            self.link_on = 0
            return
        t_open = ct.t_cmd[0]
        if clock.diff(ct.t_cmd[1], t_open) > 0:
            t_open = ct.t_cmd[1]
        mods = self.bank.modules
        s = 0
        n = 0
        for i in range(self.n_exp):
            m = mods[i]
            if self.dq.frozen[i]:
                continue                                  # a replayed current proves nothing
            if m.addr >= 0 and m.analog_valid and clock.diff(m.t_analog, t_open) > self.fb_ms \
                    and clock.diff(now, m.t_analog) <= self.max_age:
                s += m.current_ma
                n += 1
        k = self.n_slots
        a = s if s >= 0 else -s
        if n and a > self.weld_ma:
            if not self.weld_on[k]:
                self.weld_on[k] = 1
                self.t_weld[k] = now
            if clock.diff(now, self.t_weld[k]) >= self.weld_confirm:
                self._latch(F_WELD_CURRENT, -1, s, now)
        else:
            self.weld_on[k] = 0
        self._weld_link(now)

    def _weld_link(self, now):
        """DC link held at bank voltage with everything open."""
        vb = self._vbank()
        vl = self.link_mv
        if self.weld_link and vb >= 0 and vl >= 0 and -self.weld_mv <= vl - vb <= self.weld_mv:
            if not self.link_on:
                self.link_on = 1
                self.t_link = now
            if clock.diff(now, self.t_link) >= self.weld_link:
                self._latch(F_WELD_LINK, -1, vl, now)
        else:
            self.link_on = 0

    # ---------------------------------------------------------------- the gate
    def _r_main(self):
        """Main topology: the configured loop resistance, or the lowest measured one
        that contradicts it (use_measured_loop)."""
        r = self.r_cfg
        for i in range(self.n_exp):
            x = self.loop_mohm[i]
            if 0 < x < r:
                r = x
        return r

    def _gate_main(self, vbank, vlink, margin):
        """Close-main gate: DC link within the limit of the bank and the predicted
        inrush (bank loop = configured R / N) within max_inrush and N x min limit."""
        dv = vbank - vlink
        a = dv if dv >= 0 else -dv
        self._v = a
        x = a + margin
        if x > self.max_dv:
            return CHK_DV
        r = self._r_main() // self.n_exp
        if r < 1:
            r = 1
        ip = x * 1000 // r
        if ip > self.inrush:
            self._v = ip
            return CHK_INRUSH
        lo = _BIG
        mods = self.bank.modules
        for i in range(self.n_exp):
            lim = mods[i].dsg_limit_ma if dv > 0 else mods[i].chg_limit_ma
            if lim < self.lim_min:
                lim = 0               # tapered (nearly) to 0: no join in that direction
            if lim < lo:
                lo = lim
        if ip > lo * self.n_exp:      # limits validated <= 2e6: * 16 < 2**25
            self._v = ip
            return CHK_MOD_LIMIT
        return 0

    # ---------------------------------------------------------------- the step
    def _decide(self, now):
        self._evaluate(now)
        ph = self.phase
        self._gcode = 0
        self._gval = 0
        self.ramp_down = False
        if ph >= _P_CLOSING:
            ph = self._closed_phase(now, ph)
        elif ph == _P_PRECHARGE:
            ph = self._precharge_phase(now)
        else:
            ph = self._idle_phase(now, ph)
        self.phase = ph
        if self.faults:
            self.ramp_down = True
        self._module_states(now, ph)

    def _evaluate(self, now):
        """Every expected module's first failing check (closed: the stay checks)."""
        mods = self.bank.modules
        join = self.phase < _P_CLOSING
        n_bad = 0
        imm = False
        vmin = _BIG
        vmax = -1
        r = self.rules
        for i in range(self.n_exp):
            m = mods[i]
            code = r.check(i, m, now, join)
            self._codes[i] = code
            self._vals[i] = r.v
            if code:
                n_bad += 1
                if critical(code):
                    imm = True
            else:
                x = m.voltage_mv
                if x < vmin:
                    vmin = x
                if x > vmax:
                    vmax = x
        self._n_bad = n_bad
        self._imm = imm
        self._vmin = vmin
        self._vmax = vmax

    def _closed_phase(self, now, ph):
        ct = self.ct
        if self._imm or self.faults:
            ct.open_all(now)
            return _P_IDLE
        if self._n_bad:
            if ph != _P_OPENING:
                ph = _P_OPENING
                self.t_phase = now
            s = 0
            mods = self.bank.modules
            for i in range(self.n_exp):
                s += mods[i].current_ma
            if s < 0:
                s = -s
            if s < self.open_ma or clock.diff(now, self.t_phase) >= self.open_wait:
                ct.open_all(now)
                return _P_IDLE
            self.ramp_down = True
            return ph
        if ph == _P_OPENING:
            return _P_CLOSED                              # the reason cleared: stay closed
        if ph == _P_CLOSING and ct.fb_closed(0) != 0:     # confirmed (or no feedback)
            ct.set(1, 0, now)
            return _P_CLOSED
        return ph

    def _precharge_phase(self, now):
        ct = self.ct
        vl = self.link_mv
        if self._n_bad or self.faults or vl < 0:
            ct.open_all(now)                              # no load current flows yet
            return _P_IDLE
        if clock.diff(now, self.t_phase) > self.pre_timeout:
            self._latch(F_PRECHARGE, -1, vl, now)
            return _P_IDLE
        if clock.diff(now, self.t_phase) >= self.pre_min:
            if self._gate_main(self._vbank(), vl, 0) == 0:
                ct.set(0, 1, now)
                self.t_phase = now
                return _P_CLOSING
        return _P_PRECHARGE

    def _idle_phase(self, now, ph):
        ok = False
        if self._n_bad == 0:
            margin = 0 if ph == _P_DWELL else self.hyst
            spread = self._vmax - self._vmin
            if self.link_mv < 0:
                self._gcode = CHK_LINK
            elif spread + margin > self.max_dv:
                self._gcode = CHK_SPREAD
                self._gval = spread
            elif self.hold_joins:
                self._gcode = CHK_JOIN_HOLD               # ready, held: stays pending
                self._gval = spread
            else:
                ok = True
        if not ok or self.faults:
            return _P_IDLE
        if ph != _P_DWELL:
            self.t_phase = now
            return _P_DWELL
        if clock.diff(now, self.t_phase) >= self.dwell:
            self.ct.set(1, 1, now)                        # precharge first
            self.t_phase = now
            return _P_PRECHARGE
        return ph

    def _module_states(self, now, ph):
        """Module states follow the bank."""
        mods = self.bank.modules
        gcode = self._gcode
        n_bad = self._n_bad
        for i in range(self.n_exp):
            code = self._codes[i]
            v = self._vals[i]
            if ph == _P_CLOSED:
                self._set(i, MOD_ADMITTED, 0, 0, now)
            elif ph == _P_OPENING:
                self._set(i, MOD_OPENING, code if code else CHK_BANK_WAIT, v if code else n_bad, now)
            elif code:
                self._set(i, self._state_for(code, i), code, v, now)
            elif ph == _P_PRECHARGE or ph == _P_CLOSING:
                self._set(i, MOD_CLOSING, 0, self.link_mv, now)
            elif ph == _P_DWELL:
                self._set(i, MOD_DWELL, 0, 0, now)
            elif gcode == CHK_SPREAD or gcode == CHK_JOIN_HOLD:
                self.dv_mv[i] = mods[i].voltage_mv - self._vmin
                self._set(i, MOD_PENDING, gcode, self._gval, now)
            elif gcode:
                self._set(i, MOD_BLOCKED, gcode, self._gval, now)
            else:
                self._set(i, MOD_BLOCKED, CHK_BANK_WAIT, n_bad, now)
