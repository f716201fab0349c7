# Which admission data each bus / protocol family really provides (issue 15).
#
# A check whose data the family does not carry is NOT failed for want of a field
# and NOT silently skipped: it is declared "not available" for that family
# (Admission.na_mask, reported in the snapshot as `na_checks` and documented per
# family in docs/admission.md), and where the check matters for safety a quantity
# the family does provide stands in for it:
#
#   family          missing                  stand-in
#   pylontech       -                        -
#   pace            limits (0x92 -> RTN 04)   limits derived from the cell voltages the
#                                            BMS reports every 0x42 (see pace_limits):
#                                            rating max_limit_ma, tapering to 0 as the
#                                            highest cell approaches full (charge) or the
#                                            lowest approaches empty (discharge); the BMS
#                                            alarms/protections (0x44) still open at once
#                   firmware version         none needed: compatibility, not safety; n/a
#   pylontech-can   firmware version, cell   cell count: the module voltage window (check
#                   count, cell voltages,    21) and the dV/inrush gate (26..28) bound a
#                   model string             wrong series count; firmware, model: n/a
#                                            (the 0x35E name is the identity)
from micropython import const

# check codes: the one copy (bankgate.admission.checks imports nothing of bankgate)
from bankgate.admission.checks import CHK_MODEL, CHK_FIRMWARE_MIN, CHK_FIRMWARE_SAME, CHK_CELLS

NA_FIRMWARE = const(1)        # checks 14, 15
NA_CELLS = const(2)           # check 16 (and the join-time per-cell chemistry window)
NA_MODEL = const(4)           # check 13
_NA_LIMITS = const(8)          # the BMS sends no limits: stand-in from the cell voltages

_NA = {"pylontech": 0, "pace": NA_FIRMWARE | _NA_LIMITS,
       "pylontech-can": NA_FIRMWARE | NA_CELLS | NA_MODEL}


def na_mask(family):
    """Data the family does not provide (NA_* bits); unknown families: 0 (all required)."""
    return _NA.get(family, 0)


def na_checks(mask):
    """Check codes declared not available for a family (allocates: reporting only)."""
    out = []
    if mask & NA_MODEL:
        out.append(CHK_MODEL)
    if mask & NA_FIRMWARE:
        out.append(CHK_FIRMWARE_MIN)
        out.append(CHK_FIRMWARE_SAME)
    if mask & NA_CELLS:
        out.append(CHK_CELLS)
    return out


# per-cell taper points (mV) for the PACE limit stand-in: (charge full, charge taper
# start, discharge taper start, discharge empty); LFP from the Pylontech/PACE LFP
# charge voltage 3.55 V/cell and cut-off 2.9 V/cell, NMC 4.15 / 3.3 V
_TAPER = {"lfp": (3550, 3450, 3050, 2900), "nmc": (4150, 4050, 3450, 3300)}
# charge / discharge voltage per cell reported as chg_v_mv / dsg_v_mv
_VOLT = {"lfp": (3500, 2900), "nmc": (4100, 3300)}


def pace_limits(m, now, rating_ma, chem):
    """Fill m's limits from its cell voltages (PACE: no limits on the bus).  Zero
    allocation; rating_ma <= 2_000_000 and the taper span <= 150 mV keep every
    product below 2**30 (rating / 100 * span)."""
    n = m.n_cells
    if n <= 0:
        return
    hi = 0
    lo = 0x7FFF
    for k in range(n):
        v = m.cell_mv[k]
        if v > hi:
            hi = v
        if v < lo:
            lo = v
    t = _TAPER[chem]
    if hi >= t[0]:
        c = 0
    elif hi <= t[1]:
        c = rating_ma
    else:
        c = (rating_ma // 100) * (t[0] - hi) // (t[0] - t[1]) * 100
    if lo <= t[3]:
        d = 0
    elif lo >= t[2]:
        d = rating_ma
    else:
        d = (rating_ma // 100) * (lo - t[3]) // (t[2] - t[3]) * 100
    vv = _VOLT[chem]
    m.chg_limit_ma = c
    m.dsg_limit_ma = d
    m.chg_v_mv = vv[0] * n
    m.dsg_v_mv = vv[1] * n
    m.mgmt_valid = True
    m.t_mgmt = now


_PACE_CFG = [0, "lfp"]


def configure_pace(rating_ma, chem):
    _PACE_CFG[0] = rating_ma
    _PACE_CFG[1] = chem


def pace_standin(m, now):
    """Called by proto.pace after each accepted 0x42."""
    pace_limits(m, now, _PACE_CFG[0], _PACE_CFG[1])
