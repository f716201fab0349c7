# Derate-only controls (issue 19.4; docs/mqtt.md "Derate controls", docs/safety.md).
#
# Five values a remote user (MQTT command, Home Assistant number/switch) may set:
#   chg_cap_a     charge current cap, A         0..max_a   (max_a = no cap)
#   dsg_cap_a     discharge current cap, A      0..max_a   (max_a = no cap)
#   chg_stop_soc  %: bank SOC >= value -> charge limit 0          (100 = off)
#   dsg_stop_soc  %: bank SOC <= value -> discharge limit 0       (0 = off)
#   hold_joins    1: modules not admitted stay out (Admission.hold_joins)   (0 = off)
# max_a = bank.expected_modules x gating.max_limit_ma / 1000: the largest bank current
# limit the configuration lets admission compute, so "max_a" never caps anything.
#
# Why these can only make the bank safer:
#   - limit() runs AFTER admission computed the limits from the BMSes and the
#     configuration and only ever takes a min() with them (or sets 0): no path here
#     writes a larger value than the one it read;
#   - hold_joins only adds a join-only check (Admission.hold_joins): it can keep an open
#     output open, never close one, and never opens a closed one (modules already
#     admitted stay admitted; an admission check never depends on it for staying);
#   - nothing here touches a contactor, a latch or the configuration.
# Expiry: each value set away from its "off" value holds for mqtt.control_ttl_s after
# the command that set it (a new command refreshes it), then returns to "off" -- which
# RAISES the limit back to what the BMSes and the configuration allow (by design: the
# issue asks for expiry to the default; a derate that must last is re-sent by its owner).
# Expiry uses bankgate.clock: an age that reads negative (the clock restarted, a stamp
# from the future) expires the value too, and ttl < clock.AGE_MAX (config bound), and
# step() runs every control period, so no stamp in force can age past what diff() tells.
# Nothing is persisted: a reboot starts with every control off.
# step() and limit() allocate nothing (tests/mp/test_derate.py, heap_lock).
import array

from micropython import const

from bankgate import clock as tk

CHG_CAP = const(0)
DSG_CAP = const(1)
CHG_STOP = const(2)
DSG_STOP = const(3)
HOLD = const(4)
N = const(5)
NAMES = ("chg_cap_a", "dsg_cap_a", "chg_stop_soc", "dsg_stop_soc", "hold_joins")

OK = "ok"
E_RANGE = "out of range"
E_TYPE = "value must be an integer"
E_UNKNOWN = "unknown control"


def max_amps(cfg):
    """The cap value that caps nothing (A): every expected module at its rating."""
    return cfg["bank"]["expected_modules"] * cfg["gating"]["max_limit_ma"] // 1000


class Derate:
    def __init__(self, cfg):
        self.max_a = max_amps(cfg)                       # <= 16 x 1000 A
        self.ttl_ms = cfg["mqtt"]["control_ttl_s"] * 1000  # < clock.AGE_MAX (config bound)
        m = self.max_a
        self.off = array.array("i", (m, m, 100, 0, 0))   # the "no derate" value of each
        self.hi = array.array("i", (m, m, 100, 100, 1))  # valid range: 0..hi
        self.val = array.array("i", self.off)            # the values in force
        self.t_set = array.array("i", [-1] * N)          # last set/refresh (ticks), -1: off
        self.version = 0                                 # +1 whenever a value in force changes
        self.expired = 0                                 # controls that ran out (counted)
        self.refused = 0                                 # set() refusals (counted)
        self.limited = 0                                 # steps where a control lowered a limit
        self.raw_chg_ma = 0                              # the limits before the derate (telemetry)
        self.raw_dsg_ma = 0

    # ------------------------------------------------------------ commands
    def index(self, name):
        for i in range(N):
            if NAMES[i] == name:
                return i
        return -1

    def set(self, i, value, now):
        """A command: control i to value.  Returns OK or why it is refused (nothing changes
        then).  The "off" value switches the control off; any other valid value is in force
        for ttl_ms from now (refreshed by every accepted set)."""
        if type(i) is not int or i < 0 or i >= N:
            self.refused += 1
            return E_UNKNOWN
        if type(value) is not int:
            self.refused += 1
            return E_TYPE
        if value < 0 or value > self.hi[i]:
            self.refused += 1
            return E_RANGE
        if value == self.off[i]:
            if self.t_set[i] >= 0:
                self.t_set[i] = -1
                self.val[i] = self.off[i]
                self.version += 1
            return OK
        if self.val[i] != value or self.t_set[i] < 0:
            self.version += 1
        self.val[i] = value
        self.t_set[i] = now
        return OK

    # ------------------------------------------------------------ control loop
    def step(self, now, adm):
        """Before Admission.step(): expire what ran out, hand hold_joins to admission.
        Allocation-free."""
        ttl = self.ttl_ms
        ts = self.t_set
        for i in range(N):
            t = ts[i]
            if t >= 0:
                a = tk.diff(now, t)
                if a >= ttl or a < 0:
                    ts[i] = -1
                    self.val[i] = self.off[i]
                    self.expired += 1
                    self.version += 1
        adm.hold_joins = ts[HOLD] >= 0 and self.val[HOLD] != 0

    def limit(self, adm, soc_pm):
        """After Admission.step() and the bank aggregates: lower adm.chg_limit_ma /
        adm.dsg_limit_ma (what the inverter and telemetry read) by the controls in force.
        Only min() or 0: never raises a limit.  soc_pm: the bank SOC (permille).
        Allocation-free; every product < 2**30 (max_a x 1000 <= 1.6e7)."""
        c = adm.chg_limit_ma
        d = adm.dsg_limit_ma
        self.raw_chg_ma = c
        self.raw_dsg_ma = d
        v = self.val
        ts = self.t_set
        nc = c
        nd = d
        if ts[CHG_CAP] >= 0 and v[CHG_CAP] * 1000 < nc:
            nc = v[CHG_CAP] * 1000
        if ts[DSG_CAP] >= 0 and v[DSG_CAP] * 1000 < nd:
            nd = v[DSG_CAP] * 1000
        if ts[CHG_STOP] >= 0 and v[CHG_STOP] < 100 and soc_pm >= v[CHG_STOP] * 10:
            nc = 0
        if ts[DSG_STOP] >= 0 and v[DSG_STOP] > 0 and soc_pm <= v[DSG_STOP] * 10:
            nd = 0
        if nc < c or nd < d:
            self.limited += 1
            if nc < c:
                adm.chg_limit_ma = nc
            if nd < d:
                adm.dsg_limit_ma = nd

    # ------------------------------------------------------------ reporting
    def active(self):
        for i in range(N):
            if self.t_set[i] >= 0:
                return True
        return False

    def expires_s(self, now):
        """Seconds until the first control in force runs out (0: none in force)."""
        best = -1
        for i in range(N):
            t = self.t_set[i]
            if t >= 0:
                left = self.ttl_ms - tk.diff(now, t)
                if left < 0:
                    left = 0
                if best < 0 or left < best:
                    best = left
        return 0 if best < 0 else (best + 999) // 1000

    def snapshot(self, now):
        """The <base>/derate payload (allocates): the values in force ("off" values when
        not set) and expires_s."""
        v = self.val
        return {"chg_cap_a": v[CHG_CAP], "dsg_cap_a": v[DSG_CAP], "chg_stop_soc": v[CHG_STOP],
                "dsg_stop_soc": v[DSG_STOP], "hold_joins": 1 if v[HOLD] else 0,
                "expires_s": self.expires_s(now)}
