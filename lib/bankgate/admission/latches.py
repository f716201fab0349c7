# Latched faults of admission: latching (every output opens in the same call), their
# persistence across resets (bankgate.latchstore; docs/safety.md, "Across resets") and
# the LOCAL-only reset.  The base of AdmissionCore (bankgate.admission.core), which
# owns the state it works on (faults, fault_slot, fault_value, store, the weld timers).
from bankgate.contactor import F_LATCH_STORE, FAULT_NAMES
from bankgate.events import EV_FAULT_CLEARED, EV_FAULT_LATCHED


class Latches:
    def _forget(self):
        """Outputs were released or faults reset: forget any close in progress
        (the topology overrides it)."""

    def reset_faults(self, now):
        """Clear latched faults.  LOCAL ONLY: the USB console and the reset input
        call this; nothing on the network may.  Outputs stay open; modules go
        through every check and the dwell again.  Returns True if anything cleared."""
        f = self.faults
        if not f:
            return False
        for bit, _ in FAULT_NAMES:
            if f & bit:
                self.events.emit(now, EV_FAULT_CLEARED, -1, bit, 0)
        self.faults = 0
        self.fault_slot = -1
        self.fault_value = 0
        for i in range(self.n_slots + 1):
            self.weld_on[i] = 0
        self.link_on = 0
        for i in range(self.ct.n):
            self.ct.bad[i] = 0
        self._forget()
        self._persist()
        return True

    def _latch(self, bit, slot, value, now):
        if self.faults & bit:
            return
        if not self.faults:
            self.fault_slot = slot
            self.fault_value = value
        self.faults |= bit
        self.ct.open_all(now)
        addr = self._addr[slot] if slot >= 0 else -1
        self.events.emit(now, EV_FAULT_LATCHED, addr, bit, value)
        self._persist()

    # ---- persisted latches (bankgate.latchstore; docs/safety.md, "Across resets")
    def _persist(self):
        """Write the latched set to the device filesystem if it changed (outputs are
        already open).  Rare: a fault latching or a local reset.  Never raises."""
        if self.store is not None:
            self.store.save(self.faults, self.fault_slot, self.fault_value)

    def _restore(self, now):
        from bankgate import latchstore
        st = self.store = latchstore.LatchStore(self.hw.fs)
        v = st.load()
        if v == latchstore.OK and st.faults:
            slot = st.slot if -1 <= st.slot < self.n_exp else -1
            self.faults = st.faults
            self.fault_slot = slot
            self.fault_value = st.value
            addr = self._addr[slot] if slot >= 0 else -1
            for bit, _ in FAULT_NAMES:
                if st.faults & bit:
                    self.events.emit(now, EV_FAULT_LATCHED, addr, bit, st.value)
        elif v == latchstore.CORRUPT or v == latchstore.UNREADABLE:
            self._latch(F_LATCH_STORE, -1, v, now)
