# Native (viper) inner loops of the RS485 receive path: the per-character work of
# validating and hex-decoding a Pylontech-style ASCII frame, and of cutting frames
# out of the UART's byte stream.  A 0x42 reply of 16 modules is ~150 characters;
# as bytecode these loops cost ~25 us per frame on the host, compiled they cost ~1.
#
# Compiled for the target by mpy-cross (-march=xtensawin on the ESP32, -march=host
# for the unix-port tests).  Importers keep the bytecode loop as the fallback for a
# port without a native emitter (bankgate.proto.frame, bankgate.bus.rs485), and the
# tests check both give identical results on valid and damaged input.
#
# Viper ints are machine words (32 bit on the ESP32): every value here is a byte
# count below 4096 or a sum of at most 2818 characters (< 2**19).  No function
# allocates; buffers are passed in (bytes, bytearray or memoryview).
import micropython


@micropython.viper
def hexsum(buf: ptr8, n: int, hv: ptr8) -> int:
    """Sum of the character codes buf[1:n-1] (-1 as soon as one is not a hex digit,
    i.e. hv[c] == 0xFF).  n >= 2 and n <= len(buf) are the caller's checks."""
    s = 0
    i = 1
    end = n - 1
    while i < end:
        c = buf[i]
        if hv[c] == 0xFF:
            return -1
        s += c
        i += 1
    return s


@micropython.viper
def unhex(buf: ptr8, p: int, out: ptr8, ni: int, hv: ptr8):
    """out[0:ni] = the bytes of the 2*ni validated hex characters from buf[p]."""
    k = 0
    while k < ni:
        out[k] = (hv[buf[p]] << 4) | hv[buf[p + 1]]
        p += 2
        k += 1


# feed() states and results (bankgate.bus.rs485 uses the same numbers)
_ST_SOF = 1
_ST_BODY = 2
_BUSY = 0
_DONE = 1
_OVERFLOW = -3


@micropython.viper
def feed(sc: ptr8, k: int, rx: ptr8, size: int, eoi: int, io: ptr32) -> int:
    """Cut a frame out of the k received bytes sc[0:k].

    io (array('i', 4)) carries the receiver's state in and out:
      io[0] n (bytes of the frame in rx so far), io[1] state (_ST_SOF / _ST_BODY),
      io[2] noise bytes to add (out only), io[3] of those, bytes seen in _ST_SOF
      (before any '~' of this transaction; out only).
    A '~' (0x7E) starts (or restarts) the frame at rx[0]; bytes before the first '~'
    are noise; the frame ends with eoi.  Returns _DONE (rx[0:n] is the frame),
    _OVERFLOW (size bytes without eoi) or _BUSY (all k bytes taken)."""
    n = io[0]
    st = io[1]
    noise = 0
    noise_sof = 0
    i = 0
    r = 0
    while i < k:
        c = sc[i]
        i += 1
        if c == 0x7E:
            if st == 2:
                noise += n                 # the cut frame
            rx[0] = c
            n = 1
            st = 2
        elif st == 1:
            noise += 1
            noise_sof += 1
        else:
            if n >= size:
                r = -3
                break
            rx[n] = c
            n += 1
            if c == eoi:
                r = 1
                break
    io[0] = n
    io[1] = st
    io[2] = noise
    io[3] = noise_sof
    return r


@micropython.viper
def copy_into(dst: ptr8, p: int, src: ptr8, k: int):
    """dst[p:p+k] = src[0:k] without the slice object that statement allocates (telemetry
    writes JSON into its ring with it).  Bounds are the caller's check."""
    i = 0
    while i < k:
        dst[p + i] = src[i]
        i += 1
