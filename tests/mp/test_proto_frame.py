# Shared Pylontech-style ASCII framing (bankgate.proto.frame) under MicroPython.
import mptest

from bankgate.proto import errors, frame
from bankgate.proto.errors import (
    E_CHKSUM, E_EOI, E_HEX, E_LCHKSUM, E_LENGTH, E_SOI, E_TRUNCATED)

# real frames: python-pylontech test suite (UP2500) and nkinnan/esphome-pace-bms (PACE V2.5)
UP2500_42 = (b"~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73"
             b"FFFA680EFFFF04FFFF00000174E401B198E906\r")
PYLON_4F = b"~200246000000FDB2\r"
PYLON_REQ_42 = b"~20024642E00202FD33\r"
PACE_REQ_C1 = b"~250146C10000FD9A\r"


def _parse(f):
    b = bytearray(f)
    return frame.parse(b, len(b))


def _with_checksum(body):
    """'~' + body + correct CHKSUM + CR (body = VER..INFO as text)."""
    b = bytearray(b"~" + body + b"0000\r")
    cs = frame.chksum(b, 1, len(b) - 5)
    return b"~" + body + (b"%04X" % cs) + b"\r"


def test_lchksum_spec_examples():
    assert frame.length_field(2) == 0xE002
    assert frame.length_field(18) == 0xD012
    assert frame.length_field(0) == 0x0000
    assert frame.length_field(0x05E) == 0xD05E      # the UP2500 frame's LENGTH
    assert frame.length_field(0x07A) == 0xF07A      # the PACE 0x42 frame's LENGTH
    # every nibble sum: (lchksum + n0 + n1 + n2) % 16 == 0
    for lenid in range(0, 4096, 7):
        s = (lenid & 15) + ((lenid >> 4) & 15) + (lenid >> 8) + frame.lchksum(lenid)
        assert s % 16 == 0


def test_chksum_spec_example_and_known_frames():
    # spec V3.3 example "1203400456ABCEFE": ASCII sum 0x038F -> FC71 (the PDF prints FC72)
    b = b"1203400456ABCEFE"
    assert frame.chksum(b, 0, len(b)) == 0xFC71
    for f, cs in ((UP2500_42, 0xE906), (PYLON_4F, 0xFDB2), (PYLON_REQ_42, 0xFD33), (PACE_REQ_C1, 0xFD9A)):
        assert frame.chksum(f, 1, len(f) - 5) == cs


def test_parse_real_frames():
    n = _parse(UP2500_42)
    assert n == 0x5E // 2
    assert list(frame.HDR) == [0x20, 0x02, 0x46, 0x00]
    assert frame.INFO[0] == 0x10 and frame.INFO[1] == 0x02 and frame.INFO[2] == 8
    assert frame.u16(3) == 0x0D02
    assert _parse(PYLON_4F) == 0
    assert _parse(PYLON_REQ_42) == 1 and frame.HDR[3] == 0x42 and frame.INFO[0] == 2


def test_encode_round_trip_and_matches_known_requests():
    buf = bytearray(64)
    n = frame.encode(buf, 0x20, 0x02, 0x46, 0x42, b"\x02", 1)
    assert bytes(buf[:n]) == PYLON_REQ_42
    n = frame.encode(buf, 0x25, 0x01, 0x46, 0xC1, None, 0)
    assert bytes(buf[:n]) == PACE_REQ_C1
    info = bytes(range(0, 250, 7))
    big = bytearray(frame.OVERHEAD + 2 * len(info))
    n = frame.encode(big, 0x20, 0x11, 0x46, 0x00, info, len(info))
    assert n == len(big)
    assert frame.parse(big, n) == len(info)
    assert bytes(frame.INFO[:len(info)]) == info


def test_lower_case_hex_accepted():
    body = b"20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73FFFA680EFFFF04FFFF00000174E401B198".lower()
    assert _parse(_with_checksum(body)) == 47


def test_each_malformation_has_its_code():
    good = bytearray(UP2500_42)
    n = len(good)
    cases = []
    cases.append((b"X" + UP2500_42[1:], E_SOI))
    cases.append((UP2500_42[:-1] + b"\n", E_EOI))
    cases.append((UP2500_42[:-1], E_EOI))                       # EOI missing
    cases.append((b"~2002\r", E_TRUNCATED))
    cases.append((b"", E_TRUNCATED))
    bad = bytearray(good)
    bad[20] = ord("G")
    cases.append((bad, E_HEX))
    bad = bytearray(good)
    bad[9] = ord("E")                                           # LCHKSUM nibble D -> E
    cases.append((bad, E_LCHKSUM))
    bad = bytearray(good)
    bad[30] = ord("1") if bad[30] != ord("1") else ord("2")     # a data character
    cases.append((bad, E_CHKSUM))
    bad = bytearray(good)
    bad[n - 2] = ord("7")                                       # checksum character
    cases.append((bad, E_CHKSUM))
    # LENID larger than the frame carries: truncated; smaller: length
    cases.append((_with_checksum(b"20024600" + b"%04X" % frame.length_field(0x60) + b"00" * 0x2F), E_TRUNCATED))
    cases.append((_with_checksum(b"20024600" + b"%04X" % frame.length_field(0x5C) + b"00" * 0x2F), E_LENGTH))
    cases.append((_with_checksum(b"20024600" + b"%04X" % frame.length_field(3) + b"000"), E_LENGTH))  # odd
    for f, code in cases:
        got = _parse(f)
        assert got == code, "%r: %d != %d" % (f, got, code)
        assert errors.category(code) in (errors.CAT_FRAMING, errors.CAT_CHECKSUM)
    assert errors.category(E_CHKSUM) == errors.CAT_CHECKSUM
    assert errors.category(E_LCHKSUM) == errors.CAT_CHECKSUM
    assert errors.category(E_HEX) == errors.CAT_FRAMING


def test_diag_reports_checksums():
    bad = bytearray(UP2500_42)
    bad[-2] = ord("7")
    assert frame.parse(bad, len(bad)) == E_CHKSUM
    assert frame.DIAG[0] == 0xE906 and frame.DIAG[1] == 0xE907


def test_n_beyond_buffer_is_truncated_not_an_exception():
    b = bytearray(PYLON_4F)
    assert frame.parse(b, len(b) + 10) == E_TRUNCATED
    assert frame.parse(b, -1) == E_TRUNCATED


def test_info_longer_than_buffer_rejected():
    lenid = 2 * (frame.MAX_INFO + 1)
    f = _with_checksum(b"20024600" + b"%04X" % frame.length_field(lenid) + b"00" * (frame.MAX_INFO + 1))
    assert _parse(f) == E_LENGTH


def test_parse_and_encode_allocate_nothing():
    b = bytearray(UP2500_42)
    assert mptest.no_alloc(frame.parse, b, len(b)) == 47
    out = bytearray(64)
    info = bytearray(b"\x02")
    # encode takes 7 arguments; wrap it so no_alloc's 4-argument limit holds
    def enc():
        return frame.encode(out, 0x20, 2, 0x46, 0x42, info, 1)
    assert mptest.no_alloc(enc) == 20


def test_errors_table_complete():
    codes = [getattr(errors, k) for k in dir(errors) if k.startswith("E_")]
    assert len(codes) == 23                   # E_OK .. E_UNSUPPORTED, E_LAYOUT (group 0x44)
    for c in codes:
        assert c in errors.ERROR_NAMES and c in errors.ERROR_TEXT
        if c < 0:
            assert errors.category(c) in (errors.CAT_CHECKSUM, errors.CAT_FRAMING,
                                          errors.CAT_RTN, errors.CAT_INVALID)
    for rtn, code in ((1, errors.E_RTN_VER), (2, errors.E_RTN_CHKSUM), (3, errors.E_RTN_LCHKSUM),
                      (4, errors.E_RTN_CID2), (5, errors.E_RTN_FORMAT), (6, errors.E_RTN_DATA),
                      (0x90, errors.E_RTN_ADDR), (0x91, errors.E_RTN_INTERNAL), (0x7, errors.E_RTN_UNKNOWN)):
        assert errors.rtn_code(rtn) == code
        assert errors.category(code) == errors.CAT_RTN
    assert errors.category(errors.E_PLAUSIBLE) == errors.CAT_INVALID
    assert errors.category(errors.E_ADDR) == errors.CAT_INVALID
    assert len(set(errors.ERROR_NAMES.values())) == len(errors.ERROR_NAMES)


def _damaged(rnd, f):
    b = bytearray(f)
    for _ in range(rnd.getrandbits(2)):
        i = rnd.getrandbits(16) % len(b)
        b[i] = rnd.getrandbits(8)
    n = len(b) - (rnd.getrandbits(3) if rnd.getrandbits(1) else 0)
    return b, n


def test_native_loops_active_and_equal_to_bytecode():
    # the viper loops (bankgate.proto.fast) run on this port, and give exactly what
    # the bytecode loops give: result, header, INFO and diagnostics, on real frames
    # and on 3000 randomly damaged / truncated ones
    import random
    random.seed(7)
    rnd = random
    assert frame.use_native(True), "bankgate.proto.fast did not load (native emitter)"
    frames = [UP2500_42, PYLON_4F, PYLON_REQ_42, PACE_REQ_C1, b"~2002460000" + b"\r",
              b"~20024600F002ab\r", b"~" + b"0" * 40 + b"\r", b"~\r"]
    try:
        for t in range(3000):
            b, n = _damaged(rnd, frames[t % len(frames)]) if t >= len(frames) else \
                (bytearray(frames[t]), len(frames[t]))
            frame.use_native(True)
            r1 = frame.parse(b, n)
            got1 = (r1, bytes(frame.HDR), bytes(frame.INFO[:max(r1, 0)]), frame.DIAG[0], frame.DIAG[1])
            frame.use_native(False)
            r0 = frame.parse(b, n)
            got0 = (r0, bytes(frame.HDR), bytes(frame.INFO[:max(r0, 0)]), frame.DIAG[0], frame.DIAG[1])
            assert got1 == got0, (t, bytes(b[:n]), got1, got0)
    finally:
        frame.use_native(True)


def test_hexval_table_is_the_nibble_of_every_byte():
    # the literal table (in flash when frozen) against nibble(): 0xFF where not hex
    t = frame.HEXVAL
    assert type(t) is bytes and len(t) == 256
    for c in range(256):
        v = frame.nibble(c)
        assert t[c] == (v if v >= 0 else 0xFF), (c, t[c], v)
