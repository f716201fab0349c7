# Admission core: what both topologies share -- the per-module state and its events,
# the step skeleton, latched faults (and their persistence), the aging pass of the time
# model, the pending bookkeeping, the bank state and the combined limits, and the
# read-only public view.  The topology subclasses (bankgate.admission.branch,
# bankgate.admission.mainbus) add the weld detection and the open/close decisions;
# bankgate.admission.Admission() builds the configured one.
# docs/admission.md is the full description (state machines, every check code,
# the gating and limit rules, the safety case); this header is the summary.
#
# Called by the main loop: step(now, bus_fault, id_fault_mask, inverter_ok) at
# least every control.period_ms and whenever new module data arrives.  One step:
#   1. notice an external hw.release_all() (the loop's exception path), the local
#      reset input, read the DC-link sensor;
#   2. feedback check (failed-to-close / welded) and measured weld detection
#      (current through an opened branch, DC link held with everything open);
#      any latched fault opens every output in this same step;
#   3. evaluate every expected module (first failing check, stable code + value:
#      bankgate.admission.rules);
#   4. per topology: open what must open (critical: at once; otherwise ramp first),
#      then at most one close (branch: the smallest |dV| whose dwell is complete);
#   5. bank state, admitted mask, combined limits, events.
# Reaction bound: a critical alarm, a lost/stale module or a latched fault seen in
# step() opens the affected output(s) in that same call.
#
# Units: _mv, _ma (+ = charging the module), _mohm, t_* / now = ticks_ms (wrapping,
# compared with bankgate.clock).  Every intermediate is kept inside +-2**30:
# voltages < 2**17, |dV| * 1000 < 2**27, currents < 2**26 (see limits.py).
# step() allocates nothing (tests/mp/test_admission_*.py prove it with heap_lock).
import array

from micropython import const

from bankgate import clock, limits
from bankgate.admission.checks import (
    BANK_BOOT, BANK_WAITING, BANK_JOINING, BANK_CLOSED, BANK_DEGRADED, BANK_OPENING, BANK_FAULT,
    STATE_NAMES, MOD_ABSENT, MOD_CHECKING, MOD_PENDING, MOD_DWELL, MOD_CLOSING, MOD_ADMITTED,
    MOD_OPENING, MOD_BLOCKED, MOD_FAULT, MOD_STATE_NAMES, CHK_ABSENT, CHK_FAULT, CHK_NO_ALARM_DATA,
    CHK_NO_LIMITS, CHK_NO_ID, CHK_BOOT_HOLD, CHECK_NAMES)
from bankgate.admission.latches import Latches
from bankgate.admission.rules import Rules
from bankgate.contactor import Contactors, FAULT_NAMES
from bankgate.events import EV_BANK_STATE, EV_MODULE_STATE, EV_CHECK_FAIL, EV_CHECK_CLEAR, EV_PENDING_LONG

_LINK_MAX_MV = const(200000)


class AdmissionCore(Latches):
    branch = False                    # set by the topology subclass
    topology = ""

    def __init__(self, hw, cfg, bank, events):
        self.hw = hw
        self.bank = bank
        self.events = events
        b = cfg["bank"]
        c = cfg["contactors"]
        n_slots = len(bank.modules)
        self.n_exp = b["expected_modules"]
        if self.n_exp > n_slots:
            raise ValueError("bank.expected_modules %d > %d slots" % (self.n_exp, n_slots))
        self.n_slots = n_slots
        self._addr = array.array("h", b["addresses"] + [-1] * (n_slots - self.n_exp))
        self.expected = self.n_exp
        self.expected_mask = (1 << self.n_exp) - 1
        # the contactors (released at construction, before anything can fail)
        self.ct = Contactors(hw, cfg, events, b["addresses"] if self.branch else ())
        self._read_config(cfg)
        now = hw.clock.ticks_ms()
        self.rules = Rules(cfg, self._addr, n_slots, now)   # the read-only checks
        self.dq = self.rules.dq                              # frozen / implausible data
        self.na_checks = self.rules.na_checks
        # local-only inputs
        self.sensor = hw.link_sensor
        self.reset_pin = hw.inputs.get(c["reset_input"]) if c["reset_input"] else None
        self.iso_pin = hw.inputs.get(c["link_isolated_input"]) if c["link_isolated_input"] else None
        if c["reset_input"] and self.reset_pin is None:
            raise ValueError("contactors.reset_input: the board has no input named %r" % c["reset_input"])
        if c["link_isolated_input"] and self.iso_pin is None:
            raise ValueError("contactors.link_isolated_input: no input named %r" % c["link_isolated_input"])
        self._rst_prev = 1            # a button held at boot is not an edge
        self._init_state(n_slots, now)
        # latched faults survive resets (bankgate.latchstore): restored here, before
        # the first step, so nothing can close between boot and restore
        self.store = None
        if getattr(hw, "fs", None) is not None:
            self._restore(now)

    def _read_config(self, cfg):
        g = cfg["gating"]
        c = cfg["contactors"]
        self.max_dv = g["max_dv_mv"]
        self.hyst = g["hysteresis_mv"]
        self.dwell = g["dwell_ms"]
        self.inrush = g["max_inrush_ma"]
        self.r_cfg = g["loop_resistance_mohm"]
        self.max_age = g["max_age_ms"]
        self.pend_ev = g["pending_event_ms"]
        self.pre_timeout = g["precharge_timeout_ms"]
        self.pre_min = g["precharge_min_ms"]
        self.open_ma = g["open_current_ma"]
        self.open_wait = g["open_wait_ms"]
        self.lim_min = g["min_limit_ma"]
        self.share_min = g["share_min_ma"]
        self.weld_mv = c["weld_mv"]
        self.weld_ma = c["weld_ma"]
        self.weld_confirm = c["weld_confirm_ms"]
        self.weld_link = c["weld_link_ms"]
        self.fb_ms = c["feedback_ms"]

    def _init_state(self, n, now):
        # ---- public state (read it; only this package writes it)
        self.state = BANK_BOOT
        self.mod_state = bytearray(n)
        self.mod_reason = bytearray(n)
        self.mod_value = array.array("i", bytes(4 * n))
        self.pending_since = array.array("i", [-1] * n)
        self.dv_mv = array.array("i", bytes(4 * n))      # last V_module - V_bus seen by the gate
        self.loop_mohm = array.array("i", bytes(4 * n))  # estimates (use_measured_loop); 0 = configured
        self.admitted_mask = 0
        self.admitted = 0
        self.chg_limit_ma = 0
        self.dsg_limit_ma = 0
        self.chg_v_mv = 0
        self.dsg_v_mv = 0
        self.ramp_down = False
        self.faults = 0
        self.fault_slot = -1          # module slot (branch) / -1 of the first latched fault
        self.fault_value = 0
        self.link_mv = -1             # last DC-link reading (-1 unknown); also bank.link_mv
        self.bus_mv = -1              # the reference the branch gate used (-1 unknown)
        self.bank_ma = 0              # sum of the admitted modules' currents
        self.bank_reason = 0          # first failing bank-wide check
        self.bank_value = 0
        self.exceptions = 0           # step() exceptions (outputs released each time)
        self.check_names = CHECK_NAMES
        self.state_names = STATE_NAMES
        self.mod_state_names = MOD_STATE_NAMES
        self.fault_codes = FAULT_NAMES
        # ---- set by the main loop before step()
        # join-only bus check: a bus verdict that is not healthy but not severe (termination
        # suspect, wiring noise) blocks new joins; closed modules stay while their data is
        # fresh (severe faults come as bus_fault)
        self.bus_join_block = 0
        # True: no module is admitted (every ready module stays pending, reason join_hold);
        # nothing opens because of it, admitted modules stay (a derate-only control)
        self.hold_joins = False
        # ---- private, preallocated
        self.t_boot = now
        self.t_state = array.array("i", [now] * n)       # DWELL start / OPENING start
        self.t_last_close = clock.add(now, -self.dwell)
        self.pend_told = bytearray(n)
        self.weld_on = bytearray(n + 1)                  # [n]: the main / link condition
        self.t_weld = array.array("i", [now] * (n + 1))
        self.link_on = 0
        self.t_link = now
        self._t_aged = now                               # last aging pass (_age)
        self._age_k = 0                                  # its round-robin slot
        self._codes = bytearray(n)
        self._v = 0                                      # value behind the last gate result
        self._vlim = array.array("i", bytes(8))
        for i in range(n):
            self.mod_state[i] = MOD_ABSENT

    # ================================================================ public
    def step(self, now, bus_fault, id_fault_mask, inverter_ok):
        try:
            self._step(now, bus_fault, id_fault_mask, inverter_ok)
        except Exception as e:
            self._fail_safe()
            raise e             # (not a bare raise: the simulator may compile this natively)

    def urgent(self, i, now, id_fault_mask):
        """A frame for slot i was decoded between control steps: True when the slot's
        checks now give another result than the last step() decided on, so the caller
        runs step() at once instead of at the next control period (a critical alarm
        opens in the step that sees it).  Everything else a frame can change (the gate
        of a pending module, the bank references) waits for the period.  Reads only;
        allocation-free."""
        if i < 0 or i >= self.n_exp:
            return False
        r = self.rules
        r.idm = id_fault_mask            # what step() is about to use anyway
        return r.check(i, self.bank.modules[i], now, self._joining(i)) != self._codes[i]

    def use_measured_loop(self, me, conf_min):
        """After Metrics.update() (me): slot i's confident loop-resistance estimate
        replaces gating.loop_resistance_mohm in its join limit (loop_mohm[i]) whenever
        it is below it -- the configured value may never be larger than what is
        measured (a smaller R predicts a larger join current: stricter).  Metrics keep
        the last estimate of a module that left the bank.  The diagnosis
        loop_r_below_config reports a clear contradiction (below 2/3).  No allocation."""
        lm = self.loop_mohm
        for i in range(self.n_exp):
            r = me.r_mohm[i]
            if me.r_conf[i] >= conf_min and r > 0:
                lm[i] = r if r < self.r_cfg else 0

    def view(self, i):
        """Slot i as (state, reason, value, pending_since, dv_mv): MOD_* and CHK_*
        codes (names: bankgate.admission.checks), pending_since -1 when not pending;
        None for a slot that is not expected.  Allocates (reporting)."""
        if i < 0 or i >= self.n_exp:
            return None
        return (self.mod_state[i], self.mod_reason[i], self.mod_value[i], self.pending_since[i],
                self.dv_mv[i])

    def pending_mask(self):
        """Bit i set: slot i is pending (or dwelling) since pending_since[i].  No allocation."""
        mask = 0
        ps = self.pending_since
        for i in range(self.n_exp):
            if ps[i] != -1:
                mask |= 1 << i
        return mask

    def snapshot(self):
        """Telemetry view (allocates)."""
        mods = []
        for i in range(self.n_exp):
            mods.append({
                "slot": i, "addr": self._addr[i], "state": MOD_STATE_NAMES[self.mod_state[i]],
                "reason": CHECK_NAMES[self.mod_reason[i]], "value": self.mod_value[i],
                "dv_mv": self.dv_mv[i], "pending_since": self.pending_since[i],
                "closed": self._is_closed(i),
            })
        return {
            "state": STATE_NAMES[self.state], "admitted": self.admitted, "expected": self.expected,
            "admitted_mask": self.admitted_mask, "topology": self.topology,
            "chg_limit_ma": self.chg_limit_ma, "dsg_limit_ma": self.dsg_limit_ma,
            "chg_v_mv": self.chg_v_mv, "dsg_v_mv": self.dsg_v_mv, "ramp_down": self.ramp_down,
            "faults": [name for bit, name in FAULT_NAMES if self.faults & bit],
            "fault_slot": self.fault_slot, "fault_value": self.fault_value,
            "reason": CHECK_NAMES[self.bank_reason], "value": self.bank_value,
            "link_mv": self.link_mv, "bank_ma": self.bank_ma, "exceptions": self.exceptions,
            "outputs": [self.ct.cmd[i] for i in range(self.ct.n)], "modules": mods,
            "na_checks": [CHECK_NAMES[c] for c in self.na_checks], "hold_joins": self.hold_joins,
        }

    # ================================================================ topology hooks
    # (bankgate.admission.branch / mainbus override every one of these)
    def _joining(self, i):
        """True while slot i's output is open (its join-only checks apply)."""
        raise NotImplementedError

    def _is_closed(self, i):
        raise NotImplementedError

    def _closed_mask(self):
        """Bit i: slot i is connected to the DC link."""
        raise NotImplementedError

    def _soc_set(self):
        """Bit i: slot i's SOC is in the reference range of the SOC spread check."""
        raise NotImplementedError

    def _weld(self, now):
        raise NotImplementedError

    def _decide(self, now):
        """Steps 3-4: the checks of every expected module, the opens and the one close."""
        raise NotImplementedError

    # ================================================================ step
    def _fail_safe(self):
        """Exception path: release every output, forget every close.  Never raises."""
        self.ct.release_now()
        try:
            self.exceptions += 1
            self._forget()
            self.ramp_down = False
            self.admitted_mask = 0
            self.admitted = 0
            self.chg_limit_ma = 0
            self.dsg_limit_ma = 0
            for i in range(self.n_slots):
                s = self.mod_state[i]
                if s == MOD_CLOSING or s == MOD_ADMITTED or s == MOD_OPENING:
                    self.mod_state[i] = MOD_CHECKING
        except Exception:
            pass

    def _step(self, now, bus_fault, idm, inverter_ok):
        ct = self.ct
        if clock.pass_due(now, self._t_aged):
            self._age(now)
        # 1. outputs released behind our back (the loop's exception path)?
        if ct.sync(now):
            self._forget()
        if self.reset_pin is not None:
            v = self.reset_pin.value()
            if v and not self._rst_prev:
                self.reset_faults(now)
            self._rst_prev = v
        vl = -1
        if self.sensor is not None:
            vl = self.sensor.read_mv()
            if vl < 0 or vl > _LINK_MAX_MV:
                vl = -1
        self.link_mv = vl
        self.bank.link_mv = vl
        # 2. interlock: feedback, measured welds
        f = ct.check(now)
        if f:
            i = ct.fault_index
            self._latch(f, i if self.branch else -1, ct.fb_closed(i), now)
        r = self.rules
        r.idm = idm
        r.bank(now, self.bank.modules, self.faults, bus_fault, inverter_ok, self.bus_join_block,
               self.t_boot, self._soc_set())
        code = r.stay_code
        self.bank_reason = code if code else r.join_code
        self.bank_value = r.stay_val if code else r.join_val
        self.dq.update(now, self.bank.modules, self.n_exp, self._closed_mask(), self.bank_ma,
                       self.admitted)
        self._weld(now)
        if self.faults and ct.any_closed():
            ct.open_all(now)
        # 3.-4.
        self._decide(now)
        # 5.
        self._pending(now)
        self._bank_state(now)

    def _age(self, now):
        """The aging pass of the time model (bankgate.clock, docs/architecture.md):
        every stamp admission reads -- its own timers, the contactor command times and
        every module's data stamps -- is held at most AGE_MAX old, so no age can wrap.
        Run every AGE_PASS_MS from step(): the scalars each time, one slot's stamps
        per run (every stamp within (n_slots + 1) * AGE_PASS_MS); allocation-free."""
        self._t_aged = now
        self.t_boot = clock.hold(now, self.t_boot)
        self.t_last_close = clock.hold(now, self.t_last_close)
        self.t_link = clock.hold(now, self.t_link)
        self._age_topo(now)
        k = self._age_k
        n = self.n_slots
        self._age_k = k + 1 if k < n else 0
        clock.hold_range(now, self.t_weld, k, k + 1)
        if k < n:
            clock.hold_range(now, self.t_state, k, k + 1)
            clock.hold_range(now, self.pending_since, k, k + 1)
            self.bank.modules[k].age(now)
        self.ct.age(now, k)

    def _age_topo(self, now):
        """The topology's own time stamps (aging pass)."""

    def _state_for(self, code, i):
        if code == CHK_ABSENT:
            return MOD_ABSENT
        if code == CHK_NO_ALARM_DATA or code == CHK_NO_LIMITS or code == CHK_NO_ID:
            return MOD_CHECKING
        if code == CHK_FAULT and (i == self.fault_slot or not self.branch):
            return MOD_FAULT
        return MOD_BLOCKED

    def _set(self, i, st, code, val, now):
        addr = self._addr[i]
        old = self.mod_reason[i]
        if old != code:
            if old:
                self.events.emit(now, EV_CHECK_CLEAR, addr, old, 0)
            if code:
                self.events.emit(now, EV_CHECK_FAIL, addr, code, val)
            self.mod_reason[i] = code
        if self.mod_state[i] != st:
            self.mod_state[i] = st
            self.events.emit(now, EV_MODULE_STATE, addr, st, code)
        self.mod_value[i] = val

    # ---------------------------------------------------------------- common tail
    def _pending(self, now):
        for i in range(self.n_exp):
            st = self.mod_state[i]
            if st == MOD_PENDING:
                if self.pending_since[i] < 0:
                    self.pending_since[i] = now
                    self.pend_told[i] = 0
            elif st != MOD_DWELL:
                self.pending_since[i] = -1
                continue
            t = self.pending_since[i]
            if t >= 0 and not self.pend_told[i] and clock.diff(now, t) >= self.pend_ev:
                self.pend_told[i] = 1
                a = self.dv_mv[i]
                self.events.emit(now, EV_PENDING_LONG, self._addr[i], clock.diff(now, t) // 1000,
                                 a if a >= 0 else -a)

    def _bank_state(self, now):
        mods = self.bank.modules
        mask = 0
        n = 0
        busy = False
        for i in range(self.n_exp):
            st = self.mod_state[i]
            if st == MOD_ADMITTED:
                mask |= 1 << i
                n += 1
            elif st == MOD_PENDING or st == MOD_DWELL or st == MOD_CLOSING:
                busy = True
        self.admitted_mask = mask
        self.admitted = n
        s = 0
        for i in range(self.n_exp):
            if (mask >> i) & 1:
                s += mods[i].current_ma
        self.bank_ma = s
        self._limits(mods, mask, n)
        if self.faults:
            st = BANK_FAULT
        elif self.ramp_down:
            st = BANK_OPENING
        elif n == self.n_exp:
            st = BANK_CLOSED
        elif n:
            st = BANK_DEGRADED
        elif self.rules.join_code == CHK_BOOT_HOLD:
            st = BANK_BOOT
        elif busy:
            st = BANK_JOINING
        else:
            st = BANK_WAITING
        if st != self.state:
            self.events.emit(now, EV_BANK_STATE, -1, st, self.state)
            self.state = st

    def _limits(self, mods, mask, n):
        """The combined limits of the admitted bank (bankgate.limits); 0 while ramping down."""
        if self.ramp_down or n == 0:
            self.chg_limit_ma = 0
            self.dsg_limit_ma = 0
            self.chg_v_mv = 0
            self.dsg_v_mv = 0
        else:
            self.chg_limit_ma = limits.current_limit(mods, mask, True, self.share_min)
            self.dsg_limit_ma = limits.current_limit(mods, mask, False, self.share_min)
            limits.voltage_limits(mods, mask, self._vlim)
            self.chg_v_mv = self._vlim[0]
            self.dsg_v_mv = self._vlim[1]
