# CAN back end on MicroPython's generic machine.CAN API (docs.micropython.org,
# library/machine.CAN.html): the ESP32's on-chip TWAI controller on firmware built
# with TWAI support (esp32 port PR micropython#19461; stock ESP32 builds have no
# machine.CAN -- hal/esp32.py uses the register driver bankgate.hal.twai_regs
# there), and stm32/mimxrt/alif.  The board layer constructs it the generic way:
# machine.CAN(id, bitrate) with a 1-based id and no pin keywords (the pins belong
# to the firmware build).
#
# The machine.CAN object is created by the board layer (hal/esp32.py) and passed
# in, so this module needs no `machine` import and runs against
# tools/fakes/fakebus.FakeMachineCan in host tests.  It implements the
# bankgate.bus.can interface:
#   send()  copies the data into a preallocated buffer and queues a memoryview of
#           exactly n bytes (one view per length, made once); machine.CAN.send()
#           returns -1 when its queue is full (or an equal-ID frame is still
#           queued; None on early builds) and raises OSError when bus-off or
#           stopped: all give False.
#   recv()  machine.CAN.recv(list) with a preallocated [id, memoryview, flags,
#           errors] list: no allocation.  Remote and extended-ID frames are skipped
#           (counted); RECV_ERR_OVERRUN is counted in rx_overruns.
#   state() machine.CAN.get_state(): STATE_ACTIVE/WARNING/PASSIVE/BUS_OFF map to
#           the bankgate.bus.can constants; STATE_STOPPED (not initialised, or a
#           TWAI controller that finished its bus-off recovery and waits for a
#           start) reports BUS_OFF, so BusOffRecovery calls restart() again.
#   tec()/rec() from get_counters(list) (-1 where the controller gives None).
#   restart() machine.CAN.restart(): begins the bus-off recovery (the esp32 port:
#           twai recovery, the controller rejoins after 128 x 11 recessive bits) or,
#           when not bus-off, stops and restarts the controller; pending transmits
#           are dropped.  Counted in `restarts`; an OSError (controller not
#           initialised) is counted in restart_errors, never raised.
#   set_filters([]) accepts every frame (set_filters(None) would disable receiving).
from micropython import const

from bankgate.bus import can as _can

_MAX_SKIP = const(4)


class TwaiCan:
    def __init__(self, can):
        self._can = can
        self._txb = bytearray(8)
        mv = memoryview(self._txb)
        self._txv = [mv[:k] for k in range(9)]
        self._rxb = bytearray(8)
        self._rxv = memoryview(self._rxb)
        self._res = [0, self._rxv, 0, 0]
        self._cnt = [None] * 8
        self._st_active = can.STATE_ACTIVE
        self._st_warning = can.STATE_WARNING
        self._st_passive = can.STATE_PASSIVE
        self._skip_flags = can.FLAG_RTR | can.FLAG_EXT_ID
        self._overrun = can.RECV_ERR_OVERRUN
        self.rx_overruns = 0
        self.skipped = 0
        self.tx_full = 0
        self.restarts = 0
        self.restart_errors = 0
        can.set_filters([])            # receive everything (None would receive nothing)

    def send(self, can_id, buf, n):
        if not (0 <= can_id <= 0x7FF and 0 <= n <= 8 and n <= len(buf)):
            return False
        if self.state() == _can.BUS_OFF:
            return False
        t = self._txb
        for i in range(n):
            t[i] = buf[i]
        try:
            r = self._can.send(can_id, self._txv[n], 0)
        except OSError:
            return False
        if r is None or r < 0:
            self.tx_full += 1
            return False
        return True

    def recv(self, buf):
        res = self._res
        can = self._can
        for _ in range(_MAX_SKIP):
            res[1] = self._rxv             # full length again (recv shrinks it)
            r = can.recv(res)
            if r is None:
                return -1
            if r[3] & self._overrun:
                self.rx_overruns += 1
            if r[2] & self._skip_flags:
                self.skipped += 1
                continue
            data = r[1]
            dlc = len(data)
            if dlc > 8:
                dlc = 8
            for i in range(dlc):
                buf[i] = data[i]
            return (r[0] << 4) | dlc
        return -1

    def state(self):
        s = self._can.get_state()
        if s == self._st_active:
            return _can.ERROR_ACTIVE
        if s == self._st_warning:
            return _can.ERROR_WARNING
        if s == self._st_passive:
            return _can.ERROR_PASSIVE
        return _can.BUS_OFF

    def tec(self):
        v = self._can.get_counters(self._cnt)[0]
        return -1 if v is None else v

    def rec(self):
        v = self._can.get_counters(self._cnt)[1]
        return -1 if v is None else v

    def restart(self):
        self.restarts += 1
        try:
            self._can.restart()
        except OSError:
            self.restart_errors += 1
