# The electrical and thermal model of a bank of parallel battery modules.
#
# Host-side physics for the simulator (unix port only, never on the device):
# floats in SI units -- volts, amperes (+ = charging the module, the project's
# sign convention), ohms, farads, seconds, degrees Celsius, ampere-hours; SOC is
# a fraction 0.0 .. 1.0.  Integer firmware units appear only at the BMS boundary
# (bgsim.bms) where the emulated BMS reports its numbers.
#
# Network (one step of length dt, every source held constant over the step):
#
#   module i: OCV_i(SOC_i) --[ R_i = internal + branch cable + lug ]--o-- bus
#             (a branch conducts when its breaker is on, its fuse intact, its
#              BMS has not opened its own switch, and its branch contactor -- if
#              it has one -- is closed)
#   bus --[ main contactor (main_ohm) | precharge resistor | nothing ]-- DC link
#   DC link: capacitance C, bleed resistor Rb, inverter current source I_inv
#            (+ = the inverter pushes current into the bank)
#
# The closed branches reduce to a Thevenin source V_th = sum(OCV_i/R_i)/G,
# R_th = 1/G (G = sum 1/R_i).  The DC link then obeys the linear first-order ODE
#   C dV/dt = (V_th - V)/(R_th + R_s) + I_inv - V/Rb
# which is solved EXACTLY over the step (exponential), so the integration is
# unconditionally stable however small R*C is compared to dt (a branch closing
# onto a 5 mF link has R*C of ~0.1 ms; the physics step is 100 ms) and the
# precharge follows the true RC curve.  Branch currents use the step-AVERAGE bus
# voltage, so the charge delivered to the modules equals exactly the charge that
# left the DC link: charge is conserved to rounding.  Closed branches with the
# link isolated (nothing or an open main contactor) still exchange circulating
# current among themselves: I_i = (V_th - OCV_i)/R_i.
#
# Thermal model per module: two first-order nodes relaxing to ambient, each
# solved exactly for constant power over a step:
#   cells/case  : heated by I^2 * R_internal, thermal resistance rth_k_w,
#                 time constant tau_s
#   terminal/lug: heated by I^2 * R_lug (a loosened lug is a large R_lug),
#                 term_rth_k_w, term_tau_s
# Steady state: T = ambient + P * Rth.
import micropython
import math

from bgsim import chem

COPPER_OHM_M = 1.72e-8   # resistivity of annealed copper at 20 degC, ohm * metre


def cable_ohm(length_m, cross_mm2):
    """Resistance of a branch cable pair: `length_m` one-way, positive AND negative
    conductors of `cross_mm2` copper each (so 2 x length of conductor)."""
    if cross_mm2 <= 0:
        raise ValueError("cable cross-section must be > 0 mm2")
    return COPPER_OHM_M * 2.0 * length_m / (cross_mm2 * 1e-6)


class Fuse:
    """Branch fuse.  rating_a <= 0: no fuse.

    Two characteristics:
    - "i2t" (i2t_a2s > 0): the element accumulates (I^2 - In^2) * dt while the
      current exceeds the rating In and cools at the same rate below it; it
      melts when the sum reaches i2t_a2s.  At a constant overload I the blow time
      is i2t_a2s / (I^2 - In^2).
    - time-over-current (trip_factor, trip_s): blows after trip_s seconds
      continuously at or above trip_factor * In.
    The blow instant is interpolated inside the step (t_blown_s)."""

    def __init__(self, rating_a=0.0, i2t_a2s=0.0, trip_factor=2.0, trip_s=10.0):
        self.rating_a = float(rating_a)
        self.i2t_a2s = float(i2t_a2s)
        self.trip_factor = float(trip_factor)
        self.trip_s = float(trip_s)
        self.acc = 0.0
        self.blown = False
        self.t_blown_s = None

    @micropython.native
    def step(self, i_a, dt, t0_s):
        if self.blown or self.rating_a <= 0:
            return False
        a = abs(i_a)
        rn = self.rating_a
        if self.i2t_a2s > 0:
            rate = a * a - rn * rn
            if rate > 0 and self.acc + rate * dt >= self.i2t_a2s:
                self.t_blown_s = t0_s + (self.i2t_a2s - self.acc) / rate
                self.acc = self.i2t_a2s
                self.blown = True
                return True
            self.acc += rate * dt
            if self.acc < 0:
                self.acc = 0.0
        else:
            if a >= self.trip_factor * rn:
                if self.acc + dt >= self.trip_s:
                    self.t_blown_s = t0_s + (self.trip_s - self.acc)
                    self.acc = self.trip_s
                    self.blown = True
                    return True
                self.acc += dt
            else:
                self.acc = 0.0
        return False

    def replace(self):
        self.acc = 0.0
        self.blown = False
        self.t_blown_s = None


class Contactor:
    """A contactor driven by a coil.  mode: "normal" (contacts follow the coil),
    "welded" (stay closed whatever the coil), "stuck" (stay open whatever the
    coil).  `feedback` (an input pin, optional) follows the CONTACTS, which is how
    a firmware with auxiliary contacts can see a weld."""

    MODES = ("normal", "welded", "stuck")

    def __init__(self, name, feedback=None):
        self.name = name
        self.coil = 0
        self.mode = "normal"
        self.feedback = feedback
        self.operations = 0          # contact closings (wear count)
        self._last = False

    def _sync(self):
        c = self.closed
        if c and not self._last:
            self.operations += 1
        self._last = c
        if self.feedback is not None:
            self.feedback.value(1 if c else 0)

    def set_coil(self, v):
        self.coil = 1 if v else 0
        self._sync()

    def set_mode(self, mode):
        if mode not in self.MODES:
            raise ValueError("contactor mode must be one of %s" % ", ".join(self.MODES))
        self.mode = mode
        self._sync()

    @property
    @micropython.native
    def closed(self):
        if self.mode == "welded":
            return True
        if self.mode == "stuck":
            return False
        return self.coil == 1


class SimModule:
    """Physical state of one module and its branch."""

    def __init__(self, index, chemistry="lfp", cells=None, capacity_ah=100.0, soc=0.5,
                 r_int_ohm=0.020, r_cable_ohm=0.002, r_lug_ohm=0.0001, ambient_c=25.0,
                 temp_c=None, rth_k_w=0.3, tau_s=7200.0, term_rth_k_w=5.0, term_tau_s=300.0,
                 cell_spread_v=0.0, fuse=None, contactor=None):
        self.index = index
        self.chem = chem.check(chemistry)
        self.cells = cells or chem.DEFAULT_CELLS[self.chem]
        self.capacity_ah = float(capacity_ah)
        self.soc = float(soc)
        self.r_int_ohm = float(r_int_ohm)
        self.r_cable_ohm = float(r_cable_ohm)
        self.r_lug_ohm = float(r_lug_ohm)
        self.ambient_c = float(ambient_c)
        self.temp_c = float(ambient_c if temp_c is None else temp_c)
        self.term_c = self.temp_c
        self.rth_k_w = float(rth_k_w)
        self.tau_s = float(tau_s)
        self.term_rth_k_w = float(term_rth_k_w)
        self.term_tau_s = float(term_tau_s)
        self.cell_spread_v = float(cell_spread_v)
        self.fuse = fuse or Fuse()
        self.contactor = contactor   # None: branch hard-wired to the bus
        self.breaker = True          # manual branch breaker / isolator
        self.bms_open = False        # the module's BMS opened its own switch (protection)
        self.current_a = 0.0         # step-average branch current, + = charging
        self.charge_ah = 0.0         # net charge received since start (for conservation checks)
        self.throughput_ah = 0.0     # |charge| moved, for cycle counting
        self.cycles = 0
        self._g = 0.0
        self._ocv = 0.0              # OCV at the start of the current step (SimBank._step)
        self._off_key = None
        self._off = None
        self.off_max = 0.0
        self.off_min = 0.0
        # cell OCV of the last SOC asked (cell_ocv_v): the step, the BMS update and the
        # report all need it, and the SOC changes at most once per step
        self._cocv_soc = -1.0
        self._cocv = 0.0
        # exp(-dt/tau) of the last (dt, tau) per thermal node (integrate): the step
        # length and the time constants rarely change
        self._rx_dt = -1.0
        self._rx_tau = -1.0
        self._rx_e = 0.0
        self._tx_dt = -1.0
        self._tx_tau = -1.0
        self._tx_e = 0.0

    # -- electrical
    @micropython.native
    def cell_ocv_v(self):
        """chem.cell_ocv(chem, soc), remembered for the last SOC (the same float)."""
        soc = self.soc
        if soc != self._cocv_soc:
            self._cocv = chem.cell_ocv(self.chem, soc)
            self._cocv_soc = soc
        return self._cocv

    @micropython.native
    def ocv(self):
        return self.cells * self.cell_ocv_v()

    def r_total(self):
        return self.r_int_ohm + self.r_cable_ohm + self.r_lug_ohm

    @micropython.native
    def conducting(self):
        if not self.breaker or self.fuse.blown or self.bms_open:
            return False
        return self.contactor is None or self.contactor.closed

    @micropython.native
    def terminal_v(self):
        """Voltage at the module's own terminals (what its BMS measures)."""
        return self.ocv() + self.current_a * self.r_int_ohm

    @micropython.native
    def cell_offsets_v(self):
        """Per-cell deviation from the mean, summing to zero, spanning cell_spread_v
        (a deterministic permutation so the highest cell is not always the last).
        Cached: recomputed only when the spread or the cell count changes."""
        n = self.cells
        s = self.cell_spread_v
        if self._off_key == (n, s):
            return self._off
        out = [0.0] * n
        if n >= 2 and s != 0:
            for k in range(n):
                j = (k * 7 + 3) % n
                out[j] = s * (k / (n - 1) - 0.5)
        self._off = out
        self._off_key = (n, s)
        self.off_max = max(out)
        self.off_min = min(out)
        return out

    def cell_extremes_v(self):
        """(highest, lowest) cell voltage without building the list."""
        self.cell_offsets_v()
        base = self.cell_ocv_v() + self.current_a * self.r_int_ohm / self.cells
        return base + self.off_max, base + self.off_min

    def cell_v(self):
        """Cell voltages (V): OCV per cell + spread + the cell's share of I*R."""
        base = self.cell_ocv_v() + self.current_a * self.r_int_ohm / self.cells
        return [base + d for d in self.cell_offsets_v()]

    # -- integration of one step with the step-average current
    @micropython.native
    def integrate(self, i_a, dt, t0_s):
        self.current_a = i_a
        dah = i_a * dt / 3600.0
        self.charge_ah += dah
        self.throughput_ah += abs(dah)
        self.cycles = int(self.throughput_ah / (2.0 * self.capacity_ah)) if self.capacity_ah > 0 else 0
        soc = self.soc + dah / self.capacity_ah
        self.soc = 0.0 if soc < 0 else (1.0 if soc > 1 else soc)
        i2 = i_a * i_a
        # _relax(t, t_ss, dt, tau) for both thermal nodes, with exp(-dt/tau) remembered
        # per node for the last (dt, tau) (the same float as computing it again)
        amb = self.ambient_c
        tau = self.tau_s
        t_ss = amb + i2 * self.r_int_ohm * self.rth_k_w
        if tau <= 0:
            self.temp_c = t_ss
        else:
            if dt != self._rx_dt or tau != self._rx_tau:
                x = dt / tau
                self._rx_e = math.exp(-x) if x < 700 else 0.0
                self._rx_dt = dt
                self._rx_tau = tau
            self.temp_c = t_ss + (self.temp_c - t_ss) * self._rx_e
        tau = self.term_tau_s
        t_ss = amb + i2 * self.r_lug_ohm * self.term_rth_k_w
        if tau <= 0:
            self.term_c = t_ss
        else:
            if dt != self._tx_dt or tau != self._tx_tau:
                x = dt / tau
                self._tx_e = math.exp(-x) if x < 700 else 0.0
                self._tx_dt = dt
                self._tx_tau = tau
            self.term_c = t_ss + (self.term_c - t_ss) * self._tx_e
        f = self.fuse
        if not f.blown and f.rating_a > 0:
            f.step(i_a, dt, t0_s)


@micropython.native
def _relax(t, t_ss, dt, tau):
    """Exact first-order step toward t_ss with time constant tau."""
    if tau <= 0:
        return t_ss
    x = dt / tau
    return t_ss + (t - t_ss) * (math.exp(-x) if x < 700 else 0.0)


class SimBank:
    """The modules, the bank terminal and the DC link, stepped in simulated time.

    topology: main contactor (`main`) and precharge contactor (`precharge`) are
    Contactor objects or None.  With neither, the bus IS the DC link (branch
    topology: each module has its own contactor, or is hard-wired)."""

    def __init__(self, modules, link_c_f=0.005, bleed_ohm=20000.0, main=None, precharge=None,
                 precharge_ohm=20.0, main_ohm=0.0002, link_v=0.0):
        self.modules = modules
        self.link_c_f = float(link_c_f)
        self.bleed_ohm = float(bleed_ohm)
        self.main = main
        self.precharge = precharge
        self.precharge_ohm = float(precharge_ohm)
        self.main_ohm = float(main_ohm)
        self.link_v = float(link_v)   # DC-link (inverter side) voltage at the end of the last step
        self.bus_v = 0.0              # battery busbar voltage (0 when nothing conducts and isolated)
        self.bank_a = 0.0             # step-average current from the link into the batteries
        self.inverter_a = 0.0         # current the inverter pushed in during the last step
        self.t_s = 0.0                # simulated seconds stepped so far
        self.q_inverter_c = 0.0       # integral of the inverter current (coulomb)
        self.q_bleed_c = 0.0          # charge lost in the bleed resistor (coulomb)
        self.inverter = None          # callable(bank) -> amps for the coming step
        self.inv_min_v = 0.0          # inverter stops discharging the link below this
        self.inv_max_v = 1e9          # ... and stops charging it above this
        self._saved = None
        self._saved_sol = None
        self._vss = self.link_v       # the last step's link solution (see link_v_after)
        self._tau = 0.0
        self._ramp = 0.0

    @micropython.native
    def link_v_after(self, dt):
        """DC-link voltage dt seconds after the last step, continuing that step's
        exact solution (sources held): what a sensor reads between steps."""
        if dt <= 0:
            return self.link_v
        if self._ramp:
            return self.link_v + self._ramp * dt
        tau = self._tau
        if tau <= 0:
            return self._vss
        x = dt / tau
        return self._vss + (self.link_v - self._vss) * (math.exp(-x) if x < 700 else 0.0)

    def link_path_ohm(self):
        """Resistance between busbar and DC link, or None when they are isolated."""
        if self.main is None and self.precharge is None:
            return 0.0
        if self.main is not None and self.main.closed:
            return self.main_ohm
        if self.precharge is not None and self.precharge.closed:
            return self.precharge_ohm
        return None

    @micropython.native
    def step(self, dt):
        """Advance dt seconds.  The inverter current is asked once for the step; an
        inverter discharging the link stops where the link falls to inv_min_v, one
        charging it stops at inv_max_v (real inverters shut down / regulate there),
        so a link cut off from the batteries collapses to its undervoltage limit
        instead of being driven through zero.  The crossing instant is solved
        exactly and the step is split there."""
        if dt <= 0:
            return
        i_inv = self.inverter(self) if self.inverter is not None else 0.0
        self._step(dt, i_inv)
        v = self.link_v
        if (i_inv < 0 and v < self.inv_min_v) or (i_inv > 0 and v > self.inv_max_v):
            # undo and split: first part up to the crossing, the rest without the inverter
            sol = (self._vss, self._tau, self._ramp)
            self._restore()
            lim = self.inv_min_v if i_inv < 0 else self.inv_max_v
            tc = self._crossing(lim, dt, sol)
            if tc > 0:
                self._step(tc, i_inv)
            self._step(dt - tc, 0.0)

    def _crossing(self, lim, dt, sol):
        """Time into the step at which the link reaches `lim`, from the step's
        solution sol = (vss, tau, ramp) and the start voltage."""
        v0 = self.link_v
        vss, tau, ramp = sol
        if ramp:
            return max(0.0, min(dt, (lim - v0) / ramp))
        if tau <= 0 or v0 == vss or (lim - vss) / (v0 - vss) <= 0:
            return 0.0
        t = -tau * math.log((lim - vss) / (v0 - vss))
        return max(0.0, min(dt, t))

    @micropython.native
    def _save(self):
        # every step saves its start state (an inverter crossing its voltage limit undoes
        # the step); the save lists are reused, so a step only stores references
        sv = self._saved
        mods = self.modules
        if sv is None or len(sv) != 7 + len(mods):
            sv = self._saved = [None] * 7 + [[None] * 10 for _ in mods]
        sv[0] = self.link_v
        sv[1] = self.bus_v
        sv[2] = self.bank_a
        sv[3] = self.inverter_a
        sv[4] = self.t_s
        sv[5] = self.q_inverter_c
        sv[6] = self.q_bleed_c
        k = 7
        for m in mods:
            st = sv[k]
            k += 1
            st[0] = m.soc
            st[1] = m.charge_ah
            st[2] = m.throughput_ah
            st[3] = m.cycles
            st[4] = m.temp_c
            st[5] = m.term_c
            st[6] = m.current_a
            f = m.fuse
            st[7] = f.acc
            st[8] = f.blown
            st[9] = f.t_blown_s

    def _restore(self):
        sv = self._saved
        (self.link_v, self.bus_v, self.bank_a, self.inverter_a, self.t_s, self.q_inverter_c,
         self.q_bleed_c) = sv[:7]
        for m, st in zip(self.modules, sv[7:]):
            (m.soc, m.charge_ah, m.throughput_ah, m.cycles, m.temp_c, m.term_c, m.current_a,
             m.fuse.acc, m.fuse.blown, m.fuse.t_blown_s) = st
        # the solution parameters of the undone step: recompute from the saved start
        self._vss, self._tau, self._ramp = self._saved_sol

    @micropython.native
    def _step(self, dt, i_inv):
        if dt <= 0:
            return
        self._save()
        g_sum = 0.0
        gs = 0.0
        for m in self.modules:
            # m.conducting(), m.r_total() and m.ocv() inlined (same expressions)
            c = m.contactor
            if m.breaker and not m.fuse.blown and not m.bms_open and (c is None or c.closed):
                g = 1.0 / (m.r_int_ohm + m.r_cable_ohm + m.r_lug_ohm)
                m._g = g
                g_sum += g
                ocv = m.cells * m.cell_ocv_v()
                m._ocv = ocv             # the same value the current below needs
                gs += g * ocv
            else:
                m._g = 0.0
        rs = self.link_path_ohm()
        c = self.link_c_f
        gb = 1.0 / self.bleed_ohm if self.bleed_ohm > 0 else 0.0
        v0 = self.link_v
        connected = g_sum > 0 and rs is not None
        vth = gs / g_sum if g_sum > 0 else 0.0
        if connected:
            rt = 1.0 / g_sum + rs
            a = 1.0 / rt + gb
            b = vth / rt + i_inv
        else:
            rt = 0.0
            a = gb
            b = i_inv
        self._saved_sol = (self._vss, self._tau, self._ramp)
        self._vss = v0
        self._tau = 0.0
        self._ramp = 0.0
        if a > 0:
            vss = b / a
            self._vss = vss
            self._tau = c / a if c > 0 else 0.0
            if c > 0:
                x = dt * a / c
                if x > 700:
                    ex, frac = 0.0, 1.0 / x
                else:
                    ex = math.exp(-x)
                    frac = (1.0 - ex) / x if x > 1e-12 else 1.0 - x / 2
                v1 = vss + (v0 - vss) * ex
                vavg = vss + (v0 - vss) * frac
            else:
                v1 = vavg = vss
        else:
            self._ramp = i_inv / c if c > 0 else 0.0
            v1 = v0 + self._ramp * dt
            vavg = (v0 + v1) / 2
        if connected:
            i_bank = (vavg - vth) / rt
            vbus_avg = vth + i_bank / g_sum
            self.bus_v = vth + (v1 - vth) / rt / g_sum
        else:
            i_bank = 0.0
            vbus_avg = vth
            if g_sum > 0:
                self.bus_v = vth
            else:
                self.bus_v = v1 if rs is not None else 0.0
        t0 = self.t_s
        for m in self.modules:
            i = m._g * (vbus_avg - m._ocv) if m._g > 0 else 0.0
            m.integrate(i, dt, t0)
        self.link_v = v1
        self.bank_a = i_bank
        self.inverter_a = i_inv
        self.q_inverter_c += i_inv * dt
        self.q_bleed_c += gb * vavg * dt
        self.t_s = t0 + dt
