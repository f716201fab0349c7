# The admission numbers, in one place: bank states, module states and the check codes
# (names and numbers).  Stable: events, telemetry, Home Assistant and docs/admission.md
# use the numbers.  Everything that needs a code imports it from here (app, telemetry,
# bankgate.plausible, bankgate.familycaps) instead of copying it; this module imports
# nothing of bankgate, so any module can import it without a cycle.
from micropython import const

# ---- bank states
BANK_BOOT = const(0)        # boot hold: nothing may close yet
BANK_WAITING = const(1)     # nothing admitted, checks failing
BANK_JOINING = const(2)     # nothing admitted yet, modules pending / dwelling / closing
BANK_CLOSED = const(3)      # every expected module admitted
BANK_DEGRADED = const(4)    # some admitted, some pending or out
BANK_OPENING = const(5)     # ramp-down under load before opening
BANK_FAULT = const(6)       # a latched fault: everything open until reset_faults()
STATE_NAMES = ("boot", "waiting", "joining", "closed", "degraded", "opening", "fault")

# ---- module states
MOD_ABSENT = const(0)       # expected but not answering / no data (or not expected)
MOD_CHECKING = const(1)     # answering, data still incomplete (alarms, limits or identity missing)
MOD_PENDING = const(2)      # checks pass, voltage difference / inrush too large: waiting to converge
MOD_DWELL = const(3)        # gate holds, waiting out dwell_ms (and its turn: smallest |dV| first)
MOD_CLOSING = const(4)      # output energised, waiting for feedback (main: precharging)
MOD_ADMITTED = const(5)     # closed and counted in the bank limits
MOD_OPENING = const(6)      # must leave for a non-critical reason: ramp-down, then open
MOD_BLOCKED = const(7)      # a check fails
MOD_FAULT = const(8)        # its contactor has a latched fault
MOD_STATE_NAMES = ("absent", "checking", "pending", "dwell", "closing", "admitted", "opening",
                   "blocked", "fault")

# ---- check codes.  Evaluated in this order; a module's reason is the first that fails.
# Codes 1..7 are CRITICAL for a closed output (open at once); 8..18 open after a ramp-down;
# 19..29 and 33 only gate joining; 30..32 (data that must make sense) are critical like
# 1..7, evaluated after CHK_STALE.
_CHK_OK = const(0)
CHK_ABSENT = const(1)         # no address / never answered / no analog data   value: addr
CHK_ADDR = const(2)           # answers at an address that is not the approved one   value: addr
CHK_STALE = const(3)          # analog or alarm data older than max_age_ms   value: age ms
CHK_ID_FAULT = const(4)       # identity problem from discovery (dup/swap/unexpected/model)   value: mask
CHK_NO_ALARM_DATA = const(5)  # alarm status never read
CHK_ALARM = const(6)          # critical alarm or protection   value: the bits
CHK_FAULT = const(7)          # a latched contactor fault   value: fault bits
CHK_BUS = const(8)            # bus verdict not healthy   value: verdict code
CHK_INVERTER = const(9)       # inverter heartbeat required and absent
CHK_NO_LIMITS = const(10)     # charge/discharge limits missing or older than limits_max_age_ms   value: age
CHK_LIMITS = const(11)        # limits implausible   value: the limit mA
CHK_NO_ID = const(12)         # identity (model, firmware) not read yet
CHK_MODEL = const(13)         # model not in bank.approved_models   value: model length
CHK_FIRMWARE_MIN = const(14)  # firmware below bank.firmware_min   value: version
CHK_FIRMWARE_SAME = const(15) # firmware differs from the bank's (most common)   value: version
CHK_CELLS = const(16)         # cell count != bank.cells   value: cells
CHK_CHEMISTRY = const(17)     # cell voltages / cell limit outside the chemistry   value: mV
CHK_NOMINAL = const(18)       # cells x chemistry nominal far from bank.nominal_mv   value: mV
CHK_PARALLEL = const(19)      # more modules answer than expected / allowed   value: count
CHK_BOOT_HOLD = const(20)     # boot hold   value: ms left
CHK_VOLTAGE = const(21)       # module voltage outside module_mv_min..max   value: mV
CHK_SOC = const(22)           # SOC outside soc_min..max   value: permille
CHK_SOC_SPREAD = const(23)    # SOC spread with the admitted bank too large   value: permille
CHK_LINK = const(24)          # DC link voltage unknown: never close blind
CHK_BANK_WAIT = const(25)     # main topology: other modules not ready   value: how many
CHK_DV = const(26)            # |V_module - V_bus| too large (pending)   value: |dV| mV
CHK_INRUSH = const(27)        # predicted circulating current > max_inrush_ma   value: mA
CHK_MOD_LIMIT = const(28)     # predicted current > the module's own limit   value: mA
CHK_SPREAD = const(29)        # main topology: module voltage spread too large   value: mV
# data that must make sense (bankgate.plausible): evaluated next to CHK_STALE and,
# like it, not fresh: they block joins and open a closed output at once
CHK_FROZEN = const(30)        # analog content unchanged while frozen_mah flowed   value: mAh
CHK_CELL_SUM = const(31)      # sum of cells - module voltage beyond cell_sum_tol_mv   value: mV
CHK_CURRENT_RANGE = const(32) # |I| above twice the module's rating   value: mA
CHK_JOIN_HOLD = const(33)     # joins held (Admission.hold_joins): ready, kept pending   value: |dV| mV
CHECK_NAMES = (
    "ok", "absent", "address", "stale", "identity", "no_alarm_data", "alarm", "fault", "bus",
    "inverter", "no_limits", "limits", "no_identity", "model", "firmware_min", "firmware_same",
    "cells", "chemistry", "nominal", "parallel", "boot_hold", "voltage", "soc", "soc_spread",
    "link_unknown", "bank_wait", "dv", "inrush", "module_limit", "spread",
    "frozen", "cell_sum", "current_range", "join_hold")
_LAST_IMMEDIATE = const(7)     # codes 1..7 open a closed output at once
_LAST_STAY = const(18)         # codes 8..18 open after a ramp-down; >18 only gate joins


def critical(code):
    """True when a closed output with this reason must open in this same step
    (codes 1..7 and the data-sense codes 30..32)."""
    return 0 < code <= _LAST_IMMEDIATE or CHK_FROZEN <= code <= CHK_CURRENT_RANGE
