# Data that must make sense: frozen and implausible module data.  Freshness alone
# ("a frame arrived") does not prove the numbers are live or consistent: a BMS can
# replay one frame for hours, and a broken sense line gives cells that disagree
# with the module voltage.  Admission treats both like stale data (docs/admission.md):
# they block joins and open a closed module at once.
#
# FROZEN (CHK_FROZEN, value = mAh that flowed with nothing changing).  The protocol
# layer fingerprints the analog content at every commit (bankgate.model.note_analog:
# cells, temperatures, current, voltage, SOC, remaining/total capacity, Module.fp);
# every control step compares it with the one it saw last.  (Content that changes
# and changes back between two steps is missed once: a live BMS keeps changing, so
# that only delays nothing.)  Rule: the content is frozen when
# it has not changed while `gating.frozen_mah` of charge flowed through the module.
# Charge, not time: a live BMS cannot count that much charge in or out without a
# reported number moving (its SOC, in 1 % steps on the CAN frame set, the coarsest
# family; remaining mAh and mV cells on RS485), whatever the current; at rest
# (no current) unchanged numbers are normal and nothing accumulates.  The current
# counted per control step is the module's own |I|, and for a CLOSED module at least
# its share of the bank current (|sum of admitted currents| / admitted): a BMS frozen
# on a 0 A frame is still found once the bank carries load.  Counted only while that
# current is >= gating.frozen_min_ma (float charge at full SOC, where a CAN BMS's
# numbers can legitimately sit still, does not add up).  The verdict holds until the
# content changes: a frozen module stays out (it cannot rejoin on the same frame).
# Limit: a module frozen on a 0 A frame while it is open and the bank is idle is only
# found after it joins and carries load.
#
# IMPLAUSIBLE, from the BMS's own numbers (checked on every frame):
#   CHK_CELL_SUM (value = sum of cells - module voltage, mV): the cell voltages must
#     add up to the module voltage within gating.cell_sum_tol_mv (a broken sense
#     line, a wrong module-voltage divider, cells of another pack).  Families without
#     cell voltages (the CAN frame set) skip it.
#   CHK_CURRENT_RANGE (value = the current, mA): |I| above twice the module's own
#     rating (0x47 max charge/discharge current where read, else gating.max_limit_ma):
#     the BMS's over-current protection trips at ~1.5 x within a second, so a number
#     beyond 2 x that it does not protect against is not a measurement.  (A real
#     short circuit also lands here: it opens at once either way.)
#   SOC vs remaining/total: every family here derives the SOC from remaining/total
#     (bankgate.proto.pylontech.soc_of) and the decoders reject remaining > total, so
#     there is nothing left to cross-check; a family reporting SOC on its own must
#     add the check.
# Allocation-free after construction; integers inside +-2**30.
import array

from micropython import const

from bankgate import clock
from bankgate.admission.checks import CHK_FROZEN, CHK_CELL_SUM, CHK_CURRENT_RANGE

_AMS_PER_MAH = const(3600)      # 1 mAh = 3.6 A s = 3600 A ms
_MAX_DT = const(1000)
_MAX_MA = const(0x3FFFFFF)      # 2**26 - 1 mA


class DataChecks:
    def __init__(self, cfg, n, now):
        g = cfg["gating"]
        self.frozen_ams = g["frozen_mah"] * _AMS_PER_MAH      # <= 200000 * 3600 < 2**30
        self.frozen_min = g["frozen_min_ma"]
        self.sum_tol = g["cell_sum_tol_mv"]
        self.lim_max = g["max_limit_ma"]
        self.frozen = bytearray(n)                    # 1: content frozen (until it changes)
        self._seen = array.array("i", bytes(4 * n))   # Module.fp at the last update
        self._acc = array.array("i", bytes(4 * n))    # A ms flowed since the last change
        self._t = now
        self.value = 0                                # check(): the evidence number

    def update(self, now, mods, n, closed_mask, bank_ma, admitted):
        """Once per control step: advance the frozen accounting of slots 0..n-1."""
        dt = clock.diff(now, self._t)
        self._t = now
        if dt < 0:
            dt = 0
        if dt > _MAX_DT:                              # steps run every period (<= 1 s); a longer
            dt = _MAX_DT                              # gap under-counts (never a false verdict)
        share = 0
        if admitted > 0:
            share = (bank_ma if bank_ma >= 0 else -bank_ma) // admitted
        lim = self.frozen_ams
        for i in range(n):
            m = mods[i]
            c = m.fp
            if c != self._seen[i] or not m.analog_valid:
                self._seen[i] = c
                self._acc[i] = 0
                self.frozen[i] = 0
                continue
            a = m.current_ma
            if a < 0:
                a = -a
            if (closed_mask >> i) & 1 and share > a:
                a = share
            if a < self.frozen_min or self.frozen[i]:
                continue
            if a > _MAX_MA:
                a = _MAX_MA
            x = self._acc[i] + (a // 1000) * dt       # <= 2**26 / 1000 * 1000 + lim < 2**30
            if x >= lim:
                x = lim
                self.frozen[i] = 1
            self._acc[i] = x

    def check(self, i, m):
        """The data-sense check of slot i: 0 or a CHK_* code (admission's numbering),
        the evidence in self.value.  Reads only; allocation-free."""
        if self.frozen[i]:
            self.value = self._acc[i] // _AMS_PER_MAH
            return CHK_FROZEN
        n = m.n_cells
        if n:
            s = 0
            for k in range(n):
                s += m.cell_mv[k]
            d = s - m.voltage_mv
            if d > self.sum_tol or d < -self.sum_tol:
                self.value = d
                return CHK_CELL_SUM
        r = self.lim_max
        if m.params_valid:
            r = m.params_chg_ma if m.params_chg_ma > m.params_dsg_ma else m.params_dsg_ma
            if r <= 0:
                r = self.lim_max
        a = m.current_ma
        if a < 0:
            a = -a
        if a > 2 * r:                                  # r <= 2e6 (config / u16 x 100)
            self.value = m.current_ma
            return CHK_CURRENT_RANGE
        return 0


