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


def __getattr__(name):
    """The codes of bankgate.admission.checks (CHK_*, MOD_*, BANK_*, the names) and the
    latched fault bits of bankgate.contactor (F_*, FAULT_NAMES) as attributes of the
    package (adm.CHK_DV), looked up on use: no second dictionary of them in RAM."""
    if name[:1] == "_" or name in _SUBMODULES:
        raise AttributeError(name)            # (never recurse into an import in progress)
    import sys
    import bankgate.admission.checks  # noqa: F401 (loaded; not looked up on this package)
    checks = sys.modules["bankgate.admission.checks"]
    if hasattr(checks, name):
        return getattr(checks, name)
    if name[:2] == "F_" or name == "FAULT_NAMES":
        from bankgate import contactor
        return getattr(contactor, name)
    raise AttributeError(name)


_SUBMODULES = ("checks", "rules", "latches", "core", "branch", "mainbus")


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
