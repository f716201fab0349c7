# CAN module bus reception (part of bankgate.poller.Poller, a mixin): modules send
# the Pylontech frame set unasked on their own ids (bankgate/poller.py, "CAN module
# bus"); each frame counts as a request + good reply, a module silent for
# CAN_SILENT_MS counts one timeout per CAN_SILENT_MS and is lost.  State lives on
# the Poller; allocation-free after _init_can.
import array

from micropython import const

from bankgate import clock
from bankgate import discovery as dsc
from bankgate.proto import errors as perr

CAN_LISTEN_MS = const(3000)       # CAN discovery listening window
CAN_SILENT_MS = const(3000)       # no frame this long counts one timeout
CAN_MOD_BASE = const(0x400)
CAN_FRAME_MS = const(1000)        # modules send their frame set once a second (Pylontech CAN)
CAN_MAX_FRAMES = const(16)        # frames handled per service() call (bounded work)
_E_BUS_TIMEOUT = const(-101)      # (bankgate.poller's last_error code of a timeout)

_PH_CAN_LISTEN = const(3)         # (bankgate.poller's phases)
_PH_CAN_RUN = const(4)


def can_id_to_addr(can_id):
    """Module address of a module-bus CAN id, -1 if the id is not a module frame."""
    if 0x350 <= can_id <= 0x35F:
        return 0
    if CAN_MOD_BASE <= can_id <= 0x7FF:
        return (can_id - CAN_MOD_BASE) >> 4
    return -1


def can_id_for(addr, pylon_id):
    """CAN id a module at `addr` uses for Pylontech frame `pylon_id` (0x351 ...)."""
    return CAN_MOD_BASE + (addr << 4) + (pylon_id & 0xF)


def outcome_of(code, cat):
    """Discovery outcome (R_GOOD / R_CORRUPT / R_REJECT) of a decoder result `code`
    whose error category (bankgate.proto.errors.category) is `cat`: a checksum or
    framing error is line corruption, any other error a rejected answer.  The one
    classification of RS485 and CAN frames (Poller._finish, _can_frame)."""
    if code >= 0:
        return dsc.R_GOOD
    if cat == perr.CAT_CHECKSUM or cat == perr.CAT_FRAMING:
        return dsc.R_CORRUPT
    return dsc.R_REJECT


class CanReception:
    def _init_can(self, hw, cfg, events, n):
        self.can = hw.can_modules
        from bankgate.bus.can import BUS_MODULES, BusOffRecovery
        self.can_recovery = BusOffRecovery(self.can, events, BUS_MODULES, cfg["bank"]["baud"])
        self._canbuf = bytearray(8)
        self._t_can = array.array("i", bytes(4 * n))     # last frame per slot
        self._t_listen = 0
        self._can_slot = -1                              # slot of the last decoded frame
        self._phase = _PH_CAN_LISTEN

    def _service_can(self, now):
        d = self.discovery
        if not self._started or self._rescan:
            self._started = True
            self._rescan = False
            self._t_listen = clock.add(now, CAN_LISTEN_MS)
            d.begin_scan(now)
            self._phase = _PH_CAN_LISTEN
        changed = -1
        can = self.can
        buf = self._canbuf
        for _ in range(CAN_MAX_FRAMES):
            r = can.recv(buf)
            if r < 0:
                break
            if self._can_frame(r, now):
                changed = self._can_slot
                break                          # one changed record per call: the caller checks it
        if self._phase == _PH_CAN_LISTEN:
            if clock.due(now, self._t_listen):
                self._end_listen(now)
        else:
            self._can_silence(now)
        return changed

    def _can_frame(self, r, now):
        """One received frame (recv() result r, data in _canbuf): decode it into its
        module's record, count it; True when it changed a record (slot in _can_slot)."""
        d = self.discovery
        cid = r >> 4
        addr = can_id_to_addr(cid)
        if addr < 0:
            return False                       # not a module frame (counted nowhere)
        slot = d.slot_of(addr)
        if slot < 0:
            if self._phase == _PH_CAN_LISTEN:
                d.probe_result(addr, dsc.R_GOOD)   # slot assigned when listening ends
                return False
            slot = d.late_arrival(addr, now)
            if slot < 0:
                return False
        m = self.bank.modules[slot]
        pid = 0x350 | (cid & 0xF)
        try:
            code = self.fam.decode(pid, self._canbuf, r & 0xF, m, now)
        except Exception:
            code = perr.E_TRUNCATED
        cat = perr.category(code) if code < 0 else perr.CAT_NONE
        outcome = outcome_of(code, cat)
        self.transactions += 1
        self._count(m, outcome, cat, code, now)
        self._t_can[slot] = now
        self.lost_mask &= ~(1 << slot)
        if self._phase == _PH_CAN_LISTEN:
            d.probe_result(addr, outcome)
        else:
            d.note(slot, outcome, now)
            d.can_frame(slot, pid, now)
        self._can_slot = slot
        return outcome == dsc.R_GOOD

    def _end_listen(self, now):
        d = self.discovery
        mods = self.bank.modules
        d.end_scan(now, 0, 63)
        self._phase = _PH_CAN_RUN
        for s in range(self.bank.n_used):
            self._t_can[s] = now
            if not d.answered(mods[s].addr):
                self.lost_mask |= 1 << s
        self.sweep_count += 1

    def _can_silence(self, now):
        mods = self.bank.modules
        for s in range(self.bank.n_used):
            if clock.diff(now, self._t_can[s]) >= CAN_SILENT_MS:
                # silence: one timeout per CAN_SILENT_MS, and the module is lost
                self._t_can[s] = now
                self.transactions += 1
                self._count(mods[s], dsc.R_TIMEOUT, perr.CAT_NONE, _E_BUS_TIMEOUT, now)
                self.lost_mask |= 1 << s
