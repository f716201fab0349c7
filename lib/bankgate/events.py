# The event log: a preallocated ring of integer records with a monotonically
# increasing sequence number.  Emitting never allocates, so the control path may
# emit freely; telemetry turns records into JSON later (and may lag behind).
#
# A record is (seq, t_ms, code, addr, a, b): `code` is one of the EV_* constants,
# `addr` the module address or -1, `a`/`b` the evidence numbers whose meaning
# EVENT_INFO gives per code.
import array

from micropython import const

EV_BOOT = const(1)
EV_BANK_STATE = const(2)        # a = new bank state, b = old
EV_MODULE_STATE = const(3)      # a = new admission state, b = reason code
EV_CHECK_FAIL = const(4)        # a = check code, b = measured value
EV_CHECK_CLEAR = const(5)       # a = check code
EV_ALARM = const(6)             # a = alarm bits now, b = protection bits now
EV_CONTACTOR = const(7)         # a = output index, b = 1 closed / 0 open
EV_FAULT_LATCHED = const(8)     # a = fault code, b = value
EV_FAULT_CLEARED = const(9)     # a = fault code (local reset only)
EV_BUS = const(10)              # a = bus verdict code, b = number behind it
EV_DISCOVERY = const(11)        # a = discovery finding code, b = detail
EV_DIAG_RAISED = const(12)      # a = diagnosis code, b = evidence value
EV_DIAG_CLEARED = const(13)     # a = diagnosis code
EV_INVERTER = const(14)         # a = 1 heartbeat present / 0 lost
EV_PENDING_LONG = const(15)     # a = seconds pending, b = |dV| mV
_EV_CONFIG = const(16)           # a = 1 valid / 0 invalid
EV_MQTT = const(17)             # a = 1 connected / 0 disconnected, b = reason
EV_COMMAND = const(18)          # a = command code, b = 1 accepted / 0 rejected
EV_CAN = const(20)              # CAN controller (bankgate.bus.can.BusOffRecovery): addr = bus
                                # (0 modules, 1 inverter), a = 1 bus-off / 2 recovered / 3 bus
                                # fault / 4 fault cleared, b = TEC / ms bus-off / count / ms
EV_TELEMETRY_LOSS = const(19)   # telemetry dropped events: addr = cause (transport reason code,
                                # 0 = produced faster than the broker took them), a = events
                                # dropped, b = seconds the cause lasted (offline / no PUBACK)

EVENT_NAMES = {
    EV_BOOT: "boot", EV_BANK_STATE: "bank_state", EV_MODULE_STATE: "module_state",
    EV_CHECK_FAIL: "check_fail", EV_CHECK_CLEAR: "check_clear", EV_ALARM: "alarm",
    EV_CONTACTOR: "contactor", EV_FAULT_LATCHED: "fault_latched",
    EV_FAULT_CLEARED: "fault_cleared", EV_BUS: "bus", EV_DISCOVERY: "discovery",
    EV_DIAG_RAISED: "diagnosis", EV_DIAG_CLEARED: "diagnosis_cleared",
    EV_INVERTER: "inverter", EV_PENDING_LONG: "pending_long", _EV_CONFIG: "config",
    EV_MQTT: "mqtt", EV_COMMAND: "command",
    EV_TELEMETRY_LOSS: "telemetry_loss", EV_CAN: "can",
}


class EventLog:
    def __init__(self, capacity=64):
        self.capacity = capacity
        self._t = array.array("i", bytes(4 * capacity))
        self._code = array.array("h", bytes(2 * capacity))
        self._addr = array.array("h", bytes(2 * capacity))
        self._a = array.array("i", bytes(4 * capacity))
        self._b = array.array("i", bytes(4 * capacity))
        self.seq = 0                 # sequence number of the newest record (0: none yet)
        self.overwritten = 0         # records lost to overflow before anyone read them
        self._read_seq = 0           # newest seq a consumer acknowledged (see mark_read)

    def emit(self, t_ms, code, addr=-1, a=0, b=0):
        self.seq += 1
        i = self.seq % self.capacity
        if self.seq - self._read_seq > self.capacity:
            self.overwritten += 1
        self._t[i] = t_ms
        self._code[i] = code
        self._addr[i] = addr
        self._a[i] = a
        self._b[i] = b
        return self.seq

    def oldest(self):
        """Oldest sequence number still held."""
        return max(1, self.seq - self.capacity + 1)

    def get(self, seq, out):
        """Copy record `seq` into `out` (a list of 5: t, code, addr, a, b).
        Returns False if it has been overwritten or does not exist yet."""
        if seq < self.oldest() or seq > self.seq or seq <= 0:
            return False
        i = seq % self.capacity
        out[0] = self._t[i]
        out[1] = self._code[i]
        out[2] = self._addr[i]
        out[3] = self._a[i]
        out[4] = self._b[i]
        return True

    def mark_read(self, seq):
        if seq > self._read_seq:
            self._read_seq = seq
