# Sweeps and slow reads of the RS485 poll cycle (issue 15; part of
# bankgate.poller.Poller), and which slots' data is fresh by the plan (fresh_mask):
# limits (the family's CMD_MGMT) and identity (IDENT_CMDS) are spread one
# transaction at a time after slot visits, within the per-sweep time budget
# bankgate.pollplan computes, so the sweep - and the age of every module's alarm
# data - stays inside the bound the config validator checked.  Priorities and the
# one-per-slot-and-sweep rule: bankgate/poller.py, "Schedule".  State lives on the
# Poller (this is a mixin); allocation-free after _init_slow.
from micropython import const

from bankgate import clock
from bankgate import pollplan

IDENT_PERIOD_MS = const(60000)    # routine identity re-read (swap detection)
GROUP_RECHECK_MS = const(10000)   # group count re-read while a count mismatch stands
_K_IDENT = const(2)               # (bankgate.poller's transaction kinds)
_K_POLL = const(3)
_K_COUNT = const(5)
_F_COUNT = const(4)               # bankgate.discovery.F_COUNT


class NoSlots:
    """decode_group target of a count-only group read: every pack is validated (and the
    family's group_count() updated), none is written into a slot -- pack i is not
    necessarily the module at master + i (a silent or missing pack shifts the rest)."""

    @staticmethod
    def slot_for(addr):
        return None


class SlowReads:
    def _init_slow(self, cfg, n):
        fam = self.fam
        mg = getattr(fam, "CMD_MGMT", -1)
        self._mgmt_cmd = mg if mg in self._poll_cmds else -1
        self._fast_cmds = bytes([c for c in self._poll_cmds if c != self._mgmt_cmd])
        self._id_idx = bytearray(n)          # next identity command per slot
        # identity reads in slow order: the command carrying model + firmware first, so
        # no check judges a half-read identity (0x4F alone marks it valid)
        mfr = getattr(fam, "CMD_MFR", -1)
        order = [c for c in self._ident_cmds if c == mfr] + [c for c in self._ident_cmds if c != mfr]
        self._slow_ident = bytes(order)
        if cfg["bank"]["family"] == "pace":  # PACE sends no limits: stand-in rating/chemistry
            from bankgate import familycaps
            familycaps.configure_pace(cfg["gating"]["max_limit_ma"], cfg["bank"]["chemistry"])
        self._lim_half = cfg["gating"]["limits_max_age_ms"] // 2
        self._v_mgmt = False                 # a slow transaction followed this slot visit
        self._v_ident = 0                    # identity reads during this slot visit
        self._sp = 0                         # rotating slow pointer
        self._pc = 0                         # command of the last _slow_prio()
        self._pfast = False                  # ... a serial-only (swap confirmation) read
        self._slow_n = 0
        self._slow_done = 0                  # slots served a slow read this sweep (one each)
        self.plan = None
        cost = {}
        budget = 0
        if not self.is_can:
            p = pollplan.plan(cfg)
            self.plan = p
            b = cfg["bank"]
            fname = b["family"]
            for c in tuple(self._ident_cmds) + ((self._mgmt_cmd,) if self._mgmt_cmd >= 0 else ()):
                cost[c] = pollplan.tx_us(fname, c, b["baud"], b["cells"], self.gap_ms)
            if p is not None:
                budget = p["slow_budget_ms"] * 1000
        self._cost = cost                    # {cmd: wire time, us}: a few entries (a 256-entry
                                             # array took 1 KB of the ESP32's heap)
        self._slow_budget = budget
        self._t_group = 0
        if not self.is_can:
            b = cfg["bank"]
            self._fname = b["family"]
            self._baud = b["baud"]
            self._cells = b["cells"]
        self._slow_left = budget
        ma = cfg["gating"]["max_age_ms"]
        f = self.plan["worst_age_ms"] if self.plan is not None else 2 * pollplan.CAN_FRAME_MS + 500
        self._fresh_ms = f if f < ma else ma

    def _slow_prio(self, s, now):
        """Priority (0 = nothing) of slot s's next slow read; its command in self._pc."""
        bit = 1 << s
        if (self.lost_mask & bit) or s >= self.bank.n_used:
            return 0
        m = self.bank.modules[s]
        if not m.seen:
            return 0
        mg = self._mgmt_cmd
        idp = (self._id_pending & bit) != 0 and len(self._slow_ident) > 0
        if mg >= 0 and not m.mgmt_valid:
            self._pc = mg
            return 5
        self._pfast = False
        if idp and not m.id_valid:
            self._pc = self._slow_ident[self._id_idx[s]]
            return 4
        if idp and self._serial_cmd >= 0 and (self.discovery.id_fast_mask >> s) & 1:
            self._pc = self._serial_cmd         # swap confirmation: only the serial number
            self._pfast = True
            return 4
        if mg >= 0 and clock.diff(now, m.t_mgmt) >= self._lim_half:
            self._pc = mg
            return 3
        if idp:
            self._pc = self._slow_ident[self._id_idx[s]]
            return 2
        if mg >= 0:
            self._pc = mg
            return 1
        return 0

    def _slow_start(self, s, cmd, now, serial_only=False):
        if cmd == self._mgmt_cmd:
            kind = _K_POLL
        elif serial_only:
            kind = _K_IDENT
            self._id_pending &= ~(1 << s)
        else:
            kind = _K_IDENT
            k = self._id_idx[s] + 1
            if k >= len(self._slow_ident):
                k = 0
                self._id_pending &= ~(1 << s)
            self._id_idx[s] = k
        self._slow_left -= self._cost.get(cmd, 0)
        self._slow_n += 1
        self._start(kind, self.bank.modules[s].addr, s, cmd, now)

    def _slow_after(self, s, now):
        """After slot s's fast commands: start one slow transaction if one is due and
        fits this sweep's budget (True when a transaction was started)."""
        if self._v_mgmt or self._v_ident:
            return False                      # one slow transaction per slot visit
        n = self.bank.n_used
        best = 0
        bs = -1
        bc = 0
        bf = False
        j = self._sp
        done = self._slow_done
        for _ in range(n):
            if j >= n:
                j = 0
            if (done >> j) & 1:
                j += 1
                continue
            p = self._slow_prio(j, now)
            if p > best:
                best = p
                bs = j
                bc = self._pc
                bf = self._pfast
            j += 1
        if bs < 0:
            return False
        if self._slow_n and self._cost.get(bc, 0) > self._slow_left:
            return False                      # no room left in this sweep
        self._sp = bs + 1
        self._slow_done = done | (1 << bs)
        self._v_mgmt = True
        self._slow_start(bs, bc, now, bf)
        return self._busy

    def _group_recheck(self, now):
        """Start of a sweep: while discovery's count_mismatch stands, ask the group master
        for its pack count again (0x44 INFO FF, the short group answer; count only) every
        GROUP_RECHECK_MS, so the finding follows the group's count and clears once it
        agrees (it used to keep the count read after the last scan).  The read is a slow
        transaction of this sweep: it is skipped when it does not fit the sweep's slow
        budget (the bound the validator checked).  Allocation-free."""
        if not self._group or not self.discovery.has(_F_COUNT, -1):
            self._t_group = clock.add(now, GROUP_RECHECK_MS)   # (a deadline never gets old)
            return
        if not clock.due(now, self._t_group):
            return
        master = self._group_master()
        if master < 0:
            return
        d = self.discovery
        k = d.group_count if d.group_count > d.expected else d.expected
        cost = pollplan.group_tx_us(self._fname, 0x44, self._baud, self._cells, self.gap_ms, k)
        if cost > self._slow_left:
            return
        self._slow_left -= cost
        self._slow_n += 1
        self._t_group = clock.add(now, GROUP_RECHECK_MS)
        self._start(_K_COUNT, master, -1, self.fam.CMD_ALARM, now)

    def _new_sweep(self, now):
        self.sweep_count += 1
        self._slow_left = self._slow_budget
        self._slow_n = 0
        self._slow_done = 0
        if not self.is_can:
            self._group_recheck(now)
        mods = self.bank.modules
        if clock.due(now, self._t_ident):
            self._t_ident = clock.add(now, IDENT_PERIOD_MS)
            for s in range(self.bank.n_used):
                if mods[s].seen:
                    self._id_pending |= 1 << s
        self._id_pending |= self.discovery.id_fast_mask

    def fresh_mask(self, now):
        """Slots whose data is fresh by the poll plan (issue 15, aggregates to the
        inverter): answering (no missed reply since the last good one, not lost) and
        analog data no older than one planned worst-case sweep (RS485) or two CAN
        frame periods.  Zero allocation."""
        lim = self._fresh_ms
        mods = self.bank.modules
        out = 0
        for s in range(self.bank.n_used):
            m = mods[s]
            if not m.analog_valid or (self.lost_mask >> s) & 1:
                continue
            if not self.is_can and self._miss[s]:
                continue
            if clock.diff(now, m.t_analog) <= lim:
                out |= 1 << s
        return out
