"""`bankgate demo` -- the README's main command.

Starts an embedded MQTT broker (PyPI amqtt) on a free loopback port unless
--mqtt points at a real one, runs the firmware on the unix MicroPython port
against a simulated 3-module bank that follows the seed article's
commissioning story (`bankgate run --sim`), and shows a live terminal view
built from what the gateway publishes over MQTT: modules with their admission
state and reason, contactors, combined limits, metrics, diagnoses, and the MQTT
traffic itself.  Ctrl-C stops everything; no process is left behind.
"""
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from . import REPO, words

DEFAULT_SCENARIO = os.path.join(REPO, "examples", "demo_scenario.json")


def add_arguments(p):
    p.add_argument("--mqtt", metavar="HOST:PORT", help="use this broker instead of the embedded one")
    p.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario to run (default: the demo bank)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--speed", type=float, default=10.0,
                   help="simulated seconds per real second (default 10: the pending module joins in about a minute)")
    p.add_argument("--plain", action="store_true",
                   help="print one status line per update instead of redrawing the screen (automatic without a TTY)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(host, port, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class EmbeddedBroker:
    """amqtt on 127.0.0.1:<free port>, in its own process group."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bankgate-demo-")
        self.port = free_port()
        conf = os.path.join(self.dir, "amqtt.yaml")
        with open(conf, "w") as f:
            f.write("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%d\n"
                    "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                    "    allow_anonymous: true\n" % self.port)
        exe = os.path.join(os.path.dirname(sys.executable), "amqtt")
        self.log = open(os.path.join(self.dir, "broker.log"), "w")
        self.proc = subprocess.Popen([exe, "-c", conf], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if not wait_port("127.0.0.1", self.port, 15):
            self.stop()
            raise RuntimeError("embedded broker (amqtt) did not start; log in %s" % self.dir)

    def stop(self):
        _terminate(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _terminate(proc):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class View:
    """Keeps the latest state per topic and renders it."""

    def __init__(self, prefix, plain, speed=1.0, max_dv_mv=None):
        self.prefix = prefix
        self.plain = plain
        self.speed = speed
        self.max_dv_mv = max_dv_mv
        self.bank = None
        self.modules = {}
        self.metrics = None
        self.diagnoses = None
        self.status = "?"
        self.traffic = []
        self.count = 0
        self.events = []

    def on_message(self, topic, payload):
        self.count += 1
        self.traffic.append(traffic_line(topic, payload))
        del self.traffic[:-8]
        rest = topic.split("/", 2)[-1] if topic.startswith(self.prefix + "/") else ""
        try:
            data = json.loads(payload) if payload[:1] in (b"{", b"[") else payload.decode()
        except ValueError:
            return
        if rest == "status":
            self.status = data
        elif rest == "bank":
            self.bank = data
        elif rest.startswith("module/"):
            self.modules[rest.split("/")[1]] = data
        elif rest == "metrics":
            self.metrics = data.get("metrics") if isinstance(data, dict) else None
        elif rest == "diagnoses":
            self.diagnoses = data.get("active") if isinstance(data, dict) else None
        elif rest == "event":
            self.events.append(data)
            del self.events[:-5]

    def lines(self):
        b = self.bank or {}
        out = ["bankgate demo -- gateway %s, %d MQTT messages, running at %gx (1 real second = %g simulated "
               "seconds)" % (self.status, self.count, self.speed, self.speed), ""]
        if b:
            lim = b.get("limits", {})
            out.append("bank %-9s %6.2f V %7.1f A  SOC %5.1f %%  admitted %s/%s  limits: charge %.1f A "
                       "discharge %.1f A  CVL %.2f V" % (
                           b.get("state"), b.get("mv", 0) / 1000, b.get("ma", 0) / 1000,
                           b.get("soc_pm", 0) / 10, b.get("admitted"), b.get("expected"),
                           lim.get("chg_ma", 0) / 1000, lim.get("dsg_ma", 0) / 1000,
                           lim.get("chg_v_mv", 0) / 1000))
            outs = b.get("outputs", {})
            out.append("contactors: " + "  ".join("%s=%s" % (k, "CLOSED" if outs[k] else "open")
                                                  for k in words.natural_sorted(outs)))
        out.append("")
        out.append("module  state      reason                          V        A     SOC%   temp")
        for key in sorted(self.modules, key=lambda k: int(k) if k.isdigit() else 0):
            m = self.modules[key]
            if m.get("state") == "absent" or (m.get("online") is False and not m.get("mv")):
                out.append("%-7s %-10s %-30s %s" % (m.get("addr", key), m.get("state"), self.reason(m),
                                                     "(no answer)"))
                continue
            out.append("%-7s %-10s %-30s %6.2f %8.2f %6.1f %6.1f" % (
                m.get("addr", key), m.get("state"), self.reason(m), (m.get("mv") or 0) / 1000,
                (m.get("ma") or 0) / 1000, (m.get("soc_pm") or 0) / 10, (m.get("temp_dc") or 0) / 10))
        if self.metrics:
            mt = self.metrics
            keys = ("v_spread_mv", "soc_spread_pm", "temp_spread_dc", "imbalance_pm", "circ_ma",
                    "at_rest", "bank_cell_min_mv", "bank_cell_max_mv")
            out.append("")
            out.append("metrics: " + ", ".join("%s=%s" % (k, mt.get(k)) for k in keys))
            shares = mt.get("share_pm")
            if shares:
                out.append("current share (permille by slot): %s" % shares[:len(self.modules) or 3])
        out.append("diagnoses: %s" % (", ".join(d.get("name", "?") for d in self.diagnoses)
                                      if self.diagnoses else "none"))
        if self.events:
            out.append("")
            out.append("recent events:")
            out.extend("  " + event_line(e) for e in self.events)
        out.append("")
        out.append("MQTT traffic (latest):")
        out.extend("  " + t for t in self.traffic)
        return out

    def reason(self, m):
        """The pending reason with its value and, for dv, the limit: "dv 1.20 V (limit 0.50 V)"."""
        r = m.get("reason") or ""
        if not r or r == "ok" or r == m.get("state") or m.get("state") == "admitted":
            return ""
        val = m.get("dv_mv") if r == "dv" and m.get("dv_mv") is not None else m.get("value")
        text = r
        if val is not None:
            text += " " + words.check_value(r, val)
        if r == "dv" and self.max_dv_mv:
            text += " (limit %s)" % words.volts(self.max_dv_mv)
        return text

    def plain_line(self):
        b = self.bank or {}
        outs = b.get("outputs") or {}
        mods = ", ".join("%s:%s%s" % (m.get("addr"), m.get("state"),
                                      (" " + self.reason(m)) if self.reason(m) else "")
                        for _, m in sorted(self.modules.items(), key=lambda kv: words.natural_key(kv[0])))
        return "demo: bank=%s admitted=%s/%s outputs=[%s] modules=[%s] msgs=%d" % (
            b.get("state"), b.get("admitted"), b.get("expected"),
            ", ".join("%s %s" % (k, "closed" if outs[k] else "open") for k in words.natural_sorted(outs)),
            mods, self.count)

    def render(self):
        if self.plain:
            print(self.plain_line(), flush=True)
        else:
            sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(self.lines()) + "\n")
            sys.stdout.flush()


def traffic_line(topic, payload, width=90):
    """One MQTT message for the traffic list: the whole payload when short, else its size and
    keys -- never a JSON text cut in the middle."""
    text = payload.decode("utf-8", "replace")
    if len(text) <= width:
        return "%s %s" % (topic, text)
    try:
        data = json.loads(text)
    except ValueError:
        return "%s (%d bytes)" % (topic, len(payload))
    if isinstance(data, dict):
        keys = list(data)
        shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
        return "%s {%s} (%d bytes)" % (topic, shown, len(payload))
    return "%s [%d items] (%d bytes)" % (topic, len(data) if isinstance(data, list) else 1, len(payload))


def event_line(e):
    """An event from <base>/event ({"seq","t_ms","code","ev","addr","a","b"}) in words."""
    if not isinstance(e, dict):
        return str(e)
    t = e.get("t_ms")
    head = "%8.1f s  " % (t / 1000.0) if isinstance(t, int) else ""
    text = head + str(e.get("ev", e.get("code")))
    if e.get("addr", -1) not in (-1, None):
        text += " module %s" % e["addr"]
    return text + "  (a=%s, b=%s, #%s)" % (e.get("a"), e.get("b"), e.get("seq"))


def scenario_max_dv(path):
    """gating.max_dv_mv of the scenario's configuration, else the configuration schema's default."""
    try:
        with open(path) as f:
            v = json.load(f).get("config", {}).get("gating", {}).get("max_dv_mv")
        if v is not None:
            return v
        with open(os.path.join(REPO, "lib", "bankgate", "config.py")) as f:
            m = re.search(r'"max_dv_mv": \("int", (\d+)', f.read())
        return int(m.group(1)) if m else None
    except (OSError, ValueError, AttributeError):
        return None


def main(args):
    import paho.mqtt.client as mqtt

    plain = args.plain or not sys.stdout.isatty()
    broker = None
    firmware = None
    try:
        if args.mqtt:
            host, _, port = args.mqtt.rpartition(":")
            host, port = host or "127.0.0.1", int(port)
        else:
            broker = EmbeddedBroker()
            host, port = "127.0.0.1", broker.port
            print("demo: embedded MQTT broker (amqtt) on %s:%d" % (host, port), flush=True)
        with open(args.scenario) as f:
            prefix = "%s/%s" % (json.load(f).get("gateway", {}).get("mqtt", {}).get("prefix", "bankgate"),
                                "demo")
        view = View(prefix.split("/")[0], plain, args.speed, scenario_max_dv(args.scenario))
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bankgate-demo-view")
        sub.on_message = lambda c, u, m: view.on_message(m.topic, m.payload)
        sub.connect(host, port)
        sub.subscribe("#")
        sub.loop_start()
        exe = os.path.join(os.path.dirname(sys.executable), "bankgate")
        cmd = [exe, "run", "--sim", args.scenario, "--mqtt", "%s:%d" % (host, port),
               "--speed", str(args.speed)]
        if args.seconds:
            cmd += ["--seconds", str(args.seconds)]
        # the firmware's JSON lines go to a log file: a pipe nobody reads would fill
        # (64 KiB) and block the firmware on its own prints
        log = tempfile.TemporaryFile(mode="w+")
        firmware = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, text=True)
        print("demo: firmware running on the unix MicroPython port at %gx: 1 real second = %g simulated "
              "seconds (Ctrl-C to stop)" % (args.speed, args.speed), flush=True)
        last = 0
        end = time.monotonic() + args.seconds if args.seconds else None
        # Ctrl-C from here on only sets a flag that the loop checks: a KeyboardInterrupt
        # can be lost (one raised while the main thread runs a finalizer -- __del__, a
        # weakref callback -- is printed as "Exception ignored" and dropped); once, on a
        # loaded machine, the demo went on running for a minute after Ctrl-C. A flag is
        # not lost, and the cleanup below cannot be cut short by a second Ctrl-C
        stop = []
        signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
        while firmware.poll() is None and not stop:
            if end is not None and time.monotonic() > end + 10:
                break
            time.sleep(0.1)
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                view.render()
        if stop:
            raise KeyboardInterrupt
        out = ""
        if firmware.poll() is not None:
            log.seek(0)
            out = log.read()
        view.render()
        sub.loop_stop()
        sub.disconnect()
        if firmware.returncode not in (0, None):
            sys.stderr.write(out[-3000:])
            print("demo: firmware exited with %s" % firmware.returncode)
            return 1
        print("demo: done (%d MQTT messages seen)" % view.count)
        return 0 if view.count else 1
    except KeyboardInterrupt:
        print("\ndemo: stopped")
        return 0
    finally:
        _terminate(firmware)
        if broker is not None:
            broker.stop()
