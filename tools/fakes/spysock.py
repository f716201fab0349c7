# A recording wrapper around a REAL socket (unix port), for tests that must prove telemetry
# never waits on the network without timing it: wall-clock bounds fail on a loaded machine, and a
# blocking call is a property of the socket's mode, not of how long one call happened to take.
#
#   spies = Spies()
#   net = Net(..., socket_factory=spies.factory)     # bankgate.net.Net sets them non-blocking
#   ... telemetry runs ...
#   spies.blocking_ops == 0     no connect/read/write was ever issued on a socket in blocking mode
#                               (such a call raises AssertionError instead of being made)
#   spies.ops                   how many were issued (so the test knows the spy saw traffic)
#
# A socket starts in blocking mode, as a real one does; setblocking(False) / settimeout(0) make it
# non-blocking, anything else blocking again.  poll() support: ioctl gives the real socket's file
# descriptor (unix select.poll) or answers MP_STREAM_POLL from a zero-timeout poll of it, so
# transport.py's select.poll() works unchanged; TLS (mbedtls wraps any stream object) runs over
# the wrapper too.
import io
import select
import socket

_MP_STREAM_POLL = 3
_MP_STREAM_GET_FILENO = 10    # the unix port's select.poll asks for a descriptor first


class SpySocket(io.IOBase):
    def __init__(self, spies):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.spies = spies
        self.blocking = True
        self._poll = select.poll()
        self._poll.register(self.s, select.POLLIN | select.POLLOUT)

    def _op(self):
        sp = self.spies
        sp.ops += 1
        if self.blocking:
            sp.blocking_ops += 1
            # fail at once instead of waiting: a blocking read on a silent peer would hang the test
            raise AssertionError("socket call in blocking mode")

    def setblocking(self, flag):
        self.blocking = bool(flag)
        self.s.setblocking(flag)

    def settimeout(self, t):
        self.blocking = t is None or t > 0
        self.s.settimeout(t)

    def connect(self, addr):
        self._op()
        return self.s.connect(addr)

    def readinto(self, buf, n=-1):
        self._op()
        return self.s.readinto(buf) if n < 0 else self.s.readinto(buf, n)

    def read(self, n=-1):
        self._op()
        return self.s.read(n) if n >= 0 else self.s.read()

    def recv(self, n):
        self._op()
        return self.s.recv(n)

    def write(self, buf, n=-1):
        self._op()
        return self.s.write(buf) if n < 0 else self.s.write(buf, n)

    def send(self, buf):
        self._op()
        return self.s.send(buf)

    def ioctl(self, req, arg):
        if req == _MP_STREAM_GET_FILENO:
            return self.s.fileno()
        if req == _MP_STREAM_POLL:
            ready = 0
            for _, ev in self._poll.ipoll(0):
                ready |= ev
            return ready & (arg | select.POLLERR | select.POLLHUP)
        return 0

    def close(self):
        self._poll.unregister(self.s)
        self.s.close()


class Spies:
    def __init__(self):
        self.made = 0
        self.ops = 0
        self.blocking_ops = 0

    def factory(self):
        self.made += 1
        return SpySocket(self)
