# Combined limits of the admitted bank: only admitted modules count, the measured
# share rule never lets any module exceed its own limit, N x min at small current,
# integers in range at the extremes (16 modules, 1000 A).
import random

from bankgate import limits
from bankgate.model import Bank


def _bank(lims, currents, chg=True):
    b = Bank()
    for i, (lim, cur) in enumerate(zip(lims, currents)):
        m = b.modules[i]
        if chg:
            m.chg_limit_ma = lim
        else:
            m.dsg_limit_ma = lim
        m.current_ma = cur
    return b


def _full(n):
    return (1 << n) - 1


def _exceeds(res, lims, currents, mask):
    """Does a bank current `res` split by the measured shares put any module above
    its limit?  Exact integer comparison: res * |I_i| > L_i * |I_bank|."""
    bank = sum(c for i, c in enumerate(currents) if (mask >> i) & 1)
    for i, (lim, cur) in enumerate(zip(lims, currents)):
        if (mask >> i) & 1 and cur != 0 and (cur > 0) == (bank > 0):
            if res * abs(cur) > lim * abs(bank):
                return True
    return False


def test_fallback_n_times_min_below_share_min():
    b = _bank([100000, 80000, 120000], [1000, 1500, 500])    # 3 A: shares not measurable
    assert limits.current_limit(b.modules, 7, True, 5000) == 3 * 80000


def test_measured_shares():
    # 100 A shared 50/30/20: module 0 reaches 100 A when the bank carries 200 A
    b = _bank([100000, 100000, 100000], [50000, 30000, 20000])
    assert limits.current_limit(b.modules, 7, True, 5000) == 200000
    # N x min would have allowed 300 A and pushed module 0 to 150 A
    assert _exceeds(300000, [100000] * 3, [50000, 30000, 20000], 7)
    assert not _exceeds(200000, [100000] * 3, [50000, 30000, 20000], 7)


def test_discharge_direction_and_sign():
    b = _bank([90000, 60000], [-60000, -20000], chg=False)
    # module 0 carries 3/4: 90 / 0.75 = 120 A; module 1 60 / 0.25 = 240 A
    assert limits.current_limit(b.modules, 3, False, 5000) == 120000


def test_only_admitted_modules_count():
    b = _bank([100000, 5000, 100000], [40000, 0, 40000])
    assert limits.current_limit(b.modules, 0b101, True, 5000) == 200000
    assert limits.current_limit(b.modules, 0b111, True, 5000) == 200000   # carries nothing
    assert limits.current_limit(b.modules, 0, True, 5000) == 0
    b.modules[1].current_ma = 100
    assert limits.current_limit(b.modules, 0b111, True, 5000) <= 5000 * 80100 // 100


def test_module_against_the_bank_does_not_bind_but_sum_caps():
    # module 2 is charged by the others (circulating) while the bank discharges
    b = _bank([50000, 50000, 50000], [-30000, -30000, 10000], chg=False)
    res = limits.current_limit(b.modules, 7, False, 5000)
    assert res == 50000 * 50000 // 30000
    assert res <= 150000


def test_zero_limit_module_with_share_stops_the_bank():
    b = _bank([0, 100000], [20000, 20000])
    assert limits.current_limit(b.modules, 3, True, 5000) == 0
    b = _bank([0, 100000], [100, 100])
    assert limits.current_limit(b.modules, 3, True, 5000) == 0


def test_voltage_limits_min_charge_max_discharge():
    b = Bank()
    for i, (cv, dv) in enumerate([(53500, 47000), (53200, 46000), (54000, 48000)]):
        b.modules[i].chg_v_mv = cv
        b.modules[i].dsg_v_mv = dv
    out = [0, 0]
    limits.voltage_limits(b.modules, 7, out)
    assert out == [53200, 48000]
    limits.voltage_limits(b.modules, 0b101, out)
    assert out == [53500, 48000]
    limits.voltage_limits(b.modules, 0, out)
    assert out == [0, 0]


def test_property_never_exceeds_any_module_random():
    random.seed(7)
    limits.RANGE_CHECK = True
    try:
        for _ in range(3000):
            n = 1 + random.randrange(16)
            lims = [random.randrange(0, 2000001) for _ in range(n)]
            sign = 1 if random.randrange(2) else -1
            currents = [sign * random.randrange(0, 3276701) for _ in range(n)]
            if random.randrange(4) == 0:           # some circulating current
                currents[random.randrange(n)] *= -1
            mask = random.randrange(1, 1 << n)
            b = _bank(lims, currents)
            res = limits.current_limit(b.modules, mask, True, 5000)
            assert 0 <= res <= limits.SAT
            bank = sum(c for i, c in enumerate(currents) if (mask >> i) & 1)
            if abs(bank) >= 5000:
                assert not _exceeds(res, lims, currents, mask), (lims, currents, mask, res)
                # and not needlessly low: within limit / 2**13 (+2 mA) of the exact bound
                exact = None
                for i in range(n):
                    c = currents[i]
                    if (mask >> i) & 1 and c != 0 and (c > 0) == (bank > 0):
                        v = lims[i] * abs(bank) // abs(c)
                        exact = v if exact is None or v < exact else exact
                tot = sum(lims[i] for i in range(n) if (mask >> i) & 1)
                exact = tot if exact is None or exact > tot else exact
                exact = min(exact, limits.SAT)
                slack = max(lims[i] for i in range(n) if (mask >> i) & 1) // 8192 + 2
                assert res >= exact - slack, (res, exact)
    finally:
        limits.RANGE_CHECK = False


def test_extremes_16_modules_1000_amps():
    limits.RANGE_CHECK = True
    try:
        # 16 modules at the validator's maximum limit sharing 1000 A unevenly
        lims = [2000000] * 16
        currents = [-150000] + [-850000 // 15] * 15
        b = _bank(lims, currents, chg=False)
        res = limits.current_limit(b.modules, 0xFFFF, False, 5000)
        assert not _exceeds(res, lims, currents, 0xFFFF)
        assert res >= 2000000 * 1000000 // 150000 * 999 // 1000
        # the largest Pylontech reading (3276.7 A) on every module, one tiny share
        currents = [3276700] * 15 + [100]
        b = _bank(lims, currents)
        res = limits.current_limit(b.modules, 0xFFFF, True, 5000)
        assert not _exceeds(res, lims, currents, 0xFFFF) and res > 0
        # one module carries almost nothing: its bound is huge, saturates, does not bind
        assert limits._scaled(2000000, 50000000, 1) == limits.SAT
        assert limits._scaled(0, 50000000, 1) == 0
        assert limits._scaled(2000000, 1, 50000000) == 0
        # N x min of 16 x 2 A..2000 A
        b = _bank([2000000] * 16, [0] * 16)
        assert limits.current_limit(b.modules, 0xFFFF, True, 5000) == 32000000
        # absurd limits saturate instead of overflowing
        b = _bank([1 << 40] * 16, [0] * 16)
        assert limits.current_limit(b.modules, 0xFFFF, True, 5000) == limits.SAT
    finally:
        limits.RANGE_CHECK = False


def test_current_limit_allocates_nothing():
    import mptest
    b = _bank([100000, 90000, 80000], [50000, 30000, 20000])
    out = [0, 0]
    r = mptest.no_alloc(limits.current_limit, b.modules, 7, True, 5000)
    assert r == 100000 * 100000 // 50000
    mptest.no_alloc(limits.voltage_limits, b.modules, 7, out)
