# Cell chemistries of the bank simulator: open-circuit voltage as a function of
# state of charge, and the BMS thresholds that go with each chemistry.
#
# Host-side physics (runs under the unix port, never on the device): floats in SI
# units, SOC as a fraction 0.0 .. 1.0, voltages in volts PER CELL.  A module's OCV
# is the cell OCV times its series cell count (16s / 15s LiFePO4, 14s NMC).
#
# The tables are typical rest-voltage curves (piecewise linear between the
# points): LiFePO4 has the long flat plateau around 3.3 V that makes SOC hard to
# see from voltage -- which is exactly why a higher-SOC module joining a
# LiFePO4 bank shows only a few hundred millivolts of difference until it is
# nearly full.

# (soc fraction, volts per cell), strictly increasing in soc
OCV_TABLES = {
    "lfp": (
        (0.00, 2.500), (0.02, 2.900), (0.05, 3.100), (0.10, 3.200), (0.20, 3.250),
        (0.30, 3.275), (0.40, 3.290), (0.50, 3.300), (0.60, 3.310), (0.70, 3.320),
        (0.80, 3.330), (0.90, 3.340), (0.95, 3.360), (0.98, 3.400), (1.00, 3.550),
    ),
    "nmc": (
        (0.00, 3.000), (0.05, 3.300), (0.10, 3.450), (0.20, 3.550), (0.30, 3.620),
        (0.40, 3.680), (0.50, 3.740), (0.60, 3.810), (0.70, 3.890), (0.80, 3.970),
        (0.90, 4.070), (1.00, 4.180),
    ),
}

# BMS thresholds per chemistry, volts per cell: alarm and protection levels for
# over/under voltage, and the charge voltage the BMS asks for (0x92 / 0x47).
CELL_LIMITS = {
    "lfp": {"ov_alarm": 3.600, "ov_protect": 3.700, "uv_alarm": 2.900, "uv_protect": 2.600,
            "charge_v": 3.500, "discharge_v": 2.850},
    "nmc": {"ov_alarm": 4.200, "ov_protect": 4.250, "uv_alarm": 3.100, "uv_protect": 2.900,
            "charge_v": 4.150, "discharge_v": 3.200},
}

DEFAULT_CELLS = {"lfp": 15, "nmc": 14}


def check(chem):
    if chem not in OCV_TABLES:
        raise ValueError("chemistry must be one of %s, not %r" % (", ".join(sorted(OCV_TABLES)), chem))
    return chem


@micropython.native
def cell_ocv(chem, soc):
    """Rest voltage of one cell (V) at state of charge `soc` (clamped to 0..1)."""
    t = OCV_TABLES[chem]
    if soc <= t[0][0]:
        return t[0][1]
    for i in range(1, len(t)):
        s1, v1 = t[i]
        if soc <= s1:
            s0, v0 = t[i - 1]
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return t[-1][1]


def soc_for_cell_ocv(chem, v):
    """Inverse of cell_ocv (the tables are strictly increasing)."""
    t = OCV_TABLES[chem]
    if v <= t[0][1]:
        return t[0][0]
    for i in range(1, len(t)):
        s1, v1 = t[i]
        if v <= v1:
            s0, v0 = t[i - 1]
            return s0 + (s1 - s0) * (v - v0) / (v1 - v0)
    return t[-1][0]
