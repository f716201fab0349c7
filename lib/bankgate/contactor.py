# Contactor outputs and their auxiliary feedback: the interlock layer under
# bankgate.admission.
#
# - Outputs are energise-to-close (1 = coil energised = contact closed).  Every
#   output is released at construction, so a reboot (power-on, watchdog reset,
#   exception restart) always starts open.
# - `cmd[i]` is what this layer last commanded; `t_cmd[i]` when (ticks_ms).
# - Feedback (cfg contactors.feedback, same order as outputs, optional): an
#   auxiliary contact read through hw.inputs.  A mismatch between command and
#   feedback that lasts longer than feedback_ms is a latched fault:
#       commanded closed, feedback open  -> F_FAIL_CLOSE (failed to close)
#       commanded open,   feedback closed -> F_WELDED     (welded / stuck)
#   The measured faults (F_WELD_CURRENT, F_WELD_LINK) and the precharge timeout
#   are detected in admission.py, which has the module data; the codes live here
#   so that every fault code has one home.
# - External release: the main loop calls hw.release_all() after an exception;
#   Hardware counts those calls (release_count) and sync() notices them, so the
#   commanded state never claims a contact is closed that was released behind
#   this layer's back.
#
# Nothing here allocates after construction.
import array

from micropython import const

from bankgate import clock
from bankgate.events import EV_CONTACTOR

# Latched fault bits (Admission.faults).  Stable: telemetry and docs use them.
F_WELDED = const(0x01)          # feedback says closed after an open command
F_FAIL_CLOSE = const(0x02)      # feedback says open after a close command
F_WELD_CURRENT = const(0x04)    # an opened branch / the open main still carries current
F_WELD_LINK = const(0x08)       # main topology: DC link stays at bank voltage, all open
F_PRECHARGE = const(0x10)       # main topology: DC link did not reach the bank in time
F_LATCH_STORE = const(0x20)     # the persisted latch file is corrupt or unreadable (bankgate.latchstore)

FAULT_NAMES = (
    (F_WELDED, "welded"), (F_FAIL_CLOSE, "failed_to_close"), (F_WELD_CURRENT, "weld_current"),
    (F_WELD_LINK, "weld_link"), (F_PRECHARGE, "precharge_timeout"), (F_LATCH_STORE, "latch_store"),
)


class ContactorConfigError(Exception):
    def __init__(self, msg):
        super().__init__(msg)


class Contactors:
    """The output pins named by cfg contactors.outputs, and their feedback inputs."""

    def __init__(self, hw, cfg, events, addrs):
        c = cfg["contactors"]
        names = c["outputs"]
        self.n = len(names)
        self.hw = hw
        self.events = events
        self.pins = []
        # Fail-safe first: release everything the board has, then look up names.
        hw.release_all()
        for name in names:
            pin = hw.outputs.get(name)
            if pin is None:
                raise ContactorConfigError("contactors.outputs: the board has no output named %r" % name)
            pin.value(0)
            self.pins.append(pin)
        self.fb = []
        for name in c["feedback"]:
            pin = hw.inputs.get(name)
            if pin is None:
                raise ContactorConfigError("contactors.feedback: the board has no input named %r" % name)
            self.fb.append(pin)
        self.has_fb = len(self.fb) == self.n
        self.fb_active = c["feedback_active"]
        self.feedback_ms = c["feedback_ms"]
        # event address per output (module address in the branch topology, -1 otherwise)
        self.addrs = array.array("h", [-1] * self.n)
        for i in range(self.n):
            if i < len(addrs):
                self.addrs[i] = addrs[i]
        now = hw.clock.ticks_ms()
        self.cmd = bytearray(self.n)
        self.t_cmd = array.array("i", [now] * self.n)
        self.bad = bytearray(self.n)            # feedback currently disagrees
        self.t_bad = array.array("i", [now] * self.n)
        self.fault_index = -1                   # output of the last feedback fault
        self._rel_seen = hw.release_count

    # -- commands
    def set(self, i, v, now):
        """Command output i (1 close / 0 open).  Opening writes the pin first."""
        if v:
            if self.cmd[i]:
                return
            self.cmd[i] = 1
            self.t_cmd[i] = now
            self.bad[i] = 0
            self.pins[i].value(1)
            self.events.emit(now, EV_CONTACTOR, self.addrs[i], i, 1)
        else:
            self.pins[i].value(0)
            if not self.cmd[i]:
                return
            self.cmd[i] = 0
            self.t_cmd[i] = now
            self.bad[i] = 0
            self.events.emit(now, EV_CONTACTOR, self.addrs[i], i, 0)

    def open_all(self, now):
        for i in range(self.n):
            self.set(i, 0, now)

    def release_now(self):
        """Exception path: de-energise every pin, never raises, emits nothing."""
        for i in range(self.n):
            try:
                self.pins[i].value(0)
            except Exception:
                pass
            self.cmd[i] = 0

    def any_closed(self):
        for i in range(self.n):
            if self.cmd[i]:
                return True
        return False

    def sync(self, now):
        """True if hw.release_all() ran since the last call: every output is open
        now whatever this layer believed; the commands are brought in line."""
        rc = self.hw.release_count
        if rc == self._rel_seen:
            return False
        self._rel_seen = rc
        for i in range(self.n):
            if self.cmd[i]:
                self.cmd[i] = 0
                self.t_cmd[i] = now
                self.events.emit(now, EV_CONTACTOR, self.addrs[i], i, 0)
        return True

    def age(self, now, k):
        """Aging slice (bankgate.clock time model): output k % n's command and mismatch
        times are held at most clock.AGE_MAX old.  Admission calls it with a round-robin
        k every clock.AGE_PASS_MS."""
        if self.n:
            i = k % self.n
            clock.hold_range(now, self.t_cmd, i, i + 1)
            clock.hold_range(now, self.t_bad, i, i + 1)

    # -- feedback
    def fb_closed(self, i):
        """1 closed / 0 open according to the auxiliary contact, -1 without feedback."""
        if not self.has_fb:
            return -1
        return 1 if self.fb[i].value() == self.fb_active else 0

    def check(self, now):
        """Compare feedback with commands.  Returns 0 or one fault bit (F_WELDED /
        F_FAIL_CLOSE) with fault_index set; a disagreement must last feedback_ms."""
        if not self.has_fb:
            return 0
        for i in range(self.n):
            fb = self.fb_closed(i)
            if fb == self.cmd[i]:
                self.bad[i] = 0
                continue
            if not self.bad[i]:
                self.bad[i] = 1
                # the coil needs feedback_ms after a command change; a later
                # mismatch (contact dropped out / closed by itself) counts from now
                t = self.t_cmd[i]
                if clock.diff(now, t) > self.feedback_ms:
                    t = now
                self.t_bad[i] = t
            if clock.diff(now, self.t_bad[i]) >= self.feedback_ms:
                self.fault_index = i
                return F_FAIL_CLOSE if self.cmd[i] else F_WELDED
        return 0
