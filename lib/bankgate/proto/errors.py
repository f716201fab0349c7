# Rejection codes of the protocol decoders (bankgate.proto.*).
#
# Every decoder returns E_OK (0) or one of these negative codes and, when it
# rejects, leaves the Module record it was given untouched.  The poller counts a
# rejection in the module's bus statistics by category():
#   CAT_CHECKSUM -> Module.st_checksum   (CHKSUM / LCHKSUM mismatch)
#   CAT_FRAMING  -> Module.st_framing    (SOI/EOI missing, non-hex, length, truncated)
#   CAT_RTN      -> Module.st_rtn        (the BMS answered with an error return code)
#   CAT_INVALID  -> Module.st_invalid    (well-formed but wrong VER/ADR/CID1, implausible
#                                         values, command not supported by the family)
# Codes are small negative ints: comparing and storing them never allocates.
from micropython import const

E_OK = const(0)
# framing
E_SOI = const(-1)            # first byte is not '~'
E_EOI = const(-2)            # last byte is not '\r'
E_HEX = const(-3)            # a character between SOI and EOI is not a hex digit
E_LENGTH = const(-4)         # LENID odd, larger than the buffer, or shorter than the frame
E_LCHKSUM = const(-5)        # LENGTH nibble checksum wrong
E_CHKSUM = const(-6)         # frame checksum wrong
E_TRUNCATED = const(-7)      # frame shorter than its header/LENID, or INFO shorter than its layout
# header
E_VER = const(-8)            # VER outside the family's accepted range
E_ADDR = const(-9)           # reply from another address than asked
E_CID1 = const(-10)          # not a battery (CID1) reply
# error return codes (CID2 of a response, RTN != 0)
E_RTN_VER = const(-11)       # RTN 01 version error
E_RTN_CHKSUM = const(-12)    # RTN 02 CHKSUM error (the BMS saw our request corrupted)
E_RTN_LCHKSUM = const(-13)   # RTN 03 LCHKSUM error
E_RTN_CID2 = const(-14)      # RTN 04 invalid CID2 (command not supported by this BMS)
E_RTN_FORMAT = const(-15)    # RTN 05 command format error
E_RTN_DATA = const(-16)      # RTN 06 invalid data
E_RTN_ADDR = const(-17)      # RTN 90 address error
E_RTN_INTERNAL = const(-18)  # RTN 91 internal communication error
E_RTN_UNKNOWN = const(-19)   # any other non-zero RTN
# content
E_PLAUSIBLE = const(-20)     # values no working BMS reports (0 V, FFFF placeholders, counts, SOC)
E_UNSUPPORTED = const(-21)   # command / CAN id this family does not decode
E_LAYOUT = const(-22)        # a group answer's INFO length fits no known per-pack layout

CAT_NONE = const(0)
CAT_CHECKSUM = const(1)
CAT_FRAMING = const(2)
CAT_RTN = const(3)
CAT_INVALID = const(4)

ERROR_NAMES = {
    E_OK: "ok",
    E_SOI: "soi",
    E_EOI: "eoi",
    E_HEX: "hex",
    E_LENGTH: "length",
    E_LCHKSUM: "lchksum",
    E_CHKSUM: "chksum",
    E_TRUNCATED: "truncated",
    E_VER: "ver",
    E_ADDR: "addr",
    E_CID1: "cid1",
    E_RTN_VER: "rtn_version",
    E_RTN_CHKSUM: "rtn_chksum",
    E_RTN_LCHKSUM: "rtn_lchksum",
    E_RTN_CID2: "rtn_invalid_cid2",
    E_RTN_FORMAT: "rtn_format",
    E_RTN_DATA: "rtn_invalid_data",
    E_RTN_ADDR: "rtn_address",
    E_RTN_INTERNAL: "rtn_internal",
    E_RTN_UNKNOWN: "rtn_unknown",
    E_PLAUSIBLE: "implausible",
    E_UNSUPPORTED: "unsupported",
    E_LAYOUT: "layout",
}

# One line of explanation per code, for the CLI and telemetry (not the hot path).
ERROR_TEXT = {
    E_OK: "accepted",
    E_SOI: "frame does not start with '~'",
    E_EOI: "frame does not end with CR",
    E_HEX: "non-hex character between SOI and EOI",
    E_LENGTH: "LENID is odd, too large, or shorter than the frame",
    E_LCHKSUM: "LENGTH checksum nibble is wrong",
    E_CHKSUM: "frame checksum is wrong",
    E_TRUNCATED: "frame or INFO shorter than its layout",
    E_VER: "protocol version byte not accepted by this family",
    E_ADDR: "reply comes from another address",
    E_CID1: "CID1 is not a battery reply",
    E_RTN_VER: "BMS returned RTN 01 (version error)",
    E_RTN_CHKSUM: "BMS returned RTN 02 (checksum error in our request)",
    E_RTN_LCHKSUM: "BMS returned RTN 03 (LCHKSUM error in our request)",
    E_RTN_CID2: "BMS returned RTN 04 (command not supported)",
    E_RTN_FORMAT: "BMS returned RTN 05 (command format error)",
    E_RTN_DATA: "BMS returned RTN 06 (invalid data)",
    E_RTN_ADDR: "BMS returned RTN 90 (address error)",
    E_RTN_INTERNAL: "BMS returned RTN 91 (internal communication error)",
    E_RTN_UNKNOWN: "BMS returned an undocumented RTN",
    E_PLAUSIBLE: "values out of the plausible range",
    E_UNSUPPORTED: "command not decoded by this family",
    E_LAYOUT: "group answer: the INFO length fits neither the documented per-pack layout nor "
              "that layout plus one trailing byte per pack",
}


def rtn_code(rtn):
    """Map a response RTN byte to E_OK or an E_RTN_* code (no allocation)."""
    if rtn == 0:
        return E_OK
    if rtn == 0x01:
        return E_RTN_VER
    if rtn == 0x02:
        return E_RTN_CHKSUM
    if rtn == 0x03:
        return E_RTN_LCHKSUM
    if rtn == 0x04:
        return E_RTN_CID2
    if rtn == 0x05:
        return E_RTN_FORMAT
    if rtn == 0x06:
        return E_RTN_DATA
    if rtn == 0x90:
        return E_RTN_ADDR
    if rtn == 0x91:
        return E_RTN_INTERNAL
    return E_RTN_UNKNOWN


def category(code):
    """CAT_* of a code: which Module.st_* counter the poller increments."""
    if code >= 0:
        return CAT_NONE
    if code == E_CHKSUM or code == E_LCHKSUM:
        return CAT_CHECKSUM
    if code >= E_TRUNCATED:          # -1 .. -7 except the two checksums
        return CAT_FRAMING
    if E_RTN_UNKNOWN <= code <= E_RTN_VER:
        return CAT_RTN
    return CAT_INVALID


def name(code):
    """snake_case name of a code ("unknown" for codes not listed)."""
    return ERROR_NAMES.get(code, "unknown")
