"""A packet-aware TCP proxy in front of a real mosquitto that can misbehave like a broker that
stops acknowledging, a slowloris broker or one that resets mid-publish (issue #21).

    p = MisbehavingProxy(broker_port)
    p.drop_puback = True        PUBACK from the broker to the client are swallowed
    p.drip = 1.0                bytes to the client are released one per `drip` seconds
    p.reset_publishes = n       the next n client PUBLISH packets: half is forwarded, then the
                                connection is reset (RST)
    p.inject(bytes)             raw packet bytes to the current client (e.g. a QoS 2 PUBLISH)
Counters: connections, pubacks_dropped, resets_done, dup_publishes (client PUBLISH with DUP).
"""
import socket
import struct
import threading
import time

from mqtt_fixtures import listen_loopback


def _packets(buf):
    """Split complete MQTT packets off the front of buf: (list of packets, rest)."""
    out = []
    while len(buf) >= 2:
        rem = 0
        mult = 1
        i = 1
        while True:
            if i >= len(buf):
                return out, buf
            b = buf[i]
            rem += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if len(buf) < i + rem:
            return out, buf
        out.append(bytes(buf[:i + rem]))
        buf = buf[i + rem:]
    return out, buf


class MisbehavingProxy:
    def __init__(self, target_port):
        self.target = target_port
        self.drop_puback = False
        self.drip = 0.0
        self.reset_publishes = 0
        self.connections = 0
        self.pubacks_dropped = 0
        self.resets_done = 0
        self.dup_publishes = 0
        self.client = None
        self.lock = threading.Lock()
        listen_loopback(self)

    def inject(self, data):
        c = self.client
        if c is None:
            return False
        with self.lock:
            c.sendall(data)
        return True

    @staticmethod
    def _rst(*socks):
        for x in socks:
            try:
                x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                x.close()
            except OSError:
                pass

    def _up(self, c, u):
        """client -> broker"""
        buf = b""
        try:
            while not self._stop:
                d = c.recv(4096)
                if not d:
                    break
                buf += d
                pkts, buf = _packets(buf)
                for p in pkts:
                    if p[0] >> 4 == 3:
                        if p[0] & 0x08:
                            self.dup_publishes += 1
                        if self.reset_publishes > 0:
                            self.reset_publishes -= 1
                            self.resets_done += 1
                            u.sendall(p[:len(p) // 2])
                            self._rst(c, u)
                            return
                    u.sendall(p)
        except OSError:
            pass
        self._rst(c, u)

    def _down(self, u, c):
        """broker -> client"""
        buf = b""
        try:
            while not self._stop:
                d = u.recv(4096)
                if not d:
                    break
                buf += d
                pkts, buf = _packets(buf)
                for p in pkts:
                    if p[0] >> 4 == 4 and self.drop_puback:
                        self.pubacks_dropped += 1
                        continue
                    if self.drip:
                        for k in range(len(p)):
                            time.sleep(self.drip)        # the broker's pace, not synchronisation
                            with self.lock:
                                c.sendall(p[k:k + 1])
                    else:
                        with self.lock:
                            c.sendall(p)
        except OSError:
            pass
        self._rst(c, u)

    def _run(self):
        self.s.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.s.accept()
            except OSError:
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            self.connections += 1
            self.client = c
            self.socks += [c, u]
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._down, args=(u, c), daemon=True).start()

    def close(self):
        self._stop = True
        for x in self.socks:
            try:
                x.close()
            except OSError:
                pass
        self.s.close()
