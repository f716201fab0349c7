# Bank aggregates over the admitted modules: what the inverter sees as "the battery".
#
# SOC and SOH are weighted by capacity, so one module at 100 % or 0 % moves the
# bank figure only by its share of the capacity and can never pin it (a reported
# failure of gateways that take the min or max).  Capacity weights use 0.1 Ah
# units: 16 modules x 10000 (1000 Ah) x 1000 permille = 1.6e8 < 2**30.
from micropython import const

_CAP_MAX_DAH = const(10000)   # 1000 Ah in 0.1 Ah


def update(bank, admitted_mask):
    """Recompute bank.bank_mv / bank_ma / soc_pm / soh_pm / temp_dc / capacity_mah.
    Zero allocation; modules without valid analog data are skipped."""
    n = 0
    mv_sum = 0
    ma_sum = 0
    w_sum = 0
    soc_w = 0
    soh_w = 0
    cap = 0
    t_max = -400
    t_min = 1250
    for m in bank.modules:
        if not (admitted_mask >> m.slot) & 1 or not m.analog_valid:
            continue
        n += 1
        mv_sum += m.voltage_mv
        ma_sum += m.current_ma
        dah = m.total_mah // 100
        if dah > _CAP_MAX_DAH:
            dah = _CAP_MAX_DAH
        if dah < 1:
            dah = 1
        w_sum += dah
        soc_w += m.soc_pm * dah
        soh_w += m.soh_pm * dah
        cap += m.total_mah
        for i in range(m.n_temps):
            t = m.temp_dc[i]
            if t > t_max:
                t_max = t
            if t < t_min:
                t_min = t
    if n == 0:
        bank.bank_mv = 0
        bank.bank_ma = 0
        bank.soc_pm = 0
        bank.soh_pm = 0
        bank.temp_dc = 0
        bank.temp_min_dc = 0
        bank.capacity_mah = 0
        return 0
    bank.bank_mv = (mv_sum + n // 2) // n
    bank.bank_ma = ma_sum
    bank.soc_pm = (soc_w + w_sum // 2) // w_sum
    bank.soh_pm = (soh_w + w_sum // 2) // w_sum
    bank.temp_dc = t_max if t_max > -400 else 0
    bank.temp_min_dc = t_min if t_min < 1250 else 0
    bank.capacity_mah = cap if cap < 0x3FFFFFFF else 0x3FFFFFFF
    return n
