# The module-bus poller: one request/response transaction at a time on the RS485
# module bus (or frame reception on a CAN module bus), decoded into the bank's
# Module records, with per-address statistics for bankgate.bushealth.
#
# Schedule (RS485):
#   1. SCAN   probe every address of cfg bank.scan_from..scan_to plus the configured
#             addresses with PROBE_CMD (the family's protocol-version command when it
#             has one, else its first identity command).  A corrupt reply is probed
#             again (up to 3 times: collision or noise?), a configured address that
#             timed out once more (2 probes).  Discovery assigns slots: configured
#             addresses keep slots 0..n-1 in cfg order, extra addresses take the
#             next free slots.
#   2. GROUP  where the family supports it, one 0x42 group query (INFO FF) to the
#             first answering address: the pack count it reports is COUNT evidence.
#             While discovery's count_mismatch stands, a sweep may start with a
#             count-only 0x44 group query (pollslow._group_recheck, GROUP_RECHECK_MS).
#   3. CYCLE  (issue 15, bankgate.pollplan) every sweep visits every slot and reads
#             its FAST commands (POLL_CMDS without the limits command: analog +
#             alarm, the data gating.max_age_ms governs), whatever else is pending.
#             SLOW transactions (limits CMD_MGMT, the family's IDENT_CMDS: serial,
#             model, version, parameters) are spread one at a time after slot
#             visits, within a per-sweep time budget computed from baud, frame
#             lengths, turnaround and gaps (pollplan.plan), so the sweep - and the
#             age of every module's alarm data - stays inside the bound the config
#             validator checked.  Priority: limits never read > identity never
#             read > limits older than limits_max_age_ms / 2 > identity re-read
#             (every IDENT_PERIOD_MS: catches swaps; for a slot whose serial just
#             changed, its serial number alone until confirmed) > limits refresh;
#             ties rotate over slots; at most one slow read per slot and sweep (a
#             BMS refusing 0x92 cannot take the others' turns).
#             Start-up follows the same budget (a module's first limits and identity
#             are slow reads too), so no module goes stale while others start.
#             A slot with LOST_AFTER consecutive timeouts is "lost" and only
#             re-probed every REPROBE_MS; when it answers again its identity is
#             re-read first.
#   rescan() restarts at 1 after the current transaction.
#
# Statistics (Module.st_*): counted when a transaction ends, so that always
#   st_requests == st_good + st_timeouts + st_checksum + st_framing + st_rtn + st_invalid.
#   Driver failures count as framing (GAP: frame cut short, OVERFLOW, NOISE: bytes
#   without a frame start) with last_error E_BUS_*; a timeout sets E_BUS_TIMEOUT.
#   Counters wrap at 2**30 (compare them with bankgate.clock.diff-style deltas).
#   Per-command counters (cmd_req/cmd_bad/cmd_len) give bushealth the error rate as a
#   function of reply frame length.
#
# CAN module bus (cfg bank.bus == "can", family "pylontech-can"): modules send the
# Pylontech frame set (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E) on their own IDs:
#       CAN id = CAN_MOD_BASE (0x400) + (address << 4) + (Pylontech id & 0xF)
#   address 0..63 (id 0x400..0x7FF; 11-bit).  The plain ids 0x350..0x35F are taken
#   as address 0 (one unmodified pack).  A frame counts as a request + good reply;
#   a module silent for CAN_SILENT_MS counts one timeout per CAN_SILENT_MS.
#   Discovery listens for CAN_LISTEN_MS, then reports; later newcomers are
#   reported when first heard.  Two packs sending on one id are found by frame
#   spacing (see Discovery.can_frame).
#   service() returns after the first frame that changed a record (reading at most
#   CAN_MAX_FRAMES frames), so the caller checks every changed slot before the next
#   frame is decoded; the rest of a burst stays queued for the next call (the loop
#   drains it in the same iteration: bankgate.app.Gateway._drain_can).
#
# service() never blocks beyond the RS485 driver's bounded TX busy-wait and
# allocates nothing once constructed (tests/mp/test_poller.py proves it).
import array

from micropython import const

from bankgate import clock
from bankgate import discovery as dsc
from bankgate.model import scratch
from bankgate.pollslow import GROUP_RECHECK_MS, IDENT_PERIOD_MS, NoSlots, SlowReads
from bankgate.proto import errors as perr
from bankgate.proto import registry

REPROBE_MS = const(5000)         # a lost/missing module is asked this often
_LOST_AFTER = const(3)            # consecutive timeouts that make a module "lost"
CAN_MOD_BASE = const(0x400)
CAN_FRAME_MS = const(1000)       # modules send their frame set once a second (Pylontech CAN)
_CAN_WAIT_MS = const(10)          # CAN: idle at most this long (hw.idle wakes on input anyway)

# last_error codes for bus-level failures (the proto codes stop at -21)
_E_BUS_TIMEOUT = const(-101)
_E_BUS_GAP = const(-102)
E_BUS_OVERFLOW = const(-103)
E_BUS_NOISE = const(-104)

_PH_SCAN = const(0)
_PH_GROUP = const(1)
_PH_RUN = const(2)

_K_PROBE = const(0)
_K_GROUP = const(1)
_K_IDENT = const(2)
_K_POLL = const(3)
_K_REPROBE = const(4)
_K_COUNT = const(5)      # group query re-read for its pack count only (pollslow._group_recheck)

_CMASK = const(0x3FFFFFFF)
_MAX_CMDS = const(12)

# driver results (bankgate.bus.rs485)
_BUSY = const(0)
_DONE = const(1)
_TIMEOUT = const(-1)
_GAP = const(-2)
_OVERFLOW = const(-3)
_NOISE = const(-4)


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
    classification of RS485 and CAN frames (Poller._finish, pollcan.CanReception)."""
    if code >= 0:
        return dsc.R_GOOD
    if cat == perr.CAT_CHECKSUM or cat == perr.CAT_FRAMING:
        return dsc.R_CORRUPT
    return dsc.R_REJECT


class Poller(SlowReads):
    """The module-bus poller (see the notes above).  CAN module-bus reception is a
    bankgate.pollcan.CanReception (self._canrx, CAN only), the sweeps and slow reads
    of the RS485 cycle are bankgate.pollslow.SlowReads (state on this object)."""

    def __init__(self, hw, cfg, bank, events):
        b = cfg["bank"]
        c = cfg["control"]
        self.hw = hw
        self.bank = bank
        self.events = events
        self.fam = registry.get(b["family"])
        fam = self.fam
        self.is_can = b["bus"] == "can"
        self.timeout_ms = c["poll_timeout_ms"]
        self.gap_ms = c["poll_gap_ms"]
        self.scan_from = b["scan_from"]
        self.scan_to = b["scan_to"]
        # probe list: the scan range plus configured addresses outside it
        seen = bytearray(256)
        plist = []
        for a in range(self.scan_from, self.scan_to + 1):
            seen[a] = 1
            plist.append(a)
        for a in b["addresses"]:
            if not seen[a]:
                seen[a] = 1
                plist.append(a)
        self._probe_list = bytes(plist)
        # slots: configured addresses first, in cfg order
        n = len(bank.modules)
        for i, a in enumerate(b["addresses"]):
            bank.modules[i].addr = a
        bank.n_used = len(b["addresses"])
        self.discovery = dsc.Discovery(cfg, bank, events)
        self._init_cmds(fam, n)
        # per-slot schedule state
        self._miss = bytearray(n)                      # consecutive timeouts
        self.lost_mask = 0                             # slots currently lost (not answering)
        self._t_reprobe = array.array("i", bytes(4 * n))
        self._id_pending = 0                           # slots whose identity is to be read
        self._t_ident = 0
        self._gone_ms = cfg["gating"]["max_age_ms"]     # lost longer: forget the identity
        self._init_slow(cfg, n)
        self._scratch = scratch()                      # decode target for unassigned addresses
        # transaction state
        self._tx = bytearray(64)
        self._busy = False
        self._t_next = 0
        self._t_kind = 0
        self._t_addr = 0
        self._t_slot = -1
        self._t_cmd = 0
        self._t_tries = 0
        self._phase = _PH_SCAN
        self._pi = 0                                   # probe list index
        self._cur = 0                                  # current slot in the cycle
        self._ci = 0                                   # index into the current command list
        self._ident_run = False                        # the current slot visit reads identity
        self._rescan = False
        self.hold = False          # set by BusHealth's terminator check: start nothing new
        self.sweep_count = 0
        self.transactions = 0
        self._started = False
        self._t_aged = 0                               # last aging pass (_age)
        self._age_k = 0
        self.rs = None
        self.can = None
        self.can_recovery = None   # bankgate.bus.can.BusOffRecovery (CAN module bus)
        if self.is_can:
            self.can = hw.can_modules
            from bankgate.bus.can import BUS_MODULES, BusOffRecovery
            from bankgate.pollcan import CanReception
            self.can_recovery = BusOffRecovery(self.can, events, BUS_MODULES, cfg["bank"]["baud"])
            self._canrx = CanReception(self, n, outcome_of, can_id_to_addr)
        else:
            from bankgate.bus.rs485 import Rs485Master
            # room for the longest reply of the family (a 16-pack group answer)
            self.rs = Rs485Master(hw.uart, hw.de_pin, hw.clock, self.timeout_ms,
                                  rxbuf_size=getattr(fam, "MAX_FRAME", 512))

    def _init_cmds(self, fam, n):
        # commands (RS485 families; the CAN family has none: modules send unasked)
        self._poll_cmds = bytes(getattr(fam, "POLL_CMDS", ()))
        self._ident_cmds = bytes(getattr(fam, "IDENT_CMDS", ()))
        vcmd = getattr(fam, "CMD_VERSION", 0)
        if vcmd in self._ident_cmds or not self._ident_cmds:
            self.probe_cmd = vcmd
        else:
            self.probe_cmd = self._ident_cmds[0]
        self._serial_cmd = getattr(fam, "CMD_SERIAL", -1)
        self._group = bool(getattr(fam, "SUPPORTS_GROUP", False)) and \
            hasattr(fam, "encode_group_request")
        cmds = []
        for x in tuple(self._poll_cmds) + tuple(self._ident_cmds) + (self.probe_cmd,):
            if x not in cmds:
                cmds.append(x)
        self.cmd_ids = bytes(cmds[:_MAX_CMDS])
        k = len(self.cmd_ids)
        self.cmd_req = array.array("i", bytes(4 * k))   # transactions per command
        self.cmd_bad = array.array("i", bytes(4 * k))   # corrupt replies (checksum/framing/driver)
        self.cmd_len = array.array("i", bytes(4 * k))   # bytes of the last good reply frame

    # ------------------------------------------------------------------ public
    def rescan(self):
        """Start a new discovery after the transaction in flight."""
        self._rescan = True

    def busy(self):
        """A request is in flight (the bus is not idle)."""
        return self._busy

    def wait_ms(self, now):
        if self.is_can:
            return _CAN_WAIT_MS
        if self._busy:
            return self.rs.wait_ms(now)
        if self.hold:
            return 1
        d = clock.diff(self._t_next, now)
        return d if d > 0 else 0

    def service(self, now):
        """Advance the bus; return the slot whose record a decoded frame changed, else -1."""
        if not self._started or clock.pass_due(now, self._t_aged):
            self._age(now)
        if self.is_can:
            self.can_recovery.service(now)     # bus-off: restart with backoff (bus/can.py)
            return self._canrx.service(now)
        if not self._started:
            self._started = True
            self.discovery.begin_scan(now)
            self._t_ident = clock.add(now, IDENT_PERIOD_MS)
            self._t_next = now                         # the first request at once, any tick
        if self._busy:
            r = self.rs.poll(now)
            if r == _BUSY:
                return -1
            self._busy = False
            self._t_next = clock.add(now, self.gap_ms)
            slot = self._finish(r, now)
            if slot >= 0:
                return slot
        if not self.hold and clock.due(now, self._t_next):
            self._start_next(now)
        return -1

    def _age(self, now):
        """Aging pass of the time model (bankgate.clock.hold): every deadline and stamp
        is held within clock.AGE_MAX of now, so a deadline nobody looked at for days
        is still past due (not 6.2 days ahead).  Runs at least every AGE_PASS_MS."""
        self._t_aged = now
        self._t_next = clock.hold(now, self._t_next)
        self._t_ident = clock.hold(now, self._t_ident)
        self._t_group = clock.hold(now, self._t_group)
        k = self._age_k                                # one slot per pass (round robin)
        self._age_k = k + 1 if k + 1 < len(self._t_reprobe) else 0
        clock.hold_range(now, self._t_reprobe, k, k + 1)
        if self.is_can:
            self._canrx.age(now, k)
        self.discovery.age(now, k)

    # ------------------------------------------------------------------ scheduling
    def _start(self, kind, addr, slot, cmd, now):
        fam = self.fam
        if kind == _K_GROUP or kind == _K_COUNT:
            n = fam.encode_group_request(cmd, addr, self._tx)
        else:
            n = fam.encode_request(cmd, addr, self._tx)
        if n <= 0:                      # the family cannot ask this: skip it
            return
        self._t_kind = kind
        self._t_addr = addr
        self._t_slot = slot
        self._t_cmd = cmd
        self._busy = True
        self.rs.start(self._tx, n)

    def _start_next(self, now):
        if self._rescan:
            self._rescan = False
            self._phase = _PH_SCAN
            self._pi = 0
            self._t_tries = 0
            self.discovery.begin_scan(now)
        if self._phase == _PH_SCAN:
            if self._pi < len(self._probe_list):
                a = self._probe_list[self._pi]
                self._t_tries += 1
                self._start(_K_PROBE, a, self.discovery.slot_of(a), self.probe_cmd, now)
                return
            self._end_scan(now)
        if self._phase == _PH_GROUP:
            self._phase = _PH_RUN
            master = self._group_master()
            if master >= 0:
                self._start(_K_GROUP, master, -1, self.fam.CMD_ANALOG, now)
                return
        self._start_routine(now)

    def _group_master(self):
        mods = self.bank.modules
        best = -1
        for s in range(self.bank.n_used):
            m = mods[s]
            if m.seen and (best < 0 or m.addr < best):
                best = m.addr
        return best

    def _end_scan(self, now):
        d = self.discovery
        d.end_scan(now, self.scan_from, self.scan_to)
        mods = self.bank.modules
        self._id_pending = 0
        self.lost_mask = 0
        for s in range(self.bank.n_used):
            if d.answered(mods[s].addr):
                self._id_pending |= 1 << s
                self._miss[s] = 0
            else:
                self.lost_mask |= 1 << s
                self._t_reprobe[s] = clock.add(now, REPROBE_MS)
        self._cur = 0
        self._ci = 0
        self._ident_run = False
        self._phase = _PH_GROUP if self._group else _PH_RUN

    def _start_routine(self, now):
        """Pick the next (slot, command) of the cycle and start it."""
        n = self.bank.n_used
        if n == 0:
            self._t_next = clock.add(now, REPROBE_MS)
            return
        for _ in range(n + 1):
            s = self._cur
            if s >= n:
                self._new_sweep(now)
                s = 0
                self._cur = 0
                if self._busy:           # the sweep starts with a group count re-read
                    return
            bit = 1 << s
            a = self.bank.modules[s].addr
            if self.lost_mask & bit:
                self._cur = s + 1
                if clock.due(now, self._t_reprobe[s]):
                    self._t_reprobe[s] = clock.add(now, REPROBE_MS)
                    self._forget_if_gone(s, now)
                    self._start(_K_REPROBE, a, s, self.probe_cmd, now)
                    return
                continue
            cmds = self._fast_cmds
            if self._ci < len(cmds):
                cmd = cmds[self._ci]
                self._ci += 1
                self._start(_K_POLL, a, s, cmd, now)
                if self._busy:
                    return
                continue
            # the slot's fast commands are done: at most one slow transaction
            if self._slow_after(s, now):
                return
            self._ci = 0
            self._v_mgmt = False
            self._v_ident = 0
            self._cur = s + 1
            continue
        # every slot lost: wait for the earliest re-probe
        t = self._t_reprobe[0]
        for s in range(1, n):
            if clock.diff(self._t_reprobe[s], t) < 0:
                t = self._t_reprobe[s]
        self._t_next = t

    def _forget_if_gone(self, s, now):
        """Before re-probing lost slot s: when its data is older than gating.max_age_ms
        (admission already counts the module as gone, its contactor is open), a
        different module may answer now (replaced at the same address): forget the
        identity, so the identity checks wait for the new module's own (model,
        firmware).  A shorter dropout keeps it (the module cannot have been swapped;
        its serial is re-read anyway).  Allocation-free."""
        m = self.bank.modules[s]
        if m.id_valid and (not m.analog_valid or clock.diff(now, m.t_analog) > self._gone_ms):
            m.clear_identity()

    # ------------------------------------------------------------------ completion
    def _cmd_index(self, cmd):
        ids = self.cmd_ids
        for i in range(len(ids)):
            if ids[i] == cmd:
                return i
        return -1

    def _finish(self, r, now):
        """Account for the finished transaction; return the changed slot or -1."""
        self.transactions += 1
        kind = self._t_kind
        slot = self._t_slot
        m = self.bank.modules[slot] if slot >= 0 else None
        code = self._result(r, m, now)
        cat = perr.CAT_NONE
        if code == _E_BUS_TIMEOUT:
            outcome = dsc.R_TIMEOUT
        else:
            if code <= _E_BUS_GAP:
                cat = perr.CAT_FRAMING             # driver failures (E_BUS_*)
            elif code < 0:
                cat = perr.category(code)
            outcome = outcome_of(code, cat)
        ci = self._cmd_index(self._t_cmd)
        if ci >= 0:
            self.cmd_req[ci] = (self.cmd_req[ci] + 1) & _CMASK
            if outcome == dsc.R_CORRUPT:
                self.cmd_bad[ci] = (self.cmd_bad[ci] + 1) & _CMASK
            elif outcome == dsc.R_GOOD and kind != _K_GROUP and kind != _K_COUNT:
                self.cmd_len[ci] = self.rs.n
        if kind == _K_GROUP or kind == _K_COUNT:
            self._t_group = clock.add(now, GROUP_RECHECK_MS)
            if outcome == dsc.R_GOOD:
                # decode_group returns the packs it wrote (those with a slot); the
                # count the master reported comes from the family (group_count)
                self.discovery.set_group_count(self.fam.group_count())
                self.discovery.recount(now)
            return -1
        if m is not None:
            self._count(m, outcome, cat, code, now)
        if kind == _K_PROBE:
            addr = self._t_addr
            self.discovery.probe_result(addr, outcome)
            if not self.discovery.probe_needs_retry(addr, self._t_tries):
                self._pi += 1
                self._t_tries = 0
            return slot if (outcome == dsc.R_GOOD and m is not None) else -1
        return self._routine_done(slot, outcome, now)

    def _result(self, r, m, now):
        """Result code of the transaction that ended with driver result r: decodes a
        complete reply (into m, the scratch record, or the bank for a group answer);
        a timeout is _E_BUS_TIMEOUT, a driver failure E_BUS_* (framing)."""
        if r == _DONE:
            rs = self.rs
            try:
                if self._t_kind == _K_GROUP:
                    return self.fam.decode_group(self._t_cmd, rs.rx, rs.n, self.bank, self._t_addr, now)
                if self._t_kind == _K_COUNT:         # validated, no slot written
                    return self.fam.decode_group(self._t_cmd, rs.rx, rs.n, NoSlots, self._t_addr, now)
                return self.fam.decode(self._t_cmd, rs.rx, rs.n, self._t_addr,
                                       m if m is not None else self._scratch, now)
            except Exception:
                return perr.E_TRUNCATED     # a decoder bug must not stop the bus
        if r == _TIMEOUT:
            return _E_BUS_TIMEOUT
        return _E_BUS_GAP if r == _GAP else (E_BUS_OVERFLOW if r == _OVERFLOW else E_BUS_NOISE)

    def _routine_done(self, slot, outcome, now):
        """A routine transaction of an assigned slot ended: misses, lost/back."""
        d = self.discovery
        d.note(slot, outcome, now)
        bit = 1 << slot
        if outcome == dsc.R_TIMEOUT:
            if self._miss[slot] < 255:
                self._miss[slot] += 1
            if self._miss[slot] >= _LOST_AFTER and not (self.lost_mask & bit):
                self.lost_mask |= bit
                self._t_reprobe[slot] = clock.add(now, REPROBE_MS)
                if self._cur == slot:          # abandon the rest of this visit
                    self._ci = 0
                    self._ident_run = False
                    self._v_mgmt = False
                    self._v_ident = 0
                    self._cur = slot + 1
            return -1
        self._miss[slot] = 0
        if self.lost_mask & bit:                # a lost module answers again
            self.lost_mask &= ~bit
            self._id_pending |= bit
        if outcome != dsc.R_GOOD:
            return -1
        if self._t_kind == _K_IDENT and self._t_cmd == self._serial_cmd:
            d.identity(slot, now)
        return slot

    def _count(self, m, outcome, cat, code, now):
        m.st_requests = (m.st_requests + 1) & _CMASK
        if outcome == dsc.R_GOOD:
            m.st_good = (m.st_good + 1) & _CMASK
            lat = self.rs.latency_ms if self.rs is not None else 0
            m.st_lat_sum_ms = (m.st_lat_sum_ms + lat) & _CMASK
            if lat > m.st_lat_max_ms:
                m.st_lat_max_ms = lat
            m.t_last_reply = now
            m.seen = True
            return
        m.last_error = code
        if outcome == dsc.R_TIMEOUT:
            m.st_timeouts = (m.st_timeouts + 1) & _CMASK
        elif cat == perr.CAT_CHECKSUM:
            m.st_checksum = (m.st_checksum + 1) & _CMASK
        elif cat == perr.CAT_FRAMING:
            m.st_framing = (m.st_framing + 1) & _CMASK
        elif cat == perr.CAT_RTN:
            m.st_rtn = (m.st_rtn + 1) & _CMASK
            m.t_last_reply = now
        else:
            m.st_invalid = (m.st_invalid + 1) & _CMASK
            m.t_last_reply = now
