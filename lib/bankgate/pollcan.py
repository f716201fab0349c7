# CAN module bus reception (issue 20: out of bankgate.poller.Poller; created and
# imported only for a CAN module bus, so an RS485 configuration never loads it):
# modules send the Pylontech frame set unasked on their own ids (bankgate/poller.py,
# "CAN module bus"); each frame counts as a request + good reply, a module silent for
# CAN_SILENT_MS counts one timeout per CAN_SILENT_MS and is lost.  The poller's
# counters, lost mask and discovery are updated through `p`; allocation-free after
# construction.
import array

from micropython import const

from bankgate import clock
from bankgate import discovery as dsc
from bankgate.proto import errors as perr

_CAN_LISTEN_MS = const(3000)       # CAN discovery listening window
_CAN_SILENT_MS = const(3000)       # no frame this long counts one timeout
CAN_MAX_FRAMES = const(16)        # frames handled per service() call (bounded work)
_E_BUS_TIMEOUT = const(-101)      # (bankgate.poller's last_error code of a timeout)


class CanReception:
    def __init__(self, p, n, outcome_of, can_id_to_addr):
        self.p = p                    # the Poller
        self.outcome_of = outcome_of  # bankgate.poller's (one classification; passed in, as
        self.addr_of = can_id_to_addr  # this module must not import the poller: no cycle)
        self._canbuf = bytearray(8)
        self._t_can = array.array("i", bytes(4 * n))     # last frame per slot
        self._t_listen = 0
        self._listening = True
        self._can_slot = -1                              # slot of the last decoded frame

    def age(self, now, k):
        self._t_listen = clock.hold(now, self._t_listen)
        clock.hold_range(now, self._t_can, k, k + 1)

    def service(self, now):
        p = self.p
        d = p.discovery
        if not p._started or p._rescan:
            p._started = True
            p._rescan = False
            self._t_listen = clock.add(now, _CAN_LISTEN_MS)
            d.begin_scan(now)
            self._listening = True
        changed = -1
        can = p.can
        buf = self._canbuf
        for _ in range(CAN_MAX_FRAMES):
            r = can.recv(buf)
            if r < 0:
                break
            if self._frame(r, now):
                changed = self._can_slot
                break                          # one changed record per call: the caller checks it
        if self._listening:
            if clock.due(now, self._t_listen):
                self._end_listen(now)
        else:
            self._silence(now)
        return changed

    def _frame(self, r, now):
        """One received frame (recv() result r, data in _canbuf): decode it into its
        module's record, count it; True when it changed a record (slot in _can_slot)."""
        p = self.p
        d = p.discovery
        cid = r >> 4
        addr = self.addr_of(cid)
        if addr < 0:
            return False                       # not a module frame (counted nowhere)
        slot = d.slot_of(addr)
        if slot < 0:
            if self._listening:
                d.probe_result(addr, dsc.R_GOOD)   # slot assigned when listening ends
                return False
            slot = d.late_arrival(addr, now)
            if slot < 0:
                return False
        m = p.bank.modules[slot]
        pid = 0x350 | (cid & 0xF)
        try:
            code = p.fam.decode(pid, self._canbuf, r & 0xF, m, now)
        except Exception:
            code = perr.E_TRUNCATED
        cat = perr.category(code) if code < 0 else perr.CAT_NONE
        outcome = self.outcome_of(code, cat)
        p.transactions += 1
        p._count(m, outcome, cat, code, now)
        self._t_can[slot] = now
        p.lost_mask &= ~(1 << slot)
        if self._listening:
            d.probe_result(addr, outcome)
        else:
            d.note(slot, outcome, now)
            d.can_frame(slot, pid, now)
        self._can_slot = slot
        return outcome == dsc.R_GOOD

    def _end_listen(self, now):
        p = self.p
        d = p.discovery
        mods = p.bank.modules
        d.end_scan(now, 0, 63)
        self._listening = False
        for s in range(p.bank.n_used):
            self._t_can[s] = now
            if not d.answered(mods[s].addr):
                p.lost_mask |= 1 << s
        p.sweep_count += 1

    def _silence(self, now):
        p = self.p
        mods = p.bank.modules
        for s in range(p.bank.n_used):
            if clock.diff(now, self._t_can[s]) >= _CAN_SILENT_MS:
                # silence: one timeout per CAN_SILENT_MS, and the module is lost
                self._t_can[s] = now
                p.transactions += 1
                p._count(mods[s], dsc.R_TIMEOUT, perr.CAT_NONE, _E_BUS_TIMEOUT, now)
                p.lost_mask |= 1 << s
