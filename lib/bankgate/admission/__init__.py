# Admission: the checks before any contactor closes, closed-loop voltage-difference
# gating, the fail-safe interlock and the combined limits of the admitted bank
# (docs/admission.md; docs/architecture.md, "Admission").  The package:
#   checks.py   bank/module states and check codes (names + numbers): the one copy
#   rules.py    the read-only checks, shared by step() and urgent()
#   latches.py  Latches: latched faults, their persistence, the local reset
#   core.py     AdmissionCore(Latches): state, events, step skeleton, aging, bank state,
#               limits, the read-only view
#   branch.py   BranchAdmission: one contactor per module
#   mainbus.py  MainAdmission: main contactor + precharge (common bus)
# Admission() builds the configured topology and imports only that module, so a device
# with one topology never loads the other.  The interlock (bankgate.contactor) and the
# combined limits (bankgate.limits) stay beside the package.
from bankgate.admission.checks import (  # noqa: F401  (the public names)
    BANK_BOOT, BANK_WAITING, BANK_JOINING, BANK_CLOSED, BANK_DEGRADED, BANK_OPENING, BANK_FAULT,
    STATE_NAMES, MOD_ABSENT, MOD_CHECKING, MOD_PENDING, MOD_DWELL, MOD_CLOSING, MOD_ADMITTED,
    MOD_OPENING, MOD_BLOCKED, MOD_FAULT, MOD_STATE_NAMES, CHECK_NAMES,
    CHK_ABSENT, CHK_ADDR, CHK_STALE, CHK_ID_FAULT, CHK_NO_ALARM_DATA, CHK_ALARM, CHK_FAULT,
    CHK_BUS, CHK_INVERTER, CHK_NO_LIMITS, CHK_LIMITS, CHK_NO_ID, CHK_MODEL, CHK_FIRMWARE_MIN,
    CHK_FIRMWARE_SAME, CHK_CELLS, CHK_CHEMISTRY, CHK_NOMINAL, CHK_PARALLEL, CHK_BOOT_HOLD,
    CHK_VOLTAGE, CHK_SOC, CHK_SOC_SPREAD, CHK_LINK, CHK_BANK_WAIT, CHK_DV, CHK_INRUSH,
    CHK_MOD_LIMIT, CHK_SPREAD, CHK_FROZEN, CHK_CELL_SUM, CHK_CURRENT_RANGE, CHK_JOIN_HOLD)
from bankgate.contactor import (  # noqa: F401  (the latched fault bits, as before)
    F_WELDED, F_FAIL_CLOSE, F_WELD_CURRENT, F_WELD_LINK, F_PRECHARGE, F_LATCH_STORE, FAULT_NAMES)


def Admission(hw, cfg, bank, events):
    """The admission of the configured topology (gating.topology "branch" or "main"):
    a BranchAdmission or a MainAdmission, both with the public face of AdmissionCore
    (step, urgent, reset_faults, use_measured_loop, view, pending_mask, hold_joins,
    snapshot and the read-only state).  Imports only the configured topology."""
    if cfg["gating"]["topology"] == "branch":
        from bankgate.admission.branch import BranchAdmission
        return BranchAdmission(hw, cfg, bank, events)
    from bankgate.admission.mainbus import MainAdmission
    return MainAdmission(hw, cfg, bank, events)
