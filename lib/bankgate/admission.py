# Admission: the checks before any contactor closes, closed-loop voltage-difference
# gating, the fail-safe interlock and the combined limits of the admitted bank.
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
#   3. evaluate every expected module (first failing check, stable code + value);
#   4. per topology: open what must open (critical: at once; otherwise ramp first),
#      then at most one close (branch: the smallest |dV| whose dwell is complete);
#   5. bank state, admitted mask, combined limits, events.
# Reaction bound: a critical alarm, a lost/stale module or a latched fault seen in
# step() opens the affected output(s) in that same call.
#
# Units: _mv, _ma (+ = charging the module), _mohm, t_* / now = ticks_ms (wrapping,
# compared with bankgate.clock).  Every intermediate is kept inside +-2**30:
# voltages < 2**17, |dV| * 1000 < 2**27, currents < 2**26 (see limits.py).
# step() allocates nothing (tests/mp/test_admission.py proves it with heap_lock).
import array

from micropython import const

from bankgate import clock, limits
from bankgate.contactor import (
    Contactors, F_WELDED, F_FAIL_CLOSE, F_WELD_CURRENT, F_WELD_LINK, F_PRECHARGE, F_LATCH_STORE,
    FAULT_NAMES)
from bankgate.events import (
    EV_BANK_STATE, EV_MODULE_STATE, EV_CHECK_FAIL, EV_CHECK_CLEAR, EV_FAULT_LATCHED,
    EV_FAULT_CLEARED, EV_PENDING_LONG)

# ---- bank states
BANK_BOOT = const(0)        # boot hold: nothing may close yet
BANK_WAITING = const(1)     # nothing admitted, checks failing
BANK_JOINING = const(2)     # nothing admitted yet, modules pending / dwelling / closing
BANK_CLOSED = const(3)      # every expected module admitted
BANK_DEGRADED = const(4)    # some admitted, some pending or out
BANK_OPENING = const(5)     # ramp-down under load before opening
BANK_FAULT = const(6)       # a latched fault: everything open until reset_faults()
STATE_NAMES = ("boot", "waiting", "joining", "closed", "degraded", "opening", "fault")

# ---- module states
MOD_ABSENT = const(0)       # expected but not answering / no data (or not expected)
MOD_CHECKING = const(1)     # answering, data still incomplete (alarms, limits or identity missing)
MOD_PENDING = const(2)      # checks pass, voltage difference / inrush too large: waiting to converge
MOD_DWELL = const(3)        # gate holds, waiting out dwell_ms (and its turn: smallest |dV| first)
MOD_CLOSING = const(4)      # output energised, waiting for feedback (main: precharging)
MOD_ADMITTED = const(5)     # closed and counted in the bank limits
MOD_OPENING = const(6)      # must leave for a non-critical reason: ramp-down, then open
MOD_BLOCKED = const(7)      # a check fails
MOD_FAULT = const(8)        # its contactor has a latched fault
MOD_STATE_NAMES = ("absent", "checking", "pending", "dwell", "closing", "admitted", "opening",
                   "blocked", "fault")

# ---- check codes (stable: events, telemetry and docs use the numbers).  Evaluated in
# this order; a module's reason is the first that fails.  Codes 1..7 are CRITICAL for
# a closed output (open at once); 8..18 open after a ramp-down; 19..29 only gate joining;
# 30..32 (data that must make sense) are critical like 1..7, evaluated after CHK_STALE.
_CHK_OK = const(0)
CHK_ABSENT = const(1)         # no address / never answered / no analog data   value: addr
CHK_ADDR = const(2)           # answers at an address that is not the approved one   value: addr
CHK_STALE = const(3)          # analog or alarm data older than max_age_ms   value: age ms
CHK_ID_FAULT = const(4)       # identity problem from discovery (dup/swap/unexpected/model)   value: mask
CHK_NO_ALARM_DATA = const(5)  # alarm status never read
CHK_ALARM = const(6)          # critical alarm or protection   value: the bits
CHK_FAULT = const(7)          # a latched contactor fault   value: fault bits
CHK_BUS = const(8)            # bus verdict not healthy   value: verdict code
CHK_INVERTER = const(9)       # inverter heartbeat required and absent
CHK_NO_LIMITS = const(10)     # charge/discharge limits missing or older than limits_max_age_ms   value: age
CHK_LIMITS = const(11)        # limits implausible   value: the limit mA
CHK_NO_ID = const(12)         # identity (model, firmware) not read yet
CHK_MODEL = const(13)         # model not in bank.approved_models   value: model length
CHK_FIRMWARE_MIN = const(14)  # firmware below bank.firmware_min   value: version
CHK_FIRMWARE_SAME = const(15) # firmware differs from the bank's (most common)   value: version
CHK_CELLS = const(16)         # cell count != bank.cells   value: cells
CHK_CHEMISTRY = const(17)     # cell voltages / cell limit outside the chemistry   value: mV
CHK_NOMINAL = const(18)       # cells x chemistry nominal far from bank.nominal_mv   value: mV
CHK_PARALLEL = const(19)      # more modules answer than expected / allowed   value: count
CHK_BOOT_HOLD = const(20)     # boot hold   value: ms left
CHK_VOLTAGE = const(21)       # module voltage outside module_mv_min..max   value: mV
CHK_SOC = const(22)           # SOC outside soc_min..max   value: permille
CHK_SOC_SPREAD = const(23)    # SOC spread with the admitted bank too large   value: permille
CHK_LINK = const(24)          # DC link voltage unknown: never close blind
CHK_BANK_WAIT = const(25)     # main topology: other modules not ready   value: how many
CHK_DV = const(26)            # |V_module - V_bus| too large (pending)   value: |dV| mV
CHK_INRUSH = const(27)        # predicted circulating current > max_inrush_ma   value: mA
CHK_MOD_LIMIT = const(28)     # predicted current > the module's own limit   value: mA
CHK_SPREAD = const(29)        # main topology: module voltage spread too large   value: mV
# data that must make sense (bankgate.plausible): evaluated next to CHK_STALE and,
# like it, not fresh: they block joins and open a closed output at once
CHK_FROZEN = const(30)        # analog content unchanged while frozen_mah flowed   value: mAh
CHK_CELL_SUM = const(31)      # sum of cells - module voltage beyond cell_sum_tol_mv   value: mV
CHK_CURRENT_RANGE = const(32) # |I| above twice the module's rating   value: mA
CHK_JOIN_HOLD = const(33)     # joins held (Admission.hold_joins, the derate control)
CHECK_NAMES = (
    "ok", "absent", "address", "stale", "identity", "no_alarm_data", "alarm", "fault", "bus",
    "inverter", "no_limits", "limits", "no_identity", "model", "firmware_min", "firmware_same",
    "cells", "chemistry", "nominal", "parallel", "boot_hold", "voltage", "soc", "soc_spread",
    "link_unknown", "bank_wait", "dv", "inrush", "module_limit", "spread",
    "frozen", "cell_sum", "current_range", "join_hold")
_LAST_IMMEDIATE = const(7)    # codes 1..7 open a closed output at once
_LAST_STAY = const(18)        # codes 8..18 open after a ramp-down; >18 only gate joins

# chemistry windows: (cell min mV, cell max mV, cell "charge high" limit range, nominal mV)
_CHEM = {"lfp": (2000, 3800, 3400, 3800, 3200), "nmc": (2500, 4350, 4000, 4350, 3650)}

_V_UNKNOWN = const(-1)
_V_ISOLATED = const(-2)
_LINK_MAX_MV = const(200000)

# main-topology phases
_P_IDLE = const(0)
_P_DWELL = const(1)
_P_PRECHARGE = const(2)
_P_CLOSING = const(3)         # main energised, precharge still on until main confirmed
_P_CLOSED = const(4)
_P_OPENING = const(5)

_BIG = const(0x3FFFFFFF)


class Admission:
    def __init__(self, hw, cfg, bank, events):
        self.hw = hw
        self.bank = bank
        self.events = events
        b = cfg["bank"]
        g = cfg["gating"]
        c = cfg["contactors"]
        self.branch = g["topology"] == "branch"
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
        # configuration, read once
        self.max_dv = g["max_dv_mv"]
        self.hyst = g["hysteresis_mv"]
        self.dwell = g["dwell_ms"]
        self.inrush = g["max_inrush_ma"]
        self.r_cfg = g["loop_resistance_mohm"]
        self.v_min = g["module_mv_min"]
        self.v_max = g["module_mv_max"]
        self.soc_min = g["soc_min_pm"]
        self.soc_max = g["soc_max_pm"]
        self.soc_spread = g["soc_spread_pm"]
        self.max_age = g["max_age_ms"]
        self.lim_age = g["limits_max_age_ms"]
        self.pend_ev = g["pending_event_ms"]
        self.pre_timeout = g["precharge_timeout_ms"]
        self.pre_min = g["precharge_min_ms"]
        self.open_ma = g["open_current_ma"]
        self.open_wait = g["open_wait_ms"]
        self.crit = g["critical_alarms"]
        # warning bits a closed module may carry (over-current by default): opening its branch
        # under load would push its current onto the others and cascade (adm_step_load_cascade);
        # the share-aware limits bring its current back under its own limit instead
        self.stay_alarms = ~g["derate_alarms"] & 0xFFFF
        self.lim_min = g["min_limit_ma"]
        self.lim_max = g["max_limit_ma"]
        self.share_min = g["share_min_ma"]
        self.weld_mv = c["weld_mv"]
        self.weld_ma = c["weld_ma"]
        self.weld_confirm = c["weld_confirm_ms"]
        self.weld_link = c["weld_link_ms"]
        self.fb_ms = c["feedback_ms"]
        self.boot_hold = cfg["control"]["boot_hold_ms"]
        self.need_hb = cfg["inverter"]["require_heartbeat"]
        self.cells = b["cells"]
        self.max_par = b["max_parallel"] if b["max_parallel"] < self.n_exp else self.n_exp
        # join-only bus check, set by the main loop before step(): a bus verdict that is
        # not healthy but not severe (termination suspect, wiring noise) blocks new joins;
        # closed modules stay while their data is fresh (severe faults come as bus_fault)
        self.bus_join_block = 0
        self.hold_joins = False       # derate control (bankgate.derate): no module joins while set
        self.fw_min = b["firmware_min"]
        self.fw_same = b["firmware_same"]
        self.models = [m.encode().rstrip(b" \x00") for m in b["approved_models"]]
        self.need_id = bool(self.models) or self.fw_min > 0 or self.fw_same
        # issue 15: checks whose data the family does not carry are declared n/a
        from bankgate import familycaps
        self.na_mask = familycaps.na_mask(b["family"])
        self.na_checks = familycaps.na_checks(self.na_mask)
        if self.na_mask & familycaps.NA_MODEL:
            self.models = []
        if self.na_mask & familycaps.NA_FIRMWARE:
            self.fw_min = -1
            self.fw_same = False
        self.need_id = bool(self.models) or self.fw_min > 0 or self.fw_same
        self.cells_na = (self.na_mask & familycaps.NA_CELLS) != 0
        ch = _CHEM[b["chemistry"]]
        self.cell_lo, self.cell_hi, self.chi_lo, self.chi_hi = ch[0], ch[1], ch[2], ch[3]
        self.nom_mv = self.cells * ch[4]                 # <= 24 * 3650
        d = self.nom_mv - b["nominal_mv"]
        self.nominal_bad = (d if d > 0 else -d) * 10 > b["nominal_mv"]
        # local-only inputs
        self.sensor = hw.link_sensor
        self.reset_pin = hw.inputs.get(c["reset_input"]) if c["reset_input"] else None
        self.iso_pin = hw.inputs.get(c["link_isolated_input"]) if c["link_isolated_input"] else None
        if c["reset_input"] and self.reset_pin is None:
            raise ValueError("contactors.reset_input: the board has no input named %r" % c["reset_input"])
        if c["link_isolated_input"] and self.iso_pin is None:
            raise ValueError("contactors.link_isolated_input: no input named %r" % c["link_isolated_input"])
        self._rst_prev = 1            # a button held at boot is not an edge
        # ---- public state
        n = n_slots
        self.state = BANK_BOOT
        self.mod_state = bytearray(n)
        self.mod_reason = bytearray(n)
        self.mod_value = array.array("i", bytes(4 * n))
        self.pending_since = array.array("i", [-1] * n)
        self.dv_mv = array.array("i", bytes(4 * n))      # last V_module - V_bus seen by the gate
        self.loop_mohm = array.array("i", bytes(4 * n))  # estimates (metrics may fill); 0 = configured
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
        # ---- private, preallocated
        now = hw.clock.ticks_ms()
        self.t_boot = now
        self.t_state = array.array("i", [now] * n)       # DWELL start / OPENING start
        self.t_last_close = clock.add(now, -self.dwell)
        self.pend_told = bytearray(n)
        self.weld_on = bytearray(n + 1)                  # [n]: the main / link condition
        self.t_weld = array.array("i", [now] * (n + 1))
        self.link_on = 0
        self.t_link = now
        self.phase = _P_IDLE
        self.t_phase = now
        self._t_aged = now                               # last aging pass (_age)
        self._age_k = 0                                  # its round-robin slot
        self._codes = bytearray(n)
        self._vals = array.array("i", bytes(4 * n))
        self._vlim = array.array("i", bytes(8))
        self._v = 0
        self._stay_code = 0
        self._stay_val = 0
        self._join_code = 0
        self._join_val = 0
        self._idm = 0
        self._fw_ref = -1
        from bankgate.plausible import DataChecks
        self.dq = DataChecks(cfg, n, now)                # frozen / implausible data
        self._soc_lo = 0
        self._soc_hi = 0
        for i in range(n):
            self.mod_state[i] = MOD_ABSENT
        # latched faults survive resets (bankgate.latchstore): restored here, before
        # the first step, so nothing can close between boot and restore
        self.store = None
        if getattr(hw, "fs", None) is not None:
            self._restore(now)

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
        self._idm = id_fault_mask        # what step() is about to use anyway
        if self.branch:
            join = not self.ct.cmd[i]
        else:
            join = self.phase < _P_CLOSING
        return self._check(i, self.bank.modules[i], now, join) != self._codes[i]

    def reset_faults(self, now):
        """Clear latched faults.  LOCAL ONLY: the USB console and the reset input
        call this; nothing on the network may.  Outputs stay open; modules go
        through every check and the dwell again.  Returns True if anything cleared."""
        f = self.faults
        if not f:
            return False
        for bit, _ in FAULT_NAMES:
            if f & bit:
                self.events.emit(now, EV_FAULT_CLEARED, -1, bit, 0)
        self.faults = 0
        self.fault_slot = -1
        self.fault_value = 0
        for i in range(self.n_slots + 1):
            self.weld_on[i] = 0
        self.link_on = 0
        for i in range(self.ct.n):
            self.ct.bad[i] = 0
        self.phase = _P_IDLE
        self._persist()
        return True

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

    def snapshot(self):
        """Telemetry view (allocates)."""
        mods = []
        for i in range(self.n_exp):
            mods.append({
                "slot": i, "addr": self._addr[i], "state": MOD_STATE_NAMES[self.mod_state[i]],
                "reason": CHECK_NAMES[self.mod_reason[i]], "value": self.mod_value[i],
                "dv_mv": self.dv_mv[i], "pending_since": self.pending_since[i],
                "closed": bool(self.ct.cmd[i]) if self.branch else self.phase >= _P_CLOSING,
            })
        return {
            "state": STATE_NAMES[self.state], "admitted": self.admitted, "expected": self.expected,
            "admitted_mask": self.admitted_mask, "topology": "branch" if self.branch else "main",
            "chg_limit_ma": self.chg_limit_ma, "dsg_limit_ma": self.dsg_limit_ma,
            "chg_v_mv": self.chg_v_mv, "dsg_v_mv": self.dsg_v_mv, "ramp_down": self.ramp_down,
            "faults": [name for bit, name in FAULT_NAMES if self.faults & bit],
            "fault_slot": self.fault_slot, "fault_value": self.fault_value,
            "reason": CHECK_NAMES[self.bank_reason], "value": self.bank_value,
            "link_mv": self.link_mv, "bank_ma": self.bank_ma, "exceptions": self.exceptions,
            "outputs": [self.ct.cmd[i] for i in range(self.ct.n)], "modules": mods,
            "na_checks": [CHECK_NAMES[c] for c in self.na_checks],
        }

    # ================================================================ step
    def _fail_safe(self):
        """Exception path: release every output, forget every close.  Never raises."""
        self.ct.release_now()
        try:
            self.exceptions += 1
            self.phase = _P_IDLE
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
        mods = self.bank.modules
        if clock.pass_due(now, self._t_aged):
            self._age(now)
        # 1. outputs released behind our back (the loop's exception path)?
        if ct.sync(now):
            self.phase = _P_IDLE
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
        self._idm = idm
        # 2. interlock: feedback, measured welds
        f = ct.check(now)
        if f:
            i = ct.fault_index
            self._latch(f, i if self.branch else -1, ct.fb_closed(i), now)
        self._bank_checks(now, bus_fault, inverter_ok)
        self._data_update(now)
        if self.branch:
            self._weld_branch(now)
        else:
            self._weld_main(now)
        if self.faults and ct.any_closed():
            ct.open_all(now)
        # 3.-4.
        if self.branch:
            self._step_branch(now)
        else:
            self._step_main(now)
        # 5.
        self._pending(now)
        self._bank_state(now)

    def _data_update(self, now):
        """Frozen-data accounting (bankgate.plausible), once per step: the closed
        slots and the admitted bank's current from the previous step."""
        if self.branch:
            closed = 0
            for i in range(self.n_exp):
                if self.ct.cmd[i]:
                    closed |= 1 << i
        else:
            closed = self.expected_mask if self.phase >= _P_CLOSING else 0
        self.dq.update(now, self.bank.modules, self.n_exp, closed, self.bank_ma, self.admitted)

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
        self.t_phase = clock.hold(now, self.t_phase)
        k = self._age_k
        n = self.n_slots
        self._age_k = k + 1 if k < n else 0
        clock.hold_range(now, self.t_weld, k, k + 1)
        if k < n:
            clock.hold_range(now, self.t_state, k, k + 1)
            clock.hold_range(now, self.pending_since, k, k + 1)
            self.bank.modules[k].age(now)
        self.ct.age(now, k)

    def _latch(self, bit, slot, value, now):
        if self.faults & bit:
            return
        if not self.faults:
            self.fault_slot = slot
            self.fault_value = value
        self.faults |= bit
        self.ct.open_all(now)
        addr = self._addr[slot] if slot >= 0 else -1
        self.events.emit(now, EV_FAULT_LATCHED, addr, bit, value)
        self._persist()

    # ---- persisted latches (bankgate.latchstore; docs/safety.md, "Across resets")
    def _persist(self):
        """Write the latched set to the device filesystem if it changed (outputs are
        already open).  Rare: a fault latching or a local reset.  Never raises."""
        if self.store is not None:
            self.store.save(self.faults, self.fault_slot, self.fault_value)

    def _restore(self, now):
        from bankgate import latchstore
        st = self.store = latchstore.LatchStore(self.hw.fs)
        v = st.load()
        if v == latchstore.OK and st.faults:
            slot = st.slot if -1 <= st.slot < self.n_exp else -1
            self.faults = st.faults
            self.fault_slot = slot
            self.fault_value = st.value
            addr = self._addr[slot] if slot >= 0 else -1
            for bit, _ in FAULT_NAMES:
                if st.faults & bit:
                    self.events.emit(now, EV_FAULT_LATCHED, addr, bit, st.value)
        elif v == latchstore.CORRUPT or v == latchstore.UNREADABLE:
            self._latch(F_LATCH_STORE, -1, v, now)

    def _bank_checks(self, now, bus_fault, inverter_ok):
        mods = self.bank.modules
        # stay checks (apply to closed outputs too)
        if self.faults:
            self._stay_code = CHK_FAULT
            self._stay_val = self.faults
        elif bus_fault:
            self._stay_code = CHK_BUS
            self._stay_val = bus_fault
        elif self.need_hb and not inverter_ok:
            self._stay_code = CHK_INVERTER
            self._stay_val = 0
        else:
            self._stay_code = 0
            self._stay_val = 0
        # join-only bank checks
        present = 0
        for i in range(self.n_slots):
            m = mods[i]
            if m.addr >= 0 and m.seen and m.analog_valid:
                present += 1
        el = clock.diff(now, self.t_boot)
        if present > self.max_par:
            self._join_code = CHK_PARALLEL
            self._join_val = present
        elif self.bus_join_block:
            self._join_code = CHK_BUS
            self._join_val = self.bus_join_block
        elif el < self.boot_hold:
            self._join_code = CHK_BOOT_HOLD
            self._join_val = self.boot_hold - el
        elif self.hold_joins:
            self._join_code = CHK_JOIN_HOLD
            self._join_val = 0
        else:
            self._join_code = 0
            self._join_val = 0
        code = self._stay_code
        self.bank_reason = code if code else self._join_code
        self.bank_value = self._stay_val if code else self._join_val
        # firmware reference: the most common version among the expected modules
        # (ties: the one seen in the lowest slot)
        # Fast path, O(n): every module with identity reports the same version (the
        # usual bank) -> that version, exactly what the count below would pick.
        ref = -1
        n_exp = self.n_exp
        uniform = True
        found = False
        for i in range(n_exp):
            m = mods[i]
            if m.id_valid:
                if not found:
                    found = True
                    ref = m.sw_version
                elif m.sw_version != ref:
                    uniform = False
                    break
        if not uniform:
            ref = -1
            best = 0
            for i in range(n_exp):
                m = mods[i]
                if not m.id_valid:
                    continue
                cnt = 0
                for j in range(n_exp):
                    if mods[j].id_valid and mods[j].sw_version == m.sw_version:
                        cnt += 1
                if cnt > best:
                    best = cnt
                    ref = m.sw_version
        self._fw_ref = ref
        # SOC reference set: branch = the closed modules, main = every present module
        lo = _BIG
        hi = -1
        for i in range(self.n_exp):
            m = mods[i]
            if self.branch:
                use = self.ct.cmd[i] and m.analog_valid
            else:
                use = m.addr >= 0 and m.analog_valid
            if use:
                s = m.soc_pm
                if s < lo:
                    lo = s
                if s > hi:
                    hi = s
        self._soc_lo = lo
        self._soc_hi = hi

    def _model_ok(self, m):
        n = m.model_len
        while n > 0 and (m.model[n - 1] == 0x20 or m.model[n - 1] == 0):
            n -= 1
        for want in self.models:
            if len(want) != n:
                continue
            k = 0
            while k < n and m.model[k] == want[k]:
                k += 1
            if k == n:
                return True
        return False

    def _lim_ok(self, x):
        # plausible: 0 (direction stopped) up to the module rating; a BMS tapering its
        # limit towards 0 (end of charge / discharge) passes through 0 < x < min_limit_ma,
        # which is normal: it only stops joins in that direction (_gate)
        return 0 <= x <= self.lim_max

    def _check(self, i, m, now, join):
        """First failing check of slot i (code; value in self._v).  join=False
        skips the join-only checks (a closed output keeps the stay checks)."""
        if m.addr < 0 or not m.seen or not m.analog_valid:
            self._v = m.addr
            return CHK_ABSENT
        if m.addr != self._addr[i]:
            self._v = m.addr
            return CHK_ADDR
        age = clock.diff(now, m.t_analog)
        if age > self.max_age:
            self._v = age
            return CHK_STALE
        if (self._idm >> i) & 1:
            self._v = self._idm
            return CHK_ID_FAULT
        if not m.alarm_valid:
            self._v = 0
            return CHK_NO_ALARM_DATA
        age = clock.diff(now, m.t_alarm)
        if age > self.max_age:
            self._v = age
            return CHK_STALE
        code = self.dq.check(i, m)
        if code:
            self._v = self.dq.value
            return code
        al = m.alarms if join else (m.alarms & self.stay_alarms)
        bits = (al & self.crit) | m.protections      # a BMS protection (trip) always opens
        if bits:
            self._v = bits
            return CHK_ALARM
        if self._stay_code:
            self._v = self._stay_val
            return self._stay_code
        if not m.mgmt_valid:
            self._v = -1
            return CHK_NO_LIMITS
        age = clock.diff(now, m.t_mgmt)
        if age > self.lim_age:
            self._v = age
            return CHK_NO_LIMITS
        x = m.chg_limit_ma
        if not self._lim_ok(x):
            self._v = x
            return CHK_LIMITS
        x = m.dsg_limit_ma
        if not self._lim_ok(x):
            self._v = x
            return CHK_LIMITS
        if x == 0 and m.chg_limit_ma == 0:
            self._v = 0
            return CHK_LIMITS
        if self.need_id:
            if not m.id_valid:
                self._v = 0
                return CHK_NO_ID
            if self.models and not self._model_ok(m):
                self._v = m.model_len
                return CHK_MODEL
            if m.sw_version < self.fw_min:
                self._v = m.sw_version
                return CHK_FIRMWARE_MIN
            if self.fw_same and m.sw_version != self._fw_ref:
                self._v = m.sw_version
                return CHK_FIRMWARE_SAME
        if m.n_cells != self.cells and not self.cells_na:
            self._v = m.n_cells
            return CHK_CELLS
        if m.params_valid and not (self.chi_lo <= m.cell_hi_mv <= self.chi_hi):
            self._v = m.cell_hi_mv
            return CHK_CHEMISTRY
        if self.nominal_bad:
            self._v = self.nom_mv
            return CHK_NOMINAL
        if not join:
            return 0
        if self._join_code:
            self._v = self._join_val
            return self._join_code
        for k in range(m.n_cells):
            x = m.cell_mv[k]
            if x < self.cell_lo or x > self.cell_hi:
                self._v = x
                return CHK_CHEMISTRY
        x = m.voltage_mv
        if x < self.v_min or x > self.v_max:
            self._v = x
            return CHK_VOLTAGE
        x = m.soc_pm
        if x < self.soc_min or x > self.soc_max:
            self._v = x
            return CHK_SOC
        lo = self._soc_lo
        hi = self._soc_hi
        if hi >= 0:
            if x < lo:
                lo = x
            if x > hi:
                hi = x
            if hi - lo > self.soc_spread:
                self._v = hi - lo
                return CHK_SOC_SPREAD
        return 0

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

    # ---------------------------------------------------------------- branch
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

    def _gate(self, i, m, vbus, margin):
        """Join gate of slot i against vbus; margin = hysteresis when entering."""
        if vbus == _V_UNKNOWN:
            self._v = 0
            return CHK_LINK
        if vbus == _V_ISOLATED:
            self.dv_mv[i] = 0
            self._v = 0
            return 0
        dv = m.voltage_mv - vbus
        a = dv if dv >= 0 else -dv
        self.dv_mv[i] = dv
        self._v = a
        x = a + margin
        if x > self.max_dv:
            return CHK_DV
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

    def _weld_branch(self, now):
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
                    a = m.current_ma
                    self._latch(F_WELD_CURRENT, i, a, now)
            else:
                self.weld_on[i] = 0

    def _step_branch(self, now):
        ct = self.ct
        mods = self.bank.modules
        vbus = self._bus_ref()
        self.bus_mv = vbus if vbus >= 0 else -1
        best = -1
        best_a = _BIG
        busy = 0                      # closings / openings in progress
        self.ramp_down = False
        for i in range(self.n_exp):
            m = mods[i]
            st = self.mod_state[i]
            if ct.cmd[i]:
                code = self._check(i, m, now, False)
                self._codes[i] = code
                v = self._v
                if code and (code <= _LAST_IMMEDIATE or CHK_FROZEN <= code <= CHK_CURRENT_RANGE):
                    ct.set(i, 0, now)                     # critical: open at once
                    self._set(i, self._state_for(code, i), code, v, now)
                    continue
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
                    else:
                        busy += 1
                        self.ramp_down = True
                    continue
                if st == MOD_CLOSING:
                    if ct.fb_closed(i) == 0:
                        busy += 1                         # ct.check() latches after feedback_ms
                        continue
                self._set(i, MOD_ADMITTED, 0, 0, now)    # confirmed, or opening cancelled
                continue
            # output open: full checks, then the gate
            code = self._check(i, m, now, True)
            self._codes[i] = code
            if code:
                self._set(i, self._state_for(code, i), code, self._v, now)
                continue
            dwelling = st == MOD_DWELL
            code = self._gate(i, m, vbus, 0 if dwelling else self.hyst)
            if code == CHK_LINK:
                self._set(i, MOD_BLOCKED, code, 0, now)
            elif code:
                self._set(i, MOD_PENDING, code, self._v, now)
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

    # ---------------------------------------------------------------- main
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

    def _weld_main(self, now):
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
        # DC link held at bank voltage with everything open
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

    def _step_main(self, now):
        ct = self.ct
        mods = self.bank.modules
        ph = self.phase
        closed = ph >= _P_CLOSING
        n_bad = 0
        imm = False
        vmin = _BIG
        vmax = -1
        for i in range(self.n_exp):
            m = mods[i]
            code = self._check(i, m, now, not closed)
            self._codes[i] = code
            self._vals[i] = self._v
            if code:
                n_bad += 1
                if code <= _LAST_IMMEDIATE or CHK_FROZEN <= code <= CHK_CURRENT_RANGE:
                    imm = True
            else:
                x = m.voltage_mv
                if x < vmin:
                    vmin = x
                if x > vmax:
                    vmax = x
        gcode = 0                      # the bank-wide gate reason while idle
        gval = 0
        self.ramp_down = False
        if closed:
            if imm or self.faults:
                ct.open_all(now)
                ph = _P_IDLE
            elif n_bad:
                if ph != _P_OPENING:
                    ph = _P_OPENING
                    self.t_phase = now
                s = 0
                for i in range(self.n_exp):
                    s += mods[i].current_ma
                if s < 0:
                    s = -s
                if s < self.open_ma or clock.diff(now, self.t_phase) >= self.open_wait:
                    ct.open_all(now)
                    ph = _P_IDLE
                else:
                    self.ramp_down = True
            elif ph == _P_OPENING:
                ph = _P_CLOSED                            # the reason cleared: stay closed
            elif ph == _P_CLOSING:
                if ct.fb_closed(0) != 0:                  # confirmed (or no feedback)
                    ct.set(1, 0, now)
                    ph = _P_CLOSED
        elif ph == _P_PRECHARGE:
            vl = self.link_mv
            if n_bad or self.faults or vl < 0:
                ct.open_all(now)                          # no load current flows yet
                ph = _P_IDLE
            elif clock.diff(now, self.t_phase) > self.pre_timeout:
                self._latch(F_PRECHARGE, -1, vl, now)
                ph = _P_IDLE
            elif clock.diff(now, self.t_phase) >= self.pre_min:
                if self._gate_main(self._vbank(), vl, 0) == 0:
                    ct.set(0, 1, now)
                    self.t_phase = now
                    ph = _P_CLOSING
        else:
            ok = False
            if n_bad == 0:
                margin = 0 if ph == _P_DWELL else self.hyst
                if self.link_mv < 0:
                    gcode = CHK_LINK
                elif vmax - vmin + margin > self.max_dv:
                    gcode = CHK_SPREAD
                    gval = vmax - vmin
                else:
                    ok = True
            if ok and not self.faults:
                if ph != _P_DWELL:
                    ph = _P_DWELL
                    self.t_phase = now
                elif clock.diff(now, self.t_phase) >= self.dwell:
                    ct.set(1, 1, now)                     # precharge first
                    self.t_phase = now
                    ph = _P_PRECHARGE
            else:
                ph = _P_IDLE
        self.phase = ph
        if self.faults:
            self.ramp_down = True
        # module states follow the bank
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
            elif gcode == CHK_SPREAD:
                self.dv_mv[i] = mods[i].voltage_mv - vmin
                self._set(i, MOD_PENDING, gcode, gval, now)
            elif gcode:
                self._set(i, MOD_BLOCKED, gcode, gval, now)
            else:
                self._set(i, MOD_BLOCKED, CHK_BANK_WAIT, n_bad, now)

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
        if self.faults:
            st = BANK_FAULT
        elif self.ramp_down:
            st = BANK_OPENING
        elif n == self.n_exp:
            st = BANK_CLOSED
        elif n:
            st = BANK_DEGRADED
        elif self._join_code == CHK_BOOT_HOLD:
            st = BANK_BOOT
        elif busy:
            st = BANK_JOINING
        else:
            st = BANK_WAITING
        if st != self.state:
            self.events.emit(now, EV_BANK_STATE, -1, st, self.state)
            self.state = st
