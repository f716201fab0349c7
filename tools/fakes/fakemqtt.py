# A recording MQTT broker stand-in and the network around it, for soak runs,
# the fault matrix and `bankgate bench` (unix port, simulated time).  Host-only.
#
#   broker = FakeBroker()
#   net = fake_net(broker)                  a bankgate.net.Net: link, DNS and socket are fakes
#   Gateway(hw, cfg, net)                   telemetry talks MQTT 3.1.1 to `broker`
#
# What it models (enough for bankgate.telemetry, nothing more):
#   broker.set_broker(up)  up=False: the broker is down -- the open connection reads EOF,
#                          new connects fail (POLLERR, like "connection refused")
#   broker.stalled = True  the broker (or the path to it) stops: writes are not accepted
#                          (EAGAIN), nothing is read -> telemetry's R_STALL / R_SILENCE
#   net.link.connected     False: Wi-Fi down (net.up() False -> R_LINK)
#   broker.inject(topic, payload)   a PUBLISH from the broker to the gateway (commands)
# Misbehaving brokers (issue #21: the gateway must recover by itself):
#   broker.no_puback = True    connects, subscribes, answers PINGREQ, takes every PUBLISH --
#                              and never sends a PUBACK
#   broker.drip_ms = 1000      slowloris: every byte to the client is released drip_ms after
#                              the previous one (needs broker.clock, a ms-ticks callable)
#   broker.reset_mid_publish(n)  the next n PUBLISH packets are cut: half the packet is taken,
#                              then the connection is reset (ECONNRESET on the next call)
#   broker.inject(topic, payload, qos=2, pid=7)  a QoS 2 PUBLISH (PUBREC/PUBCOMP recorded in
#                              broker.acks2)
# broker.dups counts PUBLISH packets with DUP set (on_publish sees every copy: a test
# de-duplicates events by their "seq").
# Packets handled from the client: CONNECT -> CONNACK 0, PUBLISH (QoS 0/1) -> PUBACK,
# SUBSCRIBE -> SUBACK, PINGREQ -> PINGRESP, DISCONNECT.  Every PUBLISH is handed to
# broker.on_publish(topic_bytes, payload_bytes) (default: counted, the last kept).
#
# The socket is an io.IOBase so select.poll() (transport.py) can poll it: ioctl(3)
# = MP_STREAM_POLL answers POLLOUT when connected, POLLERR|POLLHUP when refused.
import io
import select

from bankgate.net import Net

_POLL = 3                    # MP_STREAM_POLL
_EINPROGRESS = 115


class FakeLink:
    """The Wi-Fi link (bankgate.hal.wifi interface): isconnected(), service(now)."""

    def __init__(self):
        self.connected = True

    def isconnected(self):
        return self.connected

    def service(self, now):
        pass


class FakeBroker:
    def __init__(self):
        self.up = True
        self.stalled = False
        self.sock = None             # the current connection's socket
        self.connects = 0
        self.publishes = 0
        self.bytes_in = 0
        self.last = None             # (topic, payload) of the last PUBLISH
        self.on_publish = None
        self.refused = 0
        self.no_puback = False
        self.drip_ms = 0
        self.clock = None
        self.resets = 0              # PUBLISH packets still to cut (reset_mid_publish)
        self.resets_done = 0
        self.dups = 0
        self.acks2 = []              # (type, pid) of PUBREC / PUBCOMP from the client
        self.pubacks_sent = 0

    def reset_mid_publish(self, n=1):
        self.resets += n

    def set_broker(self, up):
        self.up = bool(up)
        if not self.up and self.sock is not None:
            self.sock.eof = True

    def inject(self, topic, payload, qos=0, pid=1):
        """Send a PUBLISH (QoS 0 unless told) to the connected client; False if nobody is
        connected."""
        s = self.sock
        if s is None or s.eof or not s.session:
            return False
        t = topic if isinstance(topic, bytes) else topic.encode()
        p = payload if isinstance(payload, bytes) else payload.encode()
        body = bytes([len(t) >> 8, len(t) & 0xFF]) + t
        if qos:
            body += bytes([pid >> 8, pid & 0xFF])
        body += p
        s.out += bytes([0x30 | (qos << 1)]) + _varlen(len(body)) + body
        return True

    def send_raw(self, data):
        s = self.sock
        if s is None or s.eof:
            return False
        s.out += data
        return True

    # -- packets from the client
    def packet(self, sock, typ, flags, body):
        if typ == 1:                                  # CONNECT
            self.connects += 1
            sock.session = True
            sock.out += b"\x20\x02\x00\x00"
        elif typ == 3:                                # PUBLISH
            tl = (body[0] << 8) | body[1]
            topic = bytes(body[2:2 + tl])
            pos = 2 + tl
            qos = (flags >> 1) & 3
            if flags & 0x08:
                self.dups += 1
            if qos:
                if not self.no_puback:
                    sock.out += bytes([0x40, 2, body[pos], body[pos + 1]])
                    self.pubacks_sent += 1
                pos += 2
            payload = bytes(body[pos:])
            self.publishes += 1
            if self.on_publish is not None:
                self.on_publish(topic, payload)
            else:
                self.last = (topic, payload)
        elif typ == 8:                                # SUBSCRIBE
            sock.out += bytes([0x90, 3, body[0], body[1], 0])
        elif typ == 12:                               # PINGREQ
            sock.out += b"\xd0\x00"
        elif typ == 14:                               # DISCONNECT
            sock.eof = True
        elif typ == 5 or typ == 7:                    # PUBREC / PUBCOMP (QoS 2 refusal)
            pid = (body[0] << 8) | body[1]
            self.acks2.append((typ, pid))
            if typ == 5:
                sock.out += bytes([0x62, 2, body[0], body[1]])   # PUBREL


def _varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class BrokerSocket(io.IOBase):
    """What every fake broker socket shares (FakeSocket here, leanmqtt.LeanSocket): the connect
    that reaches the broker or is refused, and the answer to ioctl requests other than POLL."""

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        b = self.broker
        if not b.up:
            self.refused = True
            b.refused += 1
        else:
            b.sock = self
        raise OSError(_EINPROGRESS)

    def ioctl(self, req, arg):
        if req == _POLL:
            if self.refused:
                return select.POLLERR | select.POLLHUP
            return self.poll_events(arg)
        # anything else (the unix port's select.poll first asks MP_STREAM_GET_FILENO, 10): "not
        # supported" as a negative errno.  Returning 0 there would make poll() watch file
        # descriptor 0 -- the process's stdin -- instead of this socket.
        return -22


class FakeSocket(BrokerSocket):
    def __init__(self, broker):
        self.broker = broker
        self.inbuf = bytearray()     # client -> broker, not yet parsed
        self.out = bytearray()       # broker -> client
        self.refused = False
        self.eof = False
        self.session = False
        self.closed = False
        self.reset = False
        self._t_drip = None

    def poll_events(self, arg):
        ev = 0
        if not self.broker.stalled:
            ev |= select.POLLOUT & arg
            if self.out:
                ev |= select.POLLIN & arg
        return ev

    def write(self, buf):
        if self.reset:
            raise OSError(104)                      # ECONNRESET
        if self.closed or self.eof or self.refused:
            raise OSError(32)                       # EPIPE
        if self.broker.stalled:
            return None                             # would block
        n = len(buf)
        br = self.broker
        if br.resets and not self.inbuf and n >= 2 and buf[0] >> 4 == 3:
            br.resets -= 1
            br.resets_done += 1
            n = len(buf) // 2                       # half of it reaches the broker, then RST
            self.inbuf += buf[:n]
            br.bytes_in += n
            self.reset = True
            return n
        self.inbuf += buf
        self.broker.bytes_in += n
        self._parse()
        return n

    def readinto(self, buf):
        if self.reset:
            raise OSError(104)                      # ECONNRESET
        if self.broker.stalled and not self.eof:
            return None
        n = len(self.out)
        if n == 0:
            return 0 if self.eof else None
        if n > len(buf):
            n = len(buf)
        dm = self.broker.drip_ms
        if dm:
            now = self.broker.clock()
            if self._t_drip is not None and now - self._t_drip < dm:
                return None
            self._t_drip = now
            n = 1
        buf[0:n] = self.out[0:n]
        self.out = self.out[n:]
        return n

    def close(self):
        self.closed = True
        if self.broker.sock is self:
            self.broker.sock = None

    def _parse(self):
        b = self.inbuf
        while len(b) >= 2:
            mult = 1
            rem = 0
            i = 1
            while True:
                if i >= len(b):
                    return
                c = b[i]
                rem += (c & 0x7F) * mult
                mult *= 128
                i += 1
                if not c & 0x80:
                    break
            if len(b) < i + rem:
                return
            typ = b[0] >> 4
            flags = b[0] & 0x0F
            body = b[i:i + rem]
            b = b[i + rem:]
            self.inbuf = b
            self.broker.packet(self, typ, flags, body)


def fake_net(broker, link=None):
    """A bankgate.net.Net whose link, name lookup and sockets are fakes."""
    link = link or FakeLink()
    net = Net(link, getaddrinfo=lambda host, port, *a: [(2, 1, 0, "", ("127.0.0.1", port))],
              use_thread=False, socket_factory=lambda: FakeSocket(broker))
    net.broker = broker
    net.set_broker = broker.set_broker     # the scenario runner's mqtt_broker action hook
    return net
