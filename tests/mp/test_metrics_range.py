# Range proof for bankgate.metrics: every intermediate stays inside +-2**30 at
# the documented input extremes.  The unix port is 64-bit and would not notice an
# overflow of the ESP32's small-int range, so the Module records are filled with
# CheckedInt values (tests/support/checkedint.py): every +, -, *, //, % and unary
# minus on them raises RangeError when a result leaves the range.  The Metrics
# result arrays are swapped for lists so results (accumulators, operating
# points) stay CheckedInt across updates and are checked again when reused.
# mpy-heapsize: 512k
import array

import checkedint
from checkedint import CheckedInt as C

from bankgate import config
from bankgate.metrics import E_MAX_DT_MS, WH_MAX, Metrics
from bankgate.model import Bank

V_MAX = 65000
I_MAX = 1000000
CAP_MAX = 1000000


def _setup(over=None, n=16):
    cfg = config.validate(over or {})
    bank = Bank()
    met = Metrics(cfg, bank)
    d = met.__dict__
    for name in list(d.keys()):
        if isinstance(d[name], array.array):
            setattr(met, name, [C(0)] * len(d[name]))
    for s in range(n):
        m = bank.modules[s]
        m.addr = s + 2
        m.cell_mv = [0] * 24
        m.temp_dc = [0] * 8
    return cfg, bank, met


def _fill(bank, s, v, i, rem, tot, soc, temp, cell, n_temps=8, n_cells=24):
    m = bank.modules[s]
    m.analog_valid = True
    m.voltage_mv = C(v)
    m.current_ma = C(i)
    m.remaining_mah = C(rem)
    m.total_mah = C(tot)
    m.soc_pm = C(soc)
    m.n_temps = n_temps
    m.n_cells = n_cells
    for j in range(8):
        m.temp_dc[j] = C(temp)
    for j in range(24):
        m.cell_mv[j] = C(cell)


def _plain(met, name):
    return checkedint.plain(getattr(met, name))


def test_all_maximum_charging_then_discharging():
    checkedint.reset()
    cfg, bank, met = _setup()
    bank.link_mv = C(V_MAX)
    t = 0
    for k in range(6):
        sign = 1 if k % 2 else -1
        for s in range(16):
            _fill(bank, s, V_MAX if k % 2 else 0, sign * I_MAX, CAP_MAX, CAP_MAX, 1000, 1250, 65535)
        bank.link_mv = C(V_MAX if k % 2 else 0)
        met.update(t, 0xFFFF)
        t += E_MAX_DT_MS
    assert _plain(met, "bank_ma") == 16 * I_MAX
    assert _plain(met, "share_pm")[0] == 62          # 1000 // 16
    assert _plain(met, "e_chg_wh")[5] > 0
    print("largest intermediate:", checkedint.largest[0])


def test_smallest_measurable_bank_current_gives_largest_shares():
    checkedint.reset()
    cfg, bank, met = _setup({"gating": {"share_min_ma": 0}})
    # eight modules at +1000 A, eight at -1000 A, one of those 100 mA less:
    # the bank current is the 100 mA share floor, the shares are +-10_000_000 pm
    for s in range(16):
        i = I_MAX if s < 8 else -I_MAX
        if s == 15:
            i += 100
        _fill(bank, s, V_MAX, i, 0, CAP_MAX, 0, -400, 0)
    met.update(0, 0xFFFF)
    assert _plain(met, "bank_ma") == 100
    assert _plain(met, "shares_valid") == 1
    assert _plain(met, "share_pm")[0] == I_MAX * 1000 // 100
    assert _plain(met, "imbalance_pm") == (16 * I_MAX + 100) * 1000 // 100   # a -1000 A module
    print("largest intermediate:", checkedint.largest[0])


def test_resistance_extremes_and_zero_capacity():
    checkedint.reset()
    cfg, bank, met = _setup({"diagnosis": {"r_min_di_ma": 500}})
    t = 0
    for k in range(8):
        for s in range(16):
            # dI = the smallest step (500 mA) with dU = the largest (65 V), and the largest
            # step (2000 A) with the largest dU, alternating
            if s < 8:
                i = 500 * (k % 2)
            else:
                i = I_MAX if k % 2 else -I_MAX
            _fill(bank, s, V_MAX * (k % 2), i, 0, 0, 0, 1250, 65535, n_cells=0, n_temps=0)
        bank.link_mv = C(-1)
        met.update(t, 0xFFFF)
        t += 1000
    assert _plain(met, "total_mah") == 0
    assert _plain(met, "r_samples")[0] == 0         # 130 ohm samples are rejected
    assert _plain(met, "r_samples")[8] == 7
    print("largest intermediate:", checkedint.largest[0])


def test_energy_accumulators_at_their_limits_saturate():
    checkedint.reset()
    cfg, bank, met = _setup()
    for s in range(16):
        _fill(bank, s, V_MAX, I_MAX if s % 2 else -I_MAX, CAP_MAX, CAP_MAX, 500, 0, 3300)
    met.update(0, 0xFFFF)
    for k in range(32):
        met.e_mj[k] = C(3599999)
        met.e_uj[k] = C(999)
        met.e_nj[k] = C(999)
    for s in range(16):
        met.e_chg_wh[s] = C(WH_MAX - 100)
        met.e_dsg_wh[s] = C(WH_MAX - 100)
    for k in range(4):
        met.update(E_MAX_DT_MS * (k + 1), 0xFFFF)
    assert _plain(met, "e_chg_wh")[1] == WH_MAX
    assert _plain(met, "e_dsg_wh")[0] == WH_MAX
    print("largest intermediate:", checkedint.largest[0])


def test_soc_cycle_at_extremes():
    checkedint.reset()
    cfg, bank, met = _setup()
    t = 0
    for k in range(6):
        rem = 0 if k % 2 == 0 else CAP_MAX
        for s in range(16):
            _fill(bank, s, 50000, 0, rem, CAP_MAX, 1000 if s else 0, 250, 3300)
        met.update(t, 0xFFFF)
        t += 1000
    assert met.cycles == 3
    assert met.drift_valid == 1 and _plain(met, "soc_drift_pm") == 0
    print("largest intermediate:", checkedint.largest[0])


def test_checkedint_catches_an_overflow():
    # the guard itself: current * 1000 * 16 is what the metrics must never do
    e = None
    try:
        C(I_MAX) * 1000 * 16
    except checkedint.RangeError as x:
        e = x
    assert e is not None
