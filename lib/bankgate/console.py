# The local console: line commands on the USB serial port (the REPL's stdin) while
# the firmware runs.  `bankgate status --port P [--reset-faults]` speaks this
# protocol; a person can type the same commands in any serial terminal.
#
#   status         one reply line: bank state, modules, checks, latched faults
#   reset-faults   clear latched faults (the LOCAL fault reset; MQTT cannot do this)
#   config         the validated configuration in use (secrets never included)
#   can-selftest   loop-back check of the on-chip TWAI controller (register driver):
#                  one frame in self-test mode through the transceiver; refused while
#                  any output is energised
#   can-listen     listen-only check (500 ms): counts the frames the TWAI controller
#                  hears without sending or acknowledging; same refusal
#   help           the command list
#
# Every reply is ONE line: the prefix "BG " followed by a JSON object with at least
# "cmd" and "ok" (and "error" when ok is false).  Other output of the firmware
# (log lines, tracebacks) never starts with "BG ", so a reader skips it.  Every
# string in a reply passes through config.mask(): secret values appear as "***".
#
# Console.service(now) is called once per main-loop iteration.  It never blocks:
# select.poll with timeout 0 tells whether a byte waits, and at most _MAX_BYTES
# bytes are taken per call.  With nothing to read it allocates nothing; a command
# allocates its reply (bounded by the status size), which is the one place it may.
#
# Ctrl-C: on the ESP32 the REPL driver turns 0x03 into KeyboardInterrupt before it
# reaches stdin, so mpremote can always take over (deploy, config push).  On the
# unix port behind a raw pty the byte does reach stdin; service() then raises
# KeyboardInterrupt itself, the same behaviour.  Whoever runs the loop releases
# every output on the way out (bankgate.app.Gateway.run, bankgate.firmware).
import select

from micropython import const

from bankgate.events import EV_COMMAND

PREFIX = "BG "
CMD_RESET_FAULTS = const(1)     # EV_COMMAND a= code; b= 1 accepted / 0 refused
_MAX_LINE = const(64)           # longest command line; longer lines are refused whole
_MAX_BYTES = const(64)          # bytes consumed per service() call (bounds its time)
_CTRL_C = const(3)

COMMANDS = ("status", "reset-faults", "config", "can-selftest", "can-listen", "help")
HELP = {
    "status": "bank state, modules, checks, latched faults, outputs (one JSON line)",
    "reset-faults": "clear latched faults (local only); contactors stay open until every check passes again",
    "config": "the validated configuration in use (secrets are never included)",
    "can-selftest": "installer check of the TWAI CAN controller: one frame looped back through the transceiver (outputs must be open)",
    "can-listen": "installer check of the TWAI CAN controller: listen-only for 500 ms, counts the frames heard (outputs must be open)",
    "help": "this list",
}


class Console:
    def __init__(self, gateway, stdin, stdout, hw=None, secrets=None):
        self.gateway = gateway            # None while the firmware holds everything open
        self.hw = hw if hw is not None else (gateway.hw if gateway is not None else None)
        self.error = None                 # why the gateway is not running (shown by status)
        self.mask_values = secrets or []  # config.secret_values(...)
        self._in = getattr(stdin, "buffer", stdin)
        self._out = stdout
        self._poll = select.poll()
        self._poll.register(stdin, select.POLLIN)
        self._line = bytearray(_MAX_LINE)
        self._one = bytearray(1)
        self._n = 0
        self._overflow = False
        self.commands = 0                 # command lines handled
        self.rejected = 0                 # unknown / too long / failed

    def attach(self, gateway):
        self.gateway = gateway
        if gateway is not None:
            self.hw = gateway.hw

    # ---------------------------------------------------------------- input
    def _ready(self):
        for _ in self._poll.ipoll(0):
            return True
        return False

    def service(self, now):
        """Take waiting input (at most _MAX_BYTES), run complete lines.  Never blocks.
        Returns the number of bytes consumed."""
        n = 0
        one = self._one
        while n < _MAX_BYTES and self._ready():
            if self._in.readinto(one) != 1:
                break
            n += 1
            c = one[0]
            if c == _CTRL_C:
                raise KeyboardInterrupt
            if c == 10 or c == 13:
                if self._n or self._overflow:
                    self._run_line(now)
            elif 32 <= c < 127:
                if self._n < _MAX_LINE:
                    self._line[self._n] = c
                    self._n += 1
                else:
                    self._overflow = True
            # other control bytes (mpremote's Ctrl-A/B/D, terminal noise) are ignored
        return n

    def _run_line(self, now):
        overflow = self._overflow
        text = bytes(self._line[: self._n]).decode().strip()
        self._n = 0
        self._overflow = False
        self.commands += 1
        if overflow:
            self.rejected += 1
            self.reply({"cmd": "?", "ok": False,
                        "error": "line longer than %d characters" % _MAX_LINE})
            return
        if not text:
            return
        try:
            self.handle(text, now)
        except Exception as e:  # a console fault must never stop the control loop
            self.rejected += 1
            self.reply({"cmd": text, "ok": False, "error": "%s: %s" % (type(e).__name__, e)})

    # ------------------------------------------------------------- commands
    def handle(self, text, now):
        if text == "status":
            self.reply(self.status())
        elif text == "reset-faults":
            self.reply(self.reset_faults(now))
        elif text == "config":
            gw = self.gateway
            if gw is None:
                self.reply({"cmd": "config", "ok": False, "error": self.error or "not running"})
            else:
                self.reply({"cmd": "config", "ok": True, "config": gw.cfg})
        elif text == "can-selftest":
            self.reply(self.can_selftest())
        elif text == "can-listen":
            self.reply(self.can_selftest("can-listen"))
        elif text == "help":
            self.reply({"cmd": "help", "ok": True, "commands": HELP})
        else:
            self.rejected += 1
            self.reply({"cmd": text, "ok": False,
                        "error": "unknown command (known: %s)" % ", ".join(COMMANDS)})

    def _outputs(self):
        hw = self.hw
        if hw is None:
            return {}
        return {name: pin.value() for name, pin in hw.outputs.items()}

    def status(self):
        gw = self.gateway
        if gw is None:
            d = {"state": "config_error" if self.error else "starting",
                 "outputs": self._outputs()}
        else:
            d = gw.snapshot()
            d["gateway_id"] = gw.cfg["gateway_id"]
            d["latch_store"] = _store(gw)
            # for `bankgate status`'s text view: which outputs the configuration uses, and
            # the join limit a pending dv is compared with
            c = gw.cfg.get("contactors")
            d["configured_outputs"] = list(c["outputs"]) if c else []
            g = gw.cfg.get("gating")
            d["gating"] = {"max_dv_mv": g["max_dv_mv"]} if g else {}
        d["cmd"] = "status"
        d["ok"] = True
        d["error"] = self.error
        d["board"] = self.hw.board_name if self.hw is not None else None
        return d

    def reset_faults(self, now):
        gw = self.gateway
        if gw is None:
            return {"cmd": "reset-faults", "ok": False,
                    "error": "the gateway is not running: %s" % (self.error or "starting")}
        adm = gw.admission
        cleared = adm.reset_faults(now)
        gw.events.emit(now, EV_COMMAND, -1, CMD_RESET_FAULTS, 1)
        return {"cmd": "reset-faults", "ok": True, "cleared": bool(cleared),
                "faults": gw.snapshot().get("faults"), "latch_store": _store(gw)}

    def can_selftest(self, cmd="can-selftest"):
        """Run the CAN controller's self_test() or listen() (bankgate.hal.twai_regs):
        the controller leaves normal operation for a moment (the loop waits up to
        500 ms for can-listen), so only with every output open."""
        r = {"cmd": cmd, "ok": False}
        hw = self.hw
        if hw is None:
            r["error"] = "no hardware opened"
            return r
        for name, pin in hw.outputs.items():
            if pin.value():
                r["error"] = "output %s is energised: open the contactors first" % name
                return r
        ctl = hw.can_inverter if hw.can_inverter is not None else hw.can_modules
        if ctl is None:
            r["error"] = "this board has no CAN controller"
            return r
        if not hasattr(ctl, "self_test"):
            r["error"] = "the %s CAN back end has no self-test" % type(ctl).__name__
            return r
        if cmd == "can-listen":
            res = ctl.listen(hw.clock.sleep_ms)
        else:
            res = ctl.self_test(hw.clock.sleep_ms)
        r["ok"] = bool(res.get("ok"))
        r["result"] = res
        if not r["ok"]:
            r["error"] = res.get("error", "self-test failed")
        return r

    # --------------------------------------------------------------- output
    def reply(self, obj):
        import json
        self._out.write(PREFIX + json.dumps(mask(obj, self.mask_values)) + "\n")

    def say(self, text):
        """A free-text console line (log), secrets masked."""
        self._out.write(mask_text(text, self.mask_values) + "\n")


def _store(gw):
    """The persisted latched faults (bankgate.latchstore), None without a filesystem."""
    st = getattr(gw.admission, "store", None)
    return st.snapshot() if st is not None else None


# Secret masking lives here rather than in bankgate.config so that the firmware can
# free the configuration schema (tens of KiB) after validation and still mask.
def mask_text(text, values):
    """text with every secret value (config.secret_values) replaced by '***'."""
    for v in values:
        if v in text:
            text = text.replace(v, "***")
    return text


def mask(obj, values):
    """A copy of obj (JSON-like) with every secret value inside strings replaced
    by '***'.  Works on the structure, so the JSON built from it stays valid."""
    if not values:
        return obj
    t = type(obj)
    if t is str:
        return mask_text(obj, values)
    if t is dict:
        return {mask_text(k, values): mask(v, values) for k, v in obj.items()}
    if t is list or t is tuple:
        return [mask(v, values) for v in obj]
    return obj
