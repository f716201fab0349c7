# Latched faults that survive resets: a 16-byte record on the device filesystem.
#
# bankgate.admission keeps its latched faults (Admission.faults, fault_slot,
# fault_value) here the moment one latches and when a LOCAL reset clears them, and
# restores them at construction, before its first step: a watchdog reset, an
# exception reset, a brown-out or a power cycle no longer forgets a weld.
#
# Record (little endian), file PATH:
#   0..3  b"BGLT"          magic
#   4     version (1)
#   5     fault bits       (bankgate.contactor F_*)
#   6..7  s16 slot         module slot of the first fault, -1 bank-wide
#   8..11 s32 value        its evidence number
#   12..13 u16 generation  counts writes (diagnostics only)
#   14..15 u16 CRC-16/CCITT-FALSE of bytes 0..13
#
# Atomic replace: the record is written to TMP, the file is closed (littlefs and
# FAT commit on close), then renamed over PATH.  A power loss before the rename
# leaves PATH as it was (the previous state); the rename itself is one step on
# littlefs (the ESP32 port's default), and the unix port's rename(2) replaces in
# one step too.  Should a volume refuse to rename over an existing file, PATH is
# removed and the rename repeated; a loss between the two leaves only TMP, which
# load() then takes when it is complete and valid (the new state).
#
# load() verdicts:
#   OK        PATH (or a valid TMP without PATH) read: its faults are in force
#   MISSING   neither file, or only a torn TMP (the first write ever was cut):
#             a fresh device, no latches (the previous state)
#   CORRUPT   PATH exists but is not a valid record (length, magic, version, CRC)
#   UNREADABLE opening or reading PATH failed other than "no such file"
# CORRUPT and UNREADABLE are themselves a latched fault (admission: F_LATCH_STORE).
#
# Write only on change (flash wear): save() compares with what the file holds
# (as loaded or last written) and touches nothing when equal; `writes` counts
# real writes, `errors` failed ones.
#
# The filesystem is injected (hw.fs, bankgate.hal): open(path, mode) returning a
# file with read/write/close, rename(old, new), remove(path).  On the device it is
# bankgate.hal.Files (the built-in open and os); the simulator gives a simulated
# device filesystem that survives a simulated reboot and can cut a write.
#
# Allocation: load() and save() allocate (the file object, the read buffer);
# save() runs only when the latched set changes (a fault latches, a local reset),
# never in a step that latches nothing.  The zero-allocation tests of
# Admission.step() run on hardware without a filesystem (hw.fs None: no store).
import errno

from micropython import const

PATH = "latches.bin"
TMP = "latches.tmp"
SIZE = const(16)
VERSION = const(1)

OK = const(0)
MISSING = const(1)
CORRUPT = const(2)
UNREADABLE = const(3)
VERDICT_NAMES = ("ok", "missing", "corrupt", "unreadable")

_MAGIC = b"BGLT"


def crc16(buf, n):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of buf[:n]; allocation-free."""
    c = 0xFFFF
    for i in range(n):
        c ^= buf[i] << 8
        for _ in range(8):
            if c & 0x8000:
                c = ((c << 1) ^ 0x1021) & 0xFFFF
            else:
                c = (c << 1) & 0xFFFF
    return c


def encode(buf, faults, slot, value, gen):
    """Fill buf (16 bytes) with the record."""
    buf[0:4] = _MAGIC
    buf[4] = VERSION
    buf[5] = faults & 0xFF
    s = slot & 0xFFFF
    buf[6] = s & 0xFF
    buf[7] = s >> 8
    buf[8] = value & 0xFF               # arithmetic shifts: no long int for a negative value
    buf[9] = (value >> 8) & 0xFF
    buf[10] = (value >> 16) & 0xFF
    buf[11] = (value >> 24) & 0xFF
    buf[12] = gen & 0xFF
    buf[13] = (gen >> 8) & 0xFF
    c = crc16(buf, 14)
    buf[14] = c & 0xFF
    buf[15] = c >> 8


def decode(data):
    """(faults, slot, value, gen) from a record, or None if it is not a valid one."""
    if data is None or len(data) != SIZE or data[0:4] != _MAGIC or data[4] != VERSION:
        return None
    if crc16(data, 14) != data[14] | (data[15] << 8):
        return None
    slot = data[6] | (data[7] << 8)
    if slot & 0x8000:
        slot -= 0x10000
    hi = data[11] - 256 if data[11] & 0x80 else data[11]
    value = (hi << 24) | (data[10] << 16) | (data[9] << 8) | data[8]
    return data[5], slot, value, data[12] | (data[13] << 8)


def replace(fs, tmp, path, buf):
    """Atomic replace of path by buf (the record of this module's header): write tmp, close
    (littlefs and FAT commit on close), rename over path.  Raises on failure (path then
    holds the previous record, or only tmp is left: see load()).  Also used by
    bankgate.energy for the energy counters."""
    f = fs.open(tmp, "wb")
    try:
        f.write(buf)
        if hasattr(f, "flush"):
            f.flush()
    finally:
        f.close()
    try:
        fs.rename(tmp, path)
    except OSError as e:
        if e.args and e.args[0] == errno.ENOENT:
            raise
        fs.remove(path)                   # a volume that will not rename over a file
        fs.rename(tmp, path)


def read(fs, path, n):
    """At most n bytes of path, None if it does not exist; OSError else."""
    try:
        f = fs.open(path, "rb")
    except OSError as e:
        if e.args and e.args[0] == errno.ENOENT:
            return None
        raise
    try:
        return f.read(n)
    finally:
        f.close()


class LatchStore:
    def __init__(self, fs, path=PATH, tmp=TMP):
        self.fs = fs
        self.path = path
        self.tmp = tmp
        self.verdict = MISSING
        self.faults = 0             # what the file holds (valid only when known)
        self.slot = -1
        self.value = 0
        self.gen = 0
        self.known = False          # False: the file's content is unknown (corrupt, unreadable)
        self.writes = 0
        self.errors = 0
        self.last_error = None      # text of the last failed read or write
        self._buf = bytearray(SIZE)

    def _read(self, path):
        """bytes of path (at most SIZE + 1), None if it does not exist; OSError else."""
        try:
            f = self.fs.open(path, "rb")
        except OSError as e:
            if e.args and e.args[0] == errno.ENOENT:
                return None
            raise
        try:
            return f.read(SIZE + 1)
        finally:
            f.close()

    def load(self):
        """Read the file: sets verdict and (faults, slot, value); returns the verdict."""
        self.known = False
        self.faults, self.slot, self.value = 0, -1, 0
        try:
            data = self._read(self.path)
        except Exception as e:
            self.last_error = "read %s: %r" % (self.path, e)
            self.verdict = UNREADABLE
            return UNREADABLE
        if data is None:
            # no record: a fresh device, or a replace cut between remove and rename
            try:
                rec = decode(self._read(self.tmp))
            except Exception:
                rec = None
            if rec is None:
                self.known = True
                self.verdict = MISSING
                return MISSING
        else:
            rec = decode(data)
            if rec is None:
                self.last_error = "%s: not a valid latch record (%d bytes)" % (self.path, len(data))
                self.verdict = CORRUPT
                return CORRUPT
        self.faults, self.slot, self.value, self.gen = rec
        self.known = True
        self.verdict = OK
        return OK

    def save(self, faults, slot, value):
        """Persist the latched set if it differs from the file.  Returns True if the
        file was written, False if nothing changed; raises nothing (a failure is
        counted in `errors`, the file then holds the previous state)."""
        if self.known and faults == self.faults and (
                faults == 0 or (slot == self.slot and value == self.value)):
            return False
        buf = self._buf
        gen = (self.gen + 1) & 0xFFFF
        encode(buf, faults, slot, value, gen)
        try:
            replace(self.fs, self.tmp, self.path, buf)
        except Exception as e:
            self.errors += 1
            self.last_error = "write %s: %r" % (self.path, e)
            return False
        self.faults, self.slot, self.value, self.gen = faults, slot, value, gen
        self.known = True
        self.verdict = OK
        self.writes += 1
        return True

    def snapshot(self):
        return {"file": self.path, "verdict": VERDICT_NAMES[self.verdict], "faults": self.faults,
                "writes": self.writes, "errors": self.errors, "last_error": self.last_error}
