# Native (viper) byte helpers for the emulated BMSes' answers (bgsim.answers).
# Host only.  tools/bankgate_host/mpy.py compiles tools/sim with mpy-cross
# -march=host, so viper code runs natively under the unix port; a port or build
# without a native emitter fails to import this module and bgsim.answers falls back
# to its plain-Python versions of the same functions (same results).
import micropython

_HEX = b"0123456789ABCDEF"


@micropython.viper
def hexenc(dst, pos: int, src, n: int) -> int:
    """dst[pos:pos + 2n] = upper-case hex of src[0:n]; returns the sum of the ASCII
    codes written (for the frame CHKSUM).  The caller sizes dst."""
    d = ptr8(dst)
    s = ptr8(src)
    h = ptr8(_HEX)
    tot = 0
    i = 0
    while i < n:
        b = s[i]
        c1 = h[b >> 4]
        c2 = h[b & 15]
        d[pos] = c1
        d[pos + 1] = c2
        tot += c1 + c2
        pos += 2
        i += 1
    return tot


@micropython.viper
def same(a, b, n: int) -> bool:
    """a[0:n] == b[0:n] (both at least n long), without slicing."""
    pa = ptr8(a)
    pb = ptr8(b)
    i = 0
    while i < n:
        if pa[i] != pb[i]:
            return False
        i += 1
    return True


@micropython.viper
def unhex(dst, src, start: int, n: int) -> int:
    """dst[k] = the byte of the upper-case hex pair src[start + 2k : start + 2k + 2] for
    the n characters src[start:start + n] (n even); returns the sum of their ASCII
    codes, or -1 at the first character that is not 0-9 / A-F."""
    d = ptr8(dst)
    s = ptr8(src)
    tot = 0
    i = 0
    k = 0
    hi = 0
    while i < n:
        c = s[start + i]
        if c >= 0x30 and c <= 0x39:
            v = c - 0x30
        elif c >= 0x41 and c <= 0x46:
            v = c - 0x37
        else:
            return -1
        tot += c
        if i & 1:
            d[k] = (hi << 4) | v
            k += 1
        else:
            hi = v
        i += 1
    return tot
