# The shared data model: one preallocated record per module slot and the bank
# that holds them.  The bus layer writes these records, admission, metrics,
# diagnoses, the inverter link and telemetry read them.  All values are integers
# in the unit their name says:
#   _mv millivolt, _ma milliampere (+ = charging the module), _mah milliampere-hour,
#   _dc 0.1 degree Celsius, _pm permille (0.1 %), _mohm milliohm, t_* ticks_ms.
# Nothing here allocates after construction: updating an int attribute or an
# array element in place is allocation-free in MicroPython.
import array

from micropython import const

from bankgate import clock

MAX_MODULES = const(16)
MAX_CELLS = const(24)
MAX_TEMPS = const(8)

# Normalised BMS alarm bits (Module.alarms), filled by every protocol family.
ALM_CELL_OV = const(0x0001)
ALM_CELL_UV = const(0x0002)
ALM_MOD_OV = const(0x0004)
ALM_MOD_UV = const(0x0008)
ALM_CHG_OT = const(0x0010)
ALM_DSG_OT = const(0x0020)
ALM_CHG_UT = const(0x0040)
ALM_DSG_UT = const(0x0080)
ALM_CHG_OC = const(0x0100)
ALM_DSG_OC = const(0x0200)
ALM_INTERNAL = const(0x0400)   # BMS internal / communication fault, system error
ALM_CELL_IMB = const(0x0800)   # cell imbalance reported by the BMS
# Protection (trip) versions of the above live in Module.protections, same bits.
# Which bits count as critical (block closing, open at once) is configuration;
# this is the default: any protection, and these alarms.
_ALM_CRITICAL_DEFAULT = const(0x07FF)

ALARM_NAMES = (
    (ALM_CELL_OV, "cell_ov"), (ALM_CELL_UV, "cell_uv"), (ALM_MOD_OV, "module_ov"),
    (ALM_MOD_UV, "module_uv"), (ALM_CHG_OT, "charge_ot"), (ALM_DSG_OT, "discharge_ot"),
    (ALM_CHG_UT, "charge_ut"), (ALM_DSG_UT, "discharge_ut"), (ALM_CHG_OC, "charge_oc"),
    (ALM_DSG_OC, "discharge_oc"), (ALM_INTERNAL, "internal"), (ALM_CELL_IMB, "cell_imbalance"),
)


def zeros(tc, n):
    """array.array(tc) of n zeros, allocated once: array.array(tc, bytes(size * n)) first
    allocates the bytes as a temporary of the same size, which doubles the contiguous
    room a large array needs while the Gateway is built (on a 96 KiB heap the second block
    was the one that did not fit; docs/performance.md).  The range gives the length without
    a buffer; its values are overwritten (typecodes narrower than n wrap, harmlessly)."""
    a = array.array(tc, range(n))
    for i in range(n):
        a[i] = 0
    return a


def alarm_names(bits):
    """Names of the set bits (allocates: telemetry/reporting only)."""
    return [name for bit, name in ALARM_NAMES if bits & bit]


def note_analog(m):
    """After a protocol commit of analog data: fingerprint the content (cells,
    temperatures, current, voltage, SOC, remaining/total capacity) into m.fp: per
    value, h rotated left by 5 within 30 bits, XOR the value's low 30 bits (every
    intermediate a small int on the ESP32; inlined, a call per value would cost
    more than the mixing).  Identical content gives the identical fingerprint, so a
    BMS replaying one frame never changes it (bankgate.plausible: frozen data
    compares it per control step).  A change that collides with the old
    fingerprint (2**-30) is seen at the next change.  One attribute, not two: a
    60th attribute would grow every Module's attribute table (~110 bytes each on
    the ESP32).  Allocation-free."""
    n = m.n_cells
    h = n
    cm = m.cell_mv
    for k in range(n):
        h = (((h & 0x1FFFFFF) << 5) | (h >> 25)) ^ cm[k]
    n = m.n_temps
    t = m.temp_dc
    for k in range(n):
        h = (((h & 0x1FFFFFF) << 5) | (h >> 25)) ^ (t[k] & 0x3FFFFFFF)
    h = (((h & 0x1FFFFFF) << 5) | (h >> 25)) ^ (m.current_ma & 0x3FFFFFFF)
    h = (((h & 0x1FFFFFF) << 5) | (h >> 25)) ^ (m.voltage_mv & 0x3FFFFFFF)
    h = (((h & 0x1FFFFFF) << 5) | (h >> 25)) ^ (m.soc_pm & 0x3FFFFFFF)
    h = (((h & 0x1FFFFFF) << 5) | (h >> 25)) ^ (m.remaining_mah & 0x3FFFFFFF)
    h = (((h & 0x1FFFFFF) << 5) | (h >> 25)) ^ (m.total_mah & 0x3FFFFFFF)
    m.fp = h


class Module:
    """Everything known about the module in one slot (one bus address)."""

    def __init__(self, slot):
        self.slot = slot
        self.addr = -1               # bus address; -1: slot unused
        # buffers (filled by the decoders; their lengths and every value below are
        # reset by clear_data, the one list of what a module reports)
        self.serial = bytearray(16)          # identity: 0x93 serial
        self.model = bytearray(10)           # 0x51 manufacturer info
        self.manufacturer = bytearray(20)
        self.cell_mv = array.array("H", bytes(2 * MAX_CELLS))   # analog values: 0x42
        self.temp_dc = array.array("h", bytes(2 * MAX_TEMPS))   # [0] is the BMS board
        self.status = bytearray(5)           # raw 0x44 status bytes, kept for diagnosis
        self.t_id = 0
        self.t_analog = 0
        self.t_alarm = 0
        self.t_mgmt = 0
        self.clear_data()
        # bus statistics for this address (see bankgate.bushealth)
        self.st_requests = 0
        self.st_good = 0
        self.st_timeouts = 0
        self.st_checksum = 0         # CHKSUM / LCHKSUM errors
        self.st_framing = 0          # missing SOI/EOI, non-hex, bad length, truncated
        self.st_rtn = 0              # error return codes from the BMS
        self.st_invalid = 0          # well-formed but implausible values, wrong address
        self.st_lat_sum_ms = 0
        self.st_lat_max_ms = 0
        self.last_error = 0          # last rejection code (bankgate.proto.errors)
        self.t_last_reply = 0
        self.seen = False            # answered at least once since discovery

    def age(self, now):
        """Aging pass of the time model (bankgate.clock.hold): every data stamp of this
        record is held at most clock.AGE_MAX old, so an age read from it never wraps,
        however long the module stays silent.  Admission runs it for every slot at
        least every clock.AGE_PASS_MS.  Allocation-free."""
        self.t_analog = clock.hold(now, self.t_analog)
        self.t_alarm = clock.hold(now, self.t_alarm)
        self.t_mgmt = clock.hold(now, self.t_mgmt)
        self.t_id = clock.hold(now, self.t_id)
        self.t_last_reply = clock.hold(now, self.t_last_reply)

    def clear_data(self):
        """Forget everything the previous occupant of this slot reported (its address
        vanished, or the slot goes to another address): measured data, limits,
        parameters and identity.  Keeps the slot, the address and the bus statistics.
        Nothing of the old module may pass a check for the next one that answers here:
        the identity/compatibility checks (model, firmware, cell count) judge only what
        the new module itself reports.  Allocation-free."""
        # analog values: 0x42
        self.analog_valid = False
        self.n_cells = 0
        self.n_temps = 0
        self.current_ma = 0
        self.voltage_mv = 0
        self.remaining_mah = 0
        self.total_mah = 0
        self.cycles = 0
        self.soc_pm = 0              # state of charge, permille (remaining * 1000 // total)
        self.soh_pm = 1000           # state of health, permille, where the family reports it
        self.fp = 0                  # fingerprint of the analog content (note_analog)
        # alarms: 0x44 (bitmasks of ALM_*)
        self.alarm_valid = False
        self.alarms = 0
        self.protections = 0
        # charge/discharge management: 0x92 (limits as positive magnitudes)
        self.mgmt_valid = False
        self.chg_v_mv = 0
        self.dsg_v_mv = 0
        self.chg_limit_ma = 0
        self.dsg_limit_ma = 0
        self.mgmt_flags = 0          # b7 charge enable, b6 discharge enable, b5/b4 force charge, b3 full
        # system parameters: 0x47
        self.params_valid = False
        self.cell_hi_mv = 0
        self.cell_lo_mv = 0
        self.cell_uv_mv = 0
        self.mod_hi_mv = 0
        self.mod_lo_mv = 0
        self.mod_uv_mv = 0
        self.params_chg_ma = 0
        self.params_dsg_ma = 0
        self.clear_identity()

    def clear_identity(self):
        """Forget the identity (serial, model, manufacturer, firmware and protocol
        versions): the module must be identified again (0x51 for model and firmware)
        before admission's identity checks can pass (no_identity until then; an
        identity read of only the serial or protocol version does not bring back a
        previous module's model or firmware).  The poller calls it for a lost slot
        whose data went stale (a module may have been replaced meanwhile).
        Allocation-free."""
        self.id_valid = False
        self.serial_len = 0
        self.model_len = 0
        self.manufacturer_len = 0
        self.sw_version = -1         # (major << 8) | minor
        self.proto_version = -1

    def serial_str(self):
        return bytes(self.serial[: self.serial_len]).decode()

    def model_str(self):
        return bytes(self.model[: self.model_len]).decode()


_scratch = None


def scratch():
    """The one scratch Module (slot -1) of the firmware: a protocol family decodes a reply into
    it before committing to a bank record, and the poller gives it as the record of an address
    no slot holds (a sink: the family then commits the scratch into itself, harmlessly).  One,
    not one per user: a Module is about 750 bytes of the ESP32's heap."""
    global _scratch
    if _scratch is None:
        _scratch = Module(-1)
    return _scratch


class Bank:
    """The module slots plus the bank-wide measurements other layers share."""

    def __init__(self, n_slots=MAX_MODULES):
        self.modules = [Module(i) for i in range(n_slots)]
        self.n_used = 0              # slots in use (addresses configured or discovered)
        # measured at the bank terminal / DC link (where the board can measure it;
        # otherwise derived from the admitted modules)
        self.link_mv = -1            # DC-link voltage, -1 = not measured
        # aggregates over the ADMITTED modules (bankgate.aggregate.update)
        self.bank_mv = 0             # mean module voltage
        self.bank_ma = 0             # sum of module currents (+ = charging)
        self.soc_pm = 0              # capacity-weighted SOC
        self.soh_pm = 0              # capacity-weighted SOH
        self.temp_dc = 0             # highest module temperature (BMS sensors)
        self.temp_min_dc = 0
        self.capacity_mah = 0        # sum of admitted modules' full capacity (saturates at 2**30 - 1)

    def slot_for(self, addr):
        for m in self.modules:
            if m.addr == addr:
                return m
        return None
