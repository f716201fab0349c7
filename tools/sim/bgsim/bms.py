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
        self._rep_key = None
        self._rep = None

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

    def update(self, t_s, dt):
        """Re-evaluate limits, alarms and protections after a physics step."""
        m = self.mod
        cl = self.cell
        vmax, vmin = m.cell_extremes_v()
        temp = self.max_temp_c()
        tmin = m.temp_c if m.temp_c < m.term_c else m.term_c
        i = m.current_a
        al = 0
        pr = 0
        if vmax >= cl["ov_alarm"]:
            al |= ALM_CELL_OV
        if vmax >= cl["ov_protect"]:
            pr |= ALM_CELL_OV
        if vmin <= cl["uv_alarm"]:
            al |= ALM_CELL_UV
        if vmin <= cl["uv_protect"]:
            pr |= ALM_CELL_UV
        if temp >= self.ot_alarm_c:
            al |= ALM_CHG_OT
        if temp >= self.ot_alarm_c + 5:
            al |= ALM_DSG_OT
            pr |= ALM_CHG_OT
        if temp >= self.ot_alarm_c + 10:
            pr |= ALM_DSG_OT
        if tmin <= self.ut_alarm_c:
            al |= ALM_CHG_UT
        if tmin <= self.ut_alarm_c - 20:
            al |= ALM_DSG_UT
        if i > 1.05 * self.chg_rated_a:
            al |= ALM_CHG_OC
        if -i > 1.05 * self.dsg_rated_a:
            al |= ALM_DSG_OC
        over = (i > self.oc_protect * self.chg_rated_a) or (-i > self.oc_protect * self.dsg_rated_a)
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
        self._limits(vmax, temp, tmin)

    def _limits(self, vmax, temp, tmin):
        m = self.mod
        soc = m.soc
        c = 1.0
        if soc > self.taper_soc:
            c = (1.0 - soc) / (1.0 - self.taper_soc)
        if vmax >= self.cell["charge_v"] + 0.05:
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
    def report(self, stamp=None):
        """The BMS's numbers in firmware units (a dict of ints; allocates -- host only).
        With `stamp` (e.g. the physics time), the dict is reused while the stamp and the
        BMS state are unchanged (many requests arrive between two physics steps)."""
        key = (stamp, self.addr, self.alarms, self.protections, self.plugged)
        if stamp is not None and self._rep_key == key:
            return self._rep
        r = self._report()
        self._rep_key = key
        self._rep = r
        return r

    def _report(self):
        m = self.mod
        cells = [int(round(v * 1000)) for v in m.cell_v()]
        tc = m.temp_c
        temps = [int(round(x * 10)) for x in (tc + 3.0, tc, tc - 0.5, tc + 0.5, m.term_c)]
        total = int(round(m.capacity_ah * 1000))
        flags = 0
        if self.chg_limit_a > 0:
            flags |= 0x80
        if self.dsg_limit_a > 0:
            flags |= 0x40
        if m.soc < 0.05:
            flags |= 0x20
        cl = self.cell
        return {
            "addr": self.addr,
            "cell_mv": cells,
            "temp_dc": temps,
            "current_ma": 0 if m.bms_open else int(round(m.current_a * 1000)),
            "voltage_mv": int(round(m.terminal_v() * 1000)),
            "remaining_mah": int(round(m.soc * total)),
            "total_mah": total,
            "design_mah": int(round(self.design_ah * 1000)),
            "soc_pm": int(round(m.soc * 1000)),
            "soh_pm": min(1000, int(round(1000 * m.capacity_ah / self.design_ah))),
            "cycles": self.base_cycles + m.cycles,
            "alarms": self.alarms,
            "protections": self.protections,
            "chg_v_mv": int(round(m.cells * cl["charge_v"] * 1000)),
            "dsg_v_mv": int(round(m.cells * cl["discharge_v"] * 1000)),
            "chg_limit_ma": int(round(self.chg_limit_a * 1000)),
            "dsg_limit_ma": int(round(self.dsg_limit_a * 1000)),
            "mgmt_flags": flags,
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
            "charging": m.current_a > 0.5,
            "discharging": m.current_a < -0.5,
        }
