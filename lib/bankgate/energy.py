# Charge / discharge energy counters (Wh) per module address and for the bank, persisted so
# that what telemetry publishes never goes backwards across a reset (Home Assistant
# `state_class: total_increasing`: a decrease is taken as a meter reset and would count the
# whole total again).
#
# Source: bankgate.metrics.Metrics.e_chg_wh / e_dsg_wh (per slot, exact integer energy of the
# admitted modules since boot).  fold() adds their growth since the last fold to the running
# totals (per address: a module keeps its counters when it moves to another slot; a new
# address takes a free entry, or the entry of an address no longer in the bank, from 0).
#
# Published = persisted: published() returns the totals as last written to the file, so a
# reset (which loses what was counted since) can only make the next values repeat, never
# drop.  The file is written (bankgate.latchstore.replace: write tmp, close, rename; the same
# atomic replace as the latched faults) when the unsaved energy reaches STEP_WH or, with any
# unsaved energy, PERIOD_MS after the last write.  Flash wear (docs/mqtt.md "Energy"): a
# 178-byte file; a 16 kWh bank cycled fully once a day moves 32 kWh = 320 writes of 100 Wh;
# littlefs appends each commit to a 4 KiB metadata pair and wear-levels blocks, so that is
# about 30 erases per day spread over the filesystem (the ESP32 flash endures 100 000 per
# sector).  A failed write is counted (errors) and retried after PERIOD_MS; the published
# values then stay at the last written ones.
#
# Record (little endian), file PATH:
#   0..3 b"BGEN", 4 version (1), 5 entries (16), 6..7 u16 generation,
#   8..11 bank charge Wh, 12..15 bank discharge Wh,
#   16 + 10 k: s16 address (-1 free), u32 charge Wh, u32 discharge Wh   (k = 0..15)
#   176..177 CRC-16/CCITT-FALSE of bytes 0..175
# Counters saturate at metrics.WH_MAX (2**30 - 1 Wh): every value is an ESP32 small int.
#
# Allocation: fold() allocates nothing; load() and a write allocate (file object, read buffer).
import array

from micropython import const

from bankgate import clock
from bankgate.latchstore import crc16, read, replace
from bankgate.metrics import WH_MAX
from bankgate.model import MAX_MODULES

PATH = "energy.bin"
TMP = "energy.tmp"
VERSION = const(1)
N = const(16)
SIZE = const(178)
_STEP_WH = const(100)            # write when this much energy is unsaved...
_PERIOD_MS = const(900000)       # ...or this long after the last write with any unsaved
_GAP_MS = const(60000)          # one fold never counts more than this towards PERIOD_MS
_MAGIC = b"BGEN"

OK = const(0)
MISSING = const(1)
CORRUPT = const(2)
UNREADABLE = const(3)
VERDICT_NAMES = ("ok", "missing", "corrupt", "unreadable")


def _arr(n, v=0):
    a = array.array("i", bytes(4 * n))
    if v:
        for i in range(n):
            a[i] = v
    return a


def _put32(buf, o, v):
    buf[o] = v & 0xFF
    buf[o + 1] = (v >> 8) & 0xFF
    buf[o + 2] = (v >> 16) & 0xFF
    buf[o + 3] = (v >> 24) & 0xFF


def _get32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | ((b[o + 3] & 0x3F) << 24)


def _sat(a, d):
    """a + d saturated at WH_MAX (d >= 0; a + d never formed past it)."""
    if a - (WH_MAX - d) > 0:
        return WH_MAX
    return a + d


class Energy:
    def __init__(self, fs, step_wh=_STEP_WH, period_ms=_PERIOD_MS, path=PATH, tmp=TMP):
        self.fs = fs
        self.step_wh = step_wh
        self.period_ms = period_ms
        self.path = path
        self.tmp = tmp
        self.addr = _arr(N, -1)           # entry -> module address (-1 free)
        self.chg = _arr(N)                # running totals per entry, Wh
        self.dsg = _arr(N)
        self.b_chg = 0                    # running bank totals, Wh
        self.b_dsg = 0
        self.p_addr = _arr(N, -1)         # persisted (= published) copies
        self.p_chg = _arr(N)
        self.p_dsg = _arr(N)
        self.pb_chg = 0
        self.pb_dsg = 0
        self._seen_c = _arr(MAX_MODULES)  # metrics counters already folded, per slot
        self._seen_d = _arr(MAX_MODULES)
        self._started = False
        self._t = 0
        self._elapsed = 0                 # ms since the last write (capped increments)
        self.unsaved = 0                  # Wh counted since the last write
        self.gen = 0
        self.writes = 0
        self.errors = 0
        self.verdict = MISSING
        self.last_error = None
        self._buf = bytearray(SIZE)

    # ------------------------------------------------------------------ file
    def encode(self):
        b = self._buf
        b[0:4] = _MAGIC
        b[4] = VERSION
        b[5] = N
        g = (self.gen + 1) & 0xFFFF
        b[6] = g & 0xFF
        b[7] = g >> 8
        _put32(b, 8, self.b_chg)
        _put32(b, 12, self.b_dsg)
        for k in range(N):
            o = 16 + 10 * k
            a = self.addr[k] & 0xFFFF
            b[o] = a & 0xFF
            b[o + 1] = a >> 8
            _put32(b, o + 2, self.chg[k])
            _put32(b, o + 6, self.dsg[k])
        c = crc16(b, SIZE - 2)
        b[SIZE - 2] = c & 0xFF
        b[SIZE - 1] = c >> 8
        return b

    def _decode(self, d):
        if d is None or len(d) != SIZE or d[0:4] != _MAGIC or d[4] != VERSION or d[5] != N:
            return False
        if crc16(d, SIZE - 2) != d[SIZE - 2] | (d[SIZE - 1] << 8):
            return False
        self.gen = d[6] | (d[7] << 8)
        self.b_chg = _get32(d, 8)
        self.b_dsg = _get32(d, 12)
        for k in range(N):
            o = 16 + 10 * k
            a = d[o] | (d[o + 1] << 8)
            self.addr[k] = a - 0x10000 if a & 0x8000 else a
            self.chg[k] = _get32(d, o + 2)
            self.dsg[k] = _get32(d, o + 6)
        self._persisted()
        return True

    def _persisted(self):
        for k in range(N):
            self.p_addr[k] = self.addr[k]
            self.p_chg[k] = self.chg[k]
            self.p_dsg[k] = self.dsg[k]
        self.pb_chg = self.b_chg
        self.pb_dsg = self.b_dsg

    def load(self):
        """Read the counters at boot (before the first fold).  A missing file starts at 0; a
        corrupt or unreadable one too (counted in the verdict; the first write replaces it),
        or from a complete tmp left by a cut replace."""
        try:
            d = read(self.fs, self.path, SIZE + 1)
        except Exception as e:  # noqa: BLE001
            self.last_error = "read %s: %r" % (self.path, e)
            self.verdict = UNREADABLE
            return UNREADABLE
        if d is None:
            try:
                ok = self._decode(read(self.fs, self.tmp, SIZE + 1))
            except Exception:  # noqa: BLE001
                ok = False
            self.verdict = OK if ok else MISSING
            return self.verdict
        if not self._decode(d):
            self.last_error = "%s: not a valid energy record (%d bytes)" % (self.path, len(d))
            self.verdict = CORRUPT
            return CORRUPT
        self.verdict = OK
        return OK

    def save(self):
        """Write the running totals now; True when written (they are then published)."""
        self._elapsed = 0
        try:
            replace(self.fs, self.tmp, self.path, self.encode())
        except Exception as e:  # noqa: BLE001
            self.errors += 1
            self.last_error = "write %s: %r" % (self.path, e)
            return False
        self.gen = (self.gen + 1) & 0xFFFF
        self.writes += 1
        self.unsaved = 0
        self._persisted()
        return True

    # --------------------------------------------------------------- counting
    def _entry(self, a, bank):
        """Entry index of address a: its own, else a free one, else one whose address is not
        in the bank now (reset to 0).  -1: none (more than N addresses)."""
        free = -1
        for k in range(N):
            x = self.addr[k]
            if x == a:
                return k
            if free < 0 and x < 0:
                free = k
        if free < 0:
            for k in range(N):
                x = self.addr[k]
                used = False
                for m in bank.modules:
                    if m.addr == x:
                        used = True
                        break
                if not used:
                    free = k
                    break
        if free >= 0:
            self.addr[free] = a
            self.chg[free] = 0
            self.dsg[free] = 0
        return free

    def fold(self, now, metrics, bank):
        """Add the metrics' energy growth since the last fold; write when due.  Returns True
        when the file was written (new published values)."""
        mods = bank.modules
        n = len(mods)
        if n > MAX_MODULES:
            n = MAX_MODULES
        for s in range(n):
            dc = metrics.e_chg_wh[s] - self._seen_c[s]
            dd = metrics.e_dsg_wh[s] - self._seen_d[s]
            self._seen_c[s] = metrics.e_chg_wh[s]
            self._seen_d[s] = metrics.e_dsg_wh[s]
            if dc < 0:
                dc = 0
            if dd < 0:
                dd = 0
            if dc == 0 and dd == 0:
                continue
            self.b_chg = _sat(self.b_chg, dc)
            self.b_dsg = _sat(self.b_dsg, dd)
            self.unsaved = _sat(self.unsaved, dc + dd)
            a = mods[s].addr
            if a >= 0:
                k = self._entry(a, bank)
                if k >= 0:
                    self.chg[k] = _sat(self.chg[k], dc)
                    self.dsg[k] = _sat(self.dsg[k], dd)
        if self._started:
            dt = clock.diff(now, self._t)
            if dt > _GAP_MS:
                dt = _GAP_MS
            if dt > 0 and self._elapsed < self.period_ms:
                self._elapsed += dt
        self._started = True
        self._t = now
        if self.unsaved >= self.step_wh or (self.unsaved > 0 and self._elapsed >= self.period_ms):
            return self.save()
        return False

    # ------------------------------------------------------------- reporting
    def module(self, addr):
        """(charge Wh, discharge Wh) published for addr, or None (never counted)."""
        for k in range(N):
            if self.p_addr[k] == addr:
                return self.p_chg[k], self.p_dsg[k]
        return None

    def snapshot(self):
        return {"file": self.path, "verdict": VERDICT_NAMES[self.verdict], "writes": self.writes,
                "errors": self.errors, "unsaved_wh": self.unsaved, "last_error": self.last_error}
