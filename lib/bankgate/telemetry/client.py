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
#   - CONNECT is encoded HERE (_encode_connect): umqtt's connect() makes its own socket through
#     its module global `socket`, and using it as an encoder would mean swapping another module's
#     global.  DNS and the real socket belong to the transport.
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
#
# QoS 1 (every event): the client encodes its own QoS 1 PUBLISH (umqtt.simple cannot set DUP)
# and keeps each in-flight packet id with its first and latest send time in a preallocated
# table of inflight_max entries:
#   - a packet without its PUBACK for puback_timeout_ms (5 s) is sent again with the same
#     packet id and DUP = 1 (MQTT 3.1.1 section 3.3.1.1); due_resend()/republish() -- the owner
#     re-encodes the payload from its store;
#   - a packet still unacknowledged noack_ms (15 s: the first send and two resends) after its
#     first send, or noack_ms without any PUBACK while packets were sent (also when the owner
#     forgot packets it no longer holds), declares the session dead: R_NOACK, the connection
#     is closed and reconnected
#     after the backoff like any other loss; the owner re-sends everything unacknowledged on
#     the new session (new packet ids, DUP = 0: a clean session is a new delivery).
#   Why 5 s / 15 s: a broker that answers PINGREQ answers PUBACK in one round trip (ms on a LAN,
#   < 1 s over the internet); 5 s is well past any live round trip, and three silent rounds
#   (15 s) are below the keepalive rule's own bound (K/2 = 15 s for PINGRESP, 1.5 K silence) so a
#   broker that answers pings but not publishes is found as fast as a silent one.  At 10 events/s
#   15 s of events is 150 records x 26 B = 3.9 kB, inside the default 8 kB ring.
# A connect deadline that passes after the broker sent some bytes but not a whole CONNACK is
# R_SLOW (a "slowloris" broker), counted in slow_connects; with no byte at all it stays R_TIMEOUT.
# The no-ack bound reached while part of a packet sits in rx (bytes trickling) is R_SLOW too
# (slow_sessions): a broker that drips its PUBACKs is as useless as one that sends none.
# Incoming PUBLISH at QoS 2 (we subscribe at QoS 0, so a conforming broker never sends one) is
# refused: never handed to on_message, counted (rx_qos_refused, on_refused callback), and
# answered as MQTT 3.1.1 section 4.3.3 requires of a receiver (PUBREC, then PUBCOMP for the
# PUBREL) so the broker does not retransmit it forever.  QoS 3 is malformed: R_PROTOCOL.
import array
import random

from micropython import const

from bankgate import clock as tk
from bankgate.telemetry.transport import (   # the submodule, never the package (no cycle)
    R_CLOSED, R_LINK, R_NOACK, R_NONE, R_PROTOCOL, R_REFUSED, R_SILENCE, R_SLOW, R_STALL,
    R_TIMEOUT, T_DOWN, T_UP, Transport)

try:
    import umqtt.simple as _umqtt
except ImportError:   # not fetched: `make setup` puts it in lib/umqtt/
    _umqtt = None

_C_OFFLINE = const(0)    # waiting for the backoff to expire
_C_CONNECTING = const(1) # transport setting up, or CONNECT sent and CONNACK awaited
C_ONLINE = const(2)

_STABLE_MS = const(10000)
_PUBACK_TIMEOUT_MS = const(5000)
_NOACK_MS = const(15000)
_INFLIGHT_MAX = const(16)


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


def _put_len(buf, k, n):
    """MQTT remaining length (1..4 bytes, 7 bits each) at buf[k]; returns the next index."""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[k] = b | 0x80
            k += 1
        else:
            buf[k] = b
            return k + 1


def _put_str(buf, k, s):
    """A length-prefixed MQTT string/binary (bytes) at buf[k]; returns the next index."""
    n = len(s)
    buf[k] = n >> 8
    buf[k + 1] = n & 0xFF
    buf[k + 2:k + 2 + n] = s
    return k + 2 + n


def packet_size(topic_len, payload_len, qos):
    """Bytes of a PUBLISH packet (fixed header with its variable-length remaining length)."""
    rem = 2 + topic_len + payload_len + (2 if qos else 0)
    n = 2
    r = rem
    while r > 0x7F:
        r >>= 7
        n += 1
    return n + rem


class _Inbound:
    """Inbound packets: parse the receive buffer, dispatch CONNACK/SUBACK/PUBACK/PUBLISH/PINGRESP, acknowledge QoS 1/2; anything malformed drops the connection (Client holds the state)."""

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
                    self._close(now, R_PROTOCOL)
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
                self._close(now, R_PROTOCOL)
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
                self._close(now, R_REFUSED)
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
            pid = rx[i] << 8 | rx[i + 1]
            k = self._if_slot(pid) if pid else -1
            if k >= 0:
                self._ifp[k] = 0
                self.inflight -= 1
                self.pubacks += 1
                self.t_puback = now
                self._t_wait = now if self.inflight else -1
            else:
                self.puback_unknown += 1
            if self.on_puback is not None:
                self.on_puback(pid)
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
            if qos == 2:
                # refused: never executed; PUBREC so the broker can complete the exchange
                self.rx_qos_refused += 1
                self._ack2(0x50, pid)
                if self.on_refused is not None:
                    self.on_refused(qos)
                return True
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
            return True
        if op == 0x60:                             # PUBREL (of a refused QoS 2 PUBLISH)
            if rem != 2:
                return self._bad(now)
            self._ack2(0x70, rx[i] << 8 | rx[i + 1])
            return True
        # PUBREC/PUBCOMP/UNSUBACK or reserved: not part of our session
        self.protocol_errors += 1
        return True

    def _ack2(self, typ, pid):
        """Four-byte acknowledgement (PUBREC 0x50 / PUBCOMP 0x70) for packet `pid`."""
        t = self.t
        if t.tx_free() < 4:
            return
        tx = t.tx
        k = t.tx_len
        tx[k] = typ
        tx[k + 1] = 2
        tx[k + 2] = pid >> 8
        tx[k + 3] = pid & 0xFF
        t.tx_len = k + 4

    def _bad(self, now):
        self.protocol_errors += 1
        self._close(now, R_PROTOCOL)
        return False


class _Outbound(_Inbound):
    """Outbound packets: QoS 0 publish, the QoS 1 in-flight table (packet ids, resend, forget), publish_into, subscribe, flush (Client holds the state)."""

    def fits(self, topic_len, payload_len, qos):
        return packet_size(topic_len, payload_len, qos) <= self.t.tx_free()

    def publish(self, topic, payload, retain=False, qos=0):
        """Encode one PUBLISH into the tx buffer (caller checked fits(), and for QoS 1
        inflight_room()).  Returns the packet id for QoS 1 (the PUBACK arrives later through
        on_puback; without it the packet is due for a resend after puback_timeout_ms), else 0."""
        if qos:
            pid = self._next_pid()
            self._encode_q1(topic, payload, pid, retain, False)
            if self._t_wait < 0:
                self._t_wait = self._now
            k = self._if_slot(0)
            if k >= 0:
                self._ifp[k] = pid
                self._if0[k] = self._now
                self._ift[k] = self._now
                self.inflight += 1
            return pid
        self.mq.publish(topic, payload, retain, 0)
        return 0

    def inflight_room(self):
        return self.inflight < self.inflight_max

    def due_resend(self, now):
        """Packet id of the in-flight QoS 1 PUBLISH longest past puback_timeout_ms, or 0."""
        if not self.inflight:
            return 0
        p = self._ifp
        t = self._ift
        best = 0
        age = -1
        for k in range(self.inflight_max):
            if p[k]:
                a = tk.diff(now, t[k])
                if a >= self.puback_timeout_ms and a > age:
                    age = a
                    best = p[k]
        return best

    def republish(self, topic, payload, pid, retain=False):
        """Send in-flight packet `pid` again: same id, DUP = 1 (caller checked fits())."""
        k = self._if_slot(pid)
        if k < 0:
            return False
        self._encode_q1(topic, payload, pid, retain, True)
        self._ift[k] = self._now
        self.resends += 1
        return True

    def forget(self, pid):
        """The owner no longer holds `pid` (dropped from its store): stop waiting for it."""
        k = self._if_slot(pid)
        if k >= 0:
            self._ifp[k] = 0
            self.inflight -= 1

    def _if_slot(self, pid):
        p = self._ifp
        for k in range(self.inflight_max):
            if p[k] == pid:
                return k
        return -1

    def _clear_inflight(self):
        p = self._ifp
        for k in range(self.inflight_max):
            p[k] = 0
        self.inflight = 0
        self._t_wait = -1

    def _next_pid(self):
        pid = self._pid
        while True:
            pid = pid + 1 if pid < 0xFFFF else 1
            if self._if_slot(pid) < 0:
                self._pid = pid
                return pid

    def _encode_q1(self, topic, payload, pid, retain, dup):
        """QoS 1 PUBLISH straight into the tx buffer: 0x32 | DUP 0x08 | RETAIN, remaining
        length, topic, packet id, payload."""
        t = self.t
        tx = t.tx
        k = t.tx_len
        tl = len(topic)
        rem = 2 + tl + 2 + len(payload)
        tx[k] = 0x32 | (0x08 if dup else 0) | (1 if retain else 0)
        k += 1
        while True:
            b = rem & 0x7F
            rem >>= 7
            if rem:
                tx[k] = b | 0x80
                k += 1
            else:
                tx[k] = b
                k += 1
                break
        tx[k] = tl >> 8
        tx[k + 1] = tl & 0xFF
        k += 2
        mv = t.tx_mv
        mv[k:k + tl] = topic
        k += tl
        tx[k] = pid >> 8
        tx[k + 1] = pid & 0xFF
        k += 2
        n = len(payload)
        mv[k:k + n] = payload
        t.tx_len = k + n

    def publish_into(self, topic, n, retain=False):
        """Encode the head of a QoS 0 PUBLISH with an n-byte payload into the tx buffer (caller
        checked fits()) and return the tx offset where the caller writes the payload itself
        (discovery: json.dump straight into the buffer, no payload string)."""
        t = self.t
        tx = t.tx
        k = t.tx_len
        tl = len(topic)
        rem = 2 + tl + n
        tx[k] = 0x30 | (1 if retain else 0)
        k += 1
        while True:
            b = rem & 0x7F
            rem >>= 7
            if rem:
                tx[k] = b | 0x80
                k += 1
            else:
                tx[k] = b
                k += 1
                break
        tx[k] = tl >> 8
        tx[k + 1] = tl & 0xFF
        k += 2
        t.tx_mv[k:k + tl] = topic
        k += tl
        t.tx_len = k + n
        return k

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
        if self.t.state == T_UP and self.t.tx_len:
            if not self.t.pump(now):
                self._lost(now, self.t.error)


class Client(_Outbound):
    def __init__(self, net, host, port, client_id, keepalive_s=30, tls=False,
                 user=None, password=None, will_topic=None, will_msg=b"offline",
                 tx_size=4096, rx_size=1024, connect_timeout_ms=10000,
                 min_backoff_ms=500, max_backoff_ms=30000, puback_timeout_ms=_PUBACK_TIMEOUT_MS,
                 noack_ms=_NOACK_MS, inflight_max=_INFLIGHT_MAX):
        if _umqtt is None:
            raise ImportError("umqtt.simple missing: run `make setup` (or `mip install umqtt.simple`)")
        self.net = net
        self.t = Transport(net, host, port, tls, tx_size, rx_size, connect_timeout_ms)
        self.stream = _Stream(self.t)
        self.mq = _umqtt.MQTTClient(client_id, host, port, user=user, password=password,
                                    keepalive=keepalive_s)
        self.mq.set_callback(self._no_cb)
        # what CONNECT carries (_encode_connect); the will is retained at QoS 1
        if keepalive_s < 0 or keepalive_s > 0xFFFF:
            raise ValueError("keepalive_s must be 0..65535")
        self._cid = client_id
        self._user = user
        self._pswd = password
        self._will_topic = will_topic
        self._will_msg = will_msg
        self.mq.sock = self.stream
        self.keepalive_ms = keepalive_s * 1000
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self._backoff_ms = min_backoff_ms
        self.state = _C_OFFLINE
        self._next_try = None          # None: try at once
        self._connack = False
        self._t_online = 0
        self._ping_out = False
        self._t_ping = 0
        self._discard = 0              # bytes of an oversized incoming packet still to skip
        self._now = 0                  # `now` of the current service() pass
        self._bin0 = 0                 # transport bytes_in when this connect attempt began
        # QoS 1 in-flight table (see the header): packet id (0 = free), first / latest send
        self.puback_timeout_ms = puback_timeout_ms
        self.noack_ms = noack_ms
        self.inflight_max = inflight_max
        self._ifp = array.array("i", bytes(4 * inflight_max))
        self._if0 = array.array("i", bytes(4 * inflight_max))
        self._ift = array.array("i", bytes(4 * inflight_max))
        self.inflight = 0
        self._pid = 0                  # last QoS 1 packet id used (1..65535)
        self._t_wait = -1              # first send not followed by any PUBACK (-1: none waiting)
        # callbacks (set by the owner)
        self.on_connect = None         # f(now)
        self.on_disconnect = None      # f(now, reason)
        self.on_message = None         # f(topic_mv, payload_mv)
        self.on_puback = None          # f(pid)
        self.on_oversize = None        # f()
        self.on_refused = None         # f(qos): an incoming PUBLISH at a QoS we refuse
        # counters
        self.connects = 0
        self.attempts = 0
        self.disconnects = 0
        self.pings = 0
        self.rx_oversize = 0
        self.protocol_errors = 0
        self.last_error = R_NONE
        self.last_connack = -1
        self.resends = 0               # QoS 1 PUBLISH sent again with DUP after puback_timeout_ms
        self.noack_drops = 0           # sessions declared dead for want of a PUBACK (R_NOACK)
        self.slow_connects = 0         # connect deadlines passed with a trickling CONNACK (R_SLOW)
        self.slow_sessions = 0         # sessions ended by the no-ack bound with bytes trickling (R_SLOW)
        self.rx_qos_refused = 0        # incoming QoS 2 PUBLISH refused (never executed)
        self.pubacks = 0
        self.t_puback = -1             # ticks_ms of the last PUBACK that matched (-1: none yet)
        self.puback_unknown = 0        # PUBACK for no packet in flight (late, after a resend)

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
        self._now = now
        if st == _C_OFFLINE:
            if self._next_try is not None and not tk.due(now, self._next_try):
                return
            if not self.net.up():
                self._schedule_retry(now)
                self.last_error = R_LINK
                return
            self.attempts += 1
            self._connack = False
            self._bin0 = self.t.bytes_in
            self.t.open(now)
            self.state = _C_CONNECTING
            st = _C_CONNECTING
        t = self.t
        was_up = t.state == T_UP
        ok = t.service(now)
        if not ok and t.state == T_DOWN:
            self._lost(now, t.error)
            return
        if st == _C_CONNECTING and t.state == T_UP:
            if not was_up:
                self._send_connect()
                ok = t.pump(now)
                if not ok:
                    self._lost(now, t.error)
                    return
            if tk.due(now, t._deadline) and not self._connack:
                if t.bytes_in != self._bin0 or t.rx_len:
                    self.slow_connects += 1
                    self._close(now, R_SLOW)
                else:
                    self._close(now, R_TIMEOUT)
                return
        self._parse(now)
        if self.state == C_ONLINE:
            self._keepalive(now)

    def _send_connect(self):
        self._encode_connect(True)

    def _encode_connect(self, clean):
        """MQTT 3.1.1 CONNECT (section 3.1) into the tx buffer: protocol "MQTT" level 4, the
        flags (clean session, will at QoS 1 retained, user name and password), keepalive,
        then client id, will topic, will message, user name, password -- the bytes
        umqtt.simple 1.3.4 would write.  A CONNECT that does not fit the tx buffer raises
        OSError (the connection is retried after the backoff)."""
        flags = 0x02 if clean else 0
        rem = 10 + 2 + len(self._cid)
        if self._will_topic:
            flags |= 0x04 | 0x08 | 0x20
            rem += 2 + len(self._will_topic) + 2 + len(self._will_msg)
        if self._user is not None:
            flags |= 0xC0
            rem += 2 + len(self._user) + 2 + len(self._pswd or b"")
        t = self.t
        if packet_size(0, rem - 2, 0) > t.tx_free():
            raise OSError(105)     # ENOBUFS
        tx = t.tx
        k = t.tx_len
        tx[k] = 0x10
        k = _put_len(tx, k + 1, rem)
        tx[k:k + 7] = b"\x00\x04MQTT\x04"
        tx[k + 7] = flags
        ka = self.keepalive_ms // 1000
        tx[k + 8] = ka >> 8
        tx[k + 9] = ka & 0xFF
        k = _put_str(tx, k + 10, self._cid)
        if self._will_topic:
            k = _put_str(tx, k, self._will_topic)
            k = _put_str(tx, k, self._will_msg)
        if self._user is not None:
            k = _put_str(tx, k, self._user)
            k = _put_str(tx, k, self._pswd or b"")
        t.tx_len = k

    def _keepalive(self, now):
        t = self.t
        ka = self.keepalive_ms
        # time model (bankgate.clock.hold): a connection up for weeks keeps a readable age
        self._t_online = tk.hold(now, self._t_online)
        if self._t_wait >= 0 and tk.diff(now, self._t_wait) >= self.noack_ms:
            self._noack(now)               # no PUBACK at all (packets may have been forgotten)
            return
        if self.inflight:
            p = self._ifp
            f = self._if0
            for k in range(self.inflight_max):
                if p[k] and tk.diff(now, f[k]) >= self.noack_ms:
                    self._noack(now)
                    return
        if tk.diff(now, t.t_rx) > ka + ka // 2:
            self._close(now, R_SILENCE)
            return
        if self._ping_out:
            if tk.diff(now, self._t_ping) > ka // 2:
                self._close(now, R_SILENCE)
            return
        if t.tx_len and tk.diff(now, t.t_tx) > ka:
            self._close(now, R_STALL)
            return
        if tk.diff(now, t.t_rx) >= ka // 2 or tk.diff(now, t.t_tx) >= ka // 2:
            if t.tx_free() >= 2:
                self.mq.ping()
                self._ping_out = True
                self._t_ping = now
                self.pings += 1

    def _noack(self, now):
        """A PUBACK overdue past noack_ms: a broker that trickles bytes (part of a packet
        waiting in rx) is a slow broker (R_SLOW), one that sends nothing useful R_NOACK."""
        self.noack_drops += 1
        if self.t.rx_len:
            self.slow_sessions += 1
            self._close(now, R_SLOW)
        else:
            self._close(now, R_NOACK)

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
        self.state = _C_OFFLINE
        self._ping_out = False
        self._discard = 0
        self._clear_inflight()
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
        self.t.close(R_CLOSED)
        self.state = _C_OFFLINE
        self._next_try = None
        self._clear_inflight()

    def retry_now(self):
        if self.state == _C_OFFLINE:
            self._next_try = None

    # ------------------------------------------------------------ sending
    # ------------------------------------------------------------ receiving
