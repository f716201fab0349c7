# Whole-group answers (Pylontech 0x42 / 0x44 with INFO FF) of 1..16 packs, produced by the
# simulator's BMS emulation (bgsim.emu.Rs485Bms answering a group request on a wire of
# peers), for the `bankgate decode` tests (tests/host/test_decode_text.py).  Each pack
# gets its own state, so a decoder that mixes packs up is caught.
from bankgate.proto import pylontech
from bgsim import emu
from bgsim.bms import Bms
from bgsim.physics import SimModule


def _wire(n, first, cells):
    peers = []
    for i in range(n):
        m = SimModule(i, cells=cells, soc=0.10 + 0.05 * i, cell_spread_v=0.004 * (i % 4),
                      capacity_ah=50.0 + 25.0 * (i % 3))
        m.current_a = -3.0 + 0.5 * i
        b = Bms(m, first + i, model="US3000C")
        b.update(0.0, 0.1)
        peers.append(emu.Rs485Bms(b, "pylontech", peers))
    return peers


def group_answer(n, cmd=0x42, first=2, cells=15):
    """[frame text, [per-pack expected values]] of the master at `first` answering a group
    query with n packs at first..first+n-1."""
    peers = _wire(n, first, cells)
    req = bytearray(32)
    k = pylontech.encode_group_request(cmd, first, req)
    resp = peers[0](bytes(req[:k]))
    want = []
    for p in peers:
        r = p.bms.report(None)
        want.append({"voltage_mv": r["voltage_mv"], "current_ma": r["current_ma"],
                     "cells_mv": list(r["cell_mv"]), "remaining_mah": r["remaining_mah"]})
    return [bytes(resp).decode().strip(), want]
