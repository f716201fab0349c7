# Fuzzing the Pylontech CAN decoder (bankgate.proto.pylon_can.decode(can_id, buf, dlc, mod, now))
# under the unix port.
#
# Inputs: frames built by the encoders (encode_351 ... encode_35e) from random values, then
# mutated: bit flips, boundary words (0, 0x7FFF, 0x8000, 0xFFFF, little-endian), random bytes,
# printable / non-printable names; identifiers from the decoded set, the inverter heartbeat
# 0x305, neighbours, random 11- and 29-bit ids and negative ids; dlc 0..8 and out of range
# (-1, 9, 15, larger than the buffer); buffers as bytearray, bytes and memoryview slices.
#
# Checks per input: nothing escapes and nothing is allocated (heap locked around the call);
# the result is E_OK or a known negative code; a rejection leaves the record unchanged
# (fingerprint of every attribute); an acceptance writes only the fields of that id, and each
# written value equals the wire value computed independently here (little-endian, scaled as
# docs/protocols.md says) and lies inside the documented range.
#
# make test: FAST inputs; make fuzz: tests/mp/test_fuzz_long.py with >= 100 000.
#
# This module holds the run_* functions (generator, checks, oracles); the pytest items are in
# tests/mp/test_fuzz_can.py (fast counts, `make test`) and tests/mp/test_fuzz_long*.py
# (>= 100 000 inputs, `make fuzz`).  They live in tests/fuzz because the harness recompiles
# tests/fuzz when a file changes, while a test module imported by another test module
# would run from a stale compiled copy.
import micropython

from fuzzlib import Fingerprint, Rate, Rng, fail

from bankgate import model
from bankgate.proto import errors
from bankgate.proto import pylon_can as C
from bankgate.proto.errors import E_OK

FAST = 4000
SEED = 0xCA4F0001

WRITES = {
    C.ID_LIMITS: ("chg_v_mv", "chg_limit_ma", "dsg_limit_ma", "dsg_v_mv", "mgmt_valid", "t_mgmt"),
    C.ID_SOC: ("soc_pm", "soh_pm", "fp"),
    C.ID_MEASURE: ("voltage_mv", "current_ma", "temp_dc", "n_temps", "analog_valid", "t_analog",
                   "fp"),
    C.ID_ALARMS: ("protections", "alarms", "status", "alarm_valid", "t_alarm"),
    C.ID_REQUEST: ("mgmt_flags",),
    C.ID_NAME: ("manufacturer", "manufacturer_len", "id_valid", "t_id"),
}
OTHER_IDS = (C.ID_KEEPALIVE, 0x350, 0x352, 0x35A, 0x35D, 0x35F, 0x370, 0x000, 0x7FF, 0x751,
             0x1351, 0x1FFFFFFF, -1, -0x351)
BOUNDARY_WORDS = (0x0000, 0x0001, 0x0064, 0x0065, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF)
ALM_ALL = 0x0FFF


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = _u16(b, i)
    return v - 0x10000 if v & 0x8000 else v


def _generate(rng, buf, can_id):
    """A valid encoding of can_id with random values into buf; returns its dlc."""
    r = rng
    if can_id == C.ID_LIMITS:
        return C.encode_351(buf, r.below(70000), r.below(400000), r.below(400000), r.below(70000))
    if can_id == C.ID_SOC:
        return C.encode_355(buf, r.below(1001), r.below(1001))
    if can_id == C.ID_MEASURE:
        return C.encode_356(buf, 1 + r.below(60000), r.below(400000) - 200000,
                            r.below(2000) - 500)
    if can_id == C.ID_ALARMS:
        return C.encode_359(buf, r.below(0x1000), r.below(0x1000), r.below(17), r.chance(1, 8))
    if can_id == C.ID_REQUEST:
        return C.encode_35c(buf, r.byte())
    if can_id == C.ID_NAME:
        n = r.below(9)
        name = bytearray(n)
        for k in range(n):
            name[k] = 0x20 + r.below(95)
        return C.encode_35e(buf, name)
    for k in range(8):
        buf[k] = r.byte()
    return r.below(9)


def _mutate(rng, buf, dlc):
    r = rng
    op = r.below(8)
    if op == 0:
        return dlc                                   # unmodified
    if op == 1:
        for _ in range(1 + r.below(3)):
            buf[r.below(8)] ^= 1 << r.below(8)
    elif op == 2:
        k = r.below(7)
        w = r.pick(BOUNDARY_WORDS)
        buf[k] = w & 0xFF
        buf[k + 1] = w >> 8
    elif op == 3:
        buf[r.below(8)] = r.byte()
    elif op == 4:                                    # a control / high byte in a name
        buf[r.below(8)] = r.pick((0x00, 0x01, 0x09, 0x0A, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xFF))
    elif op == 5:
        for k in range(8):
            buf[k] = r.byte()
    elif op == 6:
        return r.pick((-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, -0x10000))
    else:
        return r.below(dlc + 1)                      # truncated
    return dlc


def check_accepted(m, can_id, buf, dlc, now):
    """None, or why the accepted frame's effect on m is wrong."""
    if can_id == C.ID_LIMITS:
        if dlc < 6 or m.chg_v_mv != _u16(buf, 0) * 100 or not 100 <= m.chg_v_mv <= 6553500:
            return "0x351 chg_v_mv %d" % m.chg_v_mv
        if m.chg_limit_ma != abs(_s16(buf, 2)) * 100 or m.dsg_limit_ma != abs(_s16(buf, 4)) * 100:
            return "0x351 limits %d %d" % (m.chg_limit_ma, m.dsg_limit_ma)
        if not 0 <= m.chg_limit_ma <= 3276800 or not 0 <= m.dsg_limit_ma <= 3276800:
            return "0x351 limit range"
        if dlc >= 8 and m.dsg_v_mv != _u16(buf, 6) * 100:
            return "0x351 dsg_v_mv %d" % m.dsg_v_mv
        return None if m.mgmt_valid and m.t_mgmt == now else "0x351 mgmt_valid/t_mgmt"
    if can_id == C.ID_SOC:
        if dlc < 4 or m.soc_pm != _u16(buf, 0) * 10 or m.soh_pm != _u16(buf, 2) * 10:
            return "0x355 soc/soh %d %d" % (m.soc_pm, m.soh_pm)
        return None if 0 <= m.soc_pm <= 1000 and 0 <= m.soh_pm <= 1000 else "0x355 range"
    if can_id == C.ID_MEASURE:
        if dlc < 6 or m.voltage_mv != _s16(buf, 0) * 10 or not 10 <= m.voltage_mv <= 327670:
            return "0x356 voltage_mv %d" % m.voltage_mv
        if m.current_ma != _s16(buf, 2) * 100 or not -3276800 <= m.current_ma <= 3276700:
            return "0x356 current_ma %d" % m.current_ma
        if m.temp_dc[0] != _s16(buf, 4) or m.n_temps != 1:
            return "0x356 temp_dc %d n %d" % (m.temp_dc[0], m.n_temps)
        return None if m.analog_valid and m.t_analog == now else "0x356 analog_valid/t_analog"
    if can_id == C.ID_ALARMS:
        if dlc < 5 or m.alarms & ~ALM_ALL or m.protections & ~ALM_ALL:
            return "0x359 bits %x %x" % (m.alarms, m.protections)
        for k in range(5):
            if m.status[k] != buf[k]:
                return "0x359 status[%d]" % k
        # a set protection/alarm byte bit the mapping knows must show up
        if (buf[0] & 0x9E) and not m.protections:
            return "0x359 protection byte %02x lost" % buf[0]
        if (buf[2] & 0x9E) and not m.alarms:
            return "0x359 alarm byte %02x lost" % buf[2]
        return None if m.alarm_valid and m.t_alarm == now else "0x359 alarm_valid/t_alarm"
    if can_id == C.ID_REQUEST:
        return None if dlc >= 1 and m.mgmt_flags == buf[0] else "0x35C flags"
    if can_id == C.ID_NAME:
        n = m.manufacturer_len
        if not 0 <= n <= dlc or n > 8:
            return "0x35E length %d" % n
        for k in range(n):
            if m.manufacturer[k] != buf[k] or not 0x20 <= buf[k] <= 0x7E:
                return "0x35E character %d" % k
        for k in range(n, dlc):                       # only trailing padding was dropped
            if buf[k] != 0x20 and buf[k] != 0:
                return "0x35E dropped a character"
        return None if m.id_valid and m.t_id == now else "0x35E id_valid/t_id"
    return "accepted id 0x%X" % can_id


def run_can(count=FAST, seed=SEED):
    rng = Rng(seed)
    m = model.Module(0)
    m.addr = 1
    store = bytearray(8)
    for can_id in C.IDS:                             # every field holds real content first
        dlc = _generate(rng, store, can_id)
        assert C.decode(can_id, store, dlc, m, 1) == E_OK
    fp = Fingerprint(m, WRITES)
    full = fp.full()
    rest = {}
    codes = {}
    accepted = 0
    big = bytearray(64)
    short = [bytearray(k) for k in range(8)]
    rate = Rate("pylon_can.decode")
    for i in range(count):
        can_id = rng.pick(C.IDS) if rng.below(4) else rng.pick(OTHER_IDS)
        gen_id = can_id if rng.below(8) else rng.pick(C.IDS)   # sometimes another id's layout
        dlc = _generate(rng, store, gen_id)
        dlc = _mutate(rng, store, dlc)
        kind = rng.below(16)
        if kind == 0:                                # a buffer shorter than 8 bytes
            b = short[rng.below(8)]
            for k in range(len(b)):
                b[k] = store[k]
        elif kind == 1:                              # a memoryview into a larger receive buffer
            off = rng.below(56)
            for k in range(8):
                big[off + k] = store[k]
            b = memoryview(big)[off:off + 8]
        elif kind == 2:
            b = bytes(store)
        else:
            b = store
        if can_id not in rest:
            rest[can_id] = fp.rest(can_id)
        now = (i * 13 + 1) & 0x3FFFFFFF
        micropython.heap_lock()
        try:
            r = C.decode(can_id, b, dlc, m, now)
            exc = None
        except BaseException as e:
            exc = e
        micropython.heap_unlock()
        if exc is not None:
            try:
                C.decode(can_id, b, dlc, m, now)
                what = "allocated with the heap locked"
            except BaseException as e2:
                what = "raised %r" % (e2,)
            fail("pylon_can id=0x%X dlc=%d: %s" % (can_id, dlc, what), seed, i, b)
        codes[r] = codes.get(r, 0) + 1
        if r != E_OK:
            if type(r) is not int or r >= 0 or r not in errors.ERROR_NAMES:
                fail("pylon_can returned %r" % (r,), seed, i, b)
            if fp.full() != full:
                fail("pylon_can id=0x%X dlc=%d rejected (%s) but changed the record" % (
                    can_id, dlc, errors.name(r)), seed, i, b)
            continue
        accepted += 1
        e = check_accepted(m, can_id, b, dlc, now)
        if e is None and fp.rest(can_id) != rest[can_id]:
            e = "wrote fields id 0x%X does not own" % can_id
        if e is None:
            for k, v in m.__dict__.items():
                if type(v) is int and not -(1 << 30) < v < (1 << 30):
                    e = "%s %d outside +-2**30" % (k, v)
        if e is not None:
            fail("pylon_can id=0x%X dlc=%d accepted: %s" % (can_id, dlc, e), seed, i, b)
        full = fp.full()
        rest = {}
    rate.done(count, "accepted=%d codes=%s" % (accepted, ",".join(
        ["%s:%d" % (errors.name(c), codes[c]) for c in sorted(codes)])))
    for c in (errors.E_TRUNCATED, errors.E_PLAUSIBLE, errors.E_UNSUPPORTED, E_OK):
        assert c in codes, "pylon_can: the fuzzer never reached %s" % errors.name(c)
    assert codes[E_OK] > count // 10, "too few accepted frames: the checks above saw little"
    return codes
