# The CAN interface every CAN back end implements, and the helpers shared by them.
#
# Back ends (all duck-typed, all non-blocking, none allocates per frame):
#   bankgate.hal.twai.TwaiCan     wraps MicroPython's generic machine.CAN (ESP32 TWAI
#                                 builds, stm32, mimxrt, ...)
#   bankgate.bus.mcp2515.Mcp2515  MCP2515 controller on SPI, pure MicroPython
#   tools/sim/fakebus.FakeCan     simulated controller on a FakeCanBus (host tests)
#
# The interface:
#   send(can_id, buf, n) -> bool   queue a standard (11-bit) data frame with the first
#                                  n (0..8) bytes of buf; False when the transmit queue
#                                  is full, the controller is bus-off, or the arguments
#                                  are invalid (nothing is queued then).  Never blocks.
#   recv(buf) -> int               NO_FRAME (-1) when nothing is waiting, else
#                                  (can_id << 4) | dlc with the dlc (0..8) data bytes
#                                  copied into buf[0:dlc] (buf must hold 8 bytes).
#                                  Remote and extended-ID frames are skipped (counted
#                                  by the back end), so can_id is always 0..0x7FF and the
#                                  result stays below 2**15 (a small int everywhere).
#   state() -> int                 ERROR_ACTIVE, ERROR_WARNING, ERROR_PASSIVE, BUS_OFF
#   tec() -> int, rec() -> int     transmit / receive error counters, -1 if unknown
#   restart()                      leave bus-off (drops the transmit queue)
#
# Error states (ISO 11898-1 fault confinement), from the two error counters:
#   ERROR_ACTIVE   TEC < 96 and REC < 96
#   ERROR_WARNING  TEC >= 96 or REC >= 96 (still error active on the wire)
#   ERROR_PASSIVE  TEC >= 128 or REC >= 128: the node sends only passive error flags
#   BUS_OFF        TEC > 255: the node has disconnected itself; needs restart()
# A transmitter's TEC rises by 8 per error it detects and falls by 1 per frame sent;
# a receiver's REC rises by 1 (8 when it is the first to flag) and falls by 1.
from micropython import const

ERROR_ACTIVE = const(0)
ERROR_WARNING = const(1)
ERROR_PASSIVE = const(2)
BUS_OFF = const(3)

STATE_NAMES = ("error_active", "error_warning", "error_passive", "bus_off")

NO_FRAME = const(-1)
MAX_STD_ID = const(0x7FF)

WARNING_LIMIT = const(96)
PASSIVE_LIMIT = const(128)
BUS_OFF_LIMIT = const(256)


def state_from_counters(tec, rec):
    """Error state from TEC/REC (TEC may exceed 255 in a model: bus-off)."""
    if tec >= BUS_OFF_LIMIT:
        return BUS_OFF
    if tec >= PASSIVE_LIMIT or rec >= PASSIVE_LIMIT:
        return ERROR_PASSIVE
    if tec >= WARNING_LIMIT or rec >= WARNING_LIMIT:
        return ERROR_WARNING
    return ERROR_ACTIVE


def frame_id(r):
    """CAN ID of a recv() result r >= 0."""
    return r >> 4


def frame_dlc(r):
    """Data length of a recv() result r >= 0."""
    return r & 0x0F


def valid_args(can_id, buf, n):
    """The arguments of send() a back end accepts (standard data frame)."""
    return 0 <= can_id <= MAX_STD_ID and 0 <= n <= 8 and n <= len(buf)


def frame_bits(dlc):
    """Nominal bits a standard data frame occupies on the wire, including the
    3-bit interframe space and the worst-case stuff bits:
    44 + 8*dlc frame bits, + 3 IFS, + (34 + 8*dlc - 1) // 4 stuff bits.
    500 kbit/s, 8 bytes: 135 bits = 270 us."""
    return 47 + 8 * dlc + (33 + 8 * dlc) // 4
