# The emulated BMS of one module: what it measures, the limits it asks for, the
# alarms and protections it raises, and the integer numbers it reports on the
# bus.  Host side (unix port): physics in floats (bgsim.physics), reports in the
# firmware's integer units (_mv, _ma + = charging, _mah, _dc = 0.1 degC, _pm).
#
# Limits (what the BMS puts in 0x92 / 0x47 / the CAN limit frame):
#   charge current   = chg_rated_a x SOC taper (linear from 100 % at taper_soc to
#                      0 at full) x temperature factor (0 below 0 degC, 50 % from
#                      0 to 10 degC, 100 % to 45 degC, linear to 0 at 55 degC);
#                      0 while any cell is above the charge cell voltage + 50 mV.
#   discharge current= dsg_rated_a x (SOC below 10 %: linear to 0 at 0 %) x
#                      (0 below -20 degC, 100 % to 50 degC, linear to 0 at 60 degC).
# Alarms (bankgate.model ALM_* bits) follow the physics each step:
#   cell OV/UV at the chemistry's alarm levels (bgsim.chem.CELL_LIMITS); over-
#   and under-temperature at ot_alarm_c / ut_alarm_c; over-current above
#   1.05 x the rated current.  PROTECTIONS (same bits) at the protect levels:
#   cell OV/UV protect, temperature + 5 K, current above oc_protect x rated for
#   oc_delay_s.  A protection makes the BMS open its own switch (the module
#   drops out of the bank: SimModule.bms_open) for at least recover_s, until the
#   condition has cleared.
# Injected alarms (scenario timeline) are OR-ed into the reported bits for their
# duration; they do not trip the module unless "trip" is given.
import micropython
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALARM_NAMES)

from bgsim import chem

ALARM_BITS = dict((name, bit) for bit, name in ALARM_NAMES)


def alarm_bits(names):
    """["cell_ov", ...] or an int -> bitmask (ValueError on an unknown name)."""
    if isinstance(names, int):
        return names
    bits = 0
    for n in names:
        if n not in ALARM_BITS:
            raise ValueError("unknown alarm %r (known: %s)" % (n, ", ".join(sorted(ALARM_BITS))))
        bits |= ALARM_BITS[n]
    return bits


def _version(v):
    """"1.4" / [1, 4] / 0x0104 -> (major << 8) | minor."""
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        parts = v.split(".")
        return (int(parts[0]) << 8) | (int(parts[1]) if len(parts) > 1 else 0)
    return (int(v[0]) << 8) | int(v[1])


class Bms:
    def __init__(self, mod, addr, serial="", model="US5000", manufacturer="PYLON", sw_version="1.4",
                 design_ah=None, chg_rated_a=50.0, dsg_rated_a=50.0, oc_protect=1.5, oc_delay_s=1.0,
                 ot_alarm_c=50.0, ut_alarm_c=0.0, recover_s=30.0, taper_soc=0.9, cycles=0):
        self.mod = mod
        self.addr = addr
        self.serial = serial or ("SIM%013d" % (addr,))
        self.model = model
        self.manufacturer = manufacturer
        self.sw_version = _version(sw_version)
        self.design_ah = float(design_ah if design_ah is not None else mod.capacity_ah)
        self.chg_rated_a = float(chg_rated_a)
        self.dsg_rated_a = float(dsg_rated_a)
        self.oc_protect = float(oc_protect)
        self.oc_delay_s = float(oc_delay_s)
        self.ot_alarm_c = float(ot_alarm_c)
        self.ut_alarm_c = float(ut_alarm_c)
        self.recover_s = float(recover_s)
        self.taper_soc = float(taper_soc)
        self.base_cycles = int(cycles)
        lim = chem.CELL_LIMITS[mod.chem]
        self.cell = lim
        self.plugged = True          # communication cable connected / BMS awake
        self.alarms = 0
        self.protections = 0
        self.forced_alarms = 0       # injected (scenario) bits
        self.forced_prot = 0
        self.forced_until = -1.0     # simulated seconds; < 0: no injection
        self.forced_trip = False
        self.trip_bits = 0
        self.t_trip = -1.0
        self.trips = 0
        self._oc_t = 0.0
        self.chg_limit_a = 0.0
        self.dsg_limit_a = 0.0
        self._rep = None
        self._rep_gen = -1
        # the reported integers (refresh()): computed once per physics step, kept in
        # reused lists/attributes so an answer costs no dict (see report())
        self._thr = None             # update()'s derived levels (_levels())
        self.updates = 0             # update() calls so far (invalidates the integers)
        self.gen = 0                 # bumped at every refresh() that recomputed
        self._v_key = None           # (stamp, updates, addr) of the integers
        self._v_stamp = None
        self._v_upd = -1
        self._v_addr = -1
        self.v_cells = []            # cell_mv
        self.v_temps = [0, 0, 0, 0, 0]   # temp_dc
        self.v_current_ma = 0
        self.v_voltage_mv = 0
        self.v_remaining_mah = 0
        self.v_total_mah = 0
        self.v_design_mah = 0
        self.v_soc_pm = 0
        self.v_soh_pm = 0
        self.v_cycles = 0
        self.v_chg_v_mv = 0
        self.v_dsg_v_mv = 0
        self.v_chg_limit_ma = 0
        self.v_dsg_limit_ma = 0
        self.v_flags = 0
        self.v_charging = False
        self.v_discharging = False
        # fault injections (scenario timeline "freeze" / "skew_voltage"): a frozen BMS
        # replays the analog numbers of the moment it froze (refresh() stops); a skewed
        # one reports its module voltage off by skew_mv against its own cells
        self.frozen = False
        self.skew_mv = 0

    # ---------------------------------------------------------------- model
    def max_temp_c(self):
        m = self.mod
        return m.temp_c if m.temp_c > m.term_c else m.term_c

    def inject(self, bits, protect=False, until_s=1e18, trip=False):
        if protect:
            self.forced_prot |= bits
        else:
            self.forced_alarms |= bits
        self.forced_until = until_s
        self.forced_trip = trip

    def clear_injected(self):
        self.forced_alarms = 0
        self.forced_prot = 0
        self.forced_until = -1.0
        self.forced_trip = False

    @micropython.native
    def update(self, t_s, dt):
        """Re-evaluate limits, alarms and protections after a physics step."""
        self.updates += 1
        m = self.mod
        lv = self._levels()
        # m.cell_extremes_v() and max_temp_c() inlined (same expressions, no tuple)
        m.cell_offsets_v()
        base = m.cell_ocv_v() + m.current_a * m.r_int_ohm / m.cells
        vmax = base + m.off_max
        vmin = base + m.off_min
        tc = m.temp_c
        tt = m.term_c
        temp = tc if tc > tt else tt
        tmin = tc if tc < tt else tt
        i = m.current_a
        al = 0
        pr = 0
        if vmax >= lv[6]:
            al |= ALM_CELL_OV
        if vmax >= lv[7]:
            pr |= ALM_CELL_OV
        if vmin <= lv[8]:
            al |= ALM_CELL_UV
        if vmin <= lv[9]:
            pr |= ALM_CELL_UV
        if temp >= self.ot_alarm_c:
            al |= ALM_CHG_OT
        if temp >= lv[10]:
            al |= ALM_DSG_OT
            pr |= ALM_CHG_OT
        if temp >= lv[11]:
            pr |= ALM_DSG_OT
        if tmin <= self.ut_alarm_c:
            al |= ALM_CHG_UT
        if tmin <= lv[12]:
            al |= ALM_DSG_UT
        # -i > x is i < -x exactly (negation is exact): no float for -i
        if i > lv[13]:
            al |= ALM_CHG_OC
        if i < lv[14]:
            al |= ALM_DSG_OC
        over = (i > lv[15]) or (i < lv[16])
        self._oc_t = self._oc_t + dt if over else 0.0
        if self._oc_t >= self.oc_delay_s:
            pr |= ALM_CHG_OC if i > 0 else ALM_DSG_OC
        if 0 <= self.forced_until < t_s:
            self.clear_injected()
        al |= self.forced_alarms
        if self.forced_trip:
            pr |= self.forced_prot
        # trip / recover: the BMS's own switch
        if pr and not m.bms_open:
            m.bms_open = True
            self.t_trip = t_s
            self.trip_bits = pr
            self.trips += 1
        elif m.bms_open and self.t_trip >= 0:
            if t_s - self.t_trip >= self.recover_s and not (pr & ~(ALM_CHG_OC | ALM_DSG_OC)):
                m.bms_open = False
                self.trip_bits = 0
                self.t_trip = -1.0
        self.alarms = al
        self.protections = pr | self.trip_bits | self.forced_prot
        self._limits(vmax, temp, tmin, lv)

    @micropython.native
    def _levels(self):
        """update()'s levels derived from the parameters (floats), recomputed only
        when a parameter changed (scenario actions set them directly):
        [ot, ut, chg rated, dsg rated, oc_protect, cell table, ov alarm, ov protect,
         uv alarm, uv protect, ot + 5, ot + 10, ut - 20, 1.05 x chg, -(1.05 x dsg),
         oc_protect x chg, -(oc_protect x dsg), charge_v + 0.05]"""
        k = self._thr
        if k is not None and k[0] == self.ot_alarm_c and k[1] == self.ut_alarm_c \
                and k[2] == self.chg_rated_a and k[3] == self.dsg_rated_a \
                and k[4] == self.oc_protect and k[5] is self.cell:
            return k
        cl = self.cell
        ot = self.ot_alarm_c
        ut = self.ut_alarm_c
        k = self._thr = (ot, ut, self.chg_rated_a, self.dsg_rated_a, self.oc_protect, cl,
                         cl["ov_alarm"], cl["ov_protect"], cl["uv_alarm"], cl["uv_protect"],
                         ot + 5, ot + 10, ut - 20,
                         1.05 * self.chg_rated_a, -(1.05 * self.dsg_rated_a),
                         self.oc_protect * self.chg_rated_a, -(self.oc_protect * self.dsg_rated_a),
                         cl["charge_v"] + 0.05)
        return k

    @micropython.native
    def _limits(self, vmax, temp, tmin, lv=None):
        m = self.mod
        soc = m.soc
        if lv is None:
            lv = self._levels()
        c = 1.0
        if soc > self.taper_soc:
            c = (1.0 - soc) / (1.0 - self.taper_soc)
        if vmax >= lv[17]:
            c = 0.0
        if tmin < 0:
            c = 0.0
        elif tmin < 10:
            c *= 0.5
        if temp > 55:
            c = 0.0
        elif temp > 45:
            c *= (55 - temp) / 10.0
        d = 1.0
        if soc < 0.1:
            d = soc / 0.1
        if tmin < -20 or temp > 60:
            d = 0.0
        elif temp > 50:
            d *= (60 - temp) / 10.0
        if m.bms_open:
            c = d = 0.0
        self.chg_limit_a = self.chg_rated_a * (c if c > 0 else 0.0)
        self.dsg_limit_a = self.dsg_rated_a * (d if d > 0 else 0.0)

    # -------------------------------------------------------------- reports
    @micropython.native
    def refresh(self, stamp=None):
        """Bring the reported integers (v_* attributes, firmware units) up to date.
        With `stamp` (the physics time), they are kept while the stamp, the number of
        update() calls and the address are unchanged (the three commands a module gets
        per sweep usually fall within one physics step); without, always recomputed.
        Allocates only the float temporaries (host only)."""
        if stamp is not None and stamp == self._v_stamp and self.updates == self._v_upd \
                and self.addr == self._v_addr:
            return
        if self.frozen and self._v_stamp is not None:
            return                   # injected: the same analog frame, replayed
        self._v_stamp = stamp
        self._v_upd = self.updates
        self._v_addr = self.addr
        self.gen += 1
        m = self.mod
        n = m.cells
        offs = m.cell_offsets_v()
        cells = self.v_cells
        if len(cells) != n:
            cells = self.v_cells = [0] * n
        base = chem.cell_ocv(m.chem, m.soc) + m.current_a * m.r_int_ohm / n
        for k in range(n):
            cells[k] = int(round((base + offs[k]) * 1000))
        tc = m.temp_c
        t = self.v_temps
        t[0] = int(round((tc + 3.0) * 10))
        t[1] = int(round(tc * 10))
        t[2] = int(round((tc - 0.5) * 10))
        t[3] = int(round((tc + 0.5) * 10))
        t[4] = int(round(m.term_c * 10))
        total = int(round(m.capacity_ah * 1000))
        flags = 0
        if self.chg_limit_a > 0:
            flags |= 0x80
        if self.dsg_limit_a > 0:
            flags |= 0x40
        if m.soc < 0.05:
            flags |= 0x20
        cl = self.cell
        self.v_current_ma = 0 if m.bms_open else int(round(m.current_a * 1000))
        self.v_voltage_mv = int(round(m.terminal_v() * 1000)) + self.skew_mv
        self.v_remaining_mah = int(round(m.soc * total))
        self.v_total_mah = total
        self.v_design_mah = int(round(self.design_ah * 1000))
        self.v_soc_pm = int(round(m.soc * 1000))
        self.v_soh_pm = min(1000, int(round(1000 * m.capacity_ah / self.design_ah)))
        self.v_cycles = self.base_cycles + m.cycles
        self.v_chg_v_mv = int(round(m.cells * cl["charge_v"] * 1000))
        self.v_dsg_v_mv = int(round(m.cells * cl["discharge_v"] * 1000))
        self.v_chg_limit_ma = int(round(self.chg_limit_a * 1000))
        self.v_dsg_limit_ma = int(round(self.dsg_limit_a * 1000))
        self.v_flags = flags
        self.v_charging = m.current_a > 0.5
        self.v_discharging = m.current_a < -0.5

    @micropython.native
    def report(self, stamp=None):
        """The BMS's numbers in firmware units (a dict of ints; allocates -- host only).
        With `stamp` (e.g. the physics time), the dict is reused while the integers
        are (refresh()); without, it is always rebuilt."""
        self.refresh(stamp)
        if stamp is not None and self._rep_gen == self.gen:
            return self._rep
        r = self._report()
        self._rep_gen = self.gen
        self._rep = r
        return r

    def _report(self):
        m = self.mod
        cl = self.cell
        return {
            "addr": self.addr,
            "cell_mv": list(self.v_cells),
            "temp_dc": list(self.v_temps),
            "current_ma": self.v_current_ma,
            "voltage_mv": self.v_voltage_mv,
            "remaining_mah": self.v_remaining_mah,
            "total_mah": self.v_total_mah,
            "design_mah": self.v_design_mah,
            "soc_pm": self.v_soc_pm,
            "soh_pm": self.v_soh_pm,
            "cycles": self.v_cycles,
            "alarms": self.alarms,
            "protections": self.protections,
            "chg_v_mv": self.v_chg_v_mv,
            "dsg_v_mv": self.v_dsg_v_mv,
            "chg_limit_ma": self.v_chg_limit_ma,
            "dsg_limit_ma": self.v_dsg_limit_ma,
            "mgmt_flags": self.v_flags,
            "cell_hi_mv": int(cl["ov_alarm"] * 1000),
            "cell_lo_mv": int(cl["uv_alarm"] * 1000),
            "cell_uv_mv": int(cl["uv_protect"] * 1000),
            "mod_hi_mv": int(round(m.cells * cl["ov_alarm"] * 1000)),
            "mod_lo_mv": int(round(m.cells * cl["uv_alarm"] * 1000)),
            "mod_uv_mv": int(round(m.cells * cl["uv_protect"] * 1000)),
            "params_chg_ma": int(round(self.chg_rated_a * 1000)),
            "params_dsg_ma": int(round(self.dsg_rated_a * 1000)),
            "serial": self.serial,
            "model": self.model,
            "manufacturer": self.manufacturer,
            "sw_version": self.sw_version,
            "charging": self.v_charging,
            "discharging": self.v_discharging,
        }
