# Imbalance metrics of a parallel bank, in fixed point.
#
# Metrics(cfg, bank).update(now, admitted_mask) recomputes everything from the
# Module records of the admitted slots (bit s of admitted_mask = slot s admitted;
# records with analog_valid False are skipped).  Results live in preallocated
# arrays indexed by slot (0 for slots not measured) and in int attributes; update()
# allocates nothing and uses no float.  snapshot() builds a dict for telemetry
# (allocates).  docs/metrics.md lists every metric with unit, formula, rounding and
# range.
#
# Input ranges the arithmetic is proven for (tests/mp/test_metrics_range.py runs
# update() on CheckedInt values at these extremes):
#   <= 16 modules; current_ma -1_000_000..+1_000_000; voltage_mv and link_mv
#   0..65_000; remaining_mah/total_mah 0..1_000_000; soc_pm 0..1000;
#   temp_dc -400..+1250; cell_mv 0..65_535; update interval dt_ms 0..E_MAX_DT_MS.
# Every intermediate then stays inside +-2**30 (the ESP32 small-int range).
#
# Rounding: every division rounds toward minus infinity (floor), exactly: a
# ratio a * 1000 / b is computed by mdiv() digit by digit, so it equals the floor
# of the exact rational without ever forming a * 1000.  The only metric that is
# a difference of two floored ratios (share_cap_dev_pm) is within 1 LSB of exact.
#
# Code style needed by the range test: the measured value is on the LEFT of every
# comparison (CheckedInt cannot reflect `3 < x`), and no builtin min/max/abs on
# measured values.

from micropython import const

from bankgate import clock
from bankgate.model import MAX_MODULES, MAX_TEMPS, zeros

R_MAX_MOHM = const(10000)       # resistance samples above this (10 ohm) are rejected as noise
R_MAX_AGE_MS = const(60000)     # an operating point older than this is replaced, not used
E_MAX_DT_MS = const(10000)      # update gaps longer than this are not integrated (counted)
WH_MAX = const(0x3FFFFFFF)      # energy counters saturate here (2**30 - 1 Wh)
_MJ_PER_WH = const(3600000)
_SHARE_FLOOR_MA = const(100)     # shares need at least this bank current (keeps ratios < 2**30)


def mdiv(a, k, b):
    """floor(a * 10**k / b) exactly, for b > 0 and any sign of a.

    Long division in base 10: intermediates never exceed max(|a|, 10 * b) and
    the result; so a * 10**k itself is never formed.  The caller keeps
    |result| < 2**30."""
    neg = a < 0
    if neg:
        a = -a
    q = a // b
    r = a - q * b
    while k > 0:
        r = r * 10
        d = r // b
        q = q * 10 + d
        r = r - d * b
        k -= 1
    if neg:
        q = -q
        if r > 0:
            q = q - 1
    return q


def _arr(n):
    return zeros("i", n)


class _Slots:
    """Per-module figures (index = slot): the arrays and what fills them; Metrics
    (below) adds the bank figures and the update order."""

    def _init_slots(self):
        n = MAX_MODULES
        self.v_dev_mv = _arr(n)          # V_i - mean V
        self.soc_dev_pm = _arr(n)        # SOC_i - mean SOC
        self.share_pm = _arr(n)          # I_i / I_bank, permille of the bank current
        self.share_ideal_dev_pm = _arr(n)  # share_pm - 1000 / N
        self.cap_share_pm = _arr(n)      # total_mah_i / sum total_mah
        self.share_cap_dev_pm = _arr(n)  # share_pm - cap_share_pm
        self.temp_dc = _arr(n)           # hottest sensor of the module
        self.temp_dev_dc = _arr(n)       # temp_dc - mean over modules with sensors
        self.temp_body_dc = _arr(n)      # median sensor: the module body (cells/case)
        self.temp_body_dev_dc = _arr(n)  # temp_body_dc - mean body over modules with sensors
        self.temp_spot_dc = _arr(n)      # temp_dc - temp_body_dc: a local hot spot (terminal)
        self._tsort = _arr(MAX_TEMPS)    # scratch for the median
        self.cell_min_mv = _arr(n)
        self.cell_max_mv = _arr(n)
        self.cell_delta_mv = _arr(n)     # cell_max_mv - cell_min_mv
        self.cap_dev_pm = _arr(n)        # (total_mah_i - mean) / mean
        self.r_mohm = _arr(n)            # loop/branch resistance estimate (see docs)
        self.r_conf = _arr(n)            # its confidence, 0..100
        self.r_samples = _arr(n)         # accepted dV/dI samples (saturates at 10000)
        self.e_chg_wh = _arr(n)          # energy into the module (charging), Wh
        self.e_dsg_wh = _arr(n)          # energy out of the module (discharging), Wh
        # energy sub-unit accumulators, index slot + 16 * (0 charge, 1 discharge)
        self.e_mj = _arr(2 * n)          # 0 .. 3_599_999 mJ
        self.e_uj = _arr(2 * n)          # 0 .. 999 uJ
        self.e_nj = _arr(2 * n)          # 0 .. 999 nJ
        # last operating point per module for the dV/dI estimate
        self.op_u_mv = _arr(n)
        self.op_i_ma = _arr(n)
        self.t_op = _arr(n)
        self.op_mask = 0

    def _module_temps(self, s, m):
        """Hottest sensor, body (median sensor) and hot spot of module slot s; 0 when
        it has no sensors (its figures are then 0), else 1."""
        nts = m.n_temps
        if nts > 0:
            tarr = m.temp_dc
            t = tarr[0]
            j = 1
            while j < nts:
                if tarr[j] > t:
                    t = tarr[j]
                j += 1
            self.temp_dc[s] = t
            b = self._median(tarr, nts)
            self.temp_body_dc[s] = b
            self.temp_spot_dc[s] = t - b
            return 1
        self.temp_dc[s] = 0
        self.temp_body_dc[s] = 0
        self.temp_spot_dc[s] = 0
        return 0

    def _module_cells(self, s, m):
        """Cell extremes of module slot s (0 without cell voltages)."""
        nc = m.n_cells
        if nc > 0:
            carr = m.cell_mv
            lo = carr[0]
            hi = lo
            j = 1
            while j < nc:
                c = carr[j]
                if c < lo:
                    lo = c
                if c > hi:
                    hi = c
                j += 1
            self.cell_min_mv[s] = lo
            self.cell_max_mv[s] = hi
            self.cell_delta_mv[s] = hi - lo
        else:
            self.cell_min_mv[s] = 0
            self.cell_max_mv[s] = 0
            self.cell_delta_mv[s] = 0

    def _deviations(self, s, m):
        """Pass 2 for a measured module: deviations from the bank means, capacity and
        current shares.  Returns its |share deviation| / ideal in permille (0 when
        shares are not measurable), for imbalance_pm."""
        n = self.n
        nt = self._nt
        sum_i = self.bank_ma
        sum_tot = self.total_mah
        bit = 1 << s
        i = m.current_ma
        self.v_dev_mv[s] = (n * m.voltage_mv - self._sum_v) // n
        self.soc_dev_pm[s] = (n * m.soc_pm - self._sum_soc) // n
        if self.temp_mask & bit:
            self.temp_dev_dc[s] = (nt * self.temp_dc[s] - self._sum_t) // nt
            self.temp_body_dev_dc[s] = (nt * self.temp_body_dc[s] - self._sum_b) // nt
        else:
            self.temp_dev_dc[s] = 0
            self.temp_body_dev_dc[s] = 0
        tot = m.total_mah
        if sum_tot > 0:
            self.cap_share_pm[s] = mdiv(tot, 3, sum_tot)
            self.cap_dev_pm[s] = mdiv(n * tot - sum_tot, 3, sum_tot)
        else:
            self.cap_share_pm[s] = 0
            self.cap_dev_pm[s] = 0
        if not self.shares_valid:
            self.share_pm[s] = 0
            self.share_ideal_dev_pm[s] = 0
            self.share_cap_dev_pm[s] = 0
            return 0
        # signs normalised so the divisor is positive; the ratio is unchanged
        load = self._load
        a = i
        ex = n * i - sum_i
        if sum_i < 0:
            a = -a
            ex = -ex
        sh = mdiv(a, 3, load)
        self.share_pm[s] = sh
        self.share_ideal_dev_pm[s] = mdiv(ex, 3, load) // n
        self.share_cap_dev_pm[s] = sh - self.cap_share_pm[s]
        if ex < 0:
            ex = -ex
        return mdiv(ex, 3, load)

    def _clear_slot(self, s):
        self.v_dev_mv[s] = 0
        self.soc_dev_pm[s] = 0
        self.share_pm[s] = 0
        self.share_ideal_dev_pm[s] = 0
        self.cap_share_pm[s] = 0
        self.share_cap_dev_pm[s] = 0
        self.temp_dc[s] = 0
        self.temp_dev_dc[s] = 0
        self.temp_body_dc[s] = 0
        self.temp_body_dev_dc[s] = 0
        self.temp_spot_dc[s] = 0
        self.cell_min_mv[s] = 0
        self.cell_max_mv[s] = 0
        self.cell_delta_mv[s] = 0
        self.cap_dev_pm[s] = 0
        # the operating point is stale once the module is out of the bank
        self.op_mask &= ~(1 << s)

    def _resistance(self, s, now, u, i):
        """dU/dI between operating points (U = link voltage if measured, else the
        module's own voltage), |dU| <= 65_000 mV, |dI| <= 2_000_000 mA."""
        bit = 1 << s
        if not self.op_mask & bit or clock.diff(now, self.t_op[s]) > R_MAX_AGE_MS:
            self.op_u_mv[s] = u
            self.op_i_ma[s] = i
            self.t_op[s] = now
            self.op_mask |= bit
            return
        di = i - self.op_i_ma[s]
        du = u - self.op_u_mv[s]
        if di < 0:
            di = -di
            du = -du
        thr = self.r_min_di_ma
        if di < thr:
            return
        # new operating point: estimate from the step, then move the point here
        self.op_u_mv[s] = u
        self.op_i_ma[s] = i
        self.t_op[s] = now
        if du < 0 or du > 65000:
            self.r_conf[s] = self.r_conf[s] * 3 // 4
            return
        r_new = mdiv(du, 3, di)          # mV * 1000 / mA = mOhm, <= 6.5e7
        if r_new > R_MAX_MOHM:
            self.r_conf[s] = self.r_conf[s] * 3 // 4
            return
        size = di * 25 // thr            # 100 at |dI| = 4 * threshold
        if size > 100:
            size = 100
        ns = self.r_samples[s]
        if ns == 0:
            self.r_mohm[s] = r_new
            self.r_conf[s] = size // 2
        else:
            r = self.r_mohm[s]
            dev = r_new - r
            if dev < 0:
                dev = -dev
            ref = r
            if ref < 1:
                ref = 1
            incons = dev * 100 // ref    # dev <= 1e4: <= 1e6
            if incons > 100:
                incons = 100
            self.r_mohm[s] = (3 * r + r_new + 2) // 4   # rounded: a floored EMA sticks 1-3 below
            self.r_conf[s] = (3 * self.r_conf[s] + size * (100 - incons) // 100) // 4
        if ns < 10000:
            self.r_samples[s] = ns + 1

    def _energy(self, k, v, a, dt):
        """Add v_mv * a_ma * dt_ms nJ (a > 0) to counter k exactly.
        v <= 65_000, a <= 1_000_000, dt <= 10_000: the power is split into W, mW
        and uW parts so that no product exceeds 6.5e8."""
        a_hi = a // 1000                 # whole amperes, <= 1000
        a_lo = a - a_hi * 1000           # mA, <= 999
        p_lo = v * a_lo                  # uW, <= 6.5e7
        p_mw = v * a_hi + p_lo // 1000   # mW, <= 6.5e7
        p_uw = p_lo % 1000               # uW, <= 999
        w = p_mw // 1000                 # W, <= 65_065
        p_mw = p_mw - w * 1000           # mW, <= 999
        nj = self.e_nj[k] + p_uw * dt    # <= 1e7
        uj = self.e_uj[k] + p_mw * dt + nj // 1000
        mj = self.e_mj[k] + w * dt + uj // 1000   # <= 3.6e6 + 6.51e8
        self.e_nj[k] = nj % 1000
        self.e_uj[k] = uj % 1000
        wh = mj // _MJ_PER_WH
        self.e_mj[k] = mj - wh * _MJ_PER_WH
        if k < MAX_MODULES:
            arr = self.e_chg_wh
        else:
            arr = self.e_dsg_wh
            k -= MAX_MODULES
        old = arr[k]
        if old - (WH_MAX - wh) > 0:      # old + wh would pass WH_MAX (never formed)
            arr[k] = WH_MAX
        else:
            arr[k] = old + wh

    def _median(self, tarr, nts):
        """Median of the first nts sensors (even count: floor of the mean of the
        two middle ones); insertion sort into the preallocated scratch array."""
        srt = self._tsort
        if nts > MAX_TEMPS:
            nts = MAX_TEMPS
        j = 0
        while j < nts:
            x = tarr[j]
            k = j
            while k > 0 and srt[k - 1] > x:
                srt[k] = srt[k - 1]
                k -= 1
            srt[k] = x
            j += 1
        h = nts // 2
        if nts & 1:
            return srt[h]
        return (srt[h - 1] + srt[h]) // 2


class Metrics(_Slots):
    """Per-module and bank imbalance metrics (see docs/metrics.md)."""

    def __init__(self, cfg, bank):
        self.bank = bank
        d = cfg["diagnosis"]
        self.rest_ma = d["rest_ma"]
        self.r_min_di_ma = d["r_min_di_ma"]
        self.cycle_low_pm = d["cycle_low_pm"]
        self.cycle_high_pm = d["cycle_high_pm"]
        smin = cfg["gating"]["share_min_ma"]
        self.share_min_ma = smin if smin > _SHARE_FLOOR_MA else _SHARE_FLOOR_MA
        self._init_slots()
        # ---- bank
        self.mask = 0                    # slots measured this update (admitted & analog_valid)
        self.temp_mask = 0               # ... of those, the ones with temperature sensors
        self.cell_mask = 0               # ... of those, the ones with cell voltages
        self.n = 0
        self.bank_ma = 0                 # sum of module currents (+ = charging)
        self.abs_sum_ma = 0              # sum of |module current|
        self.total_mah = 0
        self.v_mean_mv = 0
        self.v_min_mv = 0
        self.v_max_mv = 0
        self.v_spread_mv = 0
        self.soc_mean_pm = 0             # plain mean of module SOCs
        self.bank_soc_pm = 0             # capacity-weighted: sum remaining / sum total
        self.soc_spread_pm = 0
        self.temp_mean_dc = 0
        self.temp_spread_dc = 0
        self.temp_max_dc = 0
        self.hot_slot = -1
        self.bank_cell_min_mv = 0
        self.bank_cell_min_slot = -1
        self.bank_cell_max_mv = 0
        self.bank_cell_max_slot = -1
        self.ideal_share_pm = 0          # 1000 / N
        self.shares_valid = 0            # |bank_ma| >= share_min_ma: shares are measurable
        self.imbalance_pm = 0            # max |share - ideal| / ideal
        self.at_rest = 0                 # |bank_ma| < rest_ma with >= 2 modules
        self.circ_ma = 0                 # at rest: sum of positive (charging) module currents
        # full-cycle SOC drift
        self.cycle_armed = 0
        self.cycles = 0
        self.cycle_mask = 0
        self.cycle_spread_pm = -1        # SOC spread at the last full-cycle top (-1: none yet)
        self.soc_drift_pm = 0            # spread change over the last full cycle
        self.drift_valid = 0
        # per-cycle SOC-deviation range: how far each module's soc_dev_pm wandered
        # between two full-cycle completions (window starts at the first update)
        self._cyc_lo = _arr(MAX_MODULES)
        self._cyc_hi = _arr(MAX_MODULES)
        self._cyc_mask = 0
        self.cycle_range_pm = 0          # largest (max - min) of one module's soc_dev_pm in the last cycle
        self.cycle_range_slot = -1       # ... that module's slot
        # bookkeeping
        self.updates = 0
        self.e_gaps = 0
        self._t_prev = 0
        self._prev_mask = 0
        self._t_aged = 0              # last aging pass (time model, bankgate.clock.hold)
        self._age_k = 0
        # pass 1 -> bank figures and pass 2 (update)
        self._nt = 0                  # measured modules with temperature sensors
        self._sum_v = 0
        self._sum_soc = 0
        self._sum_rem = 0
        self._sum_t = 0
        self._sum_b = 0
        self._load = 0                # |bank_ma|

    # ------------------------------------------------------------------ update
    def update(self, now, admitted_mask):
        if clock.pass_due(now, self._t_aged):
            # time model: the stamps stay within clock.AGE_MAX of now (no wrapped age)
            self._t_aged = now
            self._t_prev = clock.hold(now, self._t_prev)
            k = self._age_k                           # one slot per pass (round robin)
            self._age_k = k + 1 if k + 1 < len(self.t_op) else 0
            clock.hold_range(now, self.t_op, k, k + 1)
        mods = self.bank.modules
        ns = len(mods)
        if ns > MAX_MODULES:
            ns = MAX_MODULES
        self._gather(admitted_mask, ns)
        self._extremes(ns)
        self._bank_figures()
        mask = self.mask
        # integration interval (for modules measured both now and last update)
        dt = clock.diff(now, self._t_prev)
        integrate = self.updates > 0 and dt >= 0 and dt <= E_MAX_DT_MS
        if self.updates > 0 and not integrate and self._prev_mask & mask:
            self.e_gaps += 1
        link = self.bank.link_mv
        # ---- pass 2: per-module deviations, shares, resistance, energy
        imb = 0
        circ = 0
        for s in range(ns):
            bit = 1 << s
            if not mask & bit:
                self._clear_slot(s)
                continue
            m = mods[s]
            ex = self._deviations(s, m)
            if ex > imb:
                imb = ex
            v = m.voltage_mv
            i = m.current_ma
            if self.at_rest and i > 0:
                circ = circ + i
            # operating-point resistance estimate
            if link >= 0:
                u = link
            else:
                u = v
            self._resistance(s, now, u, i)
            # energy throughput
            if integrate and self._prev_mask & bit:
                if i > 0:
                    self._energy(s, v, i, dt)
                elif i < 0:
                    self._energy(s + MAX_MODULES, v, -i, dt)
        self.imbalance_pm = imb
        self.circ_ma = circ
        self._cycle(self.n, mask, ns)
        self._t_prev = now
        self._prev_mask = mask
        self.updates += 1

    def _gather(self, admitted_mask, ns):
        """Pass 1: membership, sums (|sums| <= 16 * 1e6 = 1.6e7), extremes; per module
        its hottest/median/spot temperature and cell extremes."""
        mods = self.bank.modules
        mask = 0
        tmask = 0
        n = 0
        nt = 0
        sum_v = 0
        sum_i = 0
        sum_ai = 0
        sum_soc = 0
        sum_rem = 0
        sum_tot = 0
        sum_t = 0
        sum_b = 0
        tmin = 0
        tmax = 0
        hot = -1
        for s in range(ns):
            m = mods[s]
            if not (admitted_mask >> s) & 1 or not m.analog_valid:
                continue
            i = m.current_ma
            mask |= 1 << s
            n += 1
            sum_v = sum_v + m.voltage_mv
            sum_i = sum_i + i
            if i < 0:
                sum_ai = sum_ai - i
            else:
                sum_ai = sum_ai + i
            sum_soc = sum_soc + m.soc_pm
            sum_rem = sum_rem + m.remaining_mah
            sum_tot = sum_tot + m.total_mah
            self._module_cells(s, m)
            if self._module_temps(s, m):
                t = self.temp_dc[s]
                sum_b = sum_b + self.temp_body_dc[s]
                if nt == 0:
                    tmin = t
                    tmax = t
                    hot = s
                else:
                    if t < tmin:
                        tmin = t
                    if t > tmax:
                        tmax = t
                        hot = s
                tmask |= 1 << s
                nt += 1
                sum_t = sum_t + t
        self.mask = mask
        self.temp_mask = tmask
        self.n = n
        self.bank_ma = sum_i
        self.abs_sum_ma = sum_ai
        self.total_mah = sum_tot
        self.temp_spread_dc = tmax - tmin
        self.temp_max_dc = tmax
        self.hot_slot = hot
        self._nt = nt
        self._sum_v = sum_v
        self._sum_soc = sum_soc
        self._sum_rem = sum_rem
        self._sum_t = sum_t
        self._sum_b = sum_b

    def _extremes(self, ns):
        """The measured modules' voltage and SOC range; the bank's lowest and highest
        cell and their slots (the first slot wins a tie)."""
        mask = self.mask
        mods = self.bank.modules
        vmin = 0
        vmax = 0
        smin = 0
        smax = 0
        first = True
        for s in range(ns):
            if mask & (1 << s):
                v = mods[s].voltage_mv
                soc = mods[s].soc_pm
                if first:
                    vmin = v
                    vmax = v
                    smin = soc
                    smax = soc
                    first = False
                else:
                    if v < vmin:
                        vmin = v
                    if v > vmax:
                        vmax = v
                    if soc < smin:
                        smin = soc
                    if soc > smax:
                        smax = soc
        self.v_min_mv = vmin
        self.v_max_mv = vmax
        self.v_spread_mv = vmax - vmin
        self.soc_spread_pm = smax - smin
        cmask = 0
        cmin = 0
        cmax = 0
        cmin_s = -1
        cmax_s = -1
        for s in range(ns):
            if mask & (1 << s) and mods[s].n_cells > 0:
                lo = self.cell_min_mv[s]
                hi = self.cell_max_mv[s]
                if cmin_s < 0:
                    cmin = lo
                    cmax = hi
                    cmin_s = s
                    cmax_s = s
                else:
                    if lo < cmin:
                        cmin = lo
                        cmin_s = s
                    if hi > cmax:
                        cmax = hi
                        cmax_s = s
                cmask |= 1 << s
        self.cell_mask = cmask
        self.bank_cell_min_mv = cmin
        self.bank_cell_min_slot = cmin_s
        self.bank_cell_max_mv = cmax
        self.bank_cell_max_slot = cmax_s

    def _bank_figures(self):
        """Means, bank SOC, mean temperature; whether shares are measurable (enough
        bank current) and the bank is at rest."""
        n = self.n
        nt = self._nt
        sum_i = self.bank_ma
        if n > 0:
            self.v_mean_mv = self._sum_v // n
            self.soc_mean_pm = self._sum_soc // n
            self.ideal_share_pm = 1000 // n
        else:
            self.v_mean_mv = 0
            self.soc_mean_pm = 0
            self.ideal_share_pm = 0
        if self.total_mah > 0:
            self.bank_soc_pm = mdiv(self._sum_rem, 3, self.total_mah)
        else:
            self.bank_soc_pm = self.soc_mean_pm
        if nt > 0:
            self.temp_mean_dc = self._sum_t // nt
        else:
            self.temp_mean_dc = 0
        if sum_i < 0:
            load = -sum_i
        else:
            load = sum_i
        self._load = load
        shares = n > 0 and load >= self.share_min_ma
        self.shares_valid = 1 if shares else 0
        rest = n >= 2 and load < self.rest_ma
        self.at_rest = 1 if rest else 0

    def _cycle(self, n, mask, ns):
        """Full cycle: bank SOC at or below cycle_low_pm arms it; reaching
        cycle_high_pm afterwards completes it.  The SOC spread at each completion
        is compared with the previous one (same module set only): soc_drift_pm.
        Between two completions each module's soc_dev_pm range (max - min) is
        tracked; at a completion the largest is cycle_range_pm (a module whose SOC
        wanders from the bank's during every cycle).  The window restarts at each
        completion and whenever the measured set changes."""
        if n == 0:
            return
        lo = self._cyc_lo
        hi = self._cyc_hi
        fresh = mask != self._cyc_mask
        self._cyc_mask = mask
        for s in range(ns):
            if not (mask >> s) & 1:
                continue
            d = self.soc_dev_pm[s]
            if fresh:
                lo[s] = d
                hi[s] = d
            else:
                if d < lo[s]:
                    lo[s] = d
                if d > hi[s]:
                    hi[s] = d
        soc = self.bank_soc_pm
        if not self.cycle_armed:
            if soc <= self.cycle_low_pm:
                self.cycle_armed = 1
            return
        if soc < self.cycle_high_pm:
            return
        self.cycle_armed = 0
        self.cycles += 1
        spread = self.soc_spread_pm
        if self.cycle_spread_pm >= 0 and self.cycle_mask == mask:
            self.soc_drift_pm = spread - self.cycle_spread_pm
            self.drift_valid = 1
        else:
            self.soc_drift_pm = 0
            self.drift_valid = 0
        self.cycle_spread_pm = spread
        self.cycle_mask = mask
        rng = -1
        slot = -1
        for s in range(ns):
            if (mask >> s) & 1:
                r = hi[s] - lo[s]
                if r > rng:
                    rng = r
                    slot = s
                d = self.soc_dev_pm[s]
                lo[s] = d
                hi[s] = d
        self.cycle_range_pm = rng
        self.cycle_range_slot = slot

    # --------------------------------------------------------------- reporting
    def field_names(self):
        """(per-module array names, bank-wide int names): the keys of snapshot(), for
        telemetry's streamed metrics message."""
        return _PER_MODULE, _BANK

    def snapshot(self):
        """All metrics as a dict of ints and lists (allocates: telemetry only).
        Per-module lists are indexed by slot."""
        out = {}
        for name in _PER_MODULE:
            out[name] = list(getattr(self, name))
        for name in _BANK:
            out[name] = getattr(self, name)
        return out


_PER_MODULE = (
    "v_dev_mv", "soc_dev_pm", "share_pm", "share_ideal_dev_pm", "cap_share_pm", "share_cap_dev_pm",
    "temp_dc", "temp_dev_dc", "temp_body_dc", "temp_body_dev_dc", "temp_spot_dc", "cell_min_mv", "cell_max_mv", "cell_delta_mv", "cap_dev_pm",
    "r_mohm", "r_conf", "r_samples", "e_chg_wh", "e_dsg_wh",
)
_BANK = (
    "mask", "temp_mask", "cell_mask", "n", "bank_ma", "abs_sum_ma", "total_mah", "v_mean_mv",
    "v_min_mv", "v_max_mv", "v_spread_mv", "soc_mean_pm", "bank_soc_pm", "soc_spread_pm",
    "temp_mean_dc", "temp_spread_dc", "temp_max_dc", "hot_slot", "bank_cell_min_mv",
    "bank_cell_min_slot", "bank_cell_max_mv", "bank_cell_max_slot", "ideal_share_pm",
    "shares_valid", "imbalance_pm", "at_rest", "circ_ma", "cycles", "cycle_spread_pm",
    "soc_drift_pm", "drift_valid", "cycle_range_pm", "cycle_range_slot", "updates", "e_gaps",
)
