# A broker stand-in for heap measurements (tools/rigs/bench_alone.py): the same interface as
# fakemqtt.FakeSocket (bankgate.net socket_factory), but it allocates nothing while the
# firmware runs.  On the device the TCP/IP stack copies what the firmware writes into its
# own buffers, outside the MicroPython heap; fakemqtt's socket instead keeps the bytes,
# slices them into packets and records the last message, so its garbage (kilobytes per
# publish) would be counted against the firmware and fragment the heap it is measured in.
#
# The client's bytes are parsed as a stream (packets may be split across writes) with
# integer state only; replies (CONNACK, SUBACK, PUBACK, PINGRESP) go to a preallocated
# buffer.  Counters: broker.publishes, broker.connects, broker.bytes_in (a fakemqtt.FakeBroker).
import select

from fakemqtt import BrokerSocket, FakeBroker  # noqa: F401 (FakeBroker: the record this socket updates)

_OUT = 256


class LeanSocket(BrokerSocket):
    def __init__(self, broker):
        self.broker = broker
        self.out = bytearray(_OUT)     # broker -> client, [ro:wo) pending
        self.ro = 0
        self.wo = 0
        self.refused = False
        self.eof = False
        self.closed = False
        self.session = False
        self._st = 0                   # 0: fixed header, 1: remaining length, 2: body
        self._typ = 0
        self._flags = 0
        self._rem = 0
        self._mult = 1
        self._pos = 0
        self._tl = 0                   # PUBLISH topic length
        self._pid = 0

    def poll_events(self, arg):
        ev = select.POLLOUT & arg
        if self.wo > self.ro:
            ev |= select.POLLIN & arg
        return ev

    def _put(self, b):
        if self.ro == self.wo:
            self.ro = self.wo = 0
        if self.wo >= _OUT:
            raise OSError(105)         # ENOBUFS: the client stopped reading
        self.out[self.wo] = b
        self.wo += 1

    def _packet_done(self):
        t = self._typ
        br = self.broker
        if t == 1:                                 # CONNECT
            br.connects += 1
            self.session = True
            for b in b"\x20\x02\x00\x00":
                self._put(b)
        elif t == 3:                               # PUBLISH
            br.publishes += 1
            if (self._flags >> 1) & 3:
                self._put(0x40)
                self._put(2)
                self._put(self._pid >> 8)
                self._put(self._pid & 0xFF)
        elif t == 8:                               # SUBSCRIBE
            self._put(0x90)
            self._put(3)
            self._put(self._pid >> 8)
            self._put(self._pid & 0xFF)
            self._put(0)                           # granted QoS 0
        elif t == 12:                              # PINGREQ
            self._put(0xD0)
            self._put(0)
        elif t == 14:                              # DISCONNECT
            self.eof = True
        self._st = 0

    def write(self, buf):
        if self.closed or self.eof or self.refused:
            raise OSError(32)
        n = len(buf)
        self.broker.bytes_in += n
        i = 0
        while i < n:
            st = self._st
            c = buf[i]
            if st == 0:
                self._typ = c >> 4
                self._flags = c & 0x0F
                self._rem = 0
                self._mult = 1
                self._st = 1
                i += 1
            elif st == 1:
                self._rem += (c & 0x7F) * self._mult
                self._mult *= 128
                i += 1
                if not c & 0x80:
                    self._pos = 0
                    self._pid = 0
                    self._st = 2
                    if self._rem == 0:
                        self._packet_done()
            else:
                p = self._pos
                t = self._typ
                if t == 3:
                    if p == 0:
                        self._tl = c << 8
                    elif p == 1:
                        self._tl |= c
                    elif p == 2 + self._tl:
                        self._pid = c << 8
                    elif p == 3 + self._tl:
                        self._pid |= c
                elif t == 8:
                    if p == 0:
                        self._pid = c << 8
                    elif p == 1:
                        self._pid |= c
                if p >= 4 and (t != 3 or p > 3 + self._tl):
                    k = n - i                      # skip the rest of the body at once
                    left = self._rem - p
                    if k > left:
                        k = left
                    self._pos = p + k
                    i += k
                else:
                    self._pos = p + 1
                    i += 1
                if self._pos >= self._rem:
                    self._packet_done()
        return n

    def readinto(self, buf):
        r = self.ro
        n = self.wo - r
        if n == 0:
            return 0 if self.eof else None
        if n > len(buf):
            n = len(buf)
        o = self.out
        for k in range(n):
            buf[k] = o[r + k]
        self.ro = r + n
        return n

    def close(self):
        self.closed = True
        if self.broker.sock is self:
            self.broker.sock = None


def lean_net(broker, link=None):
    """A bankgate.net.Net on LeanSocket (fakemqtt.fake_net's, without its allocations)."""
    import fakemqtt
    from bankgate.net import Net
    link = link or fakemqtt.FakeLink()
    addr = [(2, 1, 0, "", ("127.0.0.1", 1883))]
    net = Net(link, getaddrinfo=lambda host, port, *a: addr, use_thread=False,
              socket_factory=lambda: LeanSocket(broker))
    net.broker = broker
    return net
