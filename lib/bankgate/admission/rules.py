# The read-only checks of admission: the bank-wide checks (once per step) and the
# per-module check chain (docs/admission.md, "Checks").  One copy, used by
# Admission.step() (through the topology) and by Admission.urgent() between steps.
# Nothing here changes an output or a module state; check() allocates nothing.
#
# Units as in bankgate.admission: _mv, _ma, _pm, ages in ms (bankgate.clock).
from micropython import const

from bankgate import clock
from bankgate.admission.checks import (
    CHK_ABSENT, CHK_ADDR, CHK_STALE, CHK_ID_FAULT, CHK_NO_ALARM_DATA, CHK_ALARM, CHK_FAULT,
    CHK_BUS, CHK_INVERTER, CHK_NO_LIMITS, CHK_LIMITS, CHK_NO_ID, CHK_MODEL, CHK_FIRMWARE_MIN,
    CHK_FIRMWARE_SAME, CHK_CELLS, CHK_CHEMISTRY, CHK_NOMINAL, CHK_PARALLEL, CHK_BOOT_HOLD,
    CHK_VOLTAGE, CHK_SOC, CHK_SOC_SPREAD)

# chemistry windows: (cell min mV, cell max mV, cell "charge high" limit range, nominal mV)
_CHEM = {"lfp": (2000, 3800, 3400, 3800, 3200), "nmc": (2500, 4350, 4000, 4350, 3650)}

_BIG = const(0x3FFFFFFF)


class Rules:
    """Configuration of the checks, read once, and the per-step bank references.
    `v` is the value behind the last failing check (check(), bank_reason)."""

    def __init__(self, cfg, addr, n_slots, now):
        b = cfg["bank"]
        g = cfg["gating"]
        self.addr = addr                  # approved address per slot (array, -1 unused)
        self.n_exp = b["expected_modules"]
        self.max_age = g["max_age_ms"]
        self.lim_age = g["limits_max_age_ms"]
        self.crit = g["critical_alarms"]
        # warning bits a closed module may carry (over-current by default): opening its branch
        # under load would push its current onto the others and cascade (adm_step_load_cascade);
        # the share-aware limits bring its current back under its own limit instead
        self.stay_alarms = ~g["derate_alarms"] & 0xFFFF
        self.lim_max = g["max_limit_ma"]
        self.v_min = g["module_mv_min"]
        self.v_max = g["module_mv_max"]
        self.soc_min = g["soc_min_pm"]
        self.soc_max = g["soc_max_pm"]
        self.soc_spread = g["soc_spread_pm"]
        self.boot_hold = cfg["control"]["boot_hold_ms"]
        self.need_hb = cfg["inverter"]["require_heartbeat"]
        self.cells = b["cells"]
        self.max_par = b["max_parallel"] if b["max_parallel"] < self.n_exp else self.n_exp
        self._identity_rules(b)
        ch = _CHEM[b["chemistry"]]
        self.cell_lo, self.cell_hi, self.chi_lo, self.chi_hi = ch[0], ch[1], ch[2], ch[3]
        self.nom_mv = self.cells * ch[4]                 # <= 24 * 3650
        d = self.nom_mv - b["nominal_mv"]
        self.nominal_bad = (d if d > 0 else -d) * 10 > b["nominal_mv"]
        from bankgate.plausible import DataChecks
        self.dq = DataChecks(cfg, n_slots, now)          # frozen / implausible data
        # per-step references (bank())
        self.v = 0
        self.idm = 0                  # identity fault mask of this step
        self.stay_code = 0            # bank-wide reasons that also open closed outputs
        self.stay_val = 0
        self.join_code = 0            # bank-wide reasons that only block joins
        self.join_val = 0
        self.fw_ref = -1              # the bank's most common firmware version (-1 none)
        self.soc_lo = 0
        self.soc_hi = 0

    def _identity_rules(self, b):
        self.fw_min = b["firmware_min"]
        self.fw_same = b["firmware_same"]
        self.models = [m.encode().rstrip(b" \x00") for m in b["approved_models"]]
        # issue 15: checks whose data the family does not carry are declared n/a
        from bankgate import familycaps
        self.na_mask = familycaps.na_mask(b["family"])
        self.na_checks = familycaps.na_checks(self.na_mask)
        if self.na_mask & familycaps.NA_MODEL:
            self.models = []
        if self.na_mask & familycaps.NA_FIRMWARE:
            self.fw_min = -1
            self.fw_same = False
        self.need_fw = self.fw_min > 0 or self.fw_same
        self.need_id = bool(self.models) or self.need_fw
        self.cells_na = (self.na_mask & familycaps.NA_CELLS) != 0

    # ---------------------------------------------------------------- bank-wide
    def bank(self, now, mods, faults, bus_fault, inverter_ok, bus_join_block, t_boot, soc_set):
        """The bank-wide checks of one step: stay reason (fault, bus, inverter), join
        reason (parallel, degraded bus, boot hold), the firmware reference and the SOC
        reference range of the slots in `soc_set` (bit mask).  Allocation-free."""
        if faults:
            self.stay_code = CHK_FAULT
            self.stay_val = faults
        elif bus_fault:
            self.stay_code = CHK_BUS
            self.stay_val = bus_fault
        elif self.need_hb and not inverter_ok:
            self.stay_code = CHK_INVERTER
            self.stay_val = 0
        else:
            self.stay_code = 0
            self.stay_val = 0
        present = 0
        for m in mods:
            if m.addr >= 0 and m.seen and m.analog_valid:
                present += 1
        el = clock.diff(now, t_boot)
        if present > self.max_par:
            self.join_code = CHK_PARALLEL
            self.join_val = present
        elif bus_join_block:
            self.join_code = CHK_BUS
            self.join_val = bus_join_block
        elif el < self.boot_hold:
            self.join_code = CHK_BOOT_HOLD
            self.join_val = self.boot_hold - el
        else:
            self.join_code = 0
            self.join_val = 0
        self.fw_ref = self._fw_reference(mods)
        lo = _BIG
        hi = -1
        for i in range(self.n_exp):
            m = mods[i]
            if (soc_set >> i) & 1 and m.analog_valid:
                s = m.soc_pm
                if s < lo:
                    lo = s
                if s > hi:
                    hi = s
        self.soc_lo = lo
        self.soc_hi = hi

    def bank_reason(self):
        """(code, value) of the first failing bank-wide check (0, 0 when none)."""
        if self.stay_code:
            return self.stay_code, self.stay_val
        return self.join_code, self.join_val

    def _fw_reference(self, mods):
        """The most common firmware version among the expected modules whose version
        was read (ties: the one seen in the lowest slot); -1 when none.  Fast path,
        O(n): every read version is the same (the usual bank)."""
        ref = -1
        n_exp = self.n_exp
        for i in range(n_exp):
            m = mods[i]
            if m.id_valid and m.sw_version >= 0:
                if ref < 0:
                    ref = m.sw_version
                elif m.sw_version != ref:
                    break
        else:
            return ref
        ref = -1
        best = 0
        for i in range(n_exp):
            m = mods[i]
            if not m.id_valid or m.sw_version < 0:
                continue
            cnt = 0
            for j in range(n_exp):
                if mods[j].id_valid and mods[j].sw_version == m.sw_version:
                    cnt += 1
            if cnt > best:
                best = cnt
                ref = m.sw_version
        return ref

    # ---------------------------------------------------------------- per module
    def check(self, i, m, now, join):
        """First failing check of slot i (code; value in self.v).  join=False skips
        the join-only checks (a closed output keeps the stay checks).  Reads only."""
        if m.addr < 0 or not m.seen or not m.analog_valid:
            self.v = m.addr
            return CHK_ABSENT
        if m.addr != self.addr[i]:
            self.v = m.addr
            return CHK_ADDR
        age = clock.diff(now, m.t_analog)
        if age > self.max_age:
            self.v = age
            return CHK_STALE
        if (self.idm >> i) & 1:
            self.v = self.idm
            return CHK_ID_FAULT
        if not m.alarm_valid:
            self.v = 0
            return CHK_NO_ALARM_DATA
        age = clock.diff(now, m.t_alarm)
        if age > self.max_age:
            self.v = age
            return CHK_STALE
        code = self.dq.check(i, m)
        if code:
            self.v = self.dq.value
            return code
        al = m.alarms if join else (m.alarms & self.stay_alarms)
        bits = (al & self.crit) | m.protections      # a BMS protection (trip) always opens
        if bits:
            self.v = bits
            return CHK_ALARM
        if self.stay_code:
            self.v = self.stay_val
            return self.stay_code
        code = self._data(m, now)
        if code or not join:
            return code
        return self._join(m)

    def _lim_ok(self, x):
        # plausible: 0 (direction stopped) up to the module rating; a BMS tapering its
        # limit towards 0 (end of charge / discharge) passes through 0 < x < min_limit_ma,
        # which is normal: it only stops joins in that direction (the gate)
        return 0 <= x <= self.lim_max

    def _data(self, m, now):
        """Limits, identity and the bank's electrical rules (checks 10..18)."""
        if not m.mgmt_valid:
            self.v = -1
            return CHK_NO_LIMITS
        age = clock.diff(now, m.t_mgmt)
        if age > self.lim_age:
            self.v = age
            return CHK_NO_LIMITS
        x = m.chg_limit_ma
        if not self._lim_ok(x):
            self.v = x
            return CHK_LIMITS
        x = m.dsg_limit_ma
        if not self._lim_ok(x):
            self.v = x
            return CHK_LIMITS
        if x == 0 and m.chg_limit_ma == 0:
            self.v = 0
            return CHK_LIMITS
        if self.need_id:
            code = self._identity(m)
            if code:
                return code
        if m.n_cells != self.cells and not self.cells_na:
            self.v = m.n_cells
            return CHK_CELLS
        if m.params_valid and not (self.chi_lo <= m.cell_hi_mv <= self.chi_hi):
            self.v = m.cell_hi_mv
            return CHK_CHEMISTRY
        if self.nominal_bad:
            self.v = self.nom_mv
            return CHK_NOMINAL
        return 0

    def _identity(self, m):
        """Checks 12..15.  A rule is judged only on data that was read: identity can be
        valid from the serial number or protocol version alone (0x93 / 0x4F) while the
        manufacturer info (0x51: model, firmware) failed; that is no_identity, not a
        wrong model or firmware (tests/scenarios/adm_bus_termination.json)."""
        if not m.id_valid or (self.models and m.model_len == 0) or \
                (self.need_fw and m.sw_version < 0):
            self.v = 0
            return CHK_NO_ID
        if self.models and not self._model_ok(m):
            self.v = m.model_len
            return CHK_MODEL
        if m.sw_version < self.fw_min:
            self.v = m.sw_version
            return CHK_FIRMWARE_MIN
        if self.fw_same and m.sw_version != self.fw_ref:
            self.v = m.sw_version
            return CHK_FIRMWARE_SAME
        return 0

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

    def _join(self, m):
        """The join-only window checks (19..23)."""
        if self.join_code:
            self.v = self.join_val
            return self.join_code
        for k in range(m.n_cells):
            x = m.cell_mv[k]
            if x < self.cell_lo or x > self.cell_hi:
                self.v = x
                return CHK_CHEMISTRY
        x = m.voltage_mv
        if x < self.v_min or x > self.v_max:
            self.v = x
            return CHK_VOLTAGE
        x = m.soc_pm
        if x < self.soc_min or x > self.soc_max:
            self.v = x
            return CHK_SOC
        lo = self.soc_lo
        hi = self.soc_hi
        if hi >= 0:
            if x < lo:
                lo = x
            if x > hi:
                hi = x
            if hi - lo > self.soc_spread:
                self.v = hi - lo
                return CHK_SOC_SPREAD
        return 0
