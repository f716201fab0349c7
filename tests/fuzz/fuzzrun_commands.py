# Fuzzing the MQTT command path (bankgate.telemetry.commands and Telemetry._on_message, and
# the MQTT client's packet parser that feeds it) under the unix port.
#
#   parse:    commands.parse(name_mv, payload_mv) with mutated command names (case, typos,
#             extra topic levels, '+', '#', NUL, non-UTF-8, over-long) and payloads (valid
#             forms, mutated JSON, wrong types and ranges, extra/missing fields, duplicate
#             keys, over-size, non-UTF-8, random bytes); the result is compared with an
#             independent oracle (what the command spec in commands.py allows).
#   message:  Telemetry._on_message(topic, payload) on a Telemetry built offline around a
#             fake gateway: topics <prefix>/<id>/cmd/<suffix> and others.  Only an accepted
#             command may reach the gateway (poller.rescan, diagnoser.acknowledge, discovery
#             republish); a rejected one changes nothing there and is counted.
#   packets:  raw MQTT packets (PUBLISH with mutated lengths, QoS bits, topic lengths, other
#             packet types, random bytes) through Client._parse into the same Telemetry.
#
# There is no command that closes a contactor or changes a limit (commands.py); these tests
# prove the parser holds that line for any bytes a broker can deliver.
#
# make test: FAST inputs each; make fuzz: tests/mp/test_fuzz_long.py with >= 100 000.
#
# This module holds the run_* functions (generator, checks, oracles); the pytest items are in
# tests/mp/test_fuzz_commands.py (fast counts, `make test`) and tests/mp/test_fuzz_long*.py
# (>= 100 000 inputs, `make fuzz`).  They live in tests/fuzz because the harness recompiles
# tests/fuzz when a file changes, while a test module imported by another test module
# would run from a stale compiled copy.
import gc

from fuzzlib import Rate, Rng, fail

from bankgate import config
from bankgate.events import EventLog
from bankgate.telemetry import commands as cmds

FAST = 2500
SEED = 0xC03D0001

NAMES = (b"rescan", b"discovery", b"ack")
NAME_JUNK = (b"", b"RESCAN", b"Rescan", b"rescan ", b" rescan", b"rescan/", b"rescan/x", b"re",
             b"rescanx", b"ack/1", b"+", b"#", b"cmd", b"\x00", b"rescan\x00", b"r\xc3\xa9scan",
             b"\xff\xfe", b"\xc3", b"a" * 16, b"a" * 17, b"discovery" * 2, b"ack\n", b"?", b"0",
             b"reset", b"close", b"config", b"reset_faults")
VALID_PAYLOADS = {b"rescan": (b"", b"{}", b" {} ", b"\n", b"{ }"),
                  b"discovery": (b"", b"{}", b"  "),
                  b"ack": (b'{"code":"imbalance","addr":3}', b'{"addr":-1,"code":"x"}',
                           b'{"code":"' + b"c" * 32 + b'","addr":255}',
                           b' {"code": "running_warm", "addr": 0} ')}
PAYLOAD_JUNK = (b"null", b"[]", b"[{}]", b"1", b'"x"', b"true", b"{", b"}", b'{"a":1}',
                b'{"code":"x"}', b'{"addr":3}', b'{"code":"x","addr":3,"z":0}',
                b'{"code":"","addr":3}', b'{"code":"' + b"c" * 33 + b'","addr":3}',
                b'{"code":5,"addr":3}', b'{"code":null,"addr":3}', b'{"code":"x","addr":"3"}',
                b'{"code":"x","addr":3.0}', b'{"code":"x","addr":true}', b'{"code":"x","addr":-2}',
                b'{"code":"x","addr":256}', b'{"code":"x","addr":99999999999999999999999}',
                b'{"code":"x","code":"y","addr":3}', b'{"code":"x" "addr":3}', b"{,}",
                b'{0:"x","addr":3}', b'{"code":"\\u0000","addr":3}', b'{"code":"\\ud800","addr":3}',
                b"\xff", b"\xc3\xa9", b"{}" + b" " * 255, b"x" * 257, b"[" * 100 + b"]" * 100,
                b"[" * 128, b"1e999", b"-0", b'{"code":"x","addr":1e2}')
TOKENS = (b"{", b"}", b"[", b"]", b'"', b":", b",", b"null", b"true", b"-1", b"256", b"\xff",
          b"\x00", b"\\", b" ", b'"addr"', b'"code"')
KNOWN_REASONS = (cmds.OK, cmds.E_UNKNOWN, cmds.E_SIZE, cmds.E_ENCODING, cmds.E_JSON, cmds.E_SHAPE,
                 cmds.E_FIELD, cmds.E_TARGET, cmds.E_FAILED)


def _mutate_bytes(rng, b):
    r = rng
    n = len(b)
    op = r.below(6)
    if op == 0 and n:
        k = r.below(n)
        return b[:k] + bytes([b[k] ^ (1 << r.below(8))]) + b[k + 1:]
    if op == 1:
        k = r.below(n + 1)
        return b[:k] + r.pick(TOKENS) + b[k:]
    if op == 2 and n:
        k = r.below(n)
        return b[:k] + b[k + 1 + r.below(4):]
    if op == 3:
        return b[:r.below(n + 1)]
    if op == 4:
        return bytes(r.byte() for _ in range(r.below(40)))
    return b


def gen_command(rng):
    """(name, payload, valid): valid is True when both are unmodified valid forms."""
    r = rng
    name = r.pick(NAMES)
    valid = True
    if r.below(5) == 0:
        name = r.pick(NAME_JUNK) if r.chance(1, 2) else _mutate_bytes(r, name)
        valid = name in NAMES and valid
    base = VALID_PAYLOADS.get(name, VALID_PAYLOADS[b"ack"])
    payload = r.pick(base)
    k = r.below(4)
    if k == 1:
        payload = r.pick(PAYLOAD_JUNK)
        valid = False
    elif k == 2:
        payload = _mutate_bytes(r, payload)
        valid = False
    elif k == 3 and r.chance(1, 2):
        payload = _mutate_bytes(r, _mutate_bytes(r, r.pick(PAYLOAD_JUNK)))
        valid = False
    return name, payload, valid and name in NAMES


def oracle_ok(name, payload):
    """Independent reading of the command spec: the (code, args) an accepted command must
    give, or None when the spec says it must be rejected."""
    if name not in NAMES:
        return None
    code = NAMES.index(name) + 1
    if len(payload) > cmds.CMD_MAX_BYTES:
        return None
    try:
        text = payload.decode()
    except UnicodeError:
        return None
    text = text.strip()
    import json
    if name != b"ack" and text == "":
        return code, None
    try:
        obj = json.loads(text)
    except Exception:
        return None
    if type(obj) is not dict:
        return None
    if name != b"ack":
        return (code, None) if len(obj) == 0 else None
    if len(obj) != 2 or "addr" not in obj or "code" not in obj:
        return None
    c, a = obj["code"], obj["addr"]
    if type(c) is not str or not 1 <= len(c) <= 32 or type(a) is not int or not -1 <= a <= 255:
        return None
    return code, (c, a)


def run_parse(count=FAST, seed=SEED):
    rng = Rng(seed)
    reasons = {}
    accepted = 0
    rate = Rate("commands.parse")
    for i in range(count):
        name, payload, valid = gen_command(rng)
        # as Telemetry passes them: memoryviews into a receive buffer
        buf = bytearray(b"xx" + name + payload)
        mv = memoryview(buf)
        try:
            code, args, reason = cmds.parse(mv[2:2 + len(name)], mv[2 + len(name):])
        except Exception as e:
            fail("commands.parse raised %r" % (e,), seed, i, name + b" | " + payload)
        if bytes(buf) != b"xx" + name + payload:
            fail("commands.parse wrote into the receive buffer", seed, i, name + b" | " + payload)
        if reason not in KNOWN_REASONS or type(code) is not int or not 0 <= code < len(cmds.NAMES):
            fail("commands.parse returned %r" % ((code, args, reason),), seed, i, name + b" | " + payload)
        reasons[reason] = reasons.get(reason, 0) + 1
        want = oracle_ok(name, payload)
        if reason == cmds.OK:
            accepted += 1
            if want is None or want != (code, args):
                fail("accepted %r, the spec says %r" % ((code, args), want), seed, i,
                     name + b" | " + payload)
        else:
            if want is not None and len(payload) <= cmds.CMD_MAX_BYTES:
                fail("rejected (%s) a command the spec allows" % reason, seed, i,
                     name + b" | " + payload)
            if args is not None:
                fail("a rejection carries arguments", seed, i, name + b" | " + payload)
            if name not in NAMES and (code != cmds.CMD_UNKNOWN or reason != cmds.E_UNKNOWN):
                fail("unknown name not reported as unknown", seed, i, name + b" | " + payload)
        if valid and reason != cmds.OK:
            fail("a valid command was rejected (%s)" % reason, seed, i, name + b" | " + payload)
        if i & 255 == 0:
            gc.collect()
    rate.done(count, "accepted=%d reasons=%s" % (accepted, ",".join(
        ["%s:%d" % (k, v) for k, v in sorted(reasons.items())])))
    for r in (cmds.OK, cmds.E_UNKNOWN, cmds.E_SIZE, cmds.E_ENCODING, cmds.E_JSON, cmds.E_SHAPE,
              cmds.E_FIELD):
        assert r in reasons, "commands.parse: the fuzzer never reached %r" % r
    return reasons


# ------------------------------------------------------------------ Telemetry level
class FakePoller:
    def __init__(self):
        self.rescans = 0

    def rescan(self):
        self.rescans += 1


class FakeDiagnoser:
    """Acknowledges only ("imbalance", 3); anything else is 'no such diagnosis'.
    code "explode" raises, to prove an exception in an action is contained."""

    def __init__(self):
        self.acks = 0

    def acknowledge(self, code, addr):
        if code == "explode":
            raise RuntimeError("diagnoser bug")
        if code == "imbalance" and addr == 3:
            self.acks += 1
            return True
        return False


class FakeGateway:
    def __init__(self, cfg):
        self.cfg = cfg
        self.events = EventLog(64)
        self.poller = FakePoller()
        self.diagnoser = FakeDiagnoser()


def make_telemetry():
    from bankgate.telemetry import Telemetry
    cfg = config.validate({"gateway_id": "gw1", "mqtt": {"enabled": True, "prefix": "bg",
                                                         "discovery": False}})
    gw = FakeGateway(cfg)
    tel = Telemetry(None, cfg, gw)
    box = [0]

    def republish():
        box[0] += 1
    tel.republish_discovery = republish          # counts the discovery command's action
    return tel, gw, box


def _state(tel, gw, box):
    return (gw.poller.rescans, gw.diagnoser.acks, box[0], tel.accepted_commands)


TOPIC_JUNK = (b"bg/gw1/cmd", b"bg/gw1/cmd/", b"bg/gw1/cmdrescan", b"bg/gw2/cmd/rescan",
              b"BG/gw1/cmd/rescan", b"bg/gw1/cmd//rescan", b"bg/gw1/cmd/+", b"bg/gw1/cmd/#",
              b"homeassistant/status", b"bg/gw1/status", b"", b"bg", b"\xff/cmd/rescan",
              b"bg/gw1/cmd/rescan/extra", b"bg/gw1/cmd/" + b"a" * 200)


def _expected_action(name, payload):
    """Which gateway counter an accepted command moves (index into _state), or None."""
    want = oracle_ok(name, payload)
    if want is None:
        return None
    if want[0] == 1:
        return 0
    if want[0] == 2:
        return 2
    return 1 if want[1] == ("imbalance", 3) else None


def run_messages(count=FAST, seed=SEED + 1):
    rng = Rng(seed)
    tel, gw, box = make_telemetry()
    r = rng
    accepted = 0
    rate = Rate("telemetry._on_message")
    for i in range(count):
        name, payload, _ = gen_command(r)
        if r.below(6) == 0 and name == b"ack":
            payload = r.pick((b'{"code":"imbalance","addr":3}', b'{"code":"explode","addr":3}',
                              b'{"code":"imbalance","addr":4}'))
        if r.below(8) == 0:
            topic = r.pick(TOPIC_JUNK)
            name = None
            if topic == b"homeassistant/status" and r.chance(1, 2):
                payload = b"online"
        else:
            topic = b"bg/gw1/cmd/" + name
        before = _state(tel, gw, box)
        rej = tel.rejected_commands
        buf = bytearray(topic + payload)
        mv = memoryview(buf)
        try:
            tel._on_message(mv[:len(topic)], mv[len(topic):])
        except Exception as e:
            fail("Telemetry._on_message raised %r" % (e,), seed, i, topic + b" | " + payload)
        after = _state(tel, gw, box)
        moved = [k for k in range(4) if after[k] != before[k]]
        act = _expected_action(name, payload) if name is not None else None
        if topic == b"homeassistant/status" and payload == b"online":
            act = -1                               # Home Assistant restarted: republish only
        if act is None:
            # rejected, ignored, or an accepted command whose action failed: nothing moved,
            # and a command topic counts as rejected exactly once
            if moved:
                fail("rejected input moved gateway state %s" % moved, seed, i, topic + b" | " + payload)
            counted = tel.rejected_commands - rej
            is_cmd = topic.startswith(b"bg/gw1/cmd/")
            if counted != (1 if is_cmd else 0):
                fail("rejection counted %d times" % counted, seed, i, topic + b" | " + payload)
        elif act == -1:
            if moved != [2]:
                fail("HA status moved %s" % moved, seed, i, topic + b" | " + payload)
        else:
            accepted += 1
            if moved != [act, 3] or after[act] != before[act] + 1:
                fail("accepted command moved %s, expected [%d, 3]" % (moved, act), seed, i,
                     topic + b" | " + payload)
        if i & 255 == 0:
            gc.collect()
    rate.done(count, "accepted=%d rejected=%d ring_records=%d" % (
        accepted, tel.rejected_commands, tel.ring.n_records))
    assert accepted > count // 20 and tel.rejected_commands > count // 5
    return accepted


# ------------------------------------------------------------------ raw MQTT packets
def _publish(topic, payload, qos=0, pid=1):
    body = bytearray([len(topic) >> 8, len(topic) & 0xFF]) + topic
    if qos:
        body += bytes([pid >> 8, pid & 0xFF])
    body += payload
    n = len(body)
    hdr = bytearray([0x30 | (qos << 1)])
    while True:
        b = n & 0x7F
        n >>= 7
        hdr.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(hdr + body)


def run_packets(count=FAST, seed=SEED + 2):
    from bankgate.telemetry import client as cl
    rng = Rng(seed)
    r = rng
    tel, gw, box = make_telemetry()
    c = tel.client
    t = c.t
    seen = []                                      # (topic, payload) that reached on_message
    orig = c.on_message

    def spy(topic, payload):
        seen.append((bytes(topic), bytes(payload)))
        orig(topic, payload)
    c.on_message = spy
    rate = Rate("client._parse(PUBLISH)")
    dispatched = 0
    for i in range(count):
        name, payload, _ = gen_command(r)
        pkt = _publish(b"bg/gw1/cmd/" + name, payload, r.pick((0, 0, 1, 2, 3)), r.below(65536))
        op = r.below(8)
        if op == 1:                                # a byte anywhere (lengths included)
            k = r.below(len(pkt))
            pkt = pkt[:k] + bytes([r.byte()]) + pkt[k + 1:]
        elif op == 2:                              # remaining length lies
            pkt = pkt[:1] + bytes([r.pick((0x00, 0x01, 0x7F, 0x80, 0xFF))]) + pkt[2:]
        elif op == 3:                              # topic length lies
            if len(pkt) > 4:
                pkt = pkt[:2] + bytes([r.byte(), r.byte()]) + pkt[4:]
        elif op == 4:                              # another packet type
            pkt = bytes([r.pick((0x20, 0x40, 0x50, 0x60, 0x90, 0xB0, 0xD0, 0xE0, 0xF0, 0x00))]) + pkt[1:]
        elif op == 5:
            pkt = bytes(r.byte() for _ in range(r.below(40)))
        elif op == 6:                              # two packets back to back, one truncated
            pkt = pkt + pkt[:r.below(len(pkt) + 1)]
        if len(pkt) > len(t.rx):
            pkt = pkt[:len(t.rx)]
        # an online session with an empty receive buffer
        c.state = cl.C_ONLINE
        c._discard = 0
        t.rx_len = 0
        t.tx_len = 0
        for k in range(len(pkt)):
            t.rx[k] = pkt[k]
        t.rx_len = len(pkt)
        before = _state(tel, gw, box)
        n_seen = len(seen)
        try:
            c._parse(i & 0x3FFFFFFF)
        except Exception as e:
            fail("Client._parse raised %r" % (e,), seed, i, pkt)
        after = _state(tel, gw, box)
        # every change at the gateway is explained by one message the parser delivered and
        # the command oracle accepts
        expect = [0, 0, 0, 0]
        for tp, pl in seen[n_seen:]:
            dispatched += 1
            pre = b"bg/gw1/cmd/"
            if tp == b"homeassistant/status" and pl == b"online":
                expect[2] += 1
            elif tp.startswith(pre):
                act = _expected_action(tp[len(pre):], pl)
                if act is not None:
                    expect[act] += 1
                    expect[3] += 1
        if [after[k] - before[k] for k in range(4)] != expect:
            fail("gateway moved %s, messages explain %s" % (
                [after[k] - before[k] for k in range(4)], expect), seed, i, pkt)
        if len(seen) > 64:
            del seen[:]
        if i & 255 == 0:
            gc.collect()
    rate.done(count, "messages_dispatched=%d accepted=%d protocol_errors=%d oversize=%d" % (
        dispatched, tel.accepted_commands, c.protocol_errors, c.rx_oversize))
    assert dispatched > count // 4 and tel.accepted_commands > 0 and c.protocol_errors > 0
    return dispatched


