# The simulated device filesystem (hw.fs, see bankgate.hal) and the device reset the
# simulator raises inside the firmware (a `reboot` action, power lost during a file
# operation): docs/scenarios.md, "Reboot and power loss".  Kept apart from fakehw so the
# tests that only need pins and a clock do not load it.


class DeviceReset(BaseException):
    """Raised by the simulator where the device restarts (a `reboot` timeline action,
    power lost during a file-system operation): a BaseException, so nothing in the
    firmware that handles Exception can swallow it.  The runner catches it, lets the
    old firmware go (its outputs released, as a reset leaves them) and starts a new
    one.  kind: "hard" (power cycle, brown-out, watchdog: ticks restart at 0) or
    "soft" (machine.soft_reset: ticks continue)."""

    def __init__(self, kind, why=""):
        super().__init__(kind, why)
        self.kind = kind
        self.why = why


def _enoent(path):
    return OSError(2, "ENOENT: %s" % path)


class SimFile:
    """A file opened on a SimFS.  Writes go to the file at once (what a power cut
    leaves is what was written so far); reads come from a snapshot at open."""

    def __init__(self, fs, path, data=None):
        self.fs = fs
        self.path = path
        self._data = data          # bytes when reading, None when writing
        self._pos = 0
        self.closed = False

    def read(self, n=-1):
        d = self._data
        if d is None:
            raise OSError(9, "EBADF: not open for reading")
        end = len(d) if n is None or n < 0 else min(len(d), self._pos + n)
        out = d[self._pos:end]
        self._pos = end
        return out

    def write(self, buf):
        if self._data is not None or self.closed:
            raise OSError(9, "EBADF: not open for writing")
        return self.fs._write(self.path, bytes(buf))

    def flush(self):
        pass

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SimFS:
    """The simulated device filesystem (hw.fs, see bankgate.hal): a dict name ->
    bytes that lives in the simulation, not in the firmware, so it survives a
    simulated reboot.  Fault injection for the tests and the scenario actions:
      cut(op, keep)  power is lost during the op-th mutating operation from now on
                     (1 = the next; writes, renames and removes count): a write keeps
                     its first `keep` bytes, a rename / remove does not happen; then
                     DeviceReset("hard") is raised from inside the operation
      fail(n)        the next n writes raise OSError (EIO) and store nothing
    `writes` counts completed write() calls, `ops` every mutating operation."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.writes = 0
        self.ops = 0
        self.renames = 0
        self._cut_in = 0            # > 0: power lost at that many mutating ops from now
        self._cut_keep = 0
        self._fail = 0
        self.cuts = 0

    # -- fault injection
    def cut(self, op=1, keep=0):
        self._cut_in = op
        self._cut_keep = keep

    def fail(self, n):
        self._fail = n

    def _op(self):
        """Count a mutating operation; True when power is lost in this one."""
        self.ops += 1
        if self._cut_in > 0:
            self._cut_in -= 1
            if self._cut_in == 0:
                self.cuts += 1
                return True
        return False

    # -- the hw.fs interface
    def open(self, path, mode):
        if "r" in mode:
            if path not in self.files:
                raise _enoent(path)
            return SimFile(self, path, self.files[path])
        if "w" not in mode:
            raise OSError(22, "EINVAL: mode %r" % mode)
        if self._fail > 0:
            self._fail -= 1
            raise OSError(5, "EIO: %s" % path)
        if self._op():
            self.files[path] = b""             # the truncation reached the flash
            raise DeviceReset("hard", "power lost opening %s" % path)
        self.files[path] = b""
        return SimFile(self, path)

    def _write(self, path, data):
        if self._op():
            self.files[path] = self.files.get(path, b"") + data[:self._cut_keep]
            raise DeviceReset("hard", "power lost writing %s after %d bytes" % (path, self._cut_keep))
        self.files[path] = self.files.get(path, b"") + data
        self.writes += 1
        return len(data)

    def rename(self, old, new):
        if old not in self.files:
            raise _enoent(old)
        if self._op():
            raise DeviceReset("hard", "power lost renaming %s" % old)
        self.files[new] = self.files.pop(old)
        self.renames += 1

    def remove(self, path):
        if path not in self.files:
            raise _enoent(path)
        if self._op():
            raise DeviceReset("hard", "power lost removing %s" % path)
        del self.files[path]

    def corrupt(self, path, byte=0):
        """Flip every bit of one byte of a file (flash corruption); a missing file
        becomes a 1-byte file."""
        d = bytearray(self.files.get(path, b"\x00"))
        k = min(byte, len(d) - 1) if d else 0
        if not d:
            d = bytearray(1)
        d[k] ^= 0xFF
        self.files[path] = bytes(d)
