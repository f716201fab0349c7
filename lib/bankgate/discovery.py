# Address discovery and module identity.
#
# The poller (bankgate.poller) drives the bus; this module keeps the books:
#   * which addresses answered a scan, and which slot each address occupies;
#   * the module registry (address, serial, model, software version, cell count,
#     capacity -- the values live in the bank's Module records);
#   * structured findings about addresses and identities, each a record
#       (code, address, slot, evidence a, evidence b, t_ms)
#     held in preallocated arrays, announced as EV_DISCOVERY events
#     (a = +code when raised, -code when cleared; b = evidence a).
#
# Findings (code, snake name, evidence a / b):
#   F_DUPLICATE   1 "duplicate_address"  two modules answer one address.
#                   cause 1 (collisions): a = corrupt replies among the last
#                   HIST_LEN replies of that address, b = the worst count at any
#                   other address (clean bus: 0 or 1).
#                   cause 2 (alternating identity): a = serial alternations seen,
#                   b = DUP_BY_SERIAL (2) marker.
#                   (A scan's corrupt probes open the window; the scan alone never
#                   decides: three probes on a noisy bus prove nothing.)
#                   CAN: a = frames closer together than the frame period allows,
#                   b = DUP_BY_CAN_RATE (3).
#   F_MISSING     2 "missing"            a configured address did not answer a scan.
#                   a = probes sent, b = 0.
#   F_UNEXPECTED  3 "unexpected"         an address answered that is not configured.
#                   a = slot it was given (-1: no free slot), b = good replies.
#   F_COUNT       4 "count_mismatch"     a = modules found, b = bank.expected_modules.
#                   (the group query's pack count replaces `a` when it disagrees with
#                   the scan; snapshot() shows both.  While it stands the poller re-reads
#                   the group count, pollslow._group_recheck, so it clears once they agree.)
#   F_TOO_MANY    6 "above_max_parallel" a = modules found, b = bank.max_parallel.
#   F_SWAPPED     5 "swapped"            a new serial number at a known address.
#                   a = hash of the old serial, b = hash of the new one (16 bit).
#                   Clears once the new serial reads back the same SWAP_CONFIRM
#                   times in a row (the poller re-reads a swapped slot every sweep);
#                   if instead the old serial comes back, it becomes F_DUPLICATE.
#
# Vanished unexpected address: a slot whose address is NOT configured and that
# timed out DROP_AFTER times in a row (the poller's LOST_AFTER routine timeouts,
# then its re-probes every REPROBE_MS) is dropped: its UNEXPECTED finding is
# cleared, the record forgets its data and `seen`, it no longer counts for
# COUNT / TOO_MANY (nor for admission's parallel-count check), and assign() may
# give the slot to a new address.  The poller keeps re-probing it: if it answers
# again it is un-dropped and UNEXPECTED is raised again.  (Typical case: an
# address switch set wrong and then corrected -- the module now answers at its
# configured address and the old address must not count as an extra module.)
#
# Latching: DUPLICATE stays until `clear_after` clean replies in a row at that
# address (DUP_CLEAR_GOOD) with no serial change; a rescan does not clear it, but a
# rescan that hears the address cleanly shortens the run to DUP_CLEAR_RESCAN replies.
# MISSING clears when the address answers; UNEXPECTED / COUNT / TOO_MANY are
# re-evaluated on every scan and whenever a slot answers for the first time.
# A rescan (MQTT `rescan`) keeps every verdict in force while it runs: end_scan()
# replaces them with the new scan's (begin_scan() clears nothing).
#
# slot_fault_mask(): bit i set when slot i has DUPLICATE, SWAPPED, UNEXPECTED or
# MISSING: such a module must not be admitted.  COUNT / TOO_MANY are bank-level
# (slot -1): see bank_fault().
#
# Nothing here allocates after construction except snapshot()/registry().
import array

from micropython import const

from bankgate import clock
from bankgate.events import EV_DISCOVERY

F_DUPLICATE = const(1)
F_MISSING = const(2)
F_UNEXPECTED = const(3)
F_COUNT = const(4)
F_SWAPPED = const(5)
F_TOO_MANY = const(6)

FINDING_NAMES = {
    F_DUPLICATE: "duplicate_address", F_MISSING: "missing", F_UNEXPECTED: "unexpected",
    F_COUNT: "count_mismatch", F_SWAPPED: "swapped", F_TOO_MANY: "above_max_parallel",
}

DUP_BY_SERIAL = const(2)
DUP_BY_CAN_RATE = const(3)

# Outcome of one request, as the poller reports it (note() / probe_result()).
R_GOOD = const(0)       # decoded, record updated
R_TIMEOUT = const(1)    # nothing (or nothing recognisable) came back in time
R_CORRUPT = const(2)    # bytes came back but failed framing/checksum: collision, noise
R_REJECT = const(3)     # a well-formed reply refused (error return code / implausible)

_MAX_FINDINGS = const(40)
_HIST_LEN = const(16)          # replies per address in the collision window
_HIST_MASK = const(0xFFFF)
_DUP_MIN_REPLIES = const(16)   # window must be full before judging
_DUP_MIN_BAD = const(12)       # >= 12 of the last 16 replies corrupt (75 %) at one address...
_DUP_OTHERS_MAX = const(2)     # ...while no other address has more than 2 of 16 corrupt
# Two modules answering one address garble nearly every reply (their answers overlap
# on the wire); noise that corrupts 75 % of one address's replies corrupts the others'
# too.  With a noise-only frame error rate of 28 % the chance of 12/16 at one address
# is about 1e-4 per check, and the others would then rarely be at <= 2/16.
DUP_CLEAR_GOOD = const(200)   # clean replies in a row that clear a DUPLICATE finding
DUP_CLEAR_RESCAN = const(24)  # ... of which a clean rescan of the address stands for all but these
_CAN_PERIOD_MS = const(1000)   # nominal period of a pack's 0x351 frame
_CAN_MIN_GAP_MS = const(400)   # two 0x351 of one id closer than this: a second sender
_CAN_DUP_MIN_SHORT = const(3)  # ... in 3 of the last 8 gaps -> duplicate
SWAP_CONFIRM = const(3)       # identical serial reads that confirm a swap
DROP_AFTER = const(6)         # consecutive timeouts that drop an unexpected address
_HASH_MASK = const(0xFFFF)


def serial_hash(buf, n, o=0):
    """16-bit hash of a serial number, buf[o:o + n] (evidence in findings and events)."""
    h = 0
    for i in range(o, o + n):
        h = ((h * 31) + buf[i]) & _HASH_MASK
    return h


def _popcount16(x):
    x = x - ((x >> 1) & 0x5555)
    x = (x & 0x3333) + ((x >> 2) & 0x3333)
    x = (x + (x >> 4)) & 0x0F0F
    return (x + (x >> 8)) & 0x1F


class _Findings:
    """The findings table (preallocated, at most _MAX_FINDINGS): one entry per
    (code, address) with its evidence; an event when one is added or cleared."""

    def _init_findings(self):
        self.f_code = bytearray(_MAX_FINDINGS)
        self.f_addr = array.array("h", bytes(2 * _MAX_FINDINGS))
        self.f_slot = array.array("b", bytes(_MAX_FINDINGS))
        self.f_a = array.array("i", bytes(4 * _MAX_FINDINGS))
        self.f_b = array.array("i", bytes(4 * _MAX_FINDINGS))
        self.f_t = array.array("i", bytes(4 * _MAX_FINDINGS))
        self.count = 0
        self.dropped = 0                        # findings lost to a full table

    def _find(self, code, addr):
        for i in range(self.count):
            if self.f_code[i] == code and self.f_addr[i] == addr:
                return i
        return -1

    def has(self, code, addr):
        return self._find(code, addr) >= 0

    def has_code(self, code):
        for i in range(self.count):
            if self.f_code[i] == code:
                return True
        return False

    def _set(self, code, addr, slot, a, b, now):
        i = self._find(code, addr)
        if i >= 0:                              # known: refresh evidence, no new event
            self.f_a[i] = a
            self.f_b[i] = b
            self.f_slot[i] = slot
            return
        if self.count >= _MAX_FINDINGS:
            self.dropped += 1
            return
        i = self.count
        self.f_code[i] = code
        self.f_addr[i] = addr
        self.f_slot[i] = slot
        self.f_a[i] = a
        self.f_b[i] = b
        self.f_t[i] = now
        self.count = i + 1
        self.events.emit(now, EV_DISCOVERY, addr, code, a)

    def _clear(self, code, addr, now):
        i = self._find(code, addr)
        if i < 0:
            return
        last = self.count - 1
        if i != last:
            self.f_code[i] = self.f_code[last]
            self.f_addr[i] = self.f_addr[last]
            self.f_slot[i] = self.f_slot[last]
            self.f_a[i] = self.f_a[last]
            self.f_b[i] = self.f_b[last]
            self.f_t[i] = self.f_t[last]
        self.count = last
        self.events.emit(now, EV_DISCOVERY, addr, -code, 0)

    def slot_fault_mask(self):
        """Bit i set: slot i has an identity/address problem that blocks admission."""
        mask = 0
        for i in range(self.count):
            c = self.f_code[i]
            s = self.f_slot[i]
            if s >= 0 and (c == F_DUPLICATE or c == F_SWAPPED or c == F_UNEXPECTED
                           or c == F_MISSING):
                mask |= 1 << s
        return mask

    def bank_fault(self):
        """A bank-level finding (count mismatch / above max parallel) is active."""
        return self.has_code(F_COUNT) or self.has_code(F_TOO_MANY)


class Discovery(_Findings):
    def __init__(self, cfg, bank, events):
        b = cfg["bank"]
        self.bank = bank
        self.events = events
        self.expected = b["expected_modules"]
        self.max_parallel = b["max_parallel"]
        self.n_configured = len(b["addresses"])
        self.configured = bytearray(256)       # 1 where the address is configured
        for a in b["addresses"]:
            self.configured[a & 0xFF] = 1
        self._init_findings()
        # scan bookkeeping, per address 0..255
        self._p_good = bytearray(256)
        self._p_bad = bytearray(256)
        self._p_to = bytearray(256)
        self.scanning = False
        self.scans = 0                          # completed scans
        self.t_scan = 0
        self.group_count = -1                   # packs the group (FF) query reported, -1: none
        self.found = 0                          # distinct addresses that answered
        # per-slot collision window and identity tracking
        n = len(bank.modules)
        self._hist = array.array("i", bytes(4 * n))     # bit 1 = corrupt reply
        self._nhist = bytearray(n)
        self._good_run = array.array("i", bytes(4 * n))
        # serials per slot at [16 * slot:]: one buffer each, not 2 x n bytearrays (32 objects:
        # ~0.6 KB more on the ESP32's heap)
        self._known = bytearray(16 * n)          # confirmed serial per slot
        self._known_len = bytearray(n)
        self._other = bytearray(16 * n)          # the previous, different serial
        self._other_len = bytearray(n)
        self._alternations = bytearray(n)
        self._confirm = bytearray(n)
        self._t_can351 = array.array("i", bytes(4 * n))
        self._can_hist = bytearray(n)
        self._silent = bytearray(n)             # consecutive timeouts per slot (saturates)
        self.dropped_mask = 0                   # slots of vanished unexpected addresses
        self.id_fast_mask = 0                   # slots whose identity should be re-read every sweep

    def age(self, now, k):
        """Aging pass of the time model (bankgate.clock.hold), run by the poller: the
        per-slot CAN frame stamp of slot k stay within clock.AGE_MAX of now, so a slot silent
        for weeks never reads a short (duplicate-like) gap when it resumes."""
        clock.hold_range(now, self._t_can351, k, k + 1)

    # ---------------------------------------------------------------- slots
    def slot_of(self, addr):
        mods = self.bank.modules
        for i in range(self.bank.n_used):
            if mods[i].addr == addr:
                return i
        return -1

    def assign(self, addr):
        """Slot for `addr`, taking the next free slot for a new address; -1 when full."""
        s = self.slot_of(addr)
        if s >= 0:
            return s
        bank = self.bank
        if bank.n_used >= len(bank.modules):
            # full: reuse the slot of a vanished unexpected address, if any
            s = 0
            while s < bank.n_used and not (self.dropped_mask >> s) & 1:
                s += 1
            if s >= bank.n_used:
                return -1
        else:
            s = bank.n_used
            bank.n_used = s + 1
        m = bank.modules[s]
        m.addr = addr
        m.seen = False
        m.clear_data()
        self._reset_slot(s)
        return s

    def _reset_slot(self, s):
        self._hist[s] = 0
        self._nhist[s] = 0
        self._good_run[s] = 0
        self._can_hist[s] = 0
        self._known_len[s] = 0
        self._other_len[s] = 0
        self._alternations[s] = 0
        self._confirm[s] = 0
        self._silent[s] = 0
        self.dropped_mask &= ~(1 << s)
        self.id_fast_mask &= ~(1 << s)

    # ---------------------------------------------------------------- scan
    def begin_scan(self, now):
        """Start a (re)scan: address-level findings are rebuilt from scratch."""
        for a in range(256):
            self._p_good[a] = 0
            self._p_bad[a] = 0
            self._p_to[a] = 0
        self.scanning = True
        self.group_count = -1
        # the verdicts (duplicate, missing, unexpected, count) stay in force while the
        # scan runs: end_scan() replaces them with what the new scan found
        for s in range(self.bank.n_used):
            self._hist[s] = 0
            self._nhist[s] = 0
            self._alternations[s] = 0

    def probe_result(self, addr, outcome):
        if outcome == R_GOOD or outcome == R_REJECT:
            if self._p_good[addr] < 255:
                self._p_good[addr] += 1
        elif outcome == R_CORRUPT:
            if self._p_bad[addr] < 255:
                self._p_bad[addr] += 1
        elif self._p_to[addr] < 255:
            self._p_to[addr] += 1

    def probe_needs_retry(self, addr, tries):
        """The poller asks whether to probe `addr` again (after `tries` probes).
        Corrupt replies are retried (is it noise or a collision?); a configured
        address that timed out gets one more chance."""
        if self._p_good[addr]:
            return False
        if self._p_bad[addr]:
            return tries < 3
        return self.configured[addr] and tries < 2

    def answered(self, addr):
        return self._p_good[addr] > 0 or self._p_bad[addr] > 0

    def set_group_count(self, n):
        self.group_count = n

    def end_scan(self, now, scan_from, scan_to):
        """Evaluate the scan: assign slots, raise MISSING/UNEXPECTED/COUNT."""
        self.scanning = False
        self.scans += 1
        self.t_scan = now
        for a in range(256):
            if not (self._p_good[a] or self._p_bad[a]):
                continue
            s = self.assign(a)
            if not self.configured[a]:
                self._set(F_UNEXPECTED, a, s, s, self._p_good[a], now)
            if s >= 0:
                # the probes' outcomes open the slot's collision window; a scan
                # alone never decides DUPLICATE (3 probes on a noisy bus prove
                # nothing), the window does within a few sweeps
                for k in range(self._p_bad[a] if self._p_bad[a] < 3 else 3):
                    self._hist[s] = ((self._hist[s] << 1) | 1) & _HIST_MASK
                    self._nhist[s] += 1
                for k in range(self._p_good[a] if self._p_good[a] < 3 else 3):
                    self._hist[s] = (self._hist[s] << 1) & _HIST_MASK
                    self._nhist[s] += 1
        mods = self.bank.modules
        for s in range(self.bank.n_used):
            a = mods[s].addr
            if self.configured[a] and not (self._p_good[a] or self._p_bad[a]):
                self._set(F_MISSING, a, s, self._p_to[a], 0, now)
        self._replace_verdicts(now)
        self.recount(now)

    def _replace_verdicts(self, now):
        """End of a (re)scan: the previous MISSING / UNEXPECTED verdicts the scan did not
        find again are cleared now, not when the scan began (a rescan never opens a
        window without them).  DUPLICATE is not cleared by a scan (see end_scan): it
        stays until its own clear rule, DUP_CLEAR_GOOD clean replies in a row, of which a
        scan that heard the address cleanly stands for all but DUP_CLEAR_RESCAN."""
        i = self.count - 1
        while i >= 0:
            c = self.f_code[i]
            a = self.f_addr[i]
            if (c == F_MISSING and self.answered(a)) or \
                    (c == F_UNEXPECTED and not self.answered(a)):
                self._clear(c, a, now)
            elif c == F_DUPLICATE:
                # the installer's rescan after fixing the address plan: when the new scan
                # heard the address answer cleanly (no corrupt reply, no serial flip), it
                # replaces the long clean run with a short confirmation by normal polling;
                # the verdict stays in force until then, and one bad reply restarts the
                # full DUP_CLEAR_GOOD run
                s = self.f_slot[i]
                if s >= 0 and a >= 0 and self._p_good[a & 0xFF] and not self._p_bad[a & 0xFF] \
                        and self._alternations[s] == 0 \
                        and self._good_run[s] < DUP_CLEAR_GOOD - DUP_CLEAR_RESCAN:
                    self._good_run[s] = DUP_CLEAR_GOOD - DUP_CLEAR_RESCAN
            i -= 1

    def recount(self, now):
        """COUNT / TOO_MANY from the modules that have answered."""
        found = 0
        mods = self.bank.modules
        for s in range(self.bank.n_used):
            a = mods[s].addr
            if mods[s].seen or self._p_good[a] or self._p_bad[a]:
                found += 1
        self.found = found
        shown = found
        if self.group_count >= 0 and self.group_count != found:
            shown = self.group_count
        if shown != self.expected:
            self._set(F_COUNT, -1, -1, shown, self.expected, now)
        else:
            self._clear(F_COUNT, -1, now)
        if found > self.max_parallel:
            self._set(F_TOO_MANY, -1, -1, found, self.max_parallel, now)
        else:
            self._clear(F_TOO_MANY, -1, now)

    # ---------------------------------------------------------------- routine
    def note(self, slot, outcome, now):
        """Every routine transaction's outcome for `slot` (zero allocation)."""
        m = self.bank.modules[slot]
        if outcome == R_TIMEOUT:
            c = self._silent[slot]
            if c < 255:
                c += 1
                self._silent[slot] = c
            if c == DROP_AFTER and not self.configured[m.addr & 0xFF]:
                self._drop(slot, now)
            return
        self._silent[slot] = 0
        if outcome == R_GOOD or outcome == R_REJECT:
            m.seen = True
            if (self.dropped_mask >> slot) & 1:    # a dropped address answers again
                self.dropped_mask &= ~(1 << slot)
                self._set(F_UNEXPECTED, m.addr, slot, slot, 1, now)
            if self._p_good[m.addr] == 0:          # first answer since the scan
                self._p_good[m.addr] = 1
                self._clear(F_MISSING, m.addr, now)
                self.recount(now)
        bad = 1 if outcome == R_CORRUPT else 0
        self._hist[slot] = ((self._hist[slot] << 1) | bad) & _HIST_MASK
        if self._nhist[slot] < _HIST_LEN:
            self._nhist[slot] += 1
        if bad:
            self._good_run[slot] = 0
            self._check_collisions(slot, now)
        else:
            g = self._good_run[slot] + 1
            if g < 0x3FFFFFFF:
                self._good_run[slot] = g
            if g == DUP_CLEAR_GOOD:
                self._clear(F_DUPLICATE, m.addr, now)

    def _drop(self, slot, now):
        """Forget a vanished unexpected address (see the header)."""
        m = self.bank.modules[slot]
        a = m.addr & 0xFF
        self.dropped_mask |= 1 << slot
        self._clear(F_UNEXPECTED, m.addr, now)
        m.seen = False
        m.clear_data()
        self._p_good[a] = 0
        self._p_bad[a] = 0
        self.recount(now)

    def _check_collisions(self, slot, now):
        if self._nhist[slot] < _DUP_MIN_REPLIES:
            return
        n_bad = _popcount16(self._hist[slot])
        if n_bad < _DUP_MIN_BAD:
            return
        worst = 0
        others = 0
        for s in range(self.bank.n_used):
            if s == slot or self._nhist[s] < _DUP_MIN_REPLIES:
                continue
            others += 1
            k = _popcount16(self._hist[s])
            if k > worst:
                worst = k
        if others and worst <= _DUP_OTHERS_MAX:
            self._set(F_DUPLICATE, self.bank.modules[slot].addr, slot, n_bad, worst, now)

    def late_arrival(self, addr, now):
        """CAN: an address first heard after the listening window.  Gives it a slot
        and re-evaluates UNEXPECTED / COUNT; returns the slot (-1: none free)."""
        self.probe_result(addr, R_GOOD)
        s = self.assign(addr)
        if not self.configured[addr]:
            self._set(F_UNEXPECTED, addr, s, s, 1, now)
        if s >= 0:
            self.bank.modules[s].seen = True
        self.recount(now)
        return s

    def can_frame(self, slot, pylon_id, now):
        """CAN: spacing of one frame type (0x351) per address.  A pack sends it every
        CAN_PERIOD_MS; two packs on one id make gaps shorter than CAN_MIN_GAP_MS in
        most periods (random phase: min(x, P - x) < 0.4 P for 80 % of phases)."""
        if pylon_id != 0x351:
            return
        gap = clock.diff(now, self._t_can351[slot])
        self._t_can351[slot] = now
        short = 1 if 0 <= gap < _CAN_MIN_GAP_MS else 0
        h = ((self._can_hist[slot] << 1) | short) & 0xFF
        self._can_hist[slot] = h
        k = _popcount16(h)
        if k >= _CAN_DUP_MIN_SHORT:
            self._set(F_DUPLICATE, self.bank.modules[slot].addr, slot, k, DUP_BY_CAN_RATE, now)

    def identity(self, slot, now):
        """After a good serial-number read of `slot`: detect swaps and alternation."""
        m = self.bank.modules[slot]
        n = m.serial_len
        if n <= 0:
            return
        known = self._known
        o = slot << 4
        kn = self._known_len[slot]
        if kn == 0:
            self._copy(known, o, m.serial, 0, n)
            self._known_len[slot] = n
            return
        if self._same(known, o, kn, m.serial, n):
            if self.id_fast_mask & (1 << slot):
                c = self._confirm[slot] + 1
                self._confirm[slot] = c
                if c >= SWAP_CONFIRM:
                    self.id_fast_mask &= ~(1 << slot)
                    self._clear(F_SWAPPED, m.addr, now)
            return
        # a different serial at this address
        other = self._other
        on = self._other_len[slot]
        old_hash = serial_hash(known, kn, o)
        if on and self._same(other, o, on, m.serial, n):
            alt = self._alternations[slot] + 1
            if alt > 255:
                alt = 255
            self._alternations[slot] = alt
            self._good_run[slot] = 0
            self._clear(F_SWAPPED, m.addr, now)
            self._set(F_DUPLICATE, m.addr, slot, alt, DUP_BY_SERIAL, now)
        else:
            self._set(F_SWAPPED, m.addr, slot, old_hash, serial_hash(m.serial, n), now)
        # the new serial becomes the known one, the old one the "other"
        self._copy(other, o, known, o, kn)
        self._other_len[slot] = kn
        self._copy(known, o, m.serial, 0, n)
        self._known_len[slot] = n
        self._confirm[slot] = 0
        self.id_fast_mask |= 1 << slot

    @staticmethod
    def _same(a, o, na, b, nb):
        """a[o:o + na] == b[:nb]"""
        if na != nb:
            return False
        for i in range(na):
            if a[o + i] != b[i]:
                return False
        return True

    @staticmethod
    def _copy(dst, do, src, so, n):
        """dst[do:do + n] = src[so:so + n]"""
        for i in range(n):
            dst[do + i] = src[so + i]

    # ---------------------------------------------------------------- reporting
    def snapshot(self):
        """Active findings as a list of dicts (allocates: telemetry only)."""
        out = []
        for i in range(self.count):
            c = self.f_code[i]
            d = {"code": c, "name": FINDING_NAMES.get(c, "?"), "addr": self.f_addr[i],
                 "slot": self.f_slot[i], "a": self.f_a[i], "b": self.f_b[i], "t_ms": self.f_t[i]}
            s = self.f_slot[i]
            if c == F_SWAPPED and s >= 0 and self._other_len[s]:
                o = s << 4
                d["old_serial"] = bytes(self._other[o:o + self._other_len[s]]).decode()
                d["new_serial"] = bytes(self._known[o:o + self._known_len[s]]).decode()
            out.append(d)
        return out

    def registry(self):
        """The module registry as a list of dicts (allocates: telemetry only)."""
        out = []
        mods = self.bank.modules
        for s in range(self.bank.n_used):
            m = mods[s]
            out.append({
                "slot": s, "addr": m.addr, "configured": bool(self.configured[m.addr & 0xFF]),
                "seen": m.seen, "serial": _text(m.serial, m.serial_len),
                "model": _text(m.model, m.model_len), "sw_version": m.sw_version,
                "n_cells": m.n_cells, "total_mah": m.total_mah,
            })
        return out


def _text(buf, n):
    try:
        return bytes(buf[:n]).decode()
    except Exception:
        return bytes(buf[:n]).hex()

