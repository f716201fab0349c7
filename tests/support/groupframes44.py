# Whole-group 0x44 answers (Pylontech INFO FF) of 1..16 packs from the simulator's BMS
# emulation, with per-pack protections, for the `bankgate decode` test of the 0x44 group
# (tests/host/test_decode_group44.py).  Allocates freely (host-side helper).
from bankgate.model import ALM_CHG_OT, ALM_MOD_OV, ALM_MOD_UV, alarm_names
from bankgate.proto import pylontech
from bgsim import emu
from bgsim.bms import Bms
from bgsim.physics import SimModule

_PROT = (0, ALM_MOD_UV, 0, ALM_CHG_OT, 0, 0, ALM_MOD_OV)


def alarm_group_answer(n, first=2, cells=15):
    """[frame text, [per-pack protection names]] of the master at `first` answering a 0x44
    group query with n packs at first..first+n-1."""
    peers = []
    for i in range(n):
        m = SimModule(i, cells=cells, soc=0.2 + 0.04 * i)
        b = Bms(m, first + i, model="US3000C")
        b.update(0.0, 0.1)
        b.protections = _PROT[i % len(_PROT)]
        peers.append(emu.Rs485Bms(b, "pylontech", peers))
    req = bytearray(32)
    k = pylontech.encode_group_request(pylontech.CMD_ALARM, first, req)
    resp = peers[0](bytes(req[:k]))
    return [bytes(resp).decode().strip(), [alarm_names(p.bms.protections) for p in peers]]
