# Shared framing of the Pylontech-style ASCII RS485 protocols (Pylontech, PACE, Seplos V2).
#
#   '~' VER ADR CID1 CID2 LENGTH INFO CHKSUM '\r'
#
# Everything between '~' and '\r' is upper-case hex ASCII, two characters per
# byte.  LENGTH is 4 hex characters: the low 12 bits (LENID) count the ASCII
# characters of INFO, the top nibble is LCHKSUM = (-(n0 + n1 + n2)) & 0xF over
# the three LENID nibbles (spec V3.3 §3; LENID 2 -> E002, 18 -> D012, 0 -> 0000).
# CHKSUM = (-(sum of the ASCII codes from VER to the end of INFO)) & 0xFFFF.
# In a request CID2 is the command, in a response it is the return code RTN.
#
# parse() validates a received frame and hex-decodes it into the module-level
# buffers HDR (VER, ADR, CID1, CID2/RTN) and INFO; encode() writes a frame.
# Neither allocates.  Only one frame is decoded at a time (single-threaded
# firmware), so the buffers are shared by every RS485 family.
import array

from micropython import const

from bankgate.model import MAX_CELLS
from bankgate.proto.errors import (
    E_CHKSUM, E_EOI, E_HEX, E_LCHKSUM, E_LENGTH, E_PLAUSIBLE, E_SOI, E_TRUNCATED)

SOI = const(0x7E)          # '~'
EOI = const(0x0D)          # '\r'
_CID1_BATTERY = const(0x46)
OVERHEAD = const(18)       # '~' + 12 header chars + 4 CHKSUM chars + '\r'
MAX_INFO = const(1400)     # INFO bytes we can hold: a 16-pack group of 24-cell packs is 1330

VER = const(0)             # indices into HDR
ADR = const(1)
CID1 = const(2)
CID2 = const(3)            # RTN in a response

HDR = bytearray(4)
INFO = bytearray(MAX_INFO)
# Diagnostics of the last rejection, for the CLI: [computed, found] checksum or
# length values, [-1, -1] when the last parse did not get that far.
DIAG = array.array("i", (-1, -1))

# Native inner loops (bankgate.proto.fast, viper); None on a port without a native
# emitter (or a .mpy built for another architecture): the bytecode loops below run.
try:
    from bankgate.proto import fast as _fast
except (ImportError, ValueError, SyntaxError, NotImplementedError):
    _fast = None

_HEXCHARS = b"0123456789ABCDEF"
_BAD = const(0xFF)


# character -> nibble value, 0xFF when not a hex digit (upper or lower case): one
# table look-up per character instead of nibble()'s comparisons and call.  A literal,
# so that frozen firmware keeps it in flash (built at import it took 272 B of heap);
# tests/mp/test_proto_frame.py checks it against nibble() for all 256 bytes.
HEXVAL = (
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xff\xff\xff\xff\xff\xff"
    b"\xff\x0a\x0b\x0c\x0d\x0e\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\xff\x0a\x0b\x0c\x0d\x0e\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")


def nibble(c):
    """Value of one hex ASCII character (upper or lower case), -1 if not hex."""
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


def lchksum(lenid):
    """LCHKSUM nibble of a 12-bit LENID."""
    return (-((lenid & 0xF) + ((lenid >> 4) & 0xF) + ((lenid >> 8) & 0xF))) & 0xF


def length_field(lenid):
    """The 16-bit LENGTH field (LCHKSUM << 12 | LENID)."""
    return (lchksum(lenid) << 12) | (lenid & 0xFFF)


def chksum(buf, start, end):
    """CHKSUM over the ASCII codes buf[start:end] (pass 1, n-5 for a whole frame)."""
    s = 0
    for i in range(start, end):
        s += buf[i]
    return (-s) & 0xFFFF


def _hexbyte(buf, i):
    # two already-validated hex characters -> byte
    return (nibble(buf[i]) << 4) | nibble(buf[i + 1])


def parse(buf, n):
    """Validate the frame buf[0:n] ('~' .. '\r') and decode it into HDR and INFO.

    Returns the number of INFO bytes (>= 0) or a negative error code.  Checks in
    this order: SOI, EOI, minimum size, hex digits, LCHKSUM, LENID against the
    frame size, CHKSUM.  Never raises for any bytes; allocates nothing.
    """
    DIAG[0] = -1
    DIAG[1] = -1
    if n <= 0 or n > len(buf):
        return E_TRUNCATED
    if buf[0] != SOI:
        return E_SOI
    if buf[n - 1] != EOI:
        return E_EOI
    if n < OVERHEAD:
        return E_TRUNCATED
    hv = HEXVAL
    # one pass: every character hex (else E_HEX), and the ASCII sum for CHKSUM
    # (VER .. end of INFO = buf[1:n-5]; the 4 CHKSUM characters are taken out after)
    f = _fast
    if f is not None:
        s = f.hexsum(buf, n, hv)
        if s < 0:
            return E_HEX
    else:
        s = 0
        for i in range(1, n - 1):
            c = buf[i]
            if hv[c] == _BAD:
                return E_HEX
            s += c
    s -= buf[n - 5] + buf[n - 4] + buf[n - 3] + buf[n - 2]
    for k in range(4):
        HDR[k] = (hv[buf[1 + 2 * k]] << 4) | hv[buf[2 + 2 * k]]
    length = (hv[buf[9]] << 12) | (hv[buf[10]] << 8) | (hv[buf[11]] << 4) | hv[buf[12]]
    lenid = length & 0xFFF
    if (length >> 12) != lchksum(lenid):
        DIAG[0] = lchksum(lenid)
        DIAG[1] = length >> 12
        return E_LCHKSUM
    DIAG[0] = lenid
    DIAG[1] = n - OVERHEAD
    if lenid > n - OVERHEAD:
        return E_TRUNCATED
    if lenid < n - OVERHEAD or (lenid & 1) or (lenid >> 1) > MAX_INFO:
        return E_LENGTH
    cs = (-s) & 0xFFFF
    found = (hv[buf[n - 5]] << 12) | (hv[buf[n - 4]] << 8) | (hv[buf[n - 3]] << 4) | hv[buf[n - 2]]
    if cs != found:
        DIAG[0] = cs
        DIAG[1] = found
        return E_CHKSUM
    DIAG[0] = -1
    DIAG[1] = -1
    ni = lenid >> 1
    if f is not None:
        f.unhex(buf, 13, INFO, ni, hv)
        return ni
    info = INFO
    p = 13
    for k in range(ni):
        info[k] = (hv[buf[p]] << 4) | hv[buf[p + 1]]
        p += 2
    return ni


def use_native(on):
    """Tests: switch the native loops off (False) or back on; returns whether they
    are available on this port."""
    global _fast
    if on:
        try:
            from bankgate.proto import fast as f
        except (ImportError, ValueError, SyntaxError, NotImplementedError):
            f = None
        _fast = f
    else:
        _fast = None
    return _fast is not None


def _puthex(buf, pos, b):
    buf[pos] = _HEXCHARS[(b >> 4) & 0xF]
    buf[pos + 1] = _HEXCHARS[b & 0xF]


def encode(buf, ver, adr, cid1, cid2, info, info_n):
    """Write a complete frame into buf; returns its length (OVERHEAD + 2*info_n).

    `info` holds the INFO bytes (info_n of them; info may be None when 0).  The
    caller guarantees len(buf) >= OVERHEAD + 2*info_n and info_n <= 2047.
    Allocates nothing.
    """
    buf[0] = SOI
    _puthex(buf, 1, ver)
    _puthex(buf, 3, adr)
    _puthex(buf, 5, cid1)
    _puthex(buf, 7, cid2)
    length = length_field(2 * info_n)
    _puthex(buf, 9, length >> 8)
    _puthex(buf, 11, length & 0xFF)
    hc = _HEXCHARS
    pos = 13
    for k in range(info_n):
        b = info[k]
        buf[pos] = hc[(b >> 4) & 0xF]
        buf[pos + 1] = hc[b & 0xF]
        pos += 2
    cs = chksum(buf, 1, pos)
    _puthex(buf, pos, cs >> 8)
    _puthex(buf, pos + 2, cs & 0xFF)
    buf[pos + 4] = EOI
    return pos + 5


# -- INFO field readers (big-endian), used by the family decoders.  No bounds
# checks here: callers check the INFO length against the layout first.
def u8(i):
    return INFO[i]


def u16(i):
    return (INFO[i] << 8) | INFO[i + 1]


def s16(i):
    v = (INFO[i] << 8) | INFO[i + 1]
    return v - 0x10000 if v & 0x8000 else v


def cells(pos, ln, cell_mv, max_mv):
    """The cell block shared by the Pylontech-style 0x42 layouts: count M at
    INFO[pos], then M x u16 mV, plus room for the temperature count after it.
    Writes cell_mv[0:M]; returns the position after the block, or E_PLAUSIBLE
    (M = 0, M > MAX_CELLS, a cell at 0 mV or above max_mv) / E_TRUNCATED.
    Allocation-free."""
    nc = INFO[pos]
    pos += 1
    if nc == 0 or nc > MAX_CELLS:
        return E_PLAUSIBLE
    if pos + 2 * nc + 1 > ln:
        return E_TRUNCATED
    for k in range(nc):
        v = (INFO[pos] << 8) | INFO[pos + 1]
        pos += 2
        if v == 0 or v > max_mv:
            return E_PLAUSIBLE
        cell_mv[k] = v
    return pos


def u24(i):
    return (INFO[i] << 16) | (INFO[i + 1] << 8) | INFO[i + 2]
