# Shared helpers of the fuzz tests (tests/mp/test_fuzz_*.py), MicroPython only.
#
#   Rng(seed)                     xorshift32: deterministic, the same on every port
#   Fingerprint(obj)              hash of every attribute of a record (arrays by content)
#   RawFrame / encode_raw()       an ASCII RS485 frame as header + INFO bytes, re-encoded with
#                                 correct (or deliberately wrong) LENGTH/CHKSUM -- written
#                                 independently of bankgate.proto.frame
#   Mutator(rng, seeds)           mutated and generated RS485 frames into one preallocated buffer
#   Rate                          inputs per second of one fuzz run (printed for docs/fuzzing.md)
#   fail(what, seed, i, data)     AssertionError naming seed + iteration (reproducible)
#
# A failure message always contains "seed=0x... i=N": re-run the same test function with that
# seed (every run_* function takes seed and count) and stop at iteration N to reproduce it.
import binascii
import time

from micropython import const

_M32 = const(0xFFFFFFFF)


class Rng:
    """xorshift32 (Marsaglia 2003).  seed 0 is replaced by 1 (0 is a fixed point)."""

    def __init__(self, seed):
        self.s = (seed & _M32) or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & _M32
        x ^= x >> 17
        x ^= (x << 5) & _M32
        self.s = x
        return x

    def below(self, n):
        """0 <= r < n (n >= 1)."""
        return self.next() % n

    def chance(self, num, den):
        return self.next() % den < num

    def pick(self, seq):
        return seq[self.next() % len(seq)]

    def byte(self):
        return self.next() & 0xFF


def hexs(data, n=None, limit=160):
    """Printable form of a failing input: repr of bytes, cut to `limit` characters."""
    if n is None:
        n = len(data)
    b = bytes(data[:n]) if n >= 0 else bytes(data)
    r = repr(b)
    return r if len(r) <= limit else r[:limit] + "...(%d bytes)" % len(b)


QUIET = False          # True: fail() does not print (tests of the harness itself)


def fail(what, seed, i, data=None, n=None):
    """Report a fuzz failure: the whole input is printed (up to 4000 characters, shown by
    pytest with the traceback); the AssertionError names seed and iteration."""
    msg = "FUZZ FAILURE %s  seed=0x%08x i=%d" % (what, seed, i)
    shown = ""
    if data is not None:
        shown = hexs(data, n, 4000) if not isinstance(data, str) else data[:4000]
    if not QUIET:
        print(msg)
        if shown:
            print("input: " + shown)
    raise AssertionError(msg + ("  input=" + shown[:300] if shown else ""))


# ------------------------------------------------------------------ fingerprints
_FNV = const(0x01000193)


def _hash_value(h, v):
    """Mix one value into h: ints by value (all bits), arrays/bytes by content."""
    t = type(v)
    if t is int or t is bool:
        v = int(v)
        h = ((h ^ (v & _M32)) * _FNV) & _M32
        hi = v >> 32
        if hi:
            h = ((h ^ (hi & _M32)) * _FNV) & _M32
        return h
    if v is None:
        return ((h ^ 0x5A5A5A5A) * _FNV) & _M32
    if t is str or t is float:
        return ((h ^ (hash(repr(v)) & _M32)) * _FNV) & _M32
    if t is list or t is tuple:
        h = ((h ^ len(v)) * _FNV) & _M32
        for x in v:
            h = _hash_value(h, x)
        return h
    # bytearray / bytes / array.array: content hashed in C (bytes hash), plus the length
    b = bytes(v)
    h = ((h ^ len(b)) * _FNV) & _M32
    return ((h ^ (hash(b) & _M32)) * _FNV) & _M32


def attr_names(obj):
    """Sorted attribute names of an instance (its __dict__)."""
    return sorted(obj.__dict__)


def fingerprint(obj, names):
    """32-bit FNV-style hash over the attributes `names` of obj, in that order (so a
    value moving from one attribute to another changes it), arrays by content, plus
    the number of attributes (a new attribute changes it)."""
    d = obj.__dict__
    h = ((0x811C9DC5 ^ len(d)) * _FNV) & _M32
    for k in names:
        v = d.get(k, None)
        if type(v) is int and 0 <= v < 0x100000000:      # the common case, inlined
            h = ((h ^ v) * _FNV) & _M32
        else:
            h = _hash_value(h, v)
    return h


class Fingerprint:
    """Fingerprints of one record, with per-command 'must not change' views.

    full():       every attribute (a rejected input must leave this unchanged)
    rest(cmd):    every attribute except the ones an accepted `cmd` may write
    The attribute set is fixed at construction; a record that grows a new
    attribute changes full() (len(__dict__) is mixed in)."""

    def __init__(self, obj, writes):
        self.obj = obj
        self.names = attr_names(obj)
        self.rest_names = {}
        for cmd, allowed in writes.items():
            for a in allowed:
                if a not in obj.__dict__:
                    raise ValueError("unknown attribute %s in the write set of %r" % (a, cmd))
            self.rest_names[cmd] = [k for k in self.names if k not in allowed]

    def full(self):
        return fingerprint(self.obj, self.names)

    def rest(self, cmd):
        names = self.rest_names.get(cmd)
        if names is None:            # no write set: nothing may change
            names = self.names
        return fingerprint(self.obj, names)


# ------------------------------------------------------------------ RS485 frames
_HEX = b"0123456789ABCDEF"


def _lchk(lenid):
    return (-((lenid & 0xF) + ((lenid >> 4) & 0xF) + ((lenid >> 8) & 0xF))) & 0xF


def encode_raw(out, ver, adr, cid1, cid2, info, n_info, lenid=None, lchk=None, cs_delta=0,
               lower=False):
    """Write '~' VER ADR CID1 CID2 LENGTH INFO CHKSUM '\\r' into out; returns the length.

    lenid/lchk override the LENGTH field (default: 2*n_info and its correct nibble);
    cs_delta is added to the correct CHKSUM (0: a valid frame); lower=True writes
    lower-case hex.  Independent of bankgate.proto.frame on purpose."""
    if lenid is None:
        lenid = 2 * n_info
    lenid &= 0xFFF
    if lchk is None:
        lchk = _lchk(lenid)
    length = ((lchk & 0xF) << 12) | lenid
    hx = _HEX
    out[0] = 0x7E
    pos = 1
    for b in (ver, adr, cid1, cid2, length >> 8, length & 0xFF):
        out[pos] = hx[(b >> 4) & 0xF]
        out[pos + 1] = hx[b & 0xF]
        pos += 2
    for k in range(n_info):
        b = info[k]
        out[pos] = hx[(b >> 4) & 0xF]
        out[pos + 1] = hx[b & 0xF]
        pos += 2
    if lower:
        for k in range(1, pos):
            if out[k] >= 0x41:
                out[k] += 0x20
    s = 0
    for k in range(1, pos):
        s += out[k]
    cs = ((-s) + cs_delta) & 0xFFFF
    for b in (cs >> 8, cs & 0xFF):
        out[pos] = hx[(b >> 4) & 0xF]
        out[pos + 1] = hx[b & 0xF]
        pos += 2
    out[pos] = 0x0D
    return pos + 1


class RawFrame:
    """A valid seed frame split into header bytes and INFO (for re-checksummed mutation)."""

    def __init__(self, frame_bytes, cmd, addr):
        f = bytes(frame_bytes)
        self.frame = f
        self.cmd = cmd               # the command this frame answers
        self.addr = addr             # the address it was asked for
        # the interpreter's own hex decoder, not a copy of bankgate.proto.frame.nibble: the fuzz
        # oracle must not share code with what it checks
        raw = binascii.unhexlify(f[1:1 + 2 * ((len(f) - 2) // 2)])
        self.ver, self.adr, self.cid1, self.cid2 = raw[0], raw[1], raw[2], raw[3]
        self.info = bytes(raw[6:len(raw) - 2])


# Values that sit on the edges of the layouts: zero, all-ones, sign boundaries, the
# cell/temperature count limits (24, 8) and one past them, the u24 capacity marker.
BOUNDARY_BYTES = (0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x09, 0x10, 0x18, 0x19, 0x7F, 0x80,
                  0xF0, 0xFE, 0xFF)
BOUNDARY_WORDS = (0x0000, 0x0001, 0x0AAA, 0x0AAB, 0x1388, 0x1389, 0x7FFF, 0x8000, 0xFFFE,
                  0xFFFF)
# every RTN the decoders map (and two they do not)
RTN_CODES = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x90, 0x91, 0x92, 0xE1, 0xFF)
SPECIAL_CHARS = b"~\r\n\x00 0123456789ABCDEFabcdefGgZz\xff\x80:"

# strategy numbers (the Mutator counts how often each produced an accepted frame)
S_BITFLIP = const(0)
S_REPLACE = const(1)
S_INSERT = const(2)
S_DELETE = const(3)
S_TRUNCATE = const(4)
S_SPLICE = const(5)
S_INFO = const(6)        # INFO bytes mutated, frame re-encoded with valid LENGTH/CHKSUM
S_HEADER = const(7)      # VER/ADR/CID1/RTN mutated, re-encoded (every RTN, wrong addresses)
S_LENGTH = const(8)      # LENGTH field lies (LCHKSUM right or wrong), CHKSUM valid
S_RANDHEX = const(9)     # '~' random hex '\r' with a valid checksum over it
S_RANDOM = const(10)     # random bytes, non-hex
S_VALID = const(11)      # an unmodified seed (lower-case hex sometimes)
N_STRATEGIES = const(12)
STRATEGY_NAMES = ("bitflip", "replace", "insert", "delete", "truncate", "splice", "info+cs",
                  "header+cs", "length+cs", "randhex", "random", "valid")


class Mutator:
    """Produces one fuzzed RS485 frame per call into self.buf (preallocated).

    next() -> n (bytes in self.buf); self.seed_frame is the RawFrame it started from and
    self.strategy the S_* used.  Inputs up to self.cap bytes."""

    def __init__(self, rng, seeds, cap=3000):
        self.rng = rng
        self.seeds = seeds
        self.cap = cap
        self.buf = bytearray(cap)
        self.info = bytearray(cap)
        self.seed_frame = seeds[0]
        self.strategy = 0

    def _copy_seed(self, f):
        b = self.buf
        src = f.frame
        n = len(src)
        for k in range(n):
            b[k] = src[k]
        return n

    def next(self):
        r = self.rng
        f = r.pick(self.seeds)
        self.seed_frame = f
        s = r.below(N_STRATEGIES)
        # the structure-aware strategies reach the deep checks: give them more weight
        if s == S_RANDOM and r.chance(1, 2):
            s = S_INFO
        self.strategy = s
        b = self.buf
        if s == S_INFO:
            return self._info(f)
        if s == S_HEADER:
            return self._header(f)
        if s == S_LENGTH:
            return self._length(f)
        if s == S_RANDHEX:
            return self._randhex()
        if s == S_RANDOM:
            n = r.below(64) if r.chance(3, 4) else r.below(self.cap)
            for k in range(n):
                b[k] = r.byte()
            if n and r.chance(1, 2):
                b[0] = 0x7E
            if n and r.chance(1, 2):
                b[n - 1] = 0x0D
            return n
        if s == S_VALID:
            if r.chance(1, 3):
                return encode_raw(b, f.ver, f.adr, f.cid1, f.cid2, f.info, len(f.info), lower=True)
            return self._copy_seed(f)
        n = self._copy_seed(f)
        if s == S_BITFLIP:
            for _ in range(1 + r.below(4)):
                k = r.below(n)
                b[k] ^= 1 << r.below(8)
            return n
        if s == S_REPLACE:
            for _ in range(1 + r.below(3)):
                k = r.below(n)
                b[k] = r.pick(SPECIAL_CHARS) if r.chance(1, 2) else r.byte()
            return n
        if s == S_INSERT:
            cnt = 1 + r.below(8)
            if n + cnt > self.cap:
                return n
            k = r.below(n + 1)
            for j in range(n - 1, k - 1, -1):
                b[j + cnt] = b[j]
            for j in range(cnt):
                b[k + j] = r.pick(SPECIAL_CHARS) if r.chance(1, 2) else r.byte()
            return n + cnt
        if s == S_DELETE:
            cnt = 1 + r.below(8)
            k = r.below(n)
            if k + cnt > n:
                cnt = n - k
            for j in range(k, n - cnt):
                b[j] = b[j + cnt]
            return n - cnt
        if s == S_TRUNCATE:
            m = r.below(n + 1)
            if r.chance(1, 2) and m > 0:
                b[m - 1] = 0x0D          # keep a plausible EOI at the cut
            return m
        # S_SPLICE: the head of this frame, the tail of another
        g = r.pick(self.seeds).frame
        k = r.below(n + 1)
        j = r.below(len(g) + 1)
        m = k + len(g) - j
        if m > self.cap:
            return n
        for t in range(j, len(g)):
            b[k + t - j] = g[t]
        return m

    def _mut_info(self, f):
        """Mutated INFO of f into self.info; returns its length."""
        r = self.rng
        src = f.info
        n = len(src)
        d = self.info
        for k in range(n):
            d[k] = src[k]
        for _ in range(1 + r.below(3)):
            op = r.below(7)
            if op == 0 and n:                         # boundary byte (counts, flags, udi)
                d[r.below(n)] = r.pick(BOUNDARY_BYTES)
            elif op == 1 and n >= 2:                  # boundary big-endian word
                k = r.below(n - 1)
                w = r.pick(BOUNDARY_WORDS)
                d[k] = w >> 8
                d[k + 1] = w & 0xFF
            elif op == 2 and n:                       # random byte
                d[r.below(n)] = r.byte()
            elif op == 3:                             # truncate INFO
                n = r.below(n + 1)
            elif op == 4 and n + 4 < 1360:              # insert bytes
                k = r.below(n + 1)
                cnt = 1 + r.below(4)
                for j in range(n - 1, k - 1, -1):
                    d[j + cnt] = d[j]
                for j in range(cnt):
                    d[k + j] = r.byte()
                n += cnt
            elif op == 5 and n:                       # delete bytes
                k = r.below(n)
                cnt = 1 + r.below(4)
                if k + cnt > n:
                    cnt = n - k
                for j in range(k, n - cnt):
                    d[j] = d[j + cnt]
                n -= cnt
            elif op == 6 and n < 1320:                # append (trailing extra data)
                cnt = 1 + r.below(40)
                for j in range(cnt):
                    d[n + j] = r.byte() if r.chance(1, 2) else 0
                n += cnt
        return n

    def _info(self, f):
        n = self._mut_info(f)
        return encode_raw(self.buf, f.ver, f.adr, f.cid1, f.cid2, self.info, n,
                          lower=self.rng.chance(1, 16))

    def _header(self, f):
        r = self.rng
        ver, adr, cid1, cid2 = f.ver, f.adr, f.cid1, f.cid2
        op = r.below(5)
        if op == 0:
            ver = r.pick((0x00, 0x1F, 0x20, 0x21, 0x25, 0x3F, 0x40, 0xFF, r.byte()))
        elif op == 1:
            adr = r.pick(((adr + 1) & 0xFF, (adr - 1) & 0xFF, 0x00, 0xFF, r.byte()))
        elif op == 2:
            cid1 = r.pick((0x46, 0x4F, 0x45, 0x00, 0xFF, r.byte()))
        else:                                         # RTN codes: most weight
            cid2 = r.pick(RTN_CODES)
        n = len(f.info)
        if r.chance(1, 3):
            n = self._mut_info(f)
            info = self.info
        else:
            info = f.info
        return encode_raw(self.buf, ver, adr, cid1, cid2, info, n)

    def _length(self, f):
        r = self.rng
        n = len(f.info)
        lenid = r.pick((0, 1, 2 * n - 2, 2 * n - 1, 2 * n + 1, 2 * n + 2, 4094, 4095, r.below(4096)))
        lchk = None if r.chance(3, 4) else r.below(16)
        return encode_raw(self.buf, f.ver, f.adr, f.cid1, f.cid2, f.info, n, lenid & 0xFFF, lchk,
                          cs_delta=0 if r.chance(7, 8) else 1 + r.below(0xFFFE))

    def _randhex(self):
        r = self.rng
        b = self.buf
        n = r.below(200) if r.chance(7, 8) else r.below(1400)
        for k in range(n):
            self.info[k] = r.byte()
        if r.chance(1, 2):   # a header the decoders could accept
            return encode_raw(b, r.pick((0x20, 0x25, r.byte())), self.seed_frame.adr,
                              r.pick((0x46, 0x4F)), 0, self.info, n)
        return encode_raw(b, r.byte(), r.byte(), r.byte(), r.byte(), self.info, n)


# ------------------------------------------------------------------ timing
class Rate:
    """Wall time of a fuzz loop (real time: only for the inputs-per-second figure)."""

    def __init__(self, name):
        self.name = name
        self.t0 = time.ticks_us()

    def done(self, count, extra=""):
        us = time.ticks_diff(time.ticks_us(), self.t0)
        if us <= 0:
            us = 1
        per_s = count * 1000000 // us
        print("FUZZRATE %s inputs=%d ms=%d per_s=%d %s" % (self.name, count, us // 1000, per_s, extra))
        return per_s
