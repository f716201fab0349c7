# MQTT 3.1.1 session over bankgate.telemetry.transport, using umqtt.simple (PyPI 1.3.4, fetched into
# lib/umqtt/) as the packet ENCODER only.
#
# Why not use umqtt.simple as it is (micropython-lib issues #103, #256, #909; docs/mqtt.md):
# connect() blocks in getaddrinfo/connect/read(CONNACK) without timeouts, publish(qos=1) waits for
# PUBACK forever, subscribe() for SUBACK forever, nothing sends pings, and its protocol checks are
# `assert`s that vanish under optimisation.  So:
#   - MQTTClient.sock is a _Stream: write() appends to the transport's preallocated tx buffer,
#     read() raises _WouldBlock.  connect()/publish(qos=1)/subscribe() therefore return (through
#     the exception) right after ENCODING their packet; nothing ever waits.
#   - connect() creates its own socket via the module global `socket` of umqtt.simple; for the
#     duration of that call the global is swapped for a shim whose socket() is the _Stream and whose
#     getaddrinfo() does nothing.  DNS and the real socket belong to the transport.
#   - Incoming packets (CONNACK, PUBACK, SUBACK, PINGRESP, PUBLISH) are parsed HERE from the rx
#     buffer, with explicit checks (no asserts), without allocating (memoryviews into rx).  A
#     PUBLISH larger than the rx buffer is skipped byte by byte and counted (rx_oversize).
#   - umqtt's packet id wraps past 65535 (an invalid id 0 / truncated); it is reset here first.
#
# Session timing (all from `now`, ticks_ms):
#   connect: resolve + TCP + TLS + CONNACK within connect_timeout_ms, else R_TIMEOUT;
#   keepalive K s: PINGREQ when nothing was received for K/2 (and none outstanding); a PINGREQ
#   unanswered for K/2, or silence for 1.5 K, declares the broker dead (R_SILENCE); tx bytes not
#   accepted by the socket for K (slow/blocked link) -> R_STALL;
#   reconnect after a capped exponential backoff with +-25 % jitter (min_backoff_ms doubling up to
#   max_backoff_ms; reset after a connection that stayed up for 10 s).
import random

from micropython import const

from bankgate import clock as tk
from bankgate.telemetry import transport as tr

try:
    import umqtt.simple as _umqtt
except ImportError:   # not fetched: `make setup` puts it in lib/umqtt/
    _umqtt = None

C_OFFLINE = const(0)    # waiting for the backoff to expire
C_CONNECTING = const(1) # transport setting up, or CONNECT sent and CONNACK awaited
C_ONLINE = const(2)

_STABLE_MS = const(10000)


class _WouldBlock(Exception):
    pass


# Raised as the class, not a preallocated instance: MicroPython appends each raise's
# traceback to the instance, so re-raising one object grows the heap without bound
# (~70 bytes per QoS 1 publish; found by the 24 h soak).  A fresh small exception is
# garbage, collected normally.  This is the telemetry path, not the control path.


class _Stream:
    """What umqtt.simple sees as its socket: writes go to the tx buffer, reads would block."""

    def __init__(self, transport):
        self.t = transport

    def write(self, buf, n=-1):
        if n < 0:
            n = len(buf)
        t = self.t
        if t.tx_len + n > len(t.tx):
            raise OSError(105)     # ENOBUFS: callers check room first, so this is a bug guard
        t.tx_mv[t.tx_len:t.tx_len + n] = buf if n == len(buf) else memoryview(buf)[:n]
        t.tx_len += n
        return n

    def read(self, n):
        raise _WouldBlock

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        pass

    def close(self):
        pass


class _SocketShim:
    """Stands in for `usocket` inside umqtt.simple.connect()."""

    def __init__(self, stream):
        self._stream = stream

    def socket(self, *args):
        return self._stream

    def getaddrinfo(self, host, port, *args):
        return ((0, 0, 0, "", None),)


def packet_size(topic_len, payload_len, qos):
    """Bytes of a PUBLISH packet (fixed header with its variable-length remaining length)."""
    rem = 2 + topic_len + payload_len + (2 if qos else 0)
    n = 2
    r = rem
    while r > 0x7F:
        r >>= 7
        n += 1
    return n + rem


class Client:
    def __init__(self, net, host, port, client_id, keepalive_s=30, tls=False,
                 user=None, password=None, will_topic=None, will_msg=b"offline",
                 tx_size=4096, rx_size=1024, connect_timeout_ms=10000,
                 min_backoff_ms=500, max_backoff_ms=30000):
        if _umqtt is None:
            raise ImportError("umqtt.simple missing: run `make setup` (or `mip install umqtt.simple`)")
        self.net = net
        self.t = tr.Transport(net, host, port, tls, tx_size, rx_size, connect_timeout_ms)
        self.stream = _Stream(self.t)
        self._shim = _SocketShim(self.stream)
        self.mq = _umqtt.MQTTClient(client_id, host, port, user=user, password=password,
                                    keepalive=keepalive_s)
        if will_topic:
            self.mq.set_last_will(will_topic, will_msg, retain=True, qos=1)
        self.mq.set_callback(self._no_cb)
        self.mq.sock = self.stream
        self.keepalive_ms = keepalive_s * 1000
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self._backoff_ms = min_backoff_ms
        self.state = C_OFFLINE
        self._next_try = None          # None: try at once
        self._connack = False
        self._t_online = 0
        self._ping_out = False
        self._t_ping = 0
        self._discard = 0              # bytes of an oversized incoming packet still to skip
        # callbacks (set by the owner)
        self.on_connect = None         # f(now)
        self.on_disconnect = None      # f(now, reason)
        self.on_message = None         # f(topic_mv, payload_mv)
        self.on_puback = None          # f(pid)
        self.on_oversize = None        # f()
        # counters
        self.connects = 0
        self.attempts = 0
        self.disconnects = 0
        self.pings = 0
        self.rx_oversize = 0
        self.protocol_errors = 0
        self.last_error = tr.R_NONE
        self.last_connack = -1

    def _no_cb(self, topic, msg):
        pass

    @property
    def online(self):
        return self.state == C_ONLINE

    def tx_free(self):
        return self.t.tx_free()

    # ------------------------------------------------------------ connection
    def service(self, now):
        """Bounded, non-blocking: connection state machine, socket I/O, incoming packets."""
        st = self.state
        if st == C_OFFLINE:
            if self._next_try is not None and not tk.due(now, self._next_try):
                return
            if not self.net.up():
                self._schedule_retry(now)
                self.last_error = tr.R_LINK
                return
            self.attempts += 1
            self._connack = False
            self.t.open(now)
            self.state = C_CONNECTING
            st = C_CONNECTING
        t = self.t
        was_up = t.state == tr.T_UP
        ok = t.service(now)
        if not ok and t.state == tr.T_DOWN:
            self._lost(now, t.error)
            return
        if st == C_CONNECTING and t.state == tr.T_UP:
            if not was_up:
                self._send_connect()
                ok = t.pump(now)
                if not ok:
                    self._lost(now, t.error)
                    return
            if tk.due(now, t._deadline) and not self._connack:
                self._close(now, tr.R_TIMEOUT)
                return
        self._parse(now)
        if self.state == C_ONLINE:
            self._keepalive(now)

    def _send_connect(self):
        mq = self.mq
        saved = _umqtt.socket
        _umqtt.socket = self._shim
        try:
            mq.connect()
        except _WouldBlock:
            pass
        finally:
            _umqtt.socket = saved
            mq.sock = self.stream

    def _keepalive(self, now):
        t = self.t
        ka = self.keepalive_ms
        # time model (bankgate.clock.hold): a connection up for weeks keeps a readable age
        self._t_online = tk.hold(now, self._t_online)
        if tk.diff(now, t.t_rx) > ka + ka // 2:
            self._close(now, tr.R_SILENCE)
            return
        if self._ping_out:
            if tk.diff(now, self._t_ping) > ka // 2:
                self._close(now, tr.R_SILENCE)
            return
        if t.tx_len and tk.diff(now, t.t_tx) > ka:
            self._close(now, tr.R_STALL)
            return
        if tk.diff(now, t.t_rx) >= ka // 2 or tk.diff(now, t.t_tx) >= ka // 2:
            if t.tx_free() >= 2:
                self.mq.ping()
                self._ping_out = True
                self._t_ping = now
                self.pings += 1

    def _schedule_retry(self, now):
        b = self._backoff_ms
        j = b // 4
        self._next_try = tk.add(now, b - j + (random.getrandbits(16) % (2 * j + 1) if j else 0))
        self._backoff_ms = min(b * 2, self.max_backoff_ms)

    def _lost(self, now, reason):
        was_online = self.state == C_ONLINE
        self.last_error = reason
        self.t.close(reason)
        if was_online and tk.diff(now, self._t_online) >= _STABLE_MS:
            self._backoff_ms = self.min_backoff_ms
        self.state = C_OFFLINE
        self._ping_out = False
        self._discard = 0
        self._schedule_retry(now)
        self.disconnects += 1
        if self.on_disconnect is not None:
            self.on_disconnect(now, reason, was_online)

    def _close(self, now, reason):
        self._lost(now, reason)

    def close(self, now, publish_offline_topic=None):
        """Orderly shutdown: optional retained 'offline', DISCONNECT, flush once, close."""
        if self.state == C_ONLINE:
            try:
                if publish_offline_topic is not None:
                    self.publish(publish_offline_topic, b"offline", True, 0)
                if self.t.tx_free() >= 2:
                    self.mq.disconnect()       # writes E0 00 to the stream; close() is a no-op
                self.t.pump(now)
            except Exception:
                pass
        self.t.close(tr.R_CLOSED)
        self.state = C_OFFLINE
        self._next_try = None

    def retry_now(self):
        if self.state == C_OFFLINE:
            self._next_try = None

    # ------------------------------------------------------------ sending
    def fits(self, topic_len, payload_len, qos):
        return packet_size(topic_len, payload_len, qos) <= self.t.tx_free()

    def publish(self, topic, payload, retain=False, qos=0):
        """Encode one PUBLISH into the tx buffer (caller checked fits()).  Returns the packet
        id for QoS 1 (the PUBACK arrives later through on_puback), else 0."""
        mq = self.mq
        if qos:
            if mq.pid >= 0xFFFF:
                mq.pid = 0
            try:
                mq.publish(topic, payload, retain, 1)
            except _WouldBlock:
                pass
            return mq.pid
        mq.publish(topic, payload, retain, 0)
        return 0

    def subscribe(self, topic, qos=0):
        mq = self.mq
        if mq.pid >= 0xFFFF:
            mq.pid = 0
        try:
            mq.subscribe(topic, qos)
        except _WouldBlock:
            pass
        return mq.pid

    def flush(self, now):
        if self.t.state == tr.T_UP and self.t.tx_len:
            if not self.t.pump(now):
                self._lost(now, self.t.error)

    # ------------------------------------------------------------ receiving
    def _parse(self, now):
        t = self.t
        rx = t.rx
        while True:
            if self._discard:
                n = self._discard if self._discard < t.rx_len else t.rx_len
                if not n:
                    return
                t.consume_rx(n)
                self._discard -= n
                continue
            have = t.rx_len
            if have < 2:
                return
            # remaining length: 1..4 bytes, 7 bits each
            rem = 0
            shift = 0
            i = 1
            while True:
                if i >= have:
                    return            # header incomplete
                b = rx[i]
                rem |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
                if shift > 21:
                    self.protocol_errors += 1
                    self._close(now, tr.R_PROTOCOL)
                    return
            total = i + rem
            op = rx[0] & 0xF0
            if total > len(rx):
                if op == 0x30:
                    self.rx_oversize += 1
                    self._discard = total
                    if self.on_oversize is not None:
                        self.on_oversize()
                    continue
                self.protocol_errors += 1
                self._close(now, tr.R_PROTOCOL)
                return
            if have < total:
                return
            if not self._dispatch(now, op, rx[0], i, rem):
                return
            t.consume_rx(total)

    def _dispatch(self, now, op, b0, i, rem):
        rx = self.t.rx
        if op == 0x20:                             # CONNACK: 20 02 flags rc
            if rem != 2:
                return self._bad(now)
            rc = rx[i + 1]
            self.last_connack = rc
            if rc != 0:
                self._close(now, tr.R_REFUSED)
                return False
            self._connack = True
            self.state = C_ONLINE
            self._t_online = now
            self.connects += 1
            self._ping_out = False
            if self.on_connect is not None:
                self.on_connect(now)
            return True
        if self.state != C_ONLINE:
            return self._bad(now)                  # nothing but CONNACK may come first
        if op == 0xD0:                             # PINGRESP
            self._ping_out = False
            return True
        if op == 0x40:                             # PUBACK: 40 02 pid
            if rem != 2:
                return self._bad(now)
            if self.on_puback is not None:
                self.on_puback(rx[i] << 8 | rx[i + 1])
            return True
        if op == 0x90:                             # SUBACK: pid + return codes
            return True
        if op == 0x30:                             # PUBLISH
            qos = (b0 >> 1) & 3
            if rem < 2:
                return self._bad(now)
            tl = rx[i] << 8 | rx[i + 1]
            p = i + 2 + tl
            end = i + rem
            pid = 0
            if qos:
                pid = rx[p] << 8 | rx[p + 1] if p + 2 <= end else -1
                p += 2
            if p > end or qos == 3 or pid < 0:
                return self._bad(now)
            mv = self.t.rx_mv
            if self.on_message is not None:
                self.on_message(mv[i + 2:i + 2 + tl], mv[p:end])
            if qos == 1 and self.t.tx_free() >= 4:
                self.stream.write(b"\x40\x02")
                rx2 = self.t.tx
                k = self.t.tx_len
                rx2[k] = pid >> 8
                rx2[k + 1] = pid & 0xFF
                self.t.tx_len = k + 2
            # qos 2 is never granted (we subscribe at QoS 0); answered by nothing, counted
            return True
        # PUBREC/PUBREL/PUBCOMP/UNSUBACK or reserved: not part of our session
        self.protocol_errors += 1
        return True

    def _bad(self, now):
        self.protocol_errors += 1
        self._close(now, tr.R_PROTOCOL)
        return False
