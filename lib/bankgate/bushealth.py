# Bus health: classify the module bus from the per-address statistics the poller
# keeps in the Module records (and its per-command counters), over a sliding
# window, and -- where the board can -- check the gateway's own terminator.
# docs/bus_health.md explains the classifier and its numbers; the constants below
# are the single source of those numbers.
#
# Window (RS485): a sample of every slot's cumulative counters is taken every
# SAMPLE_TX transactions (or SAMPLE_MAX_MS, whichever first); the window is the
# difference between the newest sample and the one WINDOW_SAMPLES samples older,
# i.e. about 256 transactions.  The verdict is re-evaluated at each sample.
#
# Verdicts, checked in this order:
#   DUPLICATE_ADDRESS    discovery holds a duplicate finding, or one address has
#                        >= DUP_PM corrupt replies while the rest of the bus has
#                        <= CLEAN_PM.
#   (CAN)                controller error-passive / bus-off or TEC+REC rising.
#   TERMINATION_SUSPECT  the terminator check measured a wrongly terminated bus.
#   TERMINATION_SUSPECT  errors (corrupt replies + timeouts of answering modules)
#   or WIRING_NOISE      >= ERR_PM of the window, at >= half the answering addresses.
#                        Which one: if the terminator check measured the termination
#                        right -> WIRING_NOISE (and re-check now and then); without
#                        the check: below TERM_STAT_MIN_BAUD -> WIRING_NOISE
#                        (reflections cannot matter), else TERMINATION_SUSPECT when
#                        the error rate grows with the reply length (long-frame rate
#                        >= 1.5 x short-frame rate and >= 2 % points above it),
#                        WIRING_NOISE when it does not.
#   MODULE_OFFLINE       an address the poller gave up on (lost), or one answering
#                        <= OFFLINE_ANSWER_PM of its requests with no corrupt reply.
#   HEALTHY              none of the above.
# A new non-healthy verdict must be seen in CONFIRM consecutive evaluations (a
# duplicate finding from discovery is taken at once); HEALTHY likewise.  Each
# change emits EV_BUS (a = verdict, b = the main evidence number: error permille,
# or the address for DUPLICATE/OFFLINE).
#
# Rejoin after a fault ends (issue #21): a verdict is RAISED on the whole window
# (about 256 transactions: statistics), but it is CLEARED on recent evidence -- the
# newest CLEAR_SAMPLES samples (64 transactions, >= MIN_REQUESTS) with not one corrupt
# reply, timeout or lost module, every used slot answering, no duplicate finding, no
# wrong termination measured, and on CAN no controller error-passive or worse and no
# TEC/REC rise.  Still CONFIRM consecutive evaluations, so 96 clean transactions in a
# row (about 11 s for 3 modules at 9600 baud, 1-2 s at 115200): a bus at the raise
# threshold (ERR_PM, 3 %) shows that by chance with p <= 0.97**96 = 5 %, at 10 %
# errors with p < 1e-4 -- and a verdict cleared by chance is raised again by the
# next window.  On clearing, the window restarts at the newest sample, so errors from
# before the clear cannot raise the verdict again.  Without this, the old errors had
# to age out of the whole window first: 28-35 s after an RS485 fault ended at 9600
# baud.  A cleared verdict only lets joins go ahead: each still needs fresh data
# (gating.max_age_ms), every admission check and the voltage gate held for
# gating.dwell_ms, one close per dwell (docs/bus_health.md "Rejoin").
#
# CAN module bus: controller state and TEC/REC are sampled with the window;
# BUS_OFF / ERROR_PASSIVE, or REC/TEC rising by >= CAN_ERR_RISE over the window,
# is WIRING_NOISE (TERMINATION_SUSPECT when the terminator check says so); silent
# modules are MODULE_OFFLINE.
#
# Terminator check (board with hw.terminator and hw.idle_adc): with the bus idle
# (the poller holds), the idle differential voltage is read with the gateway's
# 120 ohm terminator off (v_off) and on (v_on).  The fail-safe bias of the bus
# makes the idle voltage proportional to the terminating resistance as long as it
# is small against the bias resistors, so ratio = v_on / v_off = R_other || 120 /
# R_other = 120 / (120 + R_other):
#     no other terminator   R_other >~ 1 kohm (unit loads)  ratio <~ 0.11 (0.16 with
#                                                            560 ohm bias)
#     one other (far end)   R_other = 120                   ratio 0.50 .. 0.54
#     two others            R_other = 60                    ratio 0.67 .. 0.69
#     three others          R_other = 40                    ratio 0.75
# Thresholds (permille) half-way between: < TERM_NONE_PM (300): nothing else
# terminates the bus -> ours on, and still TERMINATION_SUSPECT (far end missing);
# < TERM_ONE_PM (600): one other -> ours ON (correct: two in total); < TERM_TWO_PM
# (710): two others -> ours OFF; above: over-terminated -> ours OFF and
# TERMINATION_SUSPECT.  v_off below IDLE_MIN_MV means no fail-safe bias (or a
# short): the check cannot judge and leaves the switch as it was.
# update() allocates nothing.
import array

from micropython import const

from bankgate import clock
from bankgate.events import EV_BUS
from bankgate.model import zeros

HEALTHY = const(0)
TERMINATION_SUSPECT = const(1)
WIRING_NOISE = const(2)
DUPLICATE_ADDRESS = const(3)
MODULE_OFFLINE = const(4)
VERDICT_NAMES = ("healthy", "termination_suspect", "wiring_noise", "duplicate_address",
                 "module_offline")

# evidence[] indices
EVI_ERR_PM = const(0)        # corrupt replies + timeouts of answering modules, permille of requests
_EVI_TIMEOUTS = const(1)      # timeouts in the window
EVI_ADDR = const(2)          # the address behind the verdict (-1: bus-wide)
_EVI_REQUESTS = const(3)      # requests in the window
EVI_LONG_PM = const(4)       # corrupt permille of the longest reply type
EVI_SHORT_PM = const(5)      # corrupt permille of the shortest reply type
_EVI_JUNK = const(6)          # bytes outside frames in the window (RS485)
EVI_N_ADDR = const(7)        # addresses affected
EVI_CAN_STATE = const(8)
_EVI_CAN_TEC = const(9)
EVI_CAN_REC = const(10)
EVI_IDLE_OFF_MV = const(11)  # last terminator check: idle mV with ours off / on, -1 none
EVI_IDLE_ON_MV = const(12)
_EVI_TERM = const(13)         # last terminator check result (TERM_*)
_N_EVIDENCE = const(14)
EVIDENCE_NAMES = ("error_pm", "timeouts", "addr", "requests", "long_frame_pm", "short_frame_pm",
                  "junk_bytes", "n_addr", "can_state", "can_tec", "can_rec", "idle_off_mv",
                  "idle_on_mv", "terminator")

# classifier numbers (see docs/bus_health.md)
SAMPLE_TX = const(32)
_SAMPLE_MAX_MS = const(5000)
_WINDOW_SAMPLES = const(8)
_RING = const(_WINDOW_SAMPLES + 1)   # samples held (a constant, not an attribute:
                             # 37 attributes fit a 37-slot table, 39 took 47 slots)
_MIN_REQUESTS = const(48)     # fewer requests in the window: no new verdict
ERR_PM = const(30)           # bus-wide error rate that is a problem (3 %)
_CLEAN_PM = const(20)         # "the others are clean"
_DUP_PM = const(600)          # one address with this many corrupt replies: duplicate
_DUP_MIN_REQ = const(8)
_OFFLINE_ANSWER_PM = const(200)   # answers at most 20 % of its requests -> offline
_LEN_GROWTH_PCT = const(150) # length-dependent: long-frame rate >= 1.5 x short-frame rate ...
_LEN_MARGIN_PM = const(20)    # ... and at least 2 % points above it
_LEN_MIN_RATIO = const(2)     # compare only replies at least 2 x apart in length
_TERM_STAT_MIN_BAUD = const(38400)  # below: reflections cannot matter (see docs)
_RECHECK_MS = const(60000)    # spread errors re-run the terminator check at most this often
_LEN_MIN_REQ = const(16)
_CONFIRM = const(2)
_CLEAR_SAMPLES = const(2)     # recent samples that must be clean to clear a verdict (see above)
_OK_MAX_PM = const(250)       # ok() false above this error rate (data no longer flows)
_CAN_ERR_RISE = const(16)

# terminator check
_TERM_UNKNOWN = const(0)
TERM_NONE = const(1)         # nothing else terminates the bus
TERM_ONE = const(2)          # one other terminator: ours on
TERM_TWO = const(3)          # two others: ours off
TERM_MANY = const(4)         # over-terminated
TERM_NO_BIAS = const(5)      # idle voltage too low to judge
TERM_NAMES = ("unknown", "none", "one_other", "two_others", "over_terminated", "no_bias")
_TERM_NONE_PM = const(400)
_TERM_ONE_PM = const(600)
_TERM_TWO_PM = const(710)
_IDLE_MIN_MV = const(20)
_TERM_SETTLE_MS = const(5)
_TERM_READS = const(4)
_TERM_PERIOD_MS = const(600000)   # re-check every 10 minutes (and on demand)

_F = const(5)                # per-slot fields in a sample: req, good, timeouts, corrupt, rejected
# BusHealth._g: the window's totals (_window_sums) and the candidate's address (_candidate)
_G_REQ = const(0)
_G_BAD = const(1)
_G_TO_ANS = const(2)         # timeouts of modules that otherwise answer
_G_TO_ALL = const(3)
_G_N_ANS = const(4)          # answering addresses in the window
_G_N_ERR = const(5)          # answering addresses with errors
_G_WORST = const(6)          # slot with the worst corrupt rate (-1 none), and that rate
_G_WORST_PM = const(7)
_G_N_OFF = const(8)
_G_OFF_ADDR = const(9)
_G_ADDR = const(10)
_G_NADDR = const(11)
_G_N = const(12)
_MASK = const(0x3FFFFFFF)
_SMASK = const(0xFFFF)      # the sample ring holds counters mod 2**16 ('H'): a window's growth
                            # is at most _WINDOW_SAMPLES x (SAMPLE_TX + a loop iteration's), far below
_TC_IDLE = const(0)
_TC_WAIT_BUS = const(1)
_TC_OFF = const(2)
_TC_ON = const(3)


class _Terminator:
    """The terminator check (module comment): with the poller held at a bus pause,
    the idle differential voltage with our terminator off and on; BusHealth holds
    the state (hw, poller, evidence, term, _tc*)."""

    def check_terminator(self):
        """Ask for a terminator check at the next bus pause (no-op without hardware)."""
        if self.can_check:
            self._term_due = True

    def _term_step(self, now):
        tc = self._tc
        p = self.poller
        if tc == _TC_IDLE:
            if not self._term_due and clock.diff(now, self._t_term) < _TERM_PERIOD_MS:
                return
            self._term_due = False
            self._t_term = now
            self._tc_prev = self.hw.terminator.value()
            p.hold = True
            self._tc = _TC_WAIT_BUS
            return
        if tc == _TC_WAIT_BUS:
            if p.busy():
                return
            self.hw.terminator.value(0)
            self._tc_t = now
            self._tc = _TC_OFF
            return
        if clock.diff(now, self._tc_t) < _TERM_SETTLE_MS:
            return
        if tc == _TC_OFF:
            self.evidence[EVI_IDLE_OFF_MV] = self._read_idle()
            self.hw.terminator.value(1)
            self._tc_t = now
            self._tc = _TC_ON
            return
        # _TC_ON
        v_off = self.evidence[EVI_IDLE_OFF_MV]
        v_on = self._read_idle()
        self.evidence[EVI_IDLE_ON_MV] = v_on
        self.term = judge_termination(v_off, v_on)
        self.evidence[_EVI_TERM] = self.term
        if self.term == TERM_NONE or self.term == TERM_ONE:
            want = 1
        elif self.term == TERM_TWO or self.term == TERM_MANY:
            want = 0
        else:
            want = self._tc_prev
        self.hw.terminator.value(want)
        p.hold = False
        self._tc = _TC_IDLE

    def _read_idle(self):
        adc = self.hw.idle_adc
        s = 0
        for _ in range(_TERM_READS):
            s += adc.read_mv()
        return s // _TERM_READS


class BusHealth(_Terminator):
    def __init__(self, hw, cfg, bank, poller, events):
        self.hw = hw
        self.bank = bank
        self.poller = poller
        self.events = events
        self.discovery = poller.discovery
        self.is_can = cfg["bank"]["bus"] == "can"
        self.baud = cfg["bank"]["baud"]
        n = len(bank.modules)             # (the sample layout's slot count: len(bank.modules))
        self._k = len(poller.cmd_ids)
        ring = _RING
        self._s = zeros("H", ring * n * _F)                 # (16 bits: half the bytes of "i")
        self._c = zeros("H", ring * 2 * max(self._k, 1))
        self._junk = array.array("i", bytes(4 * ring))
        self._tec = array.array("i", bytes(4 * ring))
        self._rec = array.array("i", bytes(4 * ring))
        self._head = 0
        self._filled = 0
        self._t_sample = 0
        self._tx_sample = 0
        # window deltas (per slot / per command), recomputed at each sample
        self.w = zeros("i", n * _F)
        self.wc_req = array.array("i", bytes(4 * max(self._k, 1)))
        self.wc_bad = array.array("i", bytes(4 * max(self._k, 1)))
        self.evidence = array.array("i", bytes(4 * _N_EVIDENCE))
        self._g = array.array("i", bytes(4 * _G_N))
        self.evidence[EVI_ADDR] = -1
        self.evidence[EVI_IDLE_OFF_MV] = -1
        self.evidence[EVI_IDLE_ON_MV] = -1
        self.verdict = HEALTHY
        self._cand = HEALTHY
        self._cand_n = 0
        self.evaluations = 0
        self.changes = 0
        self.fast_clears = 0         # verdicts cleared on recent evidence (rejoin after a fault)
        self.verdict_counts = array.array("i", bytes(4 * len(VERDICT_NAMES)))
        # terminator check
        self.can_check = hw.terminator is not None and hw.idle_adc is not None
        self.term = _TERM_UNKNOWN
        self._tc = _TC_IDLE
        self._tc_t = 0
        self._tc_prev = 0
        self._t_term = 0
        self._term_due = self.can_check   # check once at start
        self._started = False

    # ------------------------------------------------------------------ public
    def ok(self):
        """False when the bus cannot be trusted for admission: a duplicate address,
        an error rate above OK_MAX_PM, or a CAN controller that is bus-off."""
        if self.verdict == DUPLICATE_ADDRESS:
            return False
        if self.evidence[EVI_ERR_PM] > _OK_MAX_PM:
            return False
        if self.is_can and self.evidence[EVI_CAN_STATE] >= 3:
            return False
        return True

    def name(self):
        return VERDICT_NAMES[self.verdict]

    def snapshot(self):
        """Verdict and the numbers behind it, for telemetry (allocates)."""
        d = {"verdict": self.name()}
        for i in range(len(EVIDENCE_NAMES)):
            d[EVIDENCE_NAMES[i]] = self.evidence[i]
        rec = getattr(self.poller, "can_recovery", None)
        if rec is not None:                  # CAN bus-off recovery (bankgate.bus.can)
            d["can_recovery"] = rec.snapshot()
            if rec.fault:
                d["can_diagnosis"] = rec.diagnosis()
        return d

    def update(self, now):
        """Sample / classify when due; run the terminator check state machine.
        Returns the verdict.  Allocates nothing."""
        if not self._started:
            self._started = True
            self._t_sample = now
            self._t_term = now
            self._tx_sample = self.poller.transactions
            self._sample(now)
        # time model (bankgate.clock.hold): the terminator-check stamps are held
        # within clock.AGE_MAX of now (a re-check after weeks is not 6 days late)
        self._t_term = clock.hold(now, self._t_term)
        self._t_sample = clock.hold(now, self._t_sample)
        if self.can_check:
            self._term_step(now)
        tx = self.poller.transactions
        if (tx - self._tx_sample) & _MASK >= SAMPLE_TX or \
                clock.diff(now, self._t_sample) >= _SAMPLE_MAX_MS:
            self._t_sample = now
            self._tx_sample = tx
            self._sample(now)
            self._classify(now)
        return self.verdict

    # ------------------------------------------------------------------ sampling
    def _sample(self, now):
        ring = _RING
        h = self._head
        mods = self.bank.modules
        s = self._s
        n = len(self.bank.modules)
        base = h * n * _F
        for i in range(n):
            m = mods[i]
            j = base + i * _F
            s[j] = m.st_requests & _SMASK
            s[j + 1] = m.st_good & _SMASK
            s[j + 2] = m.st_timeouts & _SMASK
            s[j + 3] = (m.st_checksum + m.st_framing) & _SMASK
            s[j + 4] = (m.st_rtn + m.st_invalid) & _SMASK
        p = self.poller
        k = self._k
        c = self._c
        cb = h * 2 * k
        for i in range(k):
            c[cb + 2 * i] = p.cmd_req[i] & _SMASK
            c[cb + 2 * i + 1] = p.cmd_bad[i] & _SMASK
        rs = p.rs
        if rs is not None:
            self._junk[h] = (rs.noise + rs.stale) & _MASK
        can = p.can
        if can is not None:
            self._tec[h] = can.tec()
            self._rec[h] = can.rec()
        # window = newest - oldest
        if self._filled < ring:
            self._filled += 1
        old = (h + ring - (self._filled - 1)) % ring
        self._head = (h + 1) % ring
        w = self.w
        ob = old * n * _F
        for j in range(n * _F):
            w[j] = (s[base + j] - s[ob + j]) & _SMASK
        obc = old * 2 * k
        for i in range(k):
            self.wc_req[i] = (c[cb + 2 * i] - c[obc + 2 * i]) & _SMASK
            self.wc_bad[i] = (c[cb + 2 * i + 1] - c[obc + 2 * i + 1]) & _SMASK
        ev = self.evidence
        ev[_EVI_JUNK] = (self._junk[h] - self._junk[old]) & _MASK
        if can is not None:
            ev[EVI_CAN_STATE] = can.state()
            ev[_EVI_CAN_TEC] = self._tec[h]
            ev[EVI_CAN_REC] = self._rec[h]

    # ------------------------------------------------------------------ classifier
    def _classify(self, now):
        self.evaluations += 1
        ev = self.evidence
        self._window_sums()
        g = self._g
        req = g[_G_REQ]
        err_pm = (g[_G_BAD] + g[_G_TO_ANS]) * 1000 // req if req else 0
        ev[_EVI_REQUESTS] = req
        ev[_EVI_TIMEOUTS] = g[_G_TO_ALL]
        ev[EVI_ERR_PM] = err_pm
        self._length_rates()
        dup_slot = self._dup_finding()
        cand = self._candidate(now, dup_slot, err_pm)
        addr = g[_G_ADDR]
        naddr = g[_G_NADDR]
        main = addr if cand == DUPLICATE_ADDRESS or cand == MODULE_OFFLINE else err_pm
        if cand == HEALTHY and req < _MIN_REQUESTS and self.verdict != HEALTHY:
            cand = self.verdict         # too little data to clear a verdict
        fast = False
        if cand != HEALTHY and self.verdict != HEALTHY and dup_slot < 0 and self._recent_clean():
            cand = HEALTHY              # the fault ended: recent evidence clears (see header)
            fast = True
        # debounce
        if cand == self.verdict:
            self._cand_n = 0
        else:
            if cand == self._cand:
                self._cand_n += 1
            else:
                self._cand = cand
                self._cand_n = 1
            if self._cand_n >= _CONFIRM or (cand == DUPLICATE_ADDRESS and dup_slot >= 0):
                self.verdict = cand
                self._cand_n = 0
                self.changes += 1
                if fast:
                    self._filled = 1        # the window restarts at the newest sample
                    ev[EVI_ERR_PM] = 0
                    main = 0
                    addr = -1
                    naddr = 0
                    self.fast_clears += 1
                self.events.emit(now, EV_BUS, addr, cand, main)
        ev[EVI_ADDR] = addr
        ev[EVI_N_ADDR] = naddr
        self.verdict_counts[self.verdict] += 1

    def _window_sums(self):
        """The window's totals over the slots into self._g: requests, corrupt replies,
        timeouts (all, and of modules that otherwise answer), answering addresses and
        those with errors, the address with the worst corrupt rate, the offline ones."""
        w = self.w
        g = self._g
        for k in range(_G_N):
            g[k] = 0
        g[_G_WORST] = -1
        g[_G_OFF_ADDR] = -1
        lost = self.poller.lost_mask
        for i in range(self.bank.n_used):
            j = i * _F
            r = w[j]
            if (lost >> i) & 1:       # the poller gave up on it (only re-probed now)
                self._offline(i)
                g[_G_REQ] += r
                g[_G_TO_ALL] += w[j + 2]
                continue
            if r == 0:
                continue
            t = w[j + 2]
            b = w[j + 3]
            g[_G_REQ] += r
            g[_G_BAD] += b
            g[_G_TO_ALL] += t
            if (r - t) * 1000 <= _OFFLINE_ANSWER_PM * r and b == 0:
                self._offline(i)
                continue
            g[_G_N_ANS] += 1
            g[_G_TO_ANS] += t
            if b + t:
                g[_G_N_ERR] += 1
            if r >= _DUP_MIN_REQ:
                pm = b * 1000 // r
                if pm > g[_G_WORST_PM]:
                    g[_G_WORST_PM] = pm
                    g[_G_WORST] = i

    def _offline(self, i):
        g = self._g
        g[_G_N_OFF] += 1
        if g[_G_OFF_ADDR] < 0:
            g[_G_OFF_ADDR] = self.bank.modules[i].addr

    def _candidate(self, now, dup_slot, err_pm):
        """The verdict the window's evidence points to, in order of precedence; the
        address behind it and the number of addresses go to self._g."""
        g = self._g
        w = self.w
        req = g[_G_REQ]
        cand = HEALTHY
        g[_G_ADDR] = -1
        g[_G_NADDR] = 0
        # 1. duplicate address
        worst = g[_G_WORST]
        if dup_slot >= 0:
            cand = DUPLICATE_ADDRESS
            g[_G_ADDR] = self.bank.modules[dup_slot].addr
            g[_G_NADDR] = 1
        elif worst >= 0 and g[_G_WORST_PM] >= _DUP_PM and req >= _MIN_REQUESTS:
            j = worst * _F
            rest_req = req - w[j]
            rest_bad = g[_G_BAD] - w[j + 3]
            if rest_req >= _DUP_MIN_REQ and rest_bad * 1000 <= _CLEAN_PM * rest_req:
                cand = DUPLICATE_ADDRESS
                g[_G_ADDR] = self.bank.modules[worst].addr
                g[_G_NADDR] = 1
        if cand == HEALTHY and self.is_can:
            cand = self._can_verdict()
        if cand == HEALTHY and (self.term == TERM_NONE or self.term == TERM_MANY):
            cand = TERMINATION_SUSPECT
        n_ans = g[_G_N_ANS]
        if cand == HEALTHY and req >= _MIN_REQUESTS and err_pm >= ERR_PM \
                and g[_G_N_ERR] * 2 >= n_ans and n_ans > 0:
            cand = self._spread_verdict(now)
            g[_G_NADDR] = g[_G_N_ERR]
        n_off = g[_G_N_OFF]
        if cand == HEALTHY and n_off > 0 and (n_ans > 0 or self.bank.n_used == n_off):
            cand = MODULE_OFFLINE
            g[_G_ADDR] = g[_G_OFF_ADDR]
            g[_G_NADDR] = n_off
        return cand

    def _recent_clean(self):
        """The newest CLEAR_SAMPLES samples: >= MIN_REQUESTS transactions, not one error,
        every used slot answered, nothing lost, termination not measured wrong, CAN
        controller error-active/warning with no TEC/REC rise.  Allocates nothing."""
        if self._filled <= _CLEAR_SAMPLES:
            return False
        if self.poller.lost_mask:
            return False
        if self.term == TERM_NONE or self.term == TERM_MANY:
            return False
        ring = _RING
        new = (self._head + ring - 1) % ring
        old = (self._head + ring - 1 - _CLEAR_SAMPLES) % ring
        if self.is_can:
            if self.evidence[EVI_CAN_STATE] >= 2:
                return False
            if (self._tec[new] - self._tec[old]) + (self._rec[new] - self._rec[old]) > 0:
                return False
        s = self._s
        n = self.bank.n_used
        nb = new * len(self.bank.modules) * _F
        ob = old * len(self.bank.modules) * _F
        req = 0
        for i in range(n):
            j = i * _F
            r = (s[nb + j] - s[ob + j]) & _SMASK
            good = (s[nb + j + 1] - s[ob + j + 1]) & _SMASK
            if good == 0:
                return False            # a used slot that did not answer
            if (s[nb + j + 2] - s[ob + j + 2]) & _SMASK or (s[nb + j + 3] - s[ob + j + 3]) & _SMASK:
                return False            # a timeout or a corrupt reply
            req += r
        return req >= _MIN_REQUESTS

    def _dup_finding(self):
        d = self.discovery
        for i in range(d.count):
            if d.f_code[i] == 1 and d.f_slot[i] >= 0:      # discovery.F_DUPLICATE
                return d.f_slot[i]
        return -1

    def _length_rates(self):
        """Corrupt permille of the longest and the shortest reply type in the window."""
        p = self.poller
        lo = -1
        hi = -1
        for i in range(self._k):
            if self.wc_req[i] < _LEN_MIN_REQ or p.cmd_len[i] <= 0:
                continue
            if lo < 0 or p.cmd_len[i] < p.cmd_len[lo]:
                lo = i
            if hi < 0 or p.cmd_len[i] > p.cmd_len[hi]:
                hi = i
        ev = self.evidence
        if lo < 0 or hi == lo or p.cmd_len[hi] < _LEN_MIN_RATIO * p.cmd_len[lo]:
            ev[EVI_LONG_PM] = -1
            ev[EVI_SHORT_PM] = -1
            return
        ev[EVI_LONG_PM] = self.wc_bad[hi] * 1000 // self.wc_req[hi]
        ev[EVI_SHORT_PM] = self.wc_bad[lo] * 1000 // self.wc_req[lo]

    def _length_dependent(self):
        ev = self.evidence
        lp = ev[EVI_LONG_PM]
        sp = ev[EVI_SHORT_PM]
        if lp < 0:
            return False
        return lp * 100 >= _LEN_GROWTH_PCT * sp and lp >= sp + _LEN_MARGIN_PM

    def _spread_verdict(self, now):
        """Errors spread over the bus: reflections (termination) or noise/wiring?"""
        t = self.term
        if t == TERM_NONE or t == TERM_MANY:
            return TERMINATION_SUSPECT
        if t == TERM_ONE or t == TERM_TWO:
            # measured and set right: what remains is noise / wiring.  Re-measure now
            # and then (a module's terminator DIP switch may have changed).
            if clock.diff(now, self._t_term) >= _RECHECK_MS:
                self._term_due = True
            return WIRING_NOISE
        if self.baud < _TERM_STAT_MIN_BAUD:
            return WIRING_NOISE
        return TERMINATION_SUSPECT if self._length_dependent() else WIRING_NOISE

    def _can_verdict(self):
        ev = self.evidence
        ring = _RING
        old = (self._head + ring - self._filled) % ring
        new = (self._head + ring - 1) % ring
        rise = (self._tec[new] - self._tec[old]) + (self._rec[new] - self._rec[old])
        if ev[EVI_CAN_STATE] >= 2 or rise >= _CAN_ERR_RISE:
            if self.term == TERM_NONE or self.term == TERM_MANY:
                return TERMINATION_SUSPECT
            return WIRING_NOISE
        return HEALTHY

    # ------------------------------------------------------------------ terminator check
def judge_termination(v_off_mv, v_on_mv):
    """TERM_* from the idle differential voltage with our terminator off / on."""
    if v_off_mv < _IDLE_MIN_MV or v_on_mv < 0:
        return TERM_NO_BIAS
    ratio_pm = v_on_mv * 1000 // v_off_mv
    if ratio_pm < _TERM_NONE_PM:
        return TERM_NONE
    if ratio_pm < _TERM_ONE_PM:
        return TERM_ONE
    if ratio_pm < _TERM_TWO_PM:
        return TERM_TWO
    return TERM_MANY
