# bankgate.telemetry.client / transport / commands under the unix port, against a loopback
# listener the test drives byte by byte (the test plays the broker).  Times given to service()
# are chosen by the test; the real time each call takes is measured and bounded.
# mpy-heapsize: 256k
import random
import socket
import time

import mptest

from bankgate.net import Net, R_PENDING
from bankgate.telemetry import client as cl
from bankgate.telemetry import commands as cmds
from bankgate.telemetry import transport as tr
from spysock import Spies


def _listener():
    for _ in range(50):
        port = 20000 + random.getrandbits(15) % 40000
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            s.close()
            continue
        s.listen(2)
        return s, port
    raise AssertionError("no free port")


def _client(port, spies=None, **kw):
    c = cl.Client(Net(socket_factory=spies.factory if spies else None), "127.0.0.1", port, b"gw-test", keepalive_s=10, will_topic=b"p/g/status",
                  tx_size=1024, rx_size=256, connect_timeout_ms=1000, **kw)
    return c


def _service_nonblocking(c, now, spies):
    """service() must never wait on the network: proven by the socket's mode on every call that
    reached it (tools/fakes/spysock.py), not by timing a call, which fails on a loaded machine."""
    c.service(now)
    assert spies.blocking_ops == 0, "a socket call in blocking mode (%d of %d)" % (
        spies.blocking_ops, spies.ops)


def _accept(srv, c, now):
    srv.setblocking(False)
    conn = None
    for i in range(200):
        c.service(now)
        try:
            conn, _ = srv.accept()
            break
        except OSError:
            time.sleep_ms(1)
    assert conn is not None, "client never connected"
    conn.setblocking(False)
    return conn


def _read(conn, c, now, n):
    got = b""
    for i in range(300):
        c.service(now)
        try:
            d = conn.read(n - len(got))
        except OSError:
            d = None
        if d:
            got += d
        if len(got) >= n:
            return got
        time.sleep_ms(1)
    raise AssertionError("wanted %d bytes, got %r" % (n, got))


def _online(srv, port):
    c = _client(port)
    conn = _accept(srv, c, 0)
    hdr = _read(conn, c, 0, 2)
    assert hdr[0] == 0x10
    body = _read(conn, c, 0, hdr[1])
    conn.write(b"\x20\x02\x00\x00")
    for i in range(200):
        c.service(10)
        if c.online:
            break
        time.sleep_ms(1)
    assert c.online
    return c, conn, body


def test_connect_packet_connack_publish_puback():
    srv, port = _listener()
    acks = []
    c, conn, body = _online(srv, port)
    c.on_puback = acks.append
    # CONNECT: protocol "MQTT" level 4, will flag + will QoS 1 + will retain + clean session
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x02 | 0x04 | 0x08 | 0x20
    assert body[8] << 8 | body[9] == 10
    assert b"gw-test" in body and b"p/g/status" in body and b"offline" in body
    assert c.fits(3, 5, 1)
    pid = c.publish(b"a/b", b"hello", False, 1)
    assert pid > 0
    pkt = _read(conn, c, 20, 2 + 2 + 3 + 2 + 5)
    assert pkt[0] == 0x32 and pkt[4:7] == b"a/b" and pkt[7] << 8 | pkt[8] == pid and pkt[9:] == b"hello"
    conn.write(bytes([0x40, 2, pid >> 8, pid & 0xFF]))
    for i in range(200):
        c.service(30)
        if acks:
            break
        time.sleep_ms(1)
    assert acks == [pid]
    conn.close()
    srv.close()


def test_packet_id_never_wraps_to_zero():
    srv, port = _listener()
    c, conn, _ = _online(srv, port)
    c.mq.pid = 0xFFFF
    assert c.publish(b"t", b"x", False, 1) == 1
    conn.close()
    srv.close()


def test_oversized_incoming_publish_is_skipped_then_next_one_delivered():
    srv, port = _listener()
    c, conn, _ = _online(srv, port)
    got = []
    c.on_message = lambda t, p: got.append((bytes(t), bytes(p)))
    big = b"x" * 1000          # larger than rx_size=256
    rem = 2 + 5 + len(big)
    conn.write(bytes([0x30, (rem & 0x7F) | 0x80, rem >> 7]) + b"\x00\x05a/cmd" + big)
    conn.write(b"\x30\x09\x00\x05a/cmdok")
    for i in range(300):
        c.service(40)
        if got:
            break
        time.sleep_ms(1)
    assert got == [(b"a/cmd", b"ok")] and c.rx_oversize == 1 and c.online
    conn.close()
    srv.close()


def test_garbage_from_broker_closes_with_protocol_error():
    srv, port = _listener()
    c, conn, _ = _online(srv, port)
    reasons = []
    c.on_disconnect = lambda now, r, was: reasons.append(r)
    conn.write(b"\x40\x05\x00\x01\x02\x03\x04")       # PUBACK with a wrong length
    for i in range(300):
        c.service(50)
        if reasons:
            break
        time.sleep_ms(1)
    assert reasons == [tr.R_PROTOCOL] and not c.online and c.protocol_errors == 1
    conn.close()
    srv.close()


def test_stalled_broker_times_out_without_blocking():
    srv, port = _listener()          # accepts at TCP level (backlog), never answers
    spies = Spies()
    c = _client(port, spies)
    now = 0
    while now < 1500 and c.last_error != tr.R_TIMEOUT:
        _service_nonblocking(c, now, spies)
        now += 10
        time.sleep_ms(1)
    assert c.last_error == tr.R_TIMEOUT and not c.online
    assert 1000 <= now <= 1100
    assert spies.made == 1 and spies.ops >= 1      # the spy saw the connect (and any I/O)
    srv.close()


def test_silence_is_detected_and_ping_sent():
    srv, port = _listener()
    c, conn, _ = _online(srv, port)
    c.service(5010)                  # keepalive/2 without receiving: PINGREQ
    assert c.pings == 1
    assert _read(conn, c, 5010, 2) == b"\xc0\x00"
    reasons = []
    c.on_disconnect = lambda now, r, was: reasons.append(r)
    c.service(15100)                 # no PINGRESP within keepalive/2
    assert reasons == [tr.R_SILENCE]
    conn.close()
    srv.close()


def test_hung_dns_never_blocks_and_is_asked_once():
    def hang(host, port):
        while True:
            time.sleep(3600)
    net = Net(getaddrinfo=hang)
    c = cl.Client(net, "broker.example", 1883, b"gw", connect_timeout_ms=500, min_backoff_ms=100,
                  max_backoff_ms=100)
    now = 0
    while now < 3000:                # a lookup waited for here would never return: the test hangs
        c.service(now)
        now += 10
    assert c.attempts >= 3 and c.last_error == tr.R_DNS and not c.online
    r = net.resolver("broker.example", 1883)
    assert r.state == R_PENDING and r.lookups == 1


def test_backoff_is_capped_and_jittered():
    c = cl.Client(Net(), "127.0.0.1", 1, b"gw", min_backoff_ms=500, max_backoff_ms=4000)
    gaps = []
    for i in range(8):
        c._schedule_retry(0)
        gaps.append(c._next_try)
    assert 375 <= gaps[0] <= 625
    assert all(g <= 5000 for g in gaps) and gaps[-1] >= 3000


def test_command_validation():
    ok = cmds.OK
    cases = [
        (b"rescan", b"", ok), (b"rescan", b"{}", ok), (b"discovery", b" {} ", ok),
        (b"rescan", b'{"x":1}', cmds.E_SHAPE), (b"rescan", b"[]", cmds.E_SHAPE),
        (b"ack", b'{"code":"imbalance","addr":3}', ok),
        (b"ack", b'{"code":"imbalance"}', cmds.E_SHAPE),
        (b"ack", b'{"code":"imbalance","addr":"3"}', cmds.E_FIELD),
        (b"ack", b'{"code":"","addr":3}', cmds.E_FIELD),
        (b"ack", b'{"code":"x","addr":999}', cmds.E_FIELD),
        (b"ack", b"{", cmds.E_JSON), (b"ack", b"\xc3\x28", cmds.E_ENCODING),
        (b"ack", b"x" * 300, cmds.E_SIZE), (b"close", b"{}", cmds.E_UNKNOWN),
        (b"reset", b"", cmds.E_UNKNOWN), (b"", b"", cmds.E_UNKNOWN), (b"x" * 40, b"", cmds.E_UNKNOWN),
    ]
    for name, payload, want in cases:
        code, args, reason = cmds.parse(memoryview(name), memoryview(payload))
        assert reason == want, (name, payload, reason, want)
    assert cmds.parse(b"ack", b'{"code":"imbalance","addr":3}')[1] == ("imbalance", 3)
