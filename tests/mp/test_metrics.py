# bankgate.metrics under the unix port: zero allocation with 16 modules, the
# stateful metrics (resistance estimate, energy, full-cycle drift) over sequences,
# and plain results at the input extremes.  Single-state correctness against an
# exact rational reference is tests/host/test_metrics_oracle.py; the +-2**30
# range proof is tests/mp/test_metrics_range.py.
import mptest

from bankgate import config
from bankgate.metrics import E_MAX_DT_MS, WH_MAX, Metrics, mdiv
from bankgate.model import Bank


def _bank(n=16, v=52000, i=10000, soc=500, tot=100000):
    bank = Bank()
    for s in range(n):
        m = bank.modules[s]
        m.addr = s + 2
        m.analog_valid = True
        m.voltage_mv = v
        m.current_ma = i
        m.soc_pm = soc
        m.total_mah = tot
        m.remaining_mah = tot * soc // 1000
        m.n_temps = 4
        m.n_cells = 16
        for j in range(4):
            m.temp_dc[j] = 250 + j + s
        for j in range(16):
            m.cell_mv[j] = 3300 + j
    return bank


def test_mdiv_is_exact_floor():
    for a in (0, 1, -1, 7, -7, 999, -1000, 16000000, -16000000, 123456):
        for b in (1, 3, 7, 100, 999, 16000000):
            # the reference uses the 64-bit host's big products, the device never does
            assert mdiv(a, 3, b) == (a * 1000) // b, (a, b)
    assert mdiv(-1, 3, 3) == -334 and mdiv(1, 3, 3) == 333


def test_update_allocates_nothing_with_16_modules():
    cfg = config.validate({})
    bank = _bank()
    bank.link_mv = 52100
    met = Metrics(cfg, bank)
    met.update(0, 0xFFFF)                       # warm-up
    for k in range(1, 6):
        for s in range(16):
            bank.modules[s].current_ma = (k % 2) * 20000 - 10000 + s * 100
            bank.modules[s].voltage_mv = 52000 + (k % 2) * 150
        mptest.no_alloc(met.update, k * 1000, 0xFFFF)
    assert met.n == 16 and met.r_samples[0] >= 3 and met.e_chg_wh[0] == 0
    mptest.no_alloc(met.update, 9000, 0x00F0)   # membership change, slots cleared
    assert met.n == 4 and met.v_dev_mv[0] == 0


def test_results_at_extremes():
    cfg = config.validate({})
    bank = _bank(16, v=65000, i=1000000, soc=1000, tot=1000000)
    met = Metrics(cfg, bank)
    met.update(0, 0xFFFF)
    met.update(E_MAX_DT_MS, 0xFFFF)
    assert met.bank_ma == 16000000 and met.abs_sum_ma == 16000000
    assert met.v_mean_mv == 65000 and met.v_spread_mv == 0
    assert met.share_pm[7] == 62 and met.share_ideal_dev_pm[7] == 0 and met.imbalance_pm == 0
    assert met.cap_share_pm[0] == 62 and met.cap_dev_pm[0] == 0
    assert met.bank_soc_pm == 1000 and met.total_mah == 16000000
    # 65 V x 1000 A x 10 s = 650_000 J = 180 Wh + 1_800_000 J... exactly 180.555 Wh
    assert met.e_chg_wh[3] == 180 and met.e_mj[3] == 650000000 - 180 * 3600000
    # the other extreme: most negative current, coldest, empty, one module
    bank = _bank(1, v=0, i=-1000000, soc=0, tot=0)
    for j in range(4):
        bank.modules[0].temp_dc[j] = -400
    met = Metrics(cfg, bank)
    met.update(0, 1)
    met.update(1000, 1)
    assert met.n == 1 and met.share_pm[0] == 1000 and met.imbalance_pm == 0
    assert met.temp_max_dc == -400 and met.hot_slot == 0 and met.bank_soc_pm == 0
    assert met.e_dsg_wh[0] == 0 and met.e_mj[16] == 0      # 0 V: no energy


def test_energy_is_exact_over_a_day_and_gaps_are_counted():
    cfg = config.validate({})
    bank = _bank(2, v=51234, i=-123457)
    met = Metrics(cfg, bank)
    t = 0
    met.update(t, 3)
    steps = 0
    for k in range(86400 // 5):
        t += 5000
        met.update(t, 3)
        steps += 1
    # exact: 51234 mV * 123457 mA * 5000 ms per step, in nJ; 1 Wh = 3.6e12 nJ
    total_nj = 51234 * 123457 * 5000 * steps
    wh = total_nj // 3600000000000
    rem = total_nj - wh * 3600000000000
    assert met.e_dsg_wh[0] == wh and met.e_chg_wh[0] == 0
    assert met.e_mj[16] * 1000000 + met.e_uj[16] * 1000 + met.e_nj[16] == rem
    met.update(t + E_MAX_DT_MS + 1, 3)          # a gap is not integrated, it is counted
    assert met.e_gaps == 1 and met.e_dsg_wh[0] == wh


def test_energy_counter_saturates():
    cfg = config.validate({})
    bank = _bank(1, v=60000, i=900000)
    met = Metrics(cfg, bank)
    met.update(0, 1)
    met.e_chg_wh[0] = WH_MAX - 1
    for k in range(1, 5):
        met.update(k * 10000, 1)
    assert met.e_chg_wh[0] == WH_MAX


def test_resistance_estimate_and_confidence():
    cfg = config.validate({})
    bank = _bank(2, v=52000, i=0)
    met = Metrics(cfg, bank)
    t = 0
    # 25 mOhm seen at the module terminal (no link measured); small steps are ignored
    for k in range(30):
        i = 40000 if k % 2 else 0
        for s in range(2):
            bank.modules[s].current_ma = i + (k % 3) * 100
            bank.modules[s].voltage_mv = 52000 + (i + (k % 3) * 100) * 25 // 1000
        t += 2000
        met.update(t, 3)
    assert 24 <= met.r_mohm[0] <= 26 and met.r_conf[0] >= 90, (met.r_mohm[0], met.r_conf[0])
    n = met.r_samples[0]
    # below the |dI| threshold: no new sample
    bank.modules[0].current_ma += 4000
    met.update(t + 1000, 3)
    assert met.r_samples[0] == n
    # inconsistent samples (voltage moving against the current) lower the confidence
    c0 = met.r_conf[0]
    for k in range(6):
        bank.modules[0].current_ma = 40000 if k % 2 == 0 else 0
        bank.modules[0].voltage_mv = 52000 if k % 2 == 0 else 52500
        t += 2000
        met.update(t, 3)
    assert met.r_conf[0] < c0 // 2


def test_circulating_current_and_rest():
    cfg = config.validate({})
    bank = _bank(3, i=0)
    bank.modules[0].current_ma = 4000
    bank.modules[1].current_ma = -3500
    bank.modules[2].current_ma = -200
    met = Metrics(cfg, bank)
    met.update(0, 7)
    assert met.at_rest == 1 and met.circ_ma == 4000 and met.shares_valid == 0
    bank.modules[2].current_ma = -20000
    met.update(1000, 7)
    assert met.at_rest == 0 and met.circ_ma == 0 and met.shares_valid == 1


def test_full_cycle_soc_drift():
    cfg = config.validate({})
    bank = _bank(2, i=0)
    met = Metrics(cfg, bank)
    t = 0
    drift = []
    for cycle in range(4):
        for soc in (500, 150, 500, 1000, 500):
            bank.modules[0].soc_pm = soc
            bank.modules[1].soc_pm = soc - 10 - 25 * cycle
            bank.modules[0].remaining_mah = soc * 100
            bank.modules[1].remaining_mah = (soc - 10 - 25 * cycle) * 100
            t += 1000
            met.update(t, 3)
        drift.append((met.cycles, met.drift_valid, met.soc_drift_pm))
    assert drift == [(1, 0, 0), (2, 1, 25), (3, 1, 25), (4, 1, 25)], drift
    # a changed module set restarts the comparison
    bank.modules[0].soc_pm = 100
    bank.modules[0].remaining_mah = 10000
    met.update(t + 1000, 1)
    bank.modules[0].soc_pm = 990
    bank.modules[0].remaining_mah = 99000
    met.update(t + 2000, 1)
    assert met.cycles == 5 and met.drift_valid == 0


def test_snapshot_is_plain_data():
    cfg = config.validate({})
    bank = _bank(3)
    met = Metrics(cfg, bank)
    met.update(0, 7)
    snap = met.snapshot()
    assert snap["n"] == 3 and len(snap["v_dev_mv"]) == 16 and snap["hot_slot"] == 2
    for k, v in snap.items():
        assert type(v) in (int, list), k


def test_body_temperature_median_and_hot_spot():
    cfg = config.validate({})
    bank = _bank(3, i=0)
    # module 0: five sensors, the terminal (last) hot; module 1: odd count, unsorted;
    # module 2: one sensor (body = it, no spot)
    m = bank.modules[0]
    m.n_temps = 5
    for j, t in enumerate((280, 250, 245, 255, 420)):
        m.temp_dc[j] = t
    m = bank.modules[1]
    m.n_temps = 3
    for j, t in enumerate((300, 260, 270)):
        m.temp_dc[j] = t
    bank.modules[2].n_temps = 1
    bank.modules[2].temp_dc[0] = 251
    met = Metrics(cfg, bank)
    mptest.no_alloc(met.update, 0, 7)
    assert list(met.temp_dc)[:3] == [420, 300, 251]
    assert list(met.temp_body_dc)[:3] == [255, 270, 251]
    assert list(met.temp_spot_dc)[:3] == [165, 30, 0]
    # body mean (255 + 270 + 251) / 3 = 258.67: deviations floored
    assert list(met.temp_body_dev_dc)[:3] == [-4, 11, -8]
    # an even count: floor of the mean of the two middle sensors
    bank.modules[2].n_temps = 4
    for j, t in enumerate((250, 241, 262, 300)):
        bank.modules[2].temp_dc[j] = t
    met.update(1000, 7)
    assert met.temp_body_dc[2] == 256 and met.temp_spot_dc[2] == 44
    # a slot leaving the measured set is cleared
    met.update(2000, 3)
    assert met.temp_body_dc[2] == 0 and met.temp_spot_dc[2] == 0 and met.temp_body_dev_dc[2] == 0


def test_cycle_range_of_the_soc_deviation():
    cfg = config.validate({"diagnosis": {"cycle_low_pm": 400, "cycle_high_pm": 800}})
    bank = _bank(3, i=0)
    met = Metrics(cfg, bank)
    t = 0

    def at(socs):
        nonlocal t
        for s in range(3):
            bank.modules[s].soc_pm = socs[s]
            bank.modules[s].remaining_mah = socs[s] * 100
        t += 1000
        met.update(t, 7)

    # module 0 falls 30 permille behind in the discharge and comes back above in the charge
    at((850, 850, 850))
    at((600, 615, 615))
    at((380, 395, 395))      # armed (bank SOC <= 400): dev 0 = -10
    at((600, 600, 600))
    assert met.cycles == 0
    at((830, 815, 815))      # completes: dev of module 0 went 0 -> -10 -> +10
    assert met.cycles == 1 and met.cycle_range_pm == 20 and met.cycle_range_slot == 0
    # the next cycle: the window restarted at the completion (dev +10)
    at((500, 500, 500))
    at((390, 390, 390))
    at((810, 810, 810))
    assert met.cycles == 2 and met.cycle_range_pm == 10 and met.cycle_range_slot == 0
    # a membership change restarts the window (no range across different sets)
    at((500, 500, 500))
    at((300, 260, 500))
    for s in range(3):
        bank.modules[s].soc_pm = 300
    t += 1000
    met.update(t, 3)         # module 2 left: window restarts with modules 0, 1
    at((820, 820, 820))
    assert met.cycles == 3 and met.cycle_range_pm == 0
