# The bank model's physics against closed-form results (tools/sim/bgsim/physics.py).
import math

from bgsim import chem
from bgsim.physics import COPPER_OHM_M, Contactor, Fuse, SimBank, SimModule, cable_ohm


def close(a, b, tol, what=""):
    assert abs(a - b) <= tol, "%s: %r != %r (tol %r)" % (what, a, b, tol)


def flat_bank(resistances, soc=0.5, **kw):
    """Modules at the same SOC, hard-wired, bus = DC link, no bleed."""
    mods = [SimModule(i, soc=soc, capacity_ah=1e6, r_int_ohm=r, r_cable_ohm=0.0, r_lug_ohm=0.0)
            for i, r in enumerate(resistances)]
    b = SimBank(mods, bleed_ohm=0.0, **kw)
    b.link_v = mods[0].ocv()
    return b


def test_ocv_tables_monotonic_and_inverse():
    for name, table in chem.OCV_TABLES.items():
        for i in range(1, len(table)):
            assert table[i][0] > table[i - 1][0] and table[i][1] > table[i - 1][1], name
        for soc in (0.0, 0.03, 0.33, 0.5, 0.91, 1.0):
            close(chem.soc_for_cell_ocv(name, chem.cell_ocv(name, soc)), soc, 1e-9, name)
    close(chem.cell_ocv("lfp", 0.55), 3.305, 1e-12)       # midpoint of 3.300 .. 3.310
    m = SimModule(0, chemistry="lfp", cells=16, soc=0.5)
    close(m.ocv(), 16 * 3.300, 1e-9)


def test_cable_resistance_from_length_and_cross_section():
    # 2 m one-way of 35 mm2: 4 m of conductor
    close(cable_ohm(2.0, 35.0), COPPER_OHM_M * 4.0 / 35e-6, 1e-15)
    close(cable_ohm(2.0, 35.0) * 1000, 1.9657, 1e-3, "mohm")


def test_two_and_three_branches_share_in_inverse_proportion():
    for rs in ((0.010, 0.020), (0.010, 0.015, 0.030)):
        b = flat_bank(rs)
        b.inverter = lambda bank: -90.0      # 90 A discharge
        for _ in range(20):
            b.step(0.1)
        g = [1 / r for r in rs]
        for m, gi in zip(b.modules, g):
            close(m.current_a, -90.0 * gi / sum(g), 1e-3, "branch %d" % m.index)
        close(sum(m.current_a for m in b.modules), -90.0, 1e-6, "sum")
        # bus voltage = OCV - I * (R1 || R2 ...)
        close(b.bus_v, b.modules[0].ocv() - 90.0 / sum(g), 1e-3, "bus")


def test_circulating_current_at_rest_is_docv_over_sum_r():
    hi = SimModule(0, soc=0.97, capacity_ah=1e6, r_int_ohm=0.020, r_cable_ohm=0.003, r_lug_ohm=0.0)
    lo = SimModule(1, soc=0.30, capacity_ah=1e6, r_int_ohm=0.015, r_cable_ohm=0.002, r_lug_ohm=0.0)
    b = SimBank([hi, lo], bleed_ohm=0.0)
    b.link_v = 50.0
    for _ in range(10):
        b.step(0.1)
    d_ocv = hi.ocv() - lo.ocv()
    assert d_ocv > 0.5                        # a real difference, not a trivial one
    expect = d_ocv / (hi.r_total() + lo.r_total())
    close(lo.current_a, expect, 1e-3, "into the low module")
    close(hi.current_a, -expect, 1e-3, "out of the high module")
    # with the link isolated (open main contactor) the pair still circulates
    main = Contactor("main")
    b2 = SimBank([SimModule(0, soc=0.97, capacity_ah=1e6, r_int_ohm=0.02, r_cable_ohm=0.003, r_lug_ohm=0),
                  SimModule(1, soc=0.30, capacity_ah=1e6, r_int_ohm=0.015, r_cable_ohm=0.002, r_lug_ohm=0)],
                 main=main, bleed_ohm=1000.0)
    b2.inverter = lambda bank: 50.0           # the inverter cannot reach the batteries
    b2.step(0.1)
    close(b2.modules[1].current_a, expect, 1e-3, "isolated")
    close(b2.bank_a, 0.0, 1e-12)


def test_charge_is_conserved():
    mods = [SimModule(i, soc=s, capacity_ah=50.0, r_int_ohm=r, r_cable_ohm=0.001)
            for i, (s, r) in enumerate(((0.40, 0.02), (0.60, 0.03), (0.55, 0.025)))]
    b = SimBank(mods, bleed_ohm=500.0, link_c_f=0.01)
    b.link_v = 0.0                            # closing onto an empty DC link: capacitor inrush too
    t = [0.0]

    def profile(bank):
        t[0] += 1
        return 40.0 * math.sin(t[0] / 50.0) - 10.0

    b.inverter = profile
    for _ in range(3000):
        b.step(0.1)
    q_mod = sum(m.charge_ah for m in mods) * 3600.0
    q_cap = b.link_c_f * (b.link_v - 0.0)
    # everything the inverter pushed in is in the modules, the capacitor or the bleed resistor
    close(q_mod, b.q_inverter_c - q_cap - b.q_bleed_c, 1e-6 * abs(b.q_inverter_c) + 1e-6, "coulomb")
    assert abs(b.q_inverter_c) > 1000 and b.q_bleed_c > 0
    # SOC moved by exactly the charge each module received
    for m, s in zip(mods, (0.40, 0.60, 0.55)):
        close(m.soc, s + m.charge_ah / 50.0, 1e-9, "soc %d" % m.index)


def test_precharge_follows_the_rc_curve():
    m = SimModule(0, soc=0.5, capacity_ah=1e6, r_int_ohm=0.02, r_cable_ohm=0.0, r_lug_ohm=0.0)
    main, pre = Contactor("main"), Contactor("pre")
    rp, c, rb = 20.0, 0.005, 5000.0
    b = SimBank([m], main=main, precharge=pre, precharge_ohm=rp, link_c_f=c, bleed_ohm=rb)
    v_bat = m.ocv()
    b.step(0.1)
    close(b.link_v, 0.0, 1e-12, "isolated link stays empty")
    pre.set_coil(1)
    rt = rp + m.r_total()
    vss = v_bat * rb / (rb + rt)
    tau = c / (1 / rt + 1 / rb)
    close(tau, 0.0999, 0.001)
    for k in range(1, 15):
        b.step(0.05)
        close(b.link_v, vss * (1 - math.exp(-k * 0.05 / tau)), 1e-4, "t=%.2f" % (k * 0.05))
    # 7 tau: within 1 % of the bank (the bleed keeps it 0.4 % below); closing
    # main now gives a small step only
    assert b.link_v > 0.99 * v_bat
    main.set_coil(1)
    pre.set_coil(0)
    b.step(0.1)
    close(b.link_v, v_bat * rb / (rb + 0.0002 + m.r_total()), 1e-4, "main closed")


def test_fuse_blows_at_rated_overload_time():
    # i2t characteristic: In = 100 A, 1e5 A2s; at 200 A: 1e5 / (200^2 - 100^2) = 3.333 s
    f = Fuse(rating_a=100, i2t_a2s=1e5)
    m = SimModule(0, soc=0.5, capacity_ah=1e6, r_int_ohm=0.02, r_cable_ohm=0, r_lug_ohm=0, fuse=f)
    b = SimBank([m], bleed_ohm=0.0, link_c_f=0.0)
    b.inverter = lambda bank: -200.0 if m.conducting() else 0.0
    while not f.blown and b.t_s < 10:
        b.step(0.1)
    close(f.t_blown_s, 1e5 / (200.0 ** 2 - 100.0 ** 2), 1e-6, "blow time")
    b.step(0.1)
    assert not m.conducting() and m.current_a == 0.0
    # at the rating it never blows
    f2 = Fuse(rating_a=100, i2t_a2s=1e5)
    for _ in range(10000):
        f2.step(100.0, 0.1, 0.0)
    assert not f2.blown
    # time-over-current: 2 x In for 10 s
    f3 = Fuse(rating_a=50, trip_factor=2.0, trip_s=10.0)
    t = 0.0
    while not f3.blown:
        f3.step(-101.0, 0.1, t)
        t += 0.1
    close(f3.t_blown_s, 10.0, 1e-6)
    f4 = Fuse(rating_a=50, trip_factor=2.0, trip_s=10.0)
    for _ in range(1000):
        f4.step(99.0, 0.1, 0.0)
    assert not f4.blown


def test_thermal_steady_state_and_time_constant():
    m = SimModule(0, soc=0.5, capacity_ah=1e9, r_int_ohm=0.02, r_cable_ohm=0, r_lug_ohm=0.004,
                  ambient_c=20.0, rth_k_w=0.5, tau_s=600.0, term_rth_k_w=4.0, term_tau_s=60.0)
    b = SimBank([m], bleed_ohm=0.0)
    b.link_v = m.ocv()
    b.inverter = lambda bank: -50.0
    for _ in range(600):                      # one cell time constant
        b.step(1.0)
    rise = 50.0 ** 2 * 0.02 * 0.5             # 25 K
    close(m.temp_c, 20.0 + rise * (1 - math.exp(-1)), 0.01, "after one tau")
    for _ in range(6000):
        b.step(1.0)
    close(m.temp_c, 20.0 + rise, 0.01, "case steady state")
    close(m.term_c, 20.0 + 50.0 ** 2 * 0.004 * 4.0, 0.01, "terminal steady state")
    b.inverter = None                         # rest: back to ambient
    for _ in range(12000):
        b.step(1.0)
    close(m.temp_c, 20.0, 0.01)


def test_contactor_weld_stuck_and_feedback():
    from fakehw import FakePin
    fb = FakePin(None, 0, "aux")
    k = Contactor("k1", feedback=fb)
    k.set_coil(1)
    assert k.closed and fb.value() == 1 and k.operations == 1
    k.set_mode("welded")
    k.set_coil(0)
    assert k.closed and fb.value() == 1       # welded: aux contact tells the truth
    k.set_mode("stuck")
    k.set_coil(1)
    assert not k.closed and fb.value() == 0
    m = SimModule(0, contactor=k)
    assert not m.conducting()


def test_cell_voltages_sum_to_module_voltage():
    m = SimModule(0, chemistry="lfp", cells=16, soc=0.8, cell_spread_v=0.030)
    cv = m.cell_v()
    assert len(cv) == 16
    close(sum(cv), m.terminal_v(), 1e-9)
    close(max(cv) - min(cv), 0.030, 1e-9, "spread")
    n = SimModule(0, chemistry="nmc", soc=0.5)
    assert n.cells == 14
    close(n.ocv(), 14 * 3.740, 1e-9)


def test_isolated_link_stops_at_the_inverter_limits():
    # the last branch opens under a 120 A discharge: the inverter shuts down at its
    # undervoltage limit instead of driving the DC link through zero
    m = SimModule(0, soc=0.5, capacity_ah=1e6, r_int_ohm=0.02, r_cable_ohm=0, r_lug_ohm=0,
                  contactor=Contactor("k1"))
    b = SimBank([m], link_c_f=0.005, bleed_ohm=20000.0)
    b.inv_min_v = 40.0
    b.inverter = lambda bank: -120.0 if bank.link_v >= 40.0 else 0.0
    m.contactor.set_coil(1)
    b.link_v = m.ocv()
    b.step(0.1)
    b.step(0.1)
    close(m.current_a, -120.0 - b.link_v / 20000.0, 1e-5)
    m.contactor.set_coil(0)
    b.step(0.1)
    close(b.link_v, 40.0 * math.exp(-(0.1 - 0.005 * (b.modules[0].ocv() - 40.0) / 120.0) / 100.0), 2e-3, "stopped at min_v, then bleeds")
    assert b.link_v >= 0
    for _ in range(10):
        b.step(0.1)
    assert 0 < b.link_v <= 40.0                 # bleeds down slowly, never negative
    b2 = SimBank([SimModule(0, contactor=Contactor("k"))], link_c_f=0.005, bleed_ohm=0.0)
    b2.inv_max_v = 58.0
    b2.link_v = 50.0
    b2.inverter = lambda bank: 30.0
    b2.step(0.5)
    close(b2.link_v, 58.0, 1e-6, "charging stops at max_v")
    close(b2.q_inverter_c, 0.005 * 8.0, 1e-9, "charge pushed in = C dV")
