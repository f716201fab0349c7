"""`bankgate status --port P [--reset-faults]` -- the local console over USB.

Talks the running firmware's line protocol (bankgate.console): sends `status` (or
`reset-faults`) and reads until the reply line "BG {json}".  It does not enter the
REPL, so reading the status never stops the control loop.  Lines that are not
replies (log output) are skipped.  The fault reset is only possible here, on the
local USB port: nothing on the network can clear a latched fault.
"""
import json
import sys
import time

from . import words

PREFIX = "BG "


def add_arguments(p):
    p.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0)")
    p.add_argument("--reset-faults", action="store_true",
                   help="clear latched faults (local only), then show the status")
    p.add_argument("--json", action="store_true", help="print the raw JSON reply line(s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply")
    p.add_argument("--baud", type=int, default=115200)


class ConsoleClient:
    def __init__(self, port, baud=115200):
        import serial
        self.ser = serial.Serial(port, baud, timeout=0.1)
        self._buf = b""

    def close(self):
        self.ser.close()

    def _lines(self):
        data = self.ser.read(4096)
        if data:
            self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace").strip("\r")

    def command(self, cmd, timeout=10.0):
        """Send one command line; return the decoded reply dict.  The command is
        re-sent every second until a reply arrives (the firmware may still be
        starting), so a slow start is not a failure."""
        end = time.monotonic() + timeout
        next_send = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= next_send:
                self.ser.write(("\r%s\r\n" % cmd).encode())
                self.ser.flush()
                next_send = time.monotonic() + 1.0
            for line in self._lines():
                if line.startswith(PREFIX):
                    try:
                        reply = json.loads(line[len(PREFIX):])
                    except ValueError:
                        continue
                    if reply.get("cmd") == cmd:
                        return reply
        raise TimeoutError("no reply to %r within %.0f s: is the bankgate firmware running on "
                           "this port?" % (cmd, timeout))


def _shown_outputs(st):
    """The configured outputs (the configuration's contactors.outputs, from the status reply)
    in natural order k1, k2, .., k10; every output of the board only when the reply does not
    say which are configured (the firmware has no valid configuration)."""
    outs = st.get("outputs") or {}
    conf = st.get("configured_outputs")
    names = [n for n in conf if n in outs] if conf else list(outs)
    return words.natural_sorted(names), outs


def _module_line(m, max_dv_mv=None):
    state = m.get("state")
    head = "  module %s (slot %s): %s" % (m.get("addr"), m.get("slot"), state)
    reason = m.get("reason")
    if not m.get("online") and reason == "absent":
        return head + ", absent (no answer)"
    if not m.get("online") and not m.get("mv"):
        return head + ", %s, no data" % reason
    if reason and reason != "ok":
        head += ", %s" % reason
        val = m.get("value")
        if reason == "dv" and m.get("dv_mv") is not None:
            val = m.get("dv_mv")
        shown = words.check_value(reason, val) if val is not None else ""
        if shown:
            head += " %s" % shown
            if reason == "dv" and max_dv_mv:
                head += " (limit %s)" % words.volts(max_dv_mv)
    parts = [words.volts(m.get("mv")), words.amps(m.get("ma"))]
    if m.get("soc_pm") is not None:
        parts.append("SOC " + words.percent(m["soc_pm"]))
    if m.get("temp_dc") is not None:
        parts.append(words.degc(m["temp_dc"]))
    return head + ": " + ", ".join(parts)


def summary(st):
    """Human-readable status: names, units, only the configured outputs."""
    out = []
    state = st.get("state")
    head = "state: %s" % state
    if st.get("reason") and st.get("reason") != "ok":
        head += " (%s)" % st["reason"]
    out.append(head + "   board: %s   gateway: %s" % (st.get("board"), st.get("gateway_id")))
    if st.get("error"):
        out.append("ERROR: %s" % st["error"])
    names, outs = _shown_outputs(st)
    closed = [k for k in names if outs.get(k)]
    out.append("outputs: %s" % (", ".join("%s %s" % (k, "closed" if outs[k] else "open")
                                          for k in names) or "none"))
    if not closed:
        out.append("  (every contactor open)")
    if "mv" in st:
        out.append("bank: %s  %s  SOC %s  admitted %s/%s" % (
            words.volts(st.get("mv", 0)), words.amps(st.get("ma", 0)),
            words.percent(st.get("soc_pm")), st.get("admitted"), st.get("expected")))
    if st.get("link_mv") is not None and st.get("link_mv", -1) >= 0:
        out.append("DC link: %s" % words.volts(st["link_mv"]))
    lim = st.get("limits")
    if lim:
        out.append("limits: charge %s, discharge %s" % (
            words.amps(lim.get("chg_ma") or 0), words.amps(lim.get("dsg_ma") or 0)))
    faults = st.get("faults")
    out.append("latched faults: %s" % (", ".join(map(str, faults)) if faults else "none"))
    ls = st.get("latch_store")
    if ls:
        # what survives a reset (bankgate.latchstore): the fault bits in the device's latch file
        out.append("  persisted (%s): %s, fault bits 0x%02X, %s write(s)%s" % (
            ls.get("file"), ls.get("verdict"), ls.get("faults") or 0, ls.get("writes"),
            ", %s failed: %s" % (ls.get("errors"), ls.get("last_error")) if ls.get("errors") else ""))
    max_dv = (st.get("gating") or {}).get("max_dv_mv")
    for m in st.get("modules") or []:
        out.append(_module_line(m, max_dv))
    return "\n".join(out)


def main(args):
    try:
        client = ConsoleClient(args.port, args.baud)
    except Exception as e:
        print("status: cannot open %s: %s" % (args.port, e), file=sys.stderr)
        return 1
    try:
        if args.reset_faults:
            r = client.command("reset-faults", args.timeout)
            if args.json:
                print(PREFIX + json.dumps(r))
            if not r.get("ok"):
                print("reset-faults refused: %s" % r.get("error"), file=sys.stderr)
                return 1
            if not args.json:
                print("faults reset (%s)" % ("something cleared" if r.get("cleared") else "nothing was latched"))
        st = client.command("status", args.timeout)
        if args.json:
            print(PREFIX + json.dumps(st))
        else:
            print(summary(st))
        return 0 if st.get("ok") else 1
    except TimeoutError as e:
        print("status: %s" % e, file=sys.stderr)
        return 1
    finally:
        client.close()
