# Status-bit tables of the RS485 BMS protocols: for each status byte, pairs of
# (wire bits, ALM_* bits of bankgate.model).  A wire entry of several bits means
# "any of them".  The decoders map a byte with decode(); the bank simulator's BMS
# emulation (tools/sim/bgsim/answers.py) encodes with the same tables, so the
# decoder and the emulator cannot drift apart (the oracles that check the
# decoders stay independent: python-pylontech, tests/host).
from bankgate.model import (
    ALM_CELL_OV, ALM_CELL_UV, ALM_CHG_OC, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OC, ALM_DSG_OT,
    ALM_DSG_UT, ALM_MOD_OV, ALM_MOD_UV)

# Pylontech 0x44 status 1 (protections)
PYLON_STATUS1 = (0x80, ALM_MOD_UV, 0x40, ALM_CHG_OT, 0x20, ALM_DSG_OT, 0x10, ALM_DSG_OC,
                 0x04, ALM_CHG_OC, 0x02, ALM_CELL_UV, 0x01, ALM_MOD_OV)
# PACE protection 1 / warning 1: b0 cell OV, b1 cell UV, b2 pack OV, b3 pack UV,
# b4 charge OC, b5 discharge OC
PACE_BITS1 = (0x01, ALM_CELL_OV, 0x02, ALM_CELL_UV, 0x04, ALM_MOD_OV, 0x08, ALM_MOD_UV,
              0x10, ALM_CHG_OC, 0x20, ALM_DSG_OC)
# PACE protection 2: b0 charge OT, b1 discharge OT, b2 charge UT, b3 discharge UT,
# b4 MOSFET OT, b5 environment OT, b6 environment UT (b7 "fully" is no fault)
PACE_PROT2 = (0x01, ALM_CHG_OT, 0x02, ALM_DSG_OT, 0x04, ALM_CHG_UT, 0x08, ALM_DSG_UT,
              0x30, ALM_CHG_OT | ALM_DSG_OT, 0x40, ALM_CHG_UT | ALM_DSG_UT)
# PACE warning 2: b0..b3 as protection 2, b4 environment OT, b5 environment UT,
# b6 MOSFET OT, b7 "low power" (low SOC: no alarm)
PACE_WARN2 = (0x01, ALM_CHG_OT, 0x02, ALM_DSG_OT, 0x04, ALM_CHG_UT, 0x08, ALM_DSG_UT,
              0x50, ALM_CHG_OT | ALM_DSG_OT, 0x20, ALM_CHG_UT | ALM_DSG_UT)


def decode(b, table):
    """Status byte b -> ALM_* bits by table (allocation-free)."""
    r = 0
    for i in range(0, len(table), 2):
        if b & table[i]:
            r |= table[i + 1]
    return r
