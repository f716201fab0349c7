# MQTT harness (unix port): a gateway-like control loop with bankgate.telemetry against a REAL
# broker, in real time.  Used by tests/host/test_mqtt_*.py and usable by hand:
#
#   micropython mqtt_harness.py '{"cfg": {"mqtt": {"host": "127.0.0.1", "port": 1883}}, "seconds": 10}'
#   echo '{...}' | micropython mqtt_harness.py -        (options as one JSON line on stdin)
#
# The tests always use the stdin form: the unix port interns every command-line argument as a qstr
# before any script runs, and a qstr holds at most 255 bytes, so a longer argument (easily reached
# with a pytest tmp_path in ca_file) kills the process with "FATAL: uncaught NLR".
#
# Options (one JSON object):
#   cfg            partial bankgate configuration (validated; mqtt.enabled is forced on)
#   seconds        run time (0: until killed)
#   event_ms       emit one EV_CHECK_FAIL event every event_ms (a = running counter); 0: none
#   event_count    stop emitting after this many events (0: no limit), so a backlog can drain
#   status_ms      print a status line every status_ms
#   user/password  MQTT credentials;  ca_file / insecure: TLS (old ssl_params form) ;
#   ssl_context    true: use the newer SSLContext form instead of ssl_params
#   dns            "hang": the resolver blocks forever (tests the hung-DNS isolation)
#   link_down_ms   [start, end] ms after start during which the fake link (Wi-Fi) is down
#   burn_us        CPU time of the simulated control step (default 300)
#
# Output: JSON lines.  {"ready":..} once, {"status":..} periodically, {"done":..} at the end.
# Status fields: online, loop_max_us (worst whole iteration), late_max_us (worst lateness of a
# control step vs its 50 ms schedule), tel_max_us, stats (Telemetry.stats()), seq (EventLog.seq),
# rescans, acks (calls that reached the fake gateway), sockets / socket_ops / blocking_ops (every
# socket is a tools/fakes/spysock.SpySocket: calls issued, and calls issued in blocking mode).
# The latencies are real time: printed by the tests and measured by `bankgate bench`, never
# asserted (they depend on what else the machine runs); blocking_ops == 0 is the assertion.
import json
import sys
import time

from bankgate import clock as tk
from bankgate import config
from bankgate.events import EV_CHECK_FAIL, EventLog
from bankgate.net import Net
from spysock import Spies


class RealClock:
    def ticks_ms(self):
        return time.ticks_ms() & 0x3FFFFFFF

    def ticks_us(self):
        return time.ticks_us() & 0x3FFFFFFF

    def sleep_ms(self, ms):
        time.sleep_ms(ms)


class _Hw:
    def __init__(self):
        self.clock = RealClock()


class FakePoller:
    def __init__(self):
        self.rescans = 0

    def rescan(self):
        self.rescans += 1


class FakeDiagnoser:
    def __init__(self):
        self.acks = []
        self.active = [{"code": "imbalance", "addr": 3, "value": 42}]

    def acknowledge(self, code, addr):
        for d in self.active:
            if d["code"] == code and d["addr"] == addr:
                self.acks.append([code, addr])
                return True
        return False


class FakeGateway:
    """The attributes Telemetry uses, with the shape of bankgate.app.Gateway.snapshot()."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.hw = _Hw()
        self.events = EventLog(64)
        self.poller = FakePoller()
        self.diagnoser = FakeDiagnoser()
        self.outputs = {n: 0 for n in cfg["contactors"]["outputs"]}
        self.n = 0

    def snapshot(self):
        self.n += 1
        addrs = self.cfg["bank"]["addresses"]
        return {
            "t_ms": self.hw.clock.ticks_ms(), "state": "running", "mv": 52100 + self.n % 7,
            "ma": -12500, "soc_pm": 874, "soh_pm": 990, "temp_dc": 251, "link_mv": 52080,
            "admitted": len(addrs), "expected": len(addrs),
            "limits": {"chg_ma": 75000, "dsg_ma": 150000, "chg_v_mv": 53250, "dsg_v_mv": 47000},
            "ramp_down": False, "faults": [], "outputs": dict(self.outputs),
            "bus": {"verdict": "ok"},
            "modules": [{"slot": i, "addr": a, "state": "admitted", "reason": "ok", "online": True,
                         "mv": 52100 + i, "ma": -4100, "soc_pm": 870 + i, "soh_pm": 990,
                         "temp_dc": 250 + i, "cell_min_mv": 3470, "cell_max_mv": 3480,
                         "alarms": 0, "protections": 0} for i, a in enumerate(addrs)],
            "metrics": {"share_pm": [333, 334, 333]},
            "diagnoses": list(self.diagnoser.active),
        }


class FakeLink:
    """Wi-Fi stand-in: down between two times (ms since start)."""

    def __init__(self, t0, down):
        self.t0 = t0
        self.down = down

    def isconnected(self):
        if not self.down:
            return True
        e = tk.diff(time.ticks_ms() & 0x3FFFFFFF, self.t0)
        return not (self.down[0] <= e < self.down[1])

    def service(self, now):
        pass


def _hang(host, port):
    while True:
        time.sleep(3600)


def main():
    arg = sys.argv[1] if len(sys.argv) > 1 else "{}"
    opt = json.loads(sys.stdin.readline() if arg == "-" else arg)
    given = opt.get("cfg", {})
    given.setdefault("mqtt", {})["enabled"] = True
    cfg = config.validate(given)
    clock = RealClock()
    start = clock.ticks_ms()
    ssl_params = None
    ssl_context = None
    if cfg["mqtt"]["tls"]:
        from bankgate.net import pem_to_der, tls_module
        ssl = tls_module()
        ca = None
        if opt.get("ca_file"):
            with open(opt["ca_file"], "rb") as f:
                ca = f.read()
        if opt.get("ssl_context"):       # the newer umqtt form: an SSLContext
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if ca:
                if hasattr(ssl, "wrap_socket") and not hasattr(ssl, "_t"):
                    ssl_context.load_verify_locations(cadata=ca)      # frozen ssl.py
                else:
                    ssl_context.load_verify_locations(pem_to_der(ca))  # C tls module (shim)
                ssl_context.verify_mode = ssl.CERT_REQUIRED
            else:
                ssl_context.verify_mode = ssl.CERT_NONE
        else:                            # umqtt 1.3.4's form: ssl_params for wrap_socket
            ssl_params = {"cert_reqs": ssl.CERT_NONE}
            if ca:
                ssl_params = {"cadata": ca, "cert_reqs": ssl.CERT_REQUIRED}
    spies = Spies()      # every socket recorded: was any call made in blocking mode?
    net = Net(FakeLink(start, opt.get("link_down_ms")), getaddrinfo=_hang if opt.get("dns") == "hang" else None,
              user=opt.get("user"), password=opt.get("password"), ssl_params=ssl_params,
              ssl_context=ssl_context, socket_factory=spies.factory)
    gw = FakeGateway(cfg)
    from bankgate.telemetry import Telemetry
    tel = Telemetry(net, cfg, gw)
    start = clock.ticks_ms()       # measure from here: construction (imports) is not the loop
    net.link.t0 = start
    period = cfg["control"]["period_ms"]
    seconds = opt.get("seconds", 10)
    event_ms = opt.get("event_ms", 200)
    event_count = opt.get("event_count", 0)
    status_ms = opt.get("status_ms", 250)
    burn_us = opt.get("burn_us", 300)
    next_control = start
    next_event = start
    next_status = start
    loop_max = 0
    late_max = 0
    counter = 0
    print(json.dumps({"ready": True, "base": tel.base}))

    def status(key):
        print(json.dumps({key: {"online": tel.online, "loop_max_us": loop_max, "late_max_us": late_max,
                                "tel_max_us": tel.service_max_us, "stats": tel.stats(),
                                "seq": gw.events.seq, "rescans": gw.poller.rescans,
                                "acks": gw.diagnoser.acks, "outputs": gw.outputs,
                                "sockets": spies.made, "socket_ops": spies.ops,
                                "blocking_ops": spies.blocking_ops,
                                "t": tk.diff(clock.ticks_ms(), start)}}))

    while seconds <= 0 or tk.diff(clock.ticks_ms(), start) < seconds * 1000:
        t0 = time.ticks_us()
        now = clock.ticks_ms()
        if tk.due(now, next_control):
            late = tk.diff(now, next_control) * 1000
            if late > late_max:
                late_max = late
            b0 = time.ticks_us()
            while time.ticks_diff(time.ticks_us(), b0) < burn_us:   # the control step's CPU work
                pass
            next_control = tk.add(next_control, period)
            if tk.diff(now, next_control) > 0:      # fell behind by a whole period: resynchronise
                next_control = tk.add(now, period)
        if event_ms and tk.due(now, next_event) and (not event_count or counter < event_count):
            counter += 1
            gw.events.emit(now, EV_CHECK_FAIL, 2, 7, counter)
            next_event = tk.add(next_event, event_ms)
        tel.service(now, 5)
        dt = time.ticks_diff(time.ticks_us(), t0)
        if dt > loop_max:
            loop_max = dt
        if tk.due(now, next_status):
            status("status")
            next_status = tk.add(now, status_ms)
        wait = tk.diff(next_control, clock.ticks_ms())
        if wait > 20:
            wait = 20
        if wait > 0:
            time.sleep_ms(wait)
    status("done")
    tel.stop(clock.ticks_ms())


main()
