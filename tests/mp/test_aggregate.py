# Bank aggregates over admitted modules (bankgate.aggregate).
import mptest
from bankgate import aggregate
from bankgate.model import Bank


def _bank(specs):
    """specs: list of (mv, ma, soc_pm, total_mah, temp_dc)."""
    b = Bank()
    mask = 0
    for i, (mv, ma, soc, cap, t) in enumerate(specs):
        m = b.modules[i]
        m.addr = 2 + i
        m.voltage_mv = mv
        m.current_ma = ma
        m.soc_pm = soc
        m.total_mah = cap
        m.remaining_mah = cap * soc // 1000
        m.n_temps = 1
        m.temp_dc[0] = t
        m.analog_valid = True
        mask |= 1 << i
    return b, mask


def test_capacity_weighted_soc_is_not_pinned_by_a_full_module():
    b, mask = _bank([(53000, 0, 1000, 100000, 250), (52000, 0, 400, 100000, 240),
                     (52000, 0, 400, 100000, 230)])
    assert aggregate.update(b, mask) == 3
    assert b.soc_pm == 600          # (1000 + 400 + 400) / 3, not 1000 and not 400
    b2, mask2 = _bank([(50000, 0, 0, 50000, 250), (52000, 0, 900, 150000, 240)])
    aggregate.update(b2, mask2)
    assert b2.soc_pm == 675         # weighted by capacity: (0*500 + 900*1500) / 2000


def test_only_admitted_and_valid_modules_count():
    b, mask = _bank([(53000, 10000, 500, 100000, 250), (52000, -3000, 400, 100000, 300)])
    aggregate.update(b, 0b01)
    assert (b.bank_mv, b.bank_ma, b.temp_dc) == (53000, 10000, 250)
    b.modules[0].analog_valid = False
    aggregate.update(b, mask)
    assert (b.bank_mv, b.bank_ma, b.soc_pm, b.temp_dc) == (52000, -3000, 400, 300)
    assert aggregate.update(b, 0) == 0 and b.bank_mv == 0 and b.soc_pm == 0


def test_extreme_ranges_stay_small_ints():
    # 16 modules, 1000 A each, 65 V, 1000 Ah: every result fits in +-2**30
    b, mask = _bank([(65000, 1000000, 1000, 1000000, 1250)] * 16)
    aggregate.update(b, mask)
    assert b.bank_ma == 16000000 and b.soc_pm == 1000 and b.bank_mv == 65000
    assert b.capacity_mah == 16000000
    b, mask = _bank([(0, -1000000, 0, 1000000, -400)] * 16)
    aggregate.update(b, mask)
    assert b.bank_ma == -16000000 and b.soc_pm == 0 and b.temp_min_dc == -400


def test_update_allocates_nothing():
    b, mask = _bank([(52000 + i, 1000 * i, 500, 100000, 250) for i in range(16)])
    aggregate.update(b, mask)
    assert mptest.no_alloc(aggregate.update, b, mask) == 16
