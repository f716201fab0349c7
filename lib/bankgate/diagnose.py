# Diagnoses an installer can act on, from the failure and troubleshooting tables
# of the parallel-bank seed articles (docs/diagnoses.md has the full table).
#
# Diagnoser(cfg, bank, metrics, events).step(now, admitted_mask, expected_mask,
# pending_mask=0) runs after Metrics.update() with the same admitted_mask and
# judges every rule.  A diagnosis instance is (code, slot): per-module rules use
# the module's slot, bank-wide rules the extra index BANK (their `addr` is the
# module most involved, fixed while the diagnosis is active).
#
# Hysteresis, per instance: a rule reports one of
#   RAISE (level at or above its raise threshold), CLEAR (below its clear
#   threshold, which is lower), BAND (in between), or is not judged at all when
#   its input is not measurable (e.g. sharing at low load, module not measured).
# Idle -> active after RAISE held for hold_raise_ms (uninterrupted by BAND/CLEAR,
# and judged at every step of it: a step that cannot judge the rule restarts the
# hold, so two RAISE moments with unmeasurable time between never add up);
# active -> idle after CLEAR held for hold_clear_ms.  BAND resets the pending
# timer; for an ACTIVE diagnosis "not judged" leaves everything as it is (a
# diagnosis about a module that drops out of the measured set stays until the
# module is measured again or its own clear condition holds).  Rules with their own time base (offline age,
# pending time, alarm window, full cycles, swing windows) use shorter holds.
#
# step() allocates nothing (events are preallocated ring records); snapshot()
# allocates (telemetry).  pending_mask: bit s = slot s is pending admission (the
# admission component's per-slot state); the diagnoser keeps its own
# pending-since times from it.
import array

from micropython import const

from bankgate import clock
from bankgate.events import EV_DIAG_CLEARED, EV_DIAG_RAISED
from bankgate.metrics import mdiv
from bankgate.model import MAX_MODULES, zeros

# ---- stable codes (never renumber: telemetry and installers key on them)
DG_CURRENT_HIGH = const(1)
DG_SOC_FALLING_FAST = const(2)
DG_RUNNING_WARM = const(3)
DG_RESISTANCE_RISING = const(4)
DG_BMS_ALARMS_REPEATED = const(5)
DG_CIRCULATING_CURRENT = const(6)
DG_MODULE_OFFLINE = const(7)
DG_SOC_DRIFT_CYCLE = const(8)
DG_REDUCED_CAPACITY = const(9)
DG_BRANCH_FUSE_TRIP = const(10)
DG_STARTUP_VOLTAGE_DIFF = const(11)
DG_PENDING_LONG = const(12)
DG_CAPACITY_MISMATCH = const(13)
DG_VOLTAGE_IMBALANCE = const(14)
DG_VOLTAGE_FLUCTUATION = const(15)
DG_LOOP_R_BELOW_CONFIG = const(16)
N_CODES = const(16)

# stop and call the installer?
_STOP_NO = const(0)          # monitor; fix at the next service
_STOP_YES = const(1)
_STOP_BEFORE_LOAD = const(2)  # yes, before any heavy load
_STOP_NOW = const(3)         # yes, immediately
STOP_TEXT = ("no", "yes", "yes, before heavy load", "yes, immediately")

BANK = const(16)            # slot of bank-wide rules
_W = const(17)              # slots per code (16 modules + BANK)
# Instance layout (heap): a per-module code has 16 instances (one per slot), a bank-wide
# code (circulating_current, soc_drift_cycle, reduced_capacity, startup_voltage_diff)
# only its BANK instance.  _LO[code - 1] is the first instance of `code`, _LO[code] the
# end of its span; instance k of (code, slot) = _K0[code - 1] + slot (bank codes:
# _K0 = _LO - BANK, so slot BANK lands on their one instance).
_LO = b"\x00\x10\x20\x30\x40\x50\x51\x61\x62\x63\x73\x74\x84\x94\xa4\xb4\xc4"
_K0 = b"\x00\x10\x20\x30\x40\x40\x51\x51\x52\x63\x63\x74\x84\x94\xa4\xb4"
N_INST = const(196)         # 12 per-module codes x 16 + 4 bank codes x 1
_AGE_W = const(12)          # _t_pend stamps aged per pass (17 passes cover N_INST)
N_ENTRIES = const(64)       # active diagnoses held at once (their addr, evidence, t_raised)
_FREE = const(0xFF)         # an entry no instance holds (instances are 0..N_INST - 1 < 255)
_PENDING = const(1)         # _pend bits (one bytearray, not two: 196 B of the ESP32's heap)
_JUDGED = const(2)
_RAISE = const(1)
_BAND = const(0)
_CLEAR = const(-1)
_NOT_JUDGED = const(-2)
_SOC_EQ_PM = const(50)      # current_high: SOC deviation that explains an excess (it equalises)
_ALARM_RING = const(8)      # remembered alarm onsets per module (config alarm_count <= 8)
# Diagnoser._acc: what the module pass gathers for the bank rules
_A_NADM = const(0)          # expected modules admitted
_A_NEXP = const(1)          # expected modules
_A_NMISS = const(2)         # expected, answering, left out without an excuse
_A_MISSING = const(3)       # ... the first of them (address, -1 none)
_A_BIG = const(4)           # address of the measured module with the largest |I|
_A_FAR = const(5)           # address of the measured module farthest in SOC
_A_VLO = const(6)           # expected modules' voltage range, sum and count
_A_VHI = const(7)
_A_VSUM = const(8)
_A_VN = const(9)
_A_N = const(10)

# code -> (name, evidence a, evidence b, first check (seed tables), stop); index code - 1
DIAG_INFO = (
    ("current_high", "share_pm", "capacity_share_pm",
     "Unequal cable resistance: check cable length, gauge and busbar landing", _STOP_BEFORE_LOAD),
    ("soc_falling_fast", "soc_fall_pm", "soc_dev_pm",
     "Lower resistance path or older module: check cable length, gauge and module health", _STOP_NO),
    ("running_warm", "temp_dev_dc", "temp_dc",
     "Loose lug or high current load: check torque, lug surface and branch current", _STOP_YES),
    ("resistance_rising", "r_rise_pm", "spot_dc",
     "Hot terminal suspected (loose lug / high resistance joint): check torque, lug surface, discoloration",
     _STOP_NOW),
    ("bms_alarms_repeated", "alarm_count", "alarm_bits",
     "Unequal sharing or SOC mismatch: check current readings and SOC alignment", _STOP_YES),
    ("circulating_current", "circ_ma", "v_spread_mv",
     "Voltage or SOC mismatch: check pre-connect voltage and SOC", _STOP_YES),
    ("module_offline", "silent_s", "timeouts",
     "BMS address, breaker or contactor: check address setting, branch breaker, communication cable",
     _STOP_YES),
    ("soc_drift_cycle", "drift_pm", "cycles_in_row",
     "Initial SOC mismatch or weak module: check SOC alignment and module health data", _STOP_YES),
    ("reduced_capacity", "admitted", "expected",
     "Module not accepted: check CAN/RS485 order, firmware and battery protocol", _STOP_YES),
    ("branch_fuse_trip", "module_ma", "others_ma",
     "Overcurrent or wrong fuse rating: check branch current and fuse specification", _STOP_YES),
    ("startup_voltage_diff", "spread_mv", "limit_mv",
     "Voltage difference at startup: check pre-connect voltage and BMS status", _STOP_YES),
    ("pending_long", "pending_s", "dv_mv",
     "Module kept pending by its voltage difference: bring SOC close together before connecting",
     _STOP_NO),
    ("capacity_mismatch", "cap_dev_pm", "total_mah",
     "Capacity outside 5 % of the mean: check module health and capacity (test every 6 months)",
     _STOP_NO),
    ("voltage_imbalance", "v_dev_mv", "limit_mv",
     "Voltage imbalance at rest (over 0.5 V; healthy within 0.2 V): check SOC alignment and connections",
     _STOP_YES),
    ("voltage_fluctuation", "swing_mv", "window_s",
     "Voltage fluctuation of 1 V or more: failing connection, check torque and terminals", _STOP_NOW),
    ("loop_r_below_config", "r_mohm", "config_mohm",
     "Measured loop resistance below gating.loop_resistance_mohm: joins now use the measured value; "
     "set the setting to it (a shorter or heavier branch than assumed, or a bypassed fuse)", _STOP_NO),
)

# raise/clear key pairs that must be ordered (check_config)
_PAIRS = (
    ("share_raise_pm", "share_clear_pm"), ("soc_fall_raise_pm", "soc_fall_clear_pm"),
    ("temp_raise_dc", "temp_clear_dc"), ("r_rise_raise_pm", "r_rise_clear_pm"),
    ("circ_raise_ma", "circ_clear_ma"), ("drift_raise_pm", "drift_clear_pm"),
    ("cap_raise_pm", "cap_clear_pm"), ("vimb_raise_mv", "vimb_clear_mv"),
    ("fluct_raise_mv", "fluct_clear_mv"), ("fuse_clear_ma", "fuse_zero_ma"),
    ("spot_raise_dc", "spot_clear_dc"),
    ("cycle_high_pm", "cycle_low_pm"),
)


def check_config(cfg):
    """Cross-field checks of the "diagnosis" section (raises ConfigError)."""
    d = cfg["diagnosis"]
    for hi, lo in _PAIRS:
        if d[hi] <= d[lo]:
            # imported here, on the error path only, from the small bankgate.jsonfile:
            # firmware.load() frees the config validator (~25 KB of heap on the device)
            from bankgate.jsonfile import ConfigError
            raise ConfigError("diagnosis." + lo, "below diagnosis.%s (%d)" % (hi, d[hi]), d[lo])


def name_of(code):
    return DIAG_INFO[code - 1][0]


def index_of(code, slot):
    """Instance index of (code, slot); a bank-wide code has only slot BANK."""
    return _K0[code - 1] + slot


def code_of(k):
    """Code of instance k (allocation-free)."""
    c = 1
    while _LO[c] <= k:
        c += 1
    return c


def slot_of(k):
    """Slot of instance k: the module slot, or BANK for a bank-wide code."""
    return k - _K0[code_of(k) - 1]


class _Instances:
    """The instance machine (module comment): one state per (code, slot); the arrays
    are allocated by Diagnoser.__init__.  What only an ACTIVE instance has (addr, the
    evidence ev_a/ev_b, t_raised) is kept in one of N_ENTRIES entries, entry(k), not per
    instance: 196 x 14 B would be 2.7 KB of the ESP32's heap for the few diagnoses active
    at a time.  With every entry taken a diagnosis stays pending (raised once an entry is
    free) and `entries_full` counts those judgements."""

    def _judge(self, now, code, slot, cond, addr, a, b, hold_r, hold_c):
        k = _K0[code - 1] + slot
        pd = self._pend
        pd[k] |= _JUDGED
        if self.active[k]:
            e = self._ent[k]
            self.ev_a[e] = a
            self.ev_b[e] = b
            if cond == _CLEAR:
                if not pd[k] & _PENDING:
                    pd[k] = _JUDGED | _PENDING
                    self._t_pend[k] = now
                if clock.diff(now, self._t_pend[k]) >= hold_c:
                    self.active[k] = 0
                    pd[k] = _JUDGED
                    self.n_active -= 1
                    self._ent[N_INST + e] = _FREE
                    self.events.emit(now, EV_DIAG_CLEARED, self.addr[e], code, a)
            else:
                pd[k] = _JUDGED
        elif cond == _RAISE:
            if not pd[k] & _PENDING:
                pd[k] = _JUDGED | _PENDING
                self._t_pend[k] = now
            if clock.diff(now, self._t_pend[k]) >= hold_r:
                e = self._free_entry()
                if e < 0:
                    self.entries_full += 1       # stays pending: raised when an entry frees
                    return
                self._ent[N_INST + e] = k
                self._ent[k] = e
                self.active[k] = 1
                self.acked[k] = 0
                pd[k] = _JUDGED
                self.t_raised[e] = now
                self.addr[e] = addr
                self.ev_a[e] = a
                self.ev_b[e] = b
                self.n_active += 1
                self.raised_total += 1
                self.events.emit(now, EV_DIAG_RAISED, addr, code, a)
        else:
            pd[k] = _JUDGED

    def _free_entry(self):
        ent = self._ent
        for e in range(N_ENTRIES):
            if ent[N_INST + e] == _FREE:
                return e
        return -1

    def entry(self, k):
        """Entry of active instance k (its addr, ev_a, ev_b, t_raised are at that index),
        -1 when k is not active."""
        return self._ent[k] if self.active[k] else -1

    def is_active(self, code, addr):
        """Is diagnosis `code` active for module address `addr` (-1: any / bank)?"""
        for k in range(_LO[code - 1], _LO[code]):
            if self.active[k] and (addr == -1 or self.addr[self._ent[k]] == addr):
                return True
        return False

    def next_active(self, k=-1):
        """Index of the next active instance after k, or -1 (allocation-free walk):
        code_of(k), slot_of(k); active, acked are arrays at k, addr, ev_a, ev_b, t_raised
        at entry(k)."""
        k += 1
        n = N_INST
        while k < n:
            if self.active[k]:
                return k
            k += 1
        return -1

    def acknowledge(self, code, addr):
        """Mark active diagnosis (code, addr) acknowledged (it stays active until its
        condition clears).  `code` is the int code or its stable snake name (what
        telemetry shows and the MQTT `ack` command sends).  Returns True if one was found."""
        if type(code) is str:
            for i in range(N_CODES):
                if DIAG_INFO[i][0] == code:
                    code = i + 1
                    break
            else:
                return False
        if type(code) is not int or code < 1 or code > N_CODES:
            return False
        found = False
        for k in range(_LO[code - 1], _LO[code]):
            if self.active[k] and self.addr[self._ent[k]] == addr:
                self.acked[k] = 1
                found = True
        return found

    def snapshot(self):
        """Active diagnoses as a list of dicts (allocates: telemetry only)."""
        out = []
        k = self.next_active()
        while k >= 0:
            code = code_of(k)
            name, an, bn, advice, stop = DIAG_INFO[code - 1]
            e = self._ent[k]
            out.append({
                "code": code, "name": name, "addr": self.addr[e],
                "evidence": {an: self.ev_a[e], bn: self.ev_b[e]},
                "t_raised": self.t_raised[e], "acked": bool(self.acked[k]),
                "first_check": advice, "stop": STOP_TEXT[stop], "stop_code": stop,
            })
            k = self.next_active(k)
        return out


class _ModuleRules(_Instances):
    """The rules judged per module slot."""

    def _module_rules(self, now, s, m, addr, n, load, sharing, dsg, fl_end, hr, hc):
        """The rules of one measured module (slot s), in a fixed order."""
        self._share_rules(now, s, addr, sharing, dsg, hr, hc)
        self._joint_rules(now, s, m, addr, n, hr, hc)
        if n > 1:
            self._fluct_track(s, m.voltage_mv - self._v_med)
        if fl_end and self._fl_mask & (1 << s):
            self._fluct_rule(now, s, addr)
        # branch fuse trip: module voltage present, no BMS protection, ~0 current
        # while the other modules carry load, AND the module's voltage does not follow
        # the bus (see _fuse_rule)
        if n > 1 and m.protections == 0 and m.voltage_mv >= self.module_mv_min:
            self._fuse_rule(now, s, m, addr, n, hr, hc)

    def _share_rules(self, now, s, addr, sharing, dsg, hr, hc):
        """current_high, soc_falling_fast, running_warm."""
        d = self.d
        me = self.metrics
        bit = 1 << s
        # one module carrying much more than its capacity share
        cs = me.cap_share_pm[s]
        if sharing and self._high_ok and cs > 0:
            rel = self._rel[s]
            exc = self._exc[s]
            xm = d["share_excess_ma"]
            sd = me.soc_dev_pm[s] if me.bank_ma < 0 else -me.soc_dev_pm[s]
            if rel >= d["share_raise_pm"] and exc >= xm:
                # a module >= _SOC_EQ_PM above the mean SOC that discharges more (below,
                # charges more) is the bank equalising a SOC difference, not a cable:
                # held (BAND) until the SOCs converge
                cond = _BAND if sd >= _SOC_EQ_PM else _RAISE
            elif rel < d["share_clear_pm"] or exc < xm // 2:
                cond = _CLEAR
            else:
                cond = _BAND
            self._judge(now, DG_CURRENT_HIGH, s, cond, addr, me.share_pm[s], cs, hr, hc)
        # SOC falling faster than the mean during a discharge
        if dsg:
            dev = me.soc_dev_pm[s]
            if not self._soc_ref_mask & bit:
                self._soc_ref[s] = dev
                self._soc_ref_mask |= bit
            fall = self._soc_ref[s] - dev
            cond = _RAISE if fall >= d["soc_fall_raise_pm"] else (
                _CLEAR if fall < d["soc_fall_clear_pm"] else _BAND)
            self._judge(now, DG_SOC_FALLING_FAST, s, cond, addr, fall, dev, hr, hc)
        # the module body (median sensor) warmer than the other modules' bodies;
        # a single hot sensor (terminal) is resistance_rising's finding
        if me.temp_mask & bit and me.n > 1:
            td = me.temp_body_dev_dc[s]
            cond = _RAISE if td >= d["temp_raise_dc"] else (_CLEAR if td < d["temp_clear_dc"] else _BAND)
            self._judge(now, DG_RUNNING_WARM, s, cond, addr, td, me.temp_body_dc[s], hr, hc)

    def _joint_rules(self, now, s, m, addr, n, hr, hc):
        """resistance_rising, loop_r_below_config, capacity_mismatch, voltage_imbalance."""
        d = self.d
        me = self.metrics
        bit = 1 << s
        # hot terminal suspected: the loop resistance above the module's own first
        # confident estimate, or a local hot spot (hottest sensor far above the
        # module's median sensor).  Either raises; both must be clear to clear.
        cond = _NOT_JUDGED
        rise = 0
        r = me.r_mohm[s]
        if me.r_conf[s] >= d["r_conf_min"] and r > 0:
            base = self._r_base[s]
            if base <= 0:
                self._r_base[s] = r
                base = r
            rise = mdiv(r - base, 3, base)
            cond = _RAISE if rise >= d["r_rise_raise_pm"] else (
                _CLEAR if rise < d["r_rise_clear_pm"] else _BAND)
        spot = 0
        if me.temp_mask & bit and m.n_temps >= 3:
            spot = me.temp_spot_dc[s]
            c2 = _RAISE if spot >= d["spot_raise_dc"] else (_CLEAR if spot < d["spot_clear_dc"] else _BAND)
            if cond == _NOT_JUDGED or c2 > cond:
                cond = c2
        if cond != _NOT_JUDGED:
            self._judge(now, DG_RESISTANCE_RISING, s, cond, addr, rise, spot, hr, hc)
        # the measured loop contradicts gating.loop_resistance_mohm (below 2/3 of it):
        # admission uses the measured value for the join limit (use_measured_loop)
        if me.r_conf[s] >= d["r_conf_min"] and r > 0:
            cond = _RAISE if 3 * r < 2 * self.r_cfg else (_CLEAR if 4 * r >= 3 * self.r_cfg else _BAND)
            self._judge(now, DG_LOOP_R_BELOW_CONFIG, s, cond, addr, r, self.r_cfg, hr, hc)
        # capacity outside the seed's 5 % of the mean
        if me.total_mah > 0 and n > 1:
            cd = me.cap_dev_pm[s]
            if cd < 0:
                cd = -cd
            cond = _RAISE if cd >= d["cap_raise_pm"] else (_CLEAR if cd < d["cap_clear_pm"] else _BAND)
            self._judge(now, DG_CAPACITY_MISMATCH, s, cond, addr, me.cap_dev_pm[s], m.total_mah, hr, hc)
        vd = me.v_dev_mv[s]
        # voltage imbalance at rest (seed: > 0.5 V imbalance, +-0.2 V healthy)
        if me.at_rest:
            av = vd if vd >= 0 else -vd
            cond = _RAISE if av >= d["vimb_raise_mv"] else (_CLEAR if av < d["vimb_clear_mv"] else _BAND)
            self._judge(now, DG_VOLTAGE_IMBALANCE, s, cond, addr, vd, d["vimb_raise_mv"], hr, hc)

    def _fluct_track(self, s, vd):
        """voltage_fluctuation's window: the swing of vd = V - median V (seed: >= 1 V),
        and its reversals of at least half the raise level (it must go back and forth:
        a single step -- a fuse blowing, a load step -- is not a fluctuation)."""
        bit = 1 << s
        if self._fl_mask & bit:
            if vd < self._fl_min[s]:
                self._fl_min[s] = vd
            if vd > self._fl_max[s]:
                self._fl_max[s] = vd
            stp = self.d["fluct_raise_mv"] // 2
            piv = self._fl_piv[s]
            dr = self._fl_dir[s]
            if dr != 1 and vd - piv >= stp:
                if dr == 2 and self._fl_rev[s] < 255:
                    self._fl_rev[s] += 1
                self._fl_dir[s] = 1
                self._fl_piv[s] = vd
            elif dr != 2 and piv - vd >= stp:
                if dr == 1 and self._fl_rev[s] < 255:
                    self._fl_rev[s] += 1
                self._fl_dir[s] = 2
                self._fl_piv[s] = vd
            elif (dr == 1 and vd > piv) or (dr == 2 and vd < piv):
                self._fl_piv[s] = vd
        else:
            self._fl_min[s] = vd
            self._fl_max[s] = vd
            self._fl_piv[s] = vd
            self._fl_dir[s] = 0
            self._fl_rev[s] = 0
            self._fl_mask |= bit

    def _fluct_rule(self, now, s, addr):
        """voltage_fluctuation, judged at the end of each window."""
        d = self.d
        sw = self._fl_max[s] - self._fl_min[s]
        rv = self._fl_rev[s]
        if sw >= d["fluct_raise_mv"] and rv >= 2:
            cond = _RAISE
        elif sw < d["fluct_clear_mv"] or rv == 0:
            cond = _CLEAR
        else:
            cond = _BAND
        self._judge(now, DG_VOLTAGE_FLUCTUATION, s, cond, addr, sw, d["fluct_window_ms"] // 1000, 0, 0)

    def _fuse_rule(self, now, s, m, addr, n, hr, hc):
        """branch_fuse_trip.  ~0 A alone is no evidence: a connected module whose open
        circuit voltage equals the bus (one at a higher SOC while the others charge)
        carries ~0 A too, and its terminal voltage then equals the bus voltage.  An
        open branch shows its own open-circuit voltage instead, which the others'
        current pushes away from the bus by about I_others x R_loop.  So RAISE needs
        |V_module - V_bus| >= I_others x gating.loop_resistance_mohm / 4 (a quarter of
        the departure: room for OCV differences between modules; V_bus: the DC-link
        reading, else the mean of the other measured modules).  An open module whose
        OCV happens to sit at the bus cannot be told from a connected one at 0 A: BAND.  A module that
        carries >= fuse_clear_ma has an intact branch whatever the others carry: that
        CLEARs it (also when the others are idle -- before, the rule was not judged
        then and a raised diagnosis stayed for good)."""
        d = self.d
        me = self.metrics
        i = m.current_ma
        if i < 0:
            i = -i
        others = (me.abs_sum_ma - i) // (n - 1)
        if i >= d["fuse_clear_ma"]:
            cond = _CLEAR
        elif others < d["fuse_load_ma"]:
            return                                   # not judged
        elif i > d["fuse_zero_ma"]:
            cond = _BAND
        else:
            ref = self.bank.link_mv
            if ref < 0:
                ref = (me.v_mean_mv * n - m.voltage_mv) // (n - 1)   # <= 16 x 65535
            dv = m.voltage_mv - ref
            if dv < 0:
                dv = -dv
            # others (< 2**26 mA) x R (<= 10000 mOhm) / 1000 without a product above 2**30
            r = self.r_loop
            need = ((others // 1000) * r + (others % 1000) * r // 1000) // 4
            cond = _RAISE if dv >= need else _BAND
        self._judge(now, DG_BRANCH_FUSE_TRIP, s, cond, addr, m.current_ma, others, hr, hc)

    def _alarm_rule(self, now, s, m, addr, hc):
        if not m.alarm_valid:
            return
        d = self.d
        bits = m.alarms
        new = bits & ~self._prev_alarms[s]
        self._prev_alarms[s] = bits
        base = s * _ALARM_RING
        if new:
            j = self._alarm_i[s]
            self._alarm_t[base + j] = now
            self._alarm_i[s] = (j + 1) % _ALARM_RING
            if self._alarm_n[s] < _ALARM_RING:
                self._alarm_n[s] += 1
        cnt = 0
        win = d["alarm_window_ms"]
        j = 0
        na = self._alarm_n[s]
        while j < na:
            if clock.diff(now, self._alarm_t[base + j]) < win:
                cnt += 1
            j += 1
        if cnt < na and cnt == 0:
            self._alarm_n[s] = 0            # all onsets expired: forget them
            self._alarm_i[s] = 0
        cond = _RAISE if cnt >= d["alarm_count"] else (_CLEAR if cnt == 0 else _BAND)
        self._judge(now, DG_BMS_ALARMS_REPEATED, s, cond, addr, cnt, bits, 0, hc)

    def _offline_rule(self, now, s, m, addr, expected, hc):
        """Returns True when the module answers (seen, reply younger than offline_ms)."""
        if m.seen:
            age = clock.diff(now, m.t_last_reply)
        else:
            age = clock.diff(now, self._t_start)
        online = m.seen and age < self.d["offline_ms"]
        k = _K0[DG_MODULE_OFFLINE - 1] + s
        if not expected:
            cond = _CLEAR
            hc = 0
        elif age >= self.d["offline_ms"]:
            cond = _RAISE
        elif age < self.max_age_ms and (not self.active[k] or m.t_last_reply != self._offl_t[s]):
            # only a reply newer than the one we raised on can clear (a tick
            # difference wraps after 6 days; this does not)
            cond = _CLEAR
        else:
            cond = _BAND
        was = self.active[k]
        self._judge(now, DG_MODULE_OFFLINE, s, cond, addr, age // 1000, m.st_timeouts, 0, hc)
        if self.active[k] and not was:
            self._offl_t[s] = m.t_last_reply
        return online

    def _pending_rule(self, now, s, m, addr, pending, hc):
        bit = 1 << s
        if not pending:
            self._pend_mask &= ~bit
            self._judge(now, DG_PENDING_LONG, s, _CLEAR, addr, 0, 0, 0, 0)
            return
        if not self._pend_mask & bit:
            self._pend_mask |= bit
            self._pend_since[s] = now
        t = clock.diff(now, self._pend_since[s])
        dv = 0
        if m.analog_valid:
            ref = self.bank.link_mv
            if ref < 0:
                ref = self.metrics.v_mean_mv
            if ref > 0:
                dv = m.voltage_mv - ref
                if dv < 0:
                    dv = -dv
        cond = _RAISE if t >= self.pending_ms else _BAND
        self._judge(now, DG_PENDING_LONG, s, cond, addr, t // 1000, dv, 0, hc)


class Diagnoser(_ModuleRules):
    """The diagnoser: configuration, per-step order, bank-wide rules."""

    def __init__(self, cfg, bank, metrics, events):
        check_config(cfg)
        self.bank = bank
        self.metrics = metrics
        self.events = events
        d = cfg["diagnosis"]
        g = cfg["gating"]
        self.d = d
        self.hold_r = d["hold_raise_ms"]
        self.hold_c = d["hold_clear_ms"]
        self.max_dv_mv = g["max_dv_mv"]
        self.dv_clear_mv = g["max_dv_mv"] - g["hysteresis_mv"]
        self.pending_ms = g["pending_event_ms"]
        self.max_age_ms = g["max_age_ms"]
        self.module_mv_min = g["module_mv_min"]
        self.r_loop = g["loop_resistance_mohm"]
        self.r_cfg = g["loop_resistance_mohm"]
        n = N_INST
        # instance state, index index_of(code, slot) (module comment, _LO/_K0)
        self.active = bytearray(n)
        self.acked = bytearray(n)
        self._pend = bytearray(n)        # _PENDING: timer running (towards raise when idle, clear
                                         # when active); _JUDGED: judged in the current step
        self._t_pend = zeros("i", n)
        # [k]: entry of active instance k; [N_INST + e]: instance of entry e, _FREE (_Instances;
        # one attribute: 59 fit the Diagnoser's 59-slot attribute table, a 60th takes 73)
        e = N_ENTRIES
        self._ent = bytearray(n + e)
        for i in range(e):
            self._ent[n + i] = _FREE
        self.t_raised = zeros("i", e)
        self.addr = zeros("h", e)
        self.ev_a = zeros("i", e)
        self.ev_b = zeros("i", e)
        self.entries_full = 0
        self.n_active = 0
        self.raised_total = 0
        # per-slot rule memory
        m = MAX_MODULES
        self._soc_ref = array.array("i", bytes(4 * m))   # soc_dev_pm when the discharge began
        self._soc_ref_mask = 0
        self._dsg = False
        self._r_base = array.array("i", bytes(4 * m))    # first confident resistance estimate
        self._prev_alarms = array.array("i", bytes(4 * m))
        self._alarm_t = zeros("i", m * _ALARM_RING)
        self._alarm_n = bytearray(m)                     # onsets recorded (saturates at ring size)
        self._alarm_i = bytearray(m)                     # next ring position
        self._offl_t = array.array("i", bytes(4 * m))    # t_last_reply when module_offline was raised
        self._pend_mask = 0
        self._pend_since = array.array("i", bytes(4 * m))
        self._fl_min = array.array("i", bytes(4 * m))
        self._fl_max = array.array("i", bytes(4 * m))
        self._fl_piv = array.array("i", bytes(4 * m))    # last pivot of V - mean
        self._fl_dir = bytearray(m)                      # 0 none, 1 rising, 2 falling
        self._fl_rev = bytearray(m)                      # direction reversals this window
        self._fl_mask = 0
        self._rel = array.array("i", bytes(4 * m))       # current_high: relative excess, permille
        self._exc = array.array("i", bytes(4 * m))       # ... absolute excess, mA
        self._high_ok = False                            # ... the high modules are a minority
        self._vsort = array.array("i", bytes(4 * m))     # scratch: sorted module voltages
        self._v_med = 0                                  # median voltage of the measured modules
        self._t_fl = 0
        self._cycles_seen = 0
        self._drift_run = 0
        self._t_start = 0
        self._t_aged = 0                                 # last aging pass (_age)
        self._age_k = 0
        self._started = False
        self._ever_closed = False
        self._start_mask = 0     # expected slots measured before the bank first closed (until admitted)
        self._vout = 0           # ... of those, kept out by their voltage (last light-load judgement)
        self._acc = array.array("i", bytes(4 * _A_N))   # module pass -> bank rules

    def _age(self, now):
        """Aging pass of the time model (bankgate.clock.hold): every stamp the rules
        compare is held within clock.AGE_MAX of now, so no age wraps (an alarm onset
        weeks old never counts as recent again, a module never seen stays offline)."""
        self._t_aged = now
        self._t_start = clock.hold(now, self._t_start)
        self._t_fl = clock.hold(now, self._t_fl)
        k = self._age_k                   # one slice of 17 per pass (round robin)
        self._age_k = k + 1 if k < _W - 1 else 0
        clock.hold_range(now, self._pend_since, k, k + 1)
        clock.hold_range(now, self._alarm_t, k * _ALARM_RING, (k + 1) * _ALARM_RING)
        clock.hold_range(now, self._t_pend, k * _AGE_W, (k + 1) * _AGE_W)

    def step(self, now, admitted_mask, expected_mask, pending_mask=0):
        if clock.pass_due(now, self._t_aged):
            self._age(now)
        self._rules(now, admitted_mask, expected_mask, pending_mask)
        # an idle instance whose raise hold was running but that could not be judged
        # this step starts its hold again (module comment); the marks are cleared for
        # the next step in the same pass
        p = self._pend
        act = self.active
        for k in range(len(p)):
            v = p[k]
            if v & _JUDGED:
                p[k] = v & _PENDING
            elif v and not act[k]:
                p[k] = 0

    def _rules(self, now, admitted_mask, expected_mask, pending_mask):
        if not self._started:
            self._started = True
            self._t_start = now
            self._t_fl = now
        d = self.d
        me = self.metrics
        ns = len(self.bank.modules)
        if ns > MAX_MODULES:
            ns = MAX_MODULES
        bank_ma = me.bank_ma
        load = bank_ma if bank_ma >= 0 else -bank_ma
        sharing = self._sharing(ns, load)
        if me.n > 1:
            self._median(ns)
        dsg = me.n > 0 and bank_ma <= -d["load_min_ma"]
        if dsg and not self._dsg:
            self._soc_ref_mask = 0          # a new discharge: take fresh references
        self._dsg = dsg
        fl_end = clock.diff(now, self._t_fl) >= d["fluct_window_ms"]
        closed = admitted_mask & expected_mask
        quiet = load < d["load_min_ma"]
        vout = self._start_keepout(ns, admitted_mask, expected_mask, closed and quiet)
        self._module_pass(now, ns, admitted_mask, expected_mask, pending_mask, vout,
                          load, sharing, dsg, fl_end)
        if fl_end:
            self._t_fl = now
            self._fl_mask = 0
        self._bank_rules(now, ns, closed)
        # startup: the modules present before the bank first closed (start set)
        # differ too much.  A module that arrives later is not a startup matter
        # (pending / pending_long).
        if not self._ever_closed:
            if closed:
                self._ever_closed = True
            else:
                for s in range(ns):
                    if expected_mask & (1 << s) and self.bank.modules[s].analog_valid:
                        self._start_mask |= 1 << s
        if closed and quiet:
            self._startup_left(now, ns, admitted_mask, expected_mask)
        elif not closed and self._acc[_A_VN] >= 2:
            self._startup_spread(now, ns, expected_mask)

    def _sharing(self, ns, load):
        """Is current sharing judged this step?  Then also the current_high pre-pass:
        relative and absolute excess over the capacity share per module; "one module
        much higher" only while the high ones are at most half of the measured modules
        (when most are "high", one module carries much LESS -- a module at another SOC
        just joined: not a cable finding)."""
        d = self.d
        me = self.metrics
        mods = self.bank.modules
        inc = me.mask
        if not (me.shares_valid and load >= d["load_min_ma"]):
            return False
        # a branch carrying nothing (fuse, open contactor) makes the others
        # carry more: that is branch_fuse_trip's finding, not unequal cables
        fz = d["fuse_zero_ma"]
        for s in range(ns):
            if inc & (1 << s):
                i = mods[s].current_ma
                if i <= fz and i >= -fz:
                    return False
        n_high = 0
        xm = d["share_excess_ma"]
        neg = me.bank_ma < 0
        for s in range(ns):
            if inc & (1 << s):
                cs = me.cap_share_pm[s]
                if cs > 0:
                    rel = mdiv(me.share_cap_dev_pm[s], 3, cs)
                    # |I_i| - cs * load / 1000, mA (load <= 1.6e7 split: products <= 1.6e7)
                    a = -mods[s].current_ma if neg else mods[s].current_ma
                    exc = a - (cs * (load // 1000) + cs * (load % 1000) // 1000)
                else:
                    rel = 0
                    exc = 0
                self._rel[s] = rel
                self._exc[s] = exc
                if rel >= d["share_raise_pm"] and exc >= xm:
                    n_high += 1
        self._high_ok = 2 * n_high <= me.n
        return True

    def _median(self, ns):
        """Median module voltage (voltage_fluctuation's reference: one module going
        back and forth stands out fully, and the others do not swing with the mean it
        drags along -- nor with unsynchronised samples)."""
        mods = self.bank.modules
        inc = self.metrics.mask
        vs = self._vsort
        k = 0
        for s in range(ns):
            if inc & (1 << s):
                x = mods[s].voltage_mv
                j = k
                while j > 0 and vs[j - 1] > x:
                    vs[j] = vs[j - 1]
                    j -= 1
                vs[j] = x
                k += 1
        h = k >> 1
        self._v_med = vs[h] if k & 1 else (vs[h - 1] + vs[h]) >> 1

    def _start_keepout(self, ns, admitted_mask, expected_mask, judge):
        """The start modules kept out by their voltage (startup_voltage_diff's finding,
        so not reduced_capacity's): |V - bank mean| at least the raise level.  Judged
        only at light load with the bank closed (`judge`): under load the bank's
        voltages sit I*R below the OCV of a module that is not connected, which is no
        SOC difference.  A start module leaves the start set once admitted (a module
        dropped later -- alarm, trip -- is not a startup matter)."""
        self._start_mask &= ~admitted_mask
        me = self.metrics
        if judge and me.n > 0:
            mods = self.bank.modules
            left = self._start_mask & expected_mask & ~admitted_mask
            ref = me.v_mean_mv
            vout = 0
            for s in range(ns):
                if left & (1 << s) and mods[s].analog_valid:
                    dv = mods[s].voltage_mv - ref
                    if dv > self.max_dv_mv or dv < -self.max_dv_mv:
                        vout |= 1 << s
            self._vout = vout
        return self._vout & self._start_mask

    def _module_pass(self, now, ns, admitted_mask, expected_mask, pending_mask, vout, load, sharing,
                     dsg, fl_end):
        """Every per-module rule, slot by slot; gathers in self._acc what the bank
        rules need (the module with the largest |I| and the one farthest in SOC, the
        admitted/expected counts, the first answering module left out without an
        excuse -- pending or kept out by its start voltage --, the expected modules'
        voltage range)."""
        me = self.metrics
        mods = self.bank.modules
        inc = me.mask
        n = me.n
        hr = self.hold_r
        hc = self.hold_c
        acc = self._acc
        for j in range(_A_N):
            acc[j] = 0
        acc[_A_MISSING] = acc[_A_BIG] = acc[_A_FAR] = -1
        big_i = -1
        far_soc = -1
        for s in range(ns):
            m = mods[s]
            bit = 1 << s
            addr = m.addr
            if inc & bit:
                self._module_rules(now, s, m, addr, n, load, sharing, dsg, fl_end, hr, hc)
                i = m.current_ma
                if i < 0:
                    i = -i
                if i > big_i:
                    big_i = i
                    acc[_A_BIG] = addr
                sd = me.soc_dev_pm[s]
                if sd < 0:
                    sd = -sd
                if sd > far_soc:
                    far_soc = sd
                    acc[_A_FAR] = addr
            self._alarm_rule(now, s, m, addr, hc)
            online = self._offline_rule(now, s, m, addr, expected_mask & bit, hc)
            self._pending_rule(now, s, m, addr, pending_mask & bit, hc)
            if expected_mask & bit:
                acc[_A_NEXP] += 1
                if admitted_mask & bit:
                    acc[_A_NADM] += 1
                elif online and not (pending_mask | vout) & bit:
                    acc[_A_NMISS] += 1
                    if acc[_A_MISSING] < 0:
                        acc[_A_MISSING] = addr
                if m.analog_valid:
                    v = m.voltage_mv
                    if acc[_A_VN] == 0 or v < acc[_A_VLO]:
                        acc[_A_VLO] = v
                    if acc[_A_VN] == 0 or v > acc[_A_VHI]:
                        acc[_A_VHI] = v
                    acc[_A_VSUM] += v
                    acc[_A_VN] += 1

    def _bank_rules(self, now, ns, closed):
        """circulating_current, soc_drift_cycle and reduced_capacity."""
        d = self.d
        me = self.metrics
        acc = self._acc
        hc = self.hold_c
        # circulating current at rest (bank-wide, addr = module with the largest |I|)
        if me.at_rest:
            c = me.circ_ma
            cond = _RAISE if c >= d["circ_raise_ma"] else (_CLEAR if c < d["circ_clear_ma"] else _BAND)
            self._judge(now, DG_CIRCULATING_CURRENT, BANK, cond, acc[_A_BIG], c, me.v_spread_mv,
                        self.hold_r, hc)
        # SOC drift: judged once per completed full cycle.  drift = the larger of
        # the cycle's SOC-deviation range of one module (cycle_range_pm: its SOC
        # wandered from the bank's during the cycle) and the growth of the SOC
        # spread between two cycle tops (soc_drift_pm)
        if me.cycles != self._cycles_seen:
            self._cycles_seen = me.cycles
            dr = me.cycle_range_pm
            if me.drift_valid and me.soc_drift_pm > dr:
                dr = me.soc_drift_pm
            rs = me.cycle_range_slot
            far_addr = self.bank.modules[rs].addr if 0 <= rs < ns else acc[_A_FAR]
            if dr >= 0:
                if dr >= d["drift_raise_pm"]:
                    self._drift_run += 1
                elif dr < d["drift_clear_pm"]:
                    self._drift_run = 0
                if self._drift_run >= d["drift_cycles"]:
                    cond = _RAISE
                elif dr < d["drift_clear_pm"]:
                    cond = _CLEAR
                else:
                    cond = _BAND
                self._judge(now, DG_SOC_DRIFT_CYCLE, BANK, cond, far_addr, dr, self._drift_run, 0, 0)
        # reduced capacity: bank closed, an expected module answering but left out
        # (neither offline, pending nor a start module kept out by its voltage:
        # those have their own diagnoses)
        cond = _RAISE if closed and acc[_A_NMISS] > 0 else _CLEAR
        self._judge(now, DG_REDUCED_CAPACITY, BANK, cond, acc[_A_MISSING], acc[_A_NADM], acc[_A_NEXP],
                    d["reduced_hold_ms"], hc)

    def _startup_left(self, now, ns, admitted_mask, expected_mask):
        """startup_voltage_diff with the bank closed: a start module whose voltage is
        still too far from the bank's (mean of the admitted) was left out."""
        me = self.metrics
        mods = self.bank.modules
        far = -1
        far_dv = -1
        ref = me.v_mean_mv
        left = self._start_mask & expected_mask & ~admitted_mask
        if me.n > 0 and left:
            for s in range(ns):
                m = mods[s]
                if left & (1 << s) and m.analog_valid and m.seen:
                    dv = m.voltage_mv - ref
                    if dv < 0:
                        dv = -dv
                    if dv > far_dv:
                        far_dv = dv
                        far = m.addr
        if far_dv > self.max_dv_mv:
            cond = _RAISE
        elif far_dv < self.dv_clear_mv:
            cond = _CLEAR
        else:
            cond = _BAND
        if far_dv < 0:
            far_dv = 0
        self._judge(now, DG_STARTUP_VOLTAGE_DIFF, BANK, cond, far, far_dv, self.max_dv_mv,
                    self.hold_r, self.hold_c)

    def _startup_spread(self, now, ns, expected_mask):
        """startup_voltage_diff before anything is connected: the start modules'
        voltage spread is above the gate (addr: the module farthest from their mean)."""
        mods = self.bank.modules
        acc = self._acc
        spread = acc[_A_VHI] - acc[_A_VLO]
        mean = acc[_A_VSUM] // acc[_A_VN]
        far = -1
        far_dv = -1
        for s in range(ns):
            m = mods[s]
            if expected_mask & (1 << s) and m.analog_valid:
                dv = m.voltage_mv - mean
                if dv < 0:
                    dv = -dv
                if dv > far_dv:
                    far_dv = dv
                    far = m.addr
        if spread > self.max_dv_mv:
            cond = _RAISE
        elif spread < self.dv_clear_mv:
            cond = _CLEAR
        else:
            cond = _BAND
        self._judge(now, DG_STARTUP_VOLTAGE_DIFF, BANK, cond, far, spread, self.max_dv_mv,
                    self.hold_r, self.hold_c)
