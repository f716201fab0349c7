# The CAN interface every CAN back end implements, and the helpers shared by them.
#
# Back ends (all duck-typed, all non-blocking, none allocates per frame):
#   bankgate.hal.twai.TwaiCan     wraps MicroPython's generic machine.CAN (ESP32 TWAI
#                                 builds, stm32, mimxrt, ...)
#   bankgate.bus.mcp2515.Mcp2515  MCP2515 controller on SPI, pure MicroPython
#   tools/fakes/fakebus.FakeCan   simulated controller on a FakeCanBus (host tests)
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
#                                  (a controller that is stopped / not initialised and
#                                  cannot talk reports BUS_OFF too).  Cheap enough to
#                                  call every few ms; never blocks, never allocates.
#   tec() -> int, rec() -> int     transmit / receive error counters, -1 if unknown
#   restart()                      start leaving bus-off: drops the transmit queue and
#                                  returns at once (never waits on the bus).  The
#                                  controller rejoins by itself once ISO 11898-1 allows:
#                                  after it has seen 128 occurrences of 11 consecutive
#                                  recessive bits (1408 bit times: 2.8 ms at 500 kbit/s,
#                                  5.6 ms at 250 kbit/s); until then state() stays
#                                  BUS_OFF.  Called on a controller that is not bus-off
#                                  it re-initialises it (counters 0).  Never raises for
#                                  a bus condition.  BusOffRecovery below decides WHEN
#                                  to call it; back ends never restart by themselves
#                                  (an auto-restart in hardware -- MCP2515, TWAI with
#                                  auto recovery -- is fine: BusOffRecovery then only
#                                  counts).
# Every back end (machine.CAN via hal/twai.py, MCP2515, the TWAI register driver, the
# fakes) implements exactly these six methods; nothing else in bankgate calls a CAN
# controller.
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

_NO_FRAME = const(-1)
_MAX_STD_ID = const(0x7FF)

WARNING_LIMIT = const(96)
_PASSIVE_LIMIT = const(128)
BUS_OFF_LIMIT = const(256)


def state_from_counters(tec, rec):
    """Error state from TEC/REC (TEC may exceed 255 in a model: bus-off)."""
    if tec >= BUS_OFF_LIMIT:
        return BUS_OFF
    if tec >= _PASSIVE_LIMIT or rec >= _PASSIVE_LIMIT:
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
    return 0 <= can_id <= _MAX_STD_ID and 0 <= n <= 8 and n <= len(buf)


def frame_bits(dlc):
    """Nominal bits a standard data frame occupies on the wire, including the
    3-bit interframe space and the worst-case stuff bits:
    44 + 8*dlc frame bits, + 3 IFS, + (34 + 8*dlc - 1) // 4 stuff bits.
    500 kbit/s, 8 bytes: 135 bits = 270 us."""
    return 47 + 8 * dlc + (33 + 8 * dlc) // 4


# ----------------------------------------------------------------------------------
# Bus-off recovery, shared by every CAN user (module bus: bankgate.poller; inverter
# link: bankgate.inverter) and every back end.
#
#   rec = BusOffRecovery(dev, events, bus_id, bitrate)
#   rec.service(now) -> bool       call often (every loop iteration is fine: it reads
#                                  the controller state at most every CHECK_MS); True
#                                  while the controller is usable (not bus-off)
#
# Policy:
#   - bus-off seen: counted (bus_offs), event EV_CAN (a = CAN_BUS_OFF, b = TEC);
#     restart() after the current backoff, first MIN_BACKOFF_MS (100 ms), doubling
#     after every restart that does not bring the controller back, up to
#     MAX_BACKOFF_MS (5 s).  ISO 11898-1 lets a bus-off node rejoin only after 128 x 11
#     recessive bits; the controller enforces that after restart(), and the backoff is
#     never shorter than those 1408 bit times either (a controller that re-initialises
#     on restart -- MCP2515 -- would otherwise rejoin after only 11 recessive bits).
#     The growing backoff keeps a node with a broken transceiver or a bus with a
#     short from being hammered with error frames: at most one rejoin attempt (up to
#     32 error frames) per 5 s once the fault persists.
#   - back from bus-off: counted (recoveries), event (a = CAN_RECOVERED, b = ms the
#     controller was bus-off).  The backoff returns to MIN_BACKOFF_MS once the
#     controller has stayed out of bus-off for STABLE_MS (30 s).
#   - a controller that goes bus-off again within STABLE_MS of its last recovery,
#     FAULT_AFTER (3) times in a row, or that stays bus-off for FAULT_AFTER_MS (10 s)
#     despite restarts, is a BUS FAULT: `fault` True, event (a = CAN_BUS_FAULT,
#     b = bus-offs in a row), diagnosis() says what to check.  Restarts go on at the
#     capped backoff (the fault may end: a connector re-seated, a node removed); the
#     fault clears (event a = CAN_FAULT_CLEARED) after STABLE_MS without bus-off.
# Why these numbers: 100 ms is far above the ISO minimum at every bit rate in use
# (1408 bits = 14 ms even at 100 kbit/s) and short against the data freshness bound
# (gating.max_age_ms, 5 s): a single bus-off (one burst of errors) costs no data that
# admission would notice.  5 s cap: a bus that comes back is rejoined within 5 s + the
# ISO wait, i.e. within one max_age_ms.  30 s stable: three times the longest gap
# between two frames of any module (CAN_SILENT_MS, 3 s) by a wide margin -- a
# controller that survives it is not bouncing.  3 in a row: one bus-off can be a
# transient (an ESD burst, a node hot-plugged), three within 30 s each are not.
# service() allocates nothing.
from bankgate import clock as _clk
from bankgate.events import EV_CAN

CHECK_MS = const(10)
MIN_BACKOFF_MS = const(100)
MAX_BACKOFF_MS = const(5000)
STABLE_MS = const(30000)
_FAULT_AFTER = const(3)
FAULT_AFTER_MS = const(10000)

# EV_CAN `a` codes (addr = bus id: BUS_MODULES / BUS_INVERTER)
CAN_BUS_OFF = const(1)          # b = TEC when seen
CAN_RECOVERED = const(2)        # b = ms spent bus-off
CAN_BUS_FAULT = const(3)        # b = bus-offs in a row
CAN_FAULT_CLEARED = const(4)    # b = ms the fault lasted
CAN_EVENT_NAMES = ("-", "bus_off", "recovered", "bus_fault", "fault_cleared")
BUS_MODULES = const(0)
BUS_INVERTER = const(1)
BUS_NAMES = ("modules", "inverter")


def iso_recovery_ms(bitrate):
    """128 x 11 recessive bits at `bitrate`, in ms, rounded up."""
    return (1408 * 1000 + bitrate - 1) // bitrate


class BusOffRecovery:
    def __init__(self, dev, events=None, bus_id=BUS_MODULES, bitrate=500000):
        self.dev = dev
        self.events = events
        self.bus_id = bus_id
        iso = iso_recovery_ms(bitrate) + 1
        self.min_backoff_ms = MIN_BACKOFF_MS if MIN_BACKOFF_MS > iso else iso
        self.backoff_ms = self.min_backoff_ms
        self.ok = True
        self.bus_off = False
        self.fault = False
        self.bus_offs = 0            # entries into bus-off
        self.restarts = 0            # restart() calls
        self.recoveries = 0          # returns from bus-off
        self.in_row = 0              # bus-offs each within STABLE_MS of the last recovery
        self.last_tec = 0
        self.t_off = 0               # when the current / last bus-off was seen
        self.t_back = 0              # when the controller last came back
        self.t_fault = 0
        self.off_ms_max = 0          # longest bus-off so far
        self._back_seen = False      # t_back valid
        self._next_check = None
        self._next_restart = 0

    def _emit(self, now, a, b):
        ev = self.events
        if ev is not None:
            ev.emit(now, EV_CAN, self.bus_id, a, b)

    def service(self, now):
        if self._next_check is not None and not _clk.due(now, self._next_check):
            return self.ok
        self._next_check = _clk.add(now, CHECK_MS)
        dev = self.dev
        off = dev.state() == BUS_OFF
        if off:
            if not self.bus_off:
                self.bus_off = True
                self.bus_offs += 1
                self.t_off = now
                t = dev.tec()
                self.last_tec = t
                if self._back_seen and _clk.diff(now, self.t_back) < STABLE_MS:
                    self.in_row += 1
                else:
                    self.in_row = 1
                self._next_restart = _clk.add(now, self.backoff_ms)
                self._emit(now, CAN_BUS_OFF, t)
                if self.in_row >= _FAULT_AFTER:
                    self._set_fault(now)
            elif _clk.due(now, self._next_restart):
                dev.restart()
                self.restarts += 1
                b = self.backoff_ms * 2
                self.backoff_ms = b if b < MAX_BACKOFF_MS else MAX_BACKOFF_MS
                self._next_restart = _clk.add(now, self.backoff_ms)
                if _clk.diff(now, self.t_off) >= FAULT_AFTER_MS:
                    self._set_fault(now)
            self.ok = False
            return False
        if self.bus_off:
            self.bus_off = False
            self.recoveries += 1
            self.t_back = now
            self._back_seen = True
            d = _clk.diff(now, self.t_off)
            if d > self.off_ms_max:
                self.off_ms_max = d
            self._emit(now, CAN_RECOVERED, d)
        elif self._back_seen and _clk.diff(now, self.t_back) >= STABLE_MS:
            self.backoff_ms = self.min_backoff_ms
            self.in_row = 0
            if self.fault:
                self.fault = False
                self._emit(now, CAN_FAULT_CLEARED, _clk.diff(now, self.t_fault))
        self.ok = True
        return True

    def _set_fault(self, now):
        if not self.fault:
            self.fault = True
            self.t_fault = now
            self._emit(now, CAN_BUS_FAULT, self.in_row)

    def diagnosis(self):
        """Installer text while `fault`, else None."""
        if not self.fault:
            return None
        return ("CAN %s bus: controller keeps going bus-off (%d times, %d in a row): check the "
                "CAN-H/CAN-L wiring for a short or swapped pair, both 120 ohm terminators, the bit "
                "rate of every node and the gateway's transceiver" % (
                    BUS_NAMES[self.bus_id], self.bus_offs, self.in_row))

    def snapshot(self):
        return {"bus_off": self.bus_off, "fault": self.fault, "bus_offs": self.bus_offs,
                "restarts": self.restarts, "recoveries": self.recoveries,
                "backoff_ms": self.backoff_ms, "off_ms_max": self.off_ms_max}
