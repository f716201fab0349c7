# Byte transport to the broker: owns the real socket, in non-blocking mode, and moves bytes
# between it and two preallocated buffers.  Nothing in here can block:
#
#   DOWN -> open(now) -> RESOLVE (net.resolver: cached; a name is looked up once in a worker thread)
#        -> CONNECT (socket.connect() non-blocking: EINPROGRESS, then poll(0) for writability)
#        -> UP (TLS wrapped here if configured; the handshake runs inside the non-blocking reads/writes)
#
# A deadline bounds RESOLVE+CONNECT (connect_timeout_ms); the MQTT layer (client.py) bounds
# everything after it (CONNACK wait, keepalive, stalled writes).  Any socket error closes the
# transport with a reason code; reconnecting is the client's decision (backoff).
#
# The buffers:  tx[0:tx_len]  bytes waiting for the socket (the umqtt encoder writes here)
#               rx[0:rx_len]  bytes received and not yet consumed by the MQTT parser
import select

from micropython import const

from bankgate import clock as tk
from bankgate.net import R_FAILED

T_DOWN = const(0)
_T_RESOLVE = const(1)
_T_CONNECT = const(2)
T_UP = const(3)

# close reasons (also the `b` of EV_MQTT disconnect events and Client.last_error)
R_NONE = const(0)
R_DNS = const(1)            # name not resolved (failed, or still pending at the deadline)
_R_CONNECT = const(2)        # TCP connect refused / failed
R_TIMEOUT = const(3)        # connect (TCP+TLS+CONNACK) deadline passed
_R_IO = const(4)             # socket error while connected
_R_EOF = const(5)            # broker closed the connection
R_REFUSED = const(6)        # CONNACK return code != 0 (bad credentials, ...)
R_PROTOCOL = const(7)       # malformed packet from the broker
R_SILENCE = const(8)        # nothing received for 1.5 x keepalive / no PINGRESP
R_STALL = const(9)          # outgoing bytes not accepted for too long (slow or dead link)
R_LINK = const(10)          # Wi-Fi / link down
R_CLOSED = const(11)        # closed on request
_R_TLS = const(12)           # TLS set-up failed (settings, memory)
R_INTERNAL = const(13)      # an exception inside telemetry (caught, counted)
R_NOACK = const(14)         # a QoS 1 PUBLISH went unacknowledged for noack_ms (broker not acknowledging)
R_SLOW = const(15)          # connect deadline passed while the broker trickled its CONNACK (slowloris)

REASON_NAMES = ("none", "dns", "connect", "timeout", "io", "eof", "refused", "protocol",
                "silence", "stall", "link", "closed", "tls", "internal", "noack", "slow")

_EAGAIN = (11, 115, 119, 36)   # EAGAIN, EINPROGRESS (Linux / lwIP), EINPROGRESS (BSD)
_POLLOUT = select.POLLOUT
_POLLBAD = select.POLLERR | select.POLLHUP


class Transport:
    def __init__(self, net, host, port, tls=False, tx_size=4096, rx_size=1024,
                 connect_timeout_ms=10000):
        self.net = net
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout_ms = connect_timeout_ms
        self.tx = bytearray(tx_size)
        self.tx_mv = memoryview(self.tx)
        self.tx_len = 0
        self.rx = bytearray(rx_size)
        self.rx_mv = memoryview(self.rx)
        self.rx_len = 0
        self.state = T_DOWN
        self.sock = None
        self._raw = None
        self._poll = None
        self._deadline = 0
        self.t_rx = 0               # ticks_ms of the last byte received
        self.t_tx = 0               # ticks_ms of the last byte the socket accepted
        self.bytes_in = 0
        self.bytes_out = 0
        self.error = R_NONE         # reason of the last close
        self.errno = 0

    # ------------------------------------------------------------ lifecycle
    def open(self, now):
        self.close(R_NONE)
        self._deadline = tk.add(now, self.connect_timeout_ms)
        self.state = _T_RESOLVE
        self.error = R_NONE
        self.errno = 0

    def close(self, reason=R_CLOSED):
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
        if self._raw is not None and self._raw is not self.sock:
            try:
                self._raw.close()
            except Exception:
                pass
        self.sock = None
        self._raw = None
        self._poll = None
        self.tx_len = 0
        self.rx_len = 0
        if self.state != T_DOWN and reason != R_NONE:
            self.error = reason
        self.state = T_DOWN

    def _fail(self, reason, err=0):
        self.errno = err
        self.close(reason)
        return False

    # ------------------------------------------------------------ servicing
    def service(self, now):
        """Advance connection set-up or move bytes.  Returns True while usable."""
        st = self.state
        if st == T_DOWN:
            return False
        if not self.net.up():
            return self._fail(R_LINK)
        if st == _T_RESOLVE:
            r = self.net.resolver(self.host, self.port)
            addr = r.poll()
            if addr is None:
                if r.state == R_FAILED:
                    r.retry()          # the next attempt (after backoff) asks again
                    return self._fail(R_DNS)
                if tk.due(now, self._deadline):
                    return self._fail(R_DNS)   # worker still hanging: stays pending, cached
                return False
            try:
                s = self.net.socket()
            except OSError as e:
                return self._fail(_R_CONNECT, e.errno if e.args else 0)
            self._raw = s
            self.sock = s
            try:
                s.connect(addr)
            except OSError as e:
                if e.errno not in _EAGAIN:
                    return self._fail(_R_CONNECT, e.errno)
            self._poll = select.poll()
            self._poll.register(s, _POLLOUT)
            self.state = _T_CONNECT
            st = _T_CONNECT
        if st == _T_CONNECT:
            ev = 0
            for _, ev in self._poll.ipoll(0):
                pass
            if ev & _POLLBAD:
                return self._fail(_R_CONNECT)
            if not ev & _POLLOUT:
                if tk.due(now, self._deadline):
                    return self._fail(R_TIMEOUT)
                return False
            self._poll = None
            if self.tls:
                try:
                    self.sock = self.net.wrap_tls(self._raw, self.host)
                except Exception as e:  # OSError, ValueError (bad TLS settings), MemoryError
                    return self._fail(_R_TLS, getattr(e, "errno", 0) or 0)
            self.state = T_UP
            self.t_rx = now
            self.t_tx = now
        return self.pump(now)

    def pump(self, now):
        """Non-blocking write of pending tx bytes, then read what is waiting."""
        if self.state != T_UP:
            return False
        s = self.sock
        if self.tx_len:
            try:
                n = s.write(self.tx_mv[:self.tx_len])
            except OSError as e:
                if e.errno in _EAGAIN:
                    n = None
                else:
                    return self._fail(_R_IO, e.errno)
            if n:
                self.bytes_out += n
                self.t_tx = now
                left = self.tx_len - n
                if left:
                    self.tx_mv[0:left] = self.tx_mv[n:self.tx_len]
                self.tx_len = left
        free = len(self.rx) - self.rx_len
        if free:
            try:
                n = s.readinto(self.rx_mv[self.rx_len:])
            except OSError as e:
                if e.errno in _EAGAIN:
                    n = None
                else:
                    return self._fail(_R_IO, e.errno)
            if n == 0:
                return self._fail(_R_EOF)
            if n:
                self.rx_len += n
                self.bytes_in += n
                self.t_rx = now
        return True

    # ------------------------------------------------------------ buffers
    def tx_free(self):
        return len(self.tx) - self.tx_len

    def consume_rx(self, n):
        left = self.rx_len - n
        if left > 0:
            self.rx_mv[0:left] = self.rx_mv[n:self.rx_len]
            self.rx_len = left
        else:
            self.rx_len = 0
