# Combined charge/discharge limits of the admitted bank.
#
# Only admitted modules count (the caller passes their slots as a bit mask).
#
# Current limits (mA, positive magnitudes):
#   When the measured bank current |I_bank| = |sum of the admitted modules' currents|
#   is at least share_min_ma, every admitted module i that carries current in the
#   bank's direction has a measured share s_i = I_i / I_bank, and the bank may carry
#   at most limit_i / s_i = limit_i * |I_bank| / |I_i| before module i reaches its
#   own limit.  The bank limit is the minimum of these over the modules (a module
#   carrying nothing, or carrying against the bank's direction, does not bind),
#   and never more than the sum of the modules' limits.
#   Below share_min_ma the shares are not measurable (BMS current resolution,
#   OCV differences dominate), so the rule falls back to N x min(limit_i).
#   Shares measured in one direction are applied to both (branch sharing is set
#   by the branch resistances, which do not depend on direction).
#
# Voltage limits: charge voltage = min of the admitted modules' chg_v_mv (no module
# is pushed above its own), discharge voltage = max of dsg_v_mv (the inverter stops
# before any module goes below its own).
#
# Integer ranges (the ESP32 small int is +-2**30): limits are validated to be at
# most gating.max_limit_ma <= 2_000_000 (< 2**21); a Pylontech s16 current in
# 100 mA steps is at most 3_276_700 mA per module, 16 modules -> 52_427_200 (< 2**26);
# _scaled() computes limit * |I_bank| / |I_i| as an exact integer part plus a
# fraction evaluated on 15-bit operands (rounded so that the result only ever errs
# low, by less than limit / 2**13), keeps every product below 2**30 and saturates
# at SAT.  Nothing here allocates.
from micropython import const

SAT = const(0x1FFFFFFF)      # 2**29 - 1 mA: "no bound" (saturation value)
_B15 = const(0x7FFF)

RANGE_CHECK = False          # tests set True: every intermediate of _scaled is asserted
_LIM = const(0x3FFFFFFF)


def _chk(x):
    if x > _LIM or x < -_LIM:
        raise OverflowError("intermediate outside +-2**30")


def _scaled(limit_ma, bank_abs_ma, mod_abs_ma):
    """floor(limit * B / M), never above the exact value, saturating at SAT.
    0 <= limit <= SAT, 0 <= B < 2**30, 1 <= M < 2**30.

    limit * B / M = limit * t + limit * rem / M with t = B // M, rem = B % M.
    The integer part is exact (or saturates); for the fraction rem / M both are
    shrunk to 15 bits (rem rounded down, M rounded up: the fraction only gets
    smaller), so its error is below limit / 2**13 and every product stays < 2**30."""
    m = mod_abs_ma
    t = bank_abs_ma // m
    rem = bank_abs_ma - t * m     # < m
    res = 0
    if t:
        if limit_ma > SAT // t:
            return SAT
        res = limit_ma * t        # <= SAT
    while m > _B15:
        rem >>= 1
        m = (m + 1) >> 1
    if rem:
        q = limit_ma // m
        r = limit_ma - q * m      # < m <= 2**15
        frac = q * rem + (r * rem) // m   # q*rem < limit; r*rem < 2**30
        if RANGE_CHECK:
            _chk(q * rem)
            _chk(r * rem)
            _chk(res + frac)
        res += frac               # <= 2 * SAT < 2**30
    if res > SAT:
        return SAT
    return res


def current_limit(modules, mask, charge, share_min_ma):
    """Bank charge (charge=True) or discharge current limit in mA for the admitted
    modules (bit i of mask = modules[i] admitted).  0 when none is admitted."""
    n = 0
    lo = SAT
    total = 0
    bank_ma = 0
    i = 0
    for m in modules:
        if (mask >> i) & 1:
            lim = m.chg_limit_ma if charge else m.dsg_limit_ma
            if lim < 0:
                lim = 0
            elif lim > SAT:
                lim = SAT
            n += 1
            if lim < lo:
                lo = lim
            total += lim          # <= 2 * SAT < 2**30 before the clamp below
            if total > SAT:
                total = SAT
            bank_ma += m.current_ma
        i += 1
    if n == 0:
        return 0
    ab = bank_ma if bank_ma >= 0 else -bank_ma
    if ab < share_min_ma or ab == 0:
        if lo > SAT // n:         # only for absurd (saturated) limits
            return SAT
        return n * lo
    res = total
    pos = bank_ma > 0
    i = 0
    for m in modules:
        if (mask >> i) & 1:
            mi = m.current_ma
            if mi != 0 and (mi > 0) == pos:
                lim = m.chg_limit_ma if charge else m.dsg_limit_ma
                if lim < 0:
                    lim = 0
                elif lim > SAT:
                    lim = SAT
                if mi > SAT or mi < -SAT:
                    mi = SAT      # absurd reading: treat as carrying everything
                r = _scaled(lim, ab, mi if mi > 0 else -mi)
                if r < res:
                    res = r
        i += 1
    return res


def voltage_limits(modules, mask, out):
    """out[0] = min chg_v_mv, out[1] = max dsg_v_mv over the admitted modules
    (both 0 when none is admitted).  `out` is a preallocated array/list of 2."""
    cv = 0
    dv = 0
    first = True
    i = 0
    for m in modules:
        if (mask >> i) & 1:
            if first or m.chg_v_mv < cv:
                cv = m.chg_v_mv
            if first or m.dsg_v_mv > dv:
                dv = m.dsg_v_mv
            first = False
        i += 1
    out[0] = cv
    out[1] = dv
