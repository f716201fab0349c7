# Bus faults for the fault matrix's rejoin probes (issue #21): each starts at t0 and ends
# at t1 (simulated seconds) on a running bgsim Simulation, so the probe can measure the
# time from the END of the fault until the bank is closed again.  Host-only.
#
#   RS485 module bus (sim.wire / sim.uart):
#     silent(sim, t0, t1)         nothing answers (cable cut between gateway and bank)
#     junk(sim, t0, t1)           a faulty node sends random bytes at line rate: every
#                                 reply drowns in it (collision), the gateway reads junk
#     held(sim, t0, t1)           a transceiver holds the pair at the dominant (space)
#                                 level: no reply gets through, the UART reads 0x00 at
#                                 line rate (framing errors / break)
#     second_master(sim, t0, t1)  another master polls the same modules every 200 ms:
#                                 its requests and the modules' answers to it reach the
#                                 gateway unasked, and a third of the gateway's own
#                                 replies collide with that traffic (corrupted)
#   CAN:
#     can_flood(sim, t0, t1)      a node sends ID 0x001 back to back (wins every
#                                 arbitration): the modules' frames do not get through
#     can_bus_off(sim, node, t0, t1)  the controller goes bus-off at t0 and every
#                                 recovery fails until t1 (a held fault: shorted or
#                                 swapped pair at the gateway's connector)
import random

S = 1000000
_CHUNK_US = 20000


def _each(sim, t0, t1, fn):
    """Call fn(t_us) every _CHUNK_US from t0 to t1 (simulated seconds)."""
    end = int(t1 * S)

    def tick(t):
        if t < end:
            fn(t)
            sim.clock.at_us(t + _CHUNK_US, tick, t + _CHUNK_US)
    sim.clock.at_us(int(t0 * S), tick, int(t0 * S))


def _responders(sim, enabled):
    w = sim.wire
    for i in range(len(w.responders)):
        w.set_enabled(i, enabled)


def silent(sim, t0, t1):
    sim.clock.at_us(int(t0 * S), _responders, sim, False)
    sim.clock.at_us(int(t1 * S), _responders, sim, True)


def _stream(sim, t0, t1, gen):
    c = sim.wire.char_us
    n = _CHUNK_US // c

    def chunk(t):
        sim.uart._arrive_run(gen(n), t + c, c)
    silent(sim, t0, t1)
    _each(sim, t0, t1, chunk)


def junk(sim, t0, t1):
    rng = random.Random(7) if hasattr(random, "Random") else None

    def gen(n):
        if rng is not None:
            return bytes([rng.getrandbits(8) for _ in range(n)])
        return bytes([random.getrandbits(8) for _ in range(n)])
    _stream(sim, t0, t1, gen)


def held(sim, t0, t1):
    _stream(sim, t0, t1, lambda n: bytes(n))


def second_master(sim, t0, t1, period_s=0.2, collide_ppm=330000):
    """Foreign request/answer frames on the line, and collisions with our own replies."""
    from bankgate.proto import registry
    fam = registry.get(sim.family)
    w = sim.wire
    state = {"k": 0, "ppm": w.error_ppm}
    c = w.char_us

    def poll(t):
        k = state["k"]
        state["k"] = k + 1
        if (k * _CHUNK_US) % int(period_s * S):
            return
        i = (k // 10) % len(sim.bmses)
        bms = sim.bmses[i]
        buf = bytearray(64)
        n = fam.encode_request(fam.POLL_CMDS[(k // 10) % len(fam.POLL_CMDS)], bms.addr, buf)
        req = bytes(buf[:n])
        ans = sim.responders[i](req) or b""
        sim.uart._arrive_run(bytes(req) + bytes(ans), t + c, c)

    def start():
        state["ppm"] = w.error_ppm
        w.error_ppm = collide_ppm // 20     # per byte: ~a third of 40-byte replies hit

    def stop():
        w.error_ppm = state["ppm"]
    sim.clock.at_us(int(t0 * S), start)
    sim.clock.at_us(int(t1 * S), stop)
    _each(sim, t0, t1, poll)


def can_flood(sim, t0, t1, can_id=0x001):
    import fakebus
    node = fakebus.FakeCan(sim.mbus, tx_queue_len=8, name="flood")
    data = b"\xAA" * 8

    def fill(t):
        for _ in range(8):
            if not node.send(can_id, data, 8):
                break

    def step(t):
        fill(t)
        if t < int(t1 * S):
            sim.clock.at_us(t + 1000, step, t + 1000)
    sim.clock.at_us(int(t0 * S), step, int(t0 * S))
    return node


def can_bus_off(sim, node, t0, t1):
    sim.clock.at_us(int(t0 * S), node.force_bus_off, True)

    def end():
        node.hold_bus_off = False
    sim.clock.at_us(int(t1 * S), end)
