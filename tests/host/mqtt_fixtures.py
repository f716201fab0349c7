"""Helpers for the real-broker tests (tests/host/test_mqtt_*.py).

- Broker: a mosquitto process on a free loopback port, stoppable/restartable on the same port,
  with optional password file and TLS listener.
- Sub: a paho-mqtt subscriber that records every message.
- Harness: tools/harness/mqtt_harness.py under the unix port (the device side), its JSON status
  lines collected by a reader thread.
- StallServer / SlowProxy: a TCP listener that accepts and never answers; a proxy that trickles
  bytes to the broker (a slow link).

Every wait is a bounded poll on observable state (messages received, process output,
a port accepting connections), never a fixed sleep standing in for synchronisation.
"""
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from bankgate_host import REPO, mpy

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HARNESS = os.path.join(REPO, "tools", "harness", "mqtt_harness.py")
# the harness compiles bankgate from source on start: more heap than the frozen firmware needs
HARNESS_HEAP = "256k"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, what="condition", interval=0.02):
    """Poll pred() until it returns a true value (returned) or fail after timeout s."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    def __init__(self, tmp_path, port=None, password_file=None, tls=None, persistence=False):
        self.dir = str(tmp_path)
        self.port = port or free_port()
        self.proc = None
        self.conf = os.path.join(self.dir, "mosquitto-%d.conf" % self.port)
        lines = ["listener %d 127.0.0.1" % self.port]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.insert(0, "user root")   # as root mosquitto would drop to `mosquitto` and lose our files
        if tls:
            lines += ["certfile %s" % tls[0], "keyfile %s" % tls[1]]
        if password_file:
            lines += ["allow_anonymous false", "password_file %s" % password_file]
        else:
            lines += ["allow_anonymous true"]
        if persistence:
            lines += ["persistence true", "persistence_location %s/" % self.dir,
                      "autosave_interval 1"]
        lines += ["log_dest file %s/mosquitto-%d.log" % (self.dir, self.port),
                  "log_type error", "log_type warning", "log_type notice", "log_type information"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, 10, "mosquitto to listen")
        assert self.proc.poll() is None, "mosquitto exited: %s" % self.log()
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self):
        try:
            with open(os.path.join(self.dir, "mosquitto-%d.log" % self.port)) as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture
def broker_factory(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto not installed (apt-get install mosquitto; .ci/run does)")
    made = []

    def make(**kw):
        b = Broker(tmp_path, **kw)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.stop()


class Sub:
    """paho-mqtt subscriber recording (topic, payload bytes, qos, retain) tuples."""

    def __init__(self, port, topics=("#",), qos=1, client_id=None, clean=True, tls_ca=None,
                 user=None, password=None):
        import paho.mqtt.client as mqtt
        self.msgs = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                             clean_session=clean)
        if user:
            self.c.username_pw_set(user, password)
        if tls_ca:
            self.c.tls_set(ca_certs=tls_ca)
            self.c.tls_insecure_set(True)
        self.connected = threading.Event()
        self.subacks = 0                  # SUBACKs received (resubscriptions after reconnects)
        self.topics = topics
        self.qos = qos

        def on_connect(c, u, flags, rc, props=None):
            for t in topics:
                c.subscribe(t, qos)
            self.connected.set()

        def on_message(c, u, m):
            with self.lock:
                self.msgs.append((m.topic, bytes(m.payload), m.qos, m.retain))

        def on_subscribe(c, u, mid, rc, props=None):
            self.subacks += 1

        self.c.on_connect = on_connect
        self.c.on_message = on_message
        self.c.on_subscribe = on_subscribe
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        wait_for(self.connected.is_set, 10, "subscriber connection")

    def get(self, suffix=None):
        with self.lock:
            return [m for m in self.msgs if suffix is None or m[0].endswith(suffix)]

    def wait(self, pred, timeout=10, what="messages"):
        return wait_for(lambda: pred(self), timeout, what)

    def publish(self, topic, payload, qos=0):
        self.c.publish(topic, payload, qos).wait_for_publish(5)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class Harness:
    """tools/harness/mqtt_harness.py under the unix port, fed one JSON option object."""

    def __init__(self, opt):
        # the options go in on stdin, not argv: the unix port dies ("FATAL: uncaught NLR") on any
        # command-line argument of 256 bytes or more (see mpy.MAX_ARG_BYTES)
        self.argv = mpy.command([HARNESS, "-"], HARNESS_HEAP)
        if os.environ.get("BG_HARNESS_DEBUG"):
            with open(os.environ["BG_HARNESS_DEBUG"], "a") as f:
                f.write(json.dumps([self.argv, opt]) + "\n")
        self.proc = subprocess.Popen(self.argv, env=mpy.environ(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.proc.stdin.write(json.dumps(opt) + "\n")
        self.proc.stdin.close()
        self.lines = []
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                d = {"text": line}
            with self.lock:
                self.lines.append(d)

    def last(self, key="status"):
        with self.lock:
            for d in reversed(self.lines):
                if key in d:
                    return d[key]
        return None

    def wait(self, pred, timeout=20, what="harness state"):
        def check():
            if self.proc.poll() is not None and self.last("done") is None:
                raise AssertionError("harness exited rc=%s: %s\nlast output: %s" % (
                    self.proc.returncode, self.proc.stderr.read(), self.lines[-2:]))
            s = self.last("done") or self.last("status")
            return s if (s is not None and pred(s)) else None
        return wait_for(check, timeout, what)

    def finish(self, timeout=60):
        self.proc.wait(timeout=timeout)
        self.t.join(5)
        done = self.last("done")
        assert done is not None, "harness did not finish: %s" % self.proc.stderr.read()
        return done

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def harness_opt(port, seconds, **kw):
    mqtt = {"host": "127.0.0.1", "port": port, "keepalive_s": 5, "reconnect_max_ms": 2000,
            "connect_timeout_ms": 3000}
    mqtt.update(kw.pop("mqtt", {}))
    opt = {"cfg": {"mqtt": mqtt}, "seconds": seconds}
    opt.update(kw)
    return opt


def listen_loopback(server, backlog=4):
    """A loopback listener on a free port for a scripted server object (server.s, server.port),
    with its accept loop server._run() in a daemon thread; server.socks collects connections."""
    server.s = socket.socket()
    server.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.s.bind(("127.0.0.1", 0))
    server.s.listen(backlog)
    server.port = server.s.getsockname()[1]
    server._stop = False
    server.socks = []
    threading.Thread(target=server._run, daemon=True).start()


class StallServer:
    """Accepts TCP connections and then never reads or writes (a hung broker)."""

    def __init__(self):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(16)
        self.port = self.s.getsockname()[1]
        self.conns = []
        self._stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        self.s.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.s.accept()
                self.conns.append(c)
            except OSError:
                pass

    def close(self):
        self._stop = True
        self.t.join(2)
        for c in self.conns:
            c.close()
        self.s.close()


class SlowProxy:
    """TCP proxy to the broker that forwards at most `chunk` bytes every `delay` s each way
    (a slow, high-latency link).  While `gate` is cleared, connections are accepted and closed
    at once (a broker that is not there yet), so a test can order reconnections."""

    def __init__(self, target_port, chunk=64, delay=0.05):
        self.gate = threading.Event()
        self.gate.set()
        self.target = target_port
        self.chunk = chunk
        self.delay = delay
        listen_loopback(self)

    def _pipe(self, a, b):
        try:
            while not self._stop:
                d = a.recv(self.chunk)
                if not d:
                    break
                if self.delay:
                    time.sleep(self.delay)     # the link's pace, not synchronisation
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self):
        self.s.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.s.accept()
            except OSError:
                continue
            if not self.gate.is_set():
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            threading.Thread(target=self._pipe, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c), daemon=True).start()

    def close(self):
        self._stop = True
        for x in self.socks:
            x.close()
        self.s.close()
