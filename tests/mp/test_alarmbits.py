# The status-bit tables (bankgate/proto/alarmbits.py) that the decoders read with and
# the simulator's BMS emulation writes with (tools/sim/bgsim/answers.py): what the
# emulation encodes, the decoder reads back; the decoders' "any of these bits" entries.
import mptest

from bankgate.model import (
    ALM_CELL_OV, ALM_CHG_OT, ALM_CHG_UT, ALM_DSG_OT, ALM_DSG_UT, ALM_MOD_OV)
from bankgate.proto import alarmbits as ab

from bgsim import answers


def _singles(table):
    return [(table[i], table[i + 1]) for i in range(0, len(table), 2)
            if table[i] & (table[i] - 1) == 0 and table[i + 1] & (table[i + 1] - 1) == 0]


def test_every_encodable_combination_decodes_back():
    for table in (ab.PYLON_STATUS1, ab.PACE_BITS1, ab.PACE_PROT2):
        singles = _singles(table)
        assert len(singles) >= 4
        for combo in range(1 << len(singles)):
            alm = 0
            for k in range(len(singles)):
                if combo >> k & 1:
                    alm |= singles[k][1]
            assert ab.decode(answers._encode(alm, table), table) == alm, (table, alm)


def test_any_of_entries_and_the_pylontech_cell_ov():
    assert ab.decode(0x10, ab.PACE_PROT2) == ALM_CHG_OT | ALM_DSG_OT       # MOSFET OT
    assert ab.decode(0x20, ab.PACE_PROT2) == ALM_CHG_OT | ALM_DSG_OT       # environment OT
    assert ab.decode(0x40, ab.PACE_PROT2) == ALM_CHG_UT | ALM_DSG_UT
    assert ab.decode(0x20, ab.PACE_WARN2) == ALM_CHG_UT | ALM_DSG_UT       # warning 2 differs
    assert ab.decode(0x80, ab.PACE_PROT2) == 0 and ab.decode(0x80, ab.PACE_WARN2) == 0
    # Pylontech status 1 has no cell-OV bit: the emulation reports it as module OV
    assert answers._pylon_s1(ALM_CELL_OV) == 0x01
    assert ab.decode(answers._pylon_s1(ALM_CELL_OV), ab.PYLON_STATUS1) == ALM_MOD_OV


def test_decode_allocates_nothing():
    mptest.no_alloc(ab.decode, 0xFF, ab.PACE_PROT2)
