# `bankgate bench`, MicroPython side (tools/bankgate_host/bench_cmd.py runs it under
# the unix port and formats the table; docs/performance.md describes every figure).
#
#   micropython bench.py [--reps R] [--quick] [--sections a,b,...]  -> one line "\x1eBENCH {json}"
# (the firmware alone in a small heap: bench_alone.py)
#
# Sections (all times are CPU time of THIS process on the host; sim_* are simulated):
#   cycle     one control cycle for N = 1, 4, 8, 16 modules, through the real code paths:
#             decode  = the poller + RS485 driver + decoder for every poll command of every
#                       module (an instant-answer UART hands over the reply bytes; CAN: the
#                       module frame set from a fake controller),
#             control = one control step (bus health, admission, aggregates, metrics, diagnoses),
#             format  = gw.snapshot() + the bank message + every module message as JSON
#                       (what telemetry formats; the real schedule formats less per cycle),
#             and the wire time of the same cycle from the frame lengths:
#               RS485: (request + reply characters) x 10 bits / baud + turnaround (2 ms,
#               the simulator's) per transaction;  CAN: exact frame bits incl. stuff bits
#               (the stuffed region is built and counted) + 3 bits interframe space.
#   loop      the firmware as its loop really runs: gw.step() CPU time over whole poll sweeps
#             (control steps every period and on a changed check), per sweep, vs the sweep's wire time.
#   alloc     bytes allocated per steady-state stage (gc disabled, gc.mem_alloc deltas) and
#             heap_lock proofs for decode, control and metrics.
#   metrics   fixed-point bankgate.metrics vs the float reference (tools/rigs/metrics_float.py)
#   period    achieved poll-sweep period in simulated time (real Gateway on the simulated
#             RS485 wire, bgsim) vs its wire-time lower bound.
#   reaction  simulated time from a critical alarm to the outputs opening.
import gc
import json
import sys
import time

import micropython

import fwcompat

fwcompat.ensure_firmware()

from bankgate.app import Gateway  # noqa: E402
from benchrig import (  # noqa: E402
    ConstSensor, bench_config, build_frames, gateway, make_gateway, module_data)
from fakehw import FakeHardware, SimClock  # noqa: E402

TURNAROUND_US = 2000          # reply latency of the simulated BMS (tools/fakes/fakebus attach())
CAN_BITRATE = 500000
POLL_CMDS = (0x42, 0x44, 0x92)
IDENT_CMDS = (0x4F, 0x51, 0x93, 0x47)


def _stats(xs):
    s = sorted(xs)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"median": med, "min": s[0], "max": s[-1], "n": n}


def wire_us(frames, n, baud, cmds=POLL_CMDS):
    """Wire time of one poll sweep: requests + replies x 10 bits + turnaround each."""
    from bankgate.proto import pylontech
    req = bytearray(64)
    chars = 0
    k = 0
    for i in range(n):
        a = 2 + i
        for c in cmds:
            chars += pylontech.encode_request(c, a, req) + len(frames[a << 8 | c])
            k += 1
    return (chars * 10 * 1000000) // baud + k * TURNAROUND_US, chars


# ------------------------------------------------------------------ CAN wire time
def _crc15(bits):
    crc = 0
    for b in bits:
        nxt = b ^ ((crc >> 14) & 1)
        crc = (crc << 1) & 0x7FFF
        if nxt:
            crc ^= 0x4599
    return crc


def can_frame_bits(can_id, data):
    """Exact bits of a CAN 2.0A data frame on the wire incl. stuff bits and 3 bits IFS."""
    bits = [0]
    for k in range(10, -1, -1):
        bits.append((can_id >> k) & 1)
    bits += [0, 0, 0]                       # RTR, IDE, r0
    dlc = len(data)
    for k in range(3, -1, -1):
        bits.append((dlc >> k) & 1)
    for byte in data:
        for k in range(7, -1, -1):
            bits.append((byte >> k) & 1)
    crc = _crc15(bits)
    for k in range(14, -1, -1):
        bits.append((crc >> k) & 1)
    stuff = 0
    run = 1
    last = bits[0]
    for b in bits[1:]:
        if b == last:
            run += 1
            if run == 5:
                stuff += 1
                last = 1 - b               # the stuff bit is the complement and starts a run
                run = 1
        else:
            last = b
            run = 1
    return len(bits) + stuff + 1 + 2 + 7 + 3   # CRC delimiter, ACK slot + delimiter, EOF, IFS


def can_frames(n):
    """[(can_id, bytes)] of one second of module-bus traffic for n modules."""
    from bankgate.proto import pylon_can as pc
    from bankgate.poller import can_id_for
    out = []
    buf = bytearray(8)
    for i in range(n):
        a = 2 + i
        d = module_data(i)["pack"]
        pc.encode_351(buf, 53200, 50000, 50000, 45000)
        out.append((can_id_for(a, 0x351), bytes(buf[:8])))
        pc.encode_355(buf, 600 + i, 1000)
        out.append((can_id_for(a, 0x355), bytes(buf[:4])))
        pc.encode_356(buf, d["voltage_mv"], d["current_ma"], d["temps_dc"][0])
        out.append((can_id_for(a, 0x356), bytes(buf[:6])))
        pc.encode_359(buf, 0, 0, 1, False)
        out.append((can_id_for(a, 0x359), bytes(buf[:7])))
        pc.encode_35c(buf, 0xC0)
        out.append((can_id_for(a, 0x35C), bytes(buf[:2])))
        pc.encode_35e(buf, "PYLON")
        out.append((can_id_for(a, 0x35E), bytes(buf[:8])))
    return out


class InstantCan:
    """Module-bus CAN controller (bankgate.bus.can interface) replaying a frame list."""

    def __init__(self, frames):
        self.frames = frames
        self.i = len(frames)

    def arm(self):
        self.i = 0

    def recv(self, buf):
        if self.i >= len(self.frames):
            return -1
        cid, data = self.frames[self.i]
        self.i += 1
        for k in range(len(data)):
            buf[k] = data[k]
        return (cid << 4) | len(data)

    def any(self):
        return len(self.frames) - self.i

    def send(self, cid, buf, n):
        return True

    def state(self):
        return 0

    def tec(self):
        return 0

    def rec(self):
        return 0

    def pending(self):
        return 0


# ------------------------------------------------------------------ section: cycle
def _one_sweep_decode(gw, clock):
    """Drive the poller (real RS485 driver + decoders) through one sweep of every module;
    returns CPU us.  Control steps are NOT run in between (measured separately)."""
    p = gw.poller
    s0 = p.sweep_count
    us = 0
    while p.sweep_count == s0:
        now = clock.ticks_ms()
        t = time.ticks_us()
        p.service(now)
        us += time.ticks_diff(time.ticks_us(), t)
        clock.advance_us(1000)
    return us


def _format(gw):
    snap = gw.snapshot()
    bank = {}
    for k, v in snap.items():
        if k != "modules" and k != "metrics" and k != "diagnoses":
            bank[k] = v
    n = len(json.dumps(bank))
    for m in snap["modules"]:
        n += len(json.dumps(m))
    return n


def section_cycle(reps, sizes=(1, 4, 8, 16), batch=5):
    out = {"rs485": {}, "can": {}}
    for n in sizes:
        frames = build_frames(n)
        gw, clock, uart = gateway(n, frames)
        if gw.admission.admitted_mask != (1 << n) - 1:
            out["rs485"][str(n)] = {"error": "bank did not close in warm-up"}
            continue
        dec, ctl, fmt = [], [], []
        for _ in range(reps):
            d = c = f = 0
            for _ in range(batch):
                d += _one_sweep_decode(gw, clock)
                now = clock.ticks_ms()
                gw._new_data = True
                t = time.ticks_us()
                gw._control(now)
                c += time.ticks_diff(time.ticks_us(), t)
                t = time.ticks_us()
                _format(gw)
                f += time.ticks_diff(time.ticks_us(), t)
            dec.append(d // batch)
            ctl.append(c // batch)
            fmt.append(f // batch)
        tot = [dec[i] + ctl[i] + fmt[i] for i in range(reps)]
        w115, chars = wire_us(frames, n, 115200)
        w96, _ = wire_us(frames, n, 9600)
        med = _stats(tot)["median"]
        out["rs485"][str(n)] = {
            "cpu_us": _stats(tot), "decode_us": _stats(dec), "control_us": _stats(ctl),
            "format_us": _stats(fmt), "wire_chars": chars,
            "wire_us": {"115200": w115, "9600": w96},
            "ratio_pct": {"115200": round(100.0 * med / w115, 3), "9600": round(100.0 * med / w96, 3)},
            "ratio_no_format_pct": {"115200": round(100.0 * (_stats(dec)["median"] + _stats(ctl)["median"]) / w115, 3)},
            "admitted": bin(gw.admission.admitted_mask).count("1"),
        }
        del gw, frames, uart
        gc.collect()
    for n in sizes:
        out["can"][str(n)] = _cycle_can(n, reps, batch)
        gc.collect()
    return out


def _cycle_can(n, reps, batch):
    frames = can_frames(n)
    bits = 0
    for cid, data in frames:
        bits += can_frame_bits(cid, data)
    clock = SimClock()
    hw = FakeHardware(clock, outputs=["k%d" % i for i in range(n)])
    can = InstantCan(frames)
    hw.can_modules = can
    hw.link_sensor = ConstSensor(0)
    gw = Gateway(hw, bench_config(n, False, "can"), None)
    # warm up: listening window and a few seconds of frames
    for k in range(8):
        can.arm()
        for _ in range(1 + len(frames) // 16):
            gw.step()
        clock.advance_us(1000000)
        gw.step()
    dec, ctl = [], []
    for _ in range(reps):
        d = c = 0
        for _ in range(batch):
            can.arm()
            p = gw.poller
            while can.any():
                now = clock.ticks_ms()
                t = time.ticks_us()
                p.service(now)
                d += time.ticks_diff(time.ticks_us(), t)
            now = clock.ticks_ms()
            gw._new_data = True
            t = time.ticks_us()
            gw._control(now)
            c += time.ticks_diff(time.ticks_us(), t)
            clock.advance_us(1000000)
        dec.append(d // batch)
        ctl.append(c // batch)
    tot = [dec[i] + ctl[i] for i in range(reps)]
    w = bits * 1000000 // CAN_BITRATE
    return {"cpu_us": _stats(tot), "decode_us": _stats(dec), "control_us": _stats(ctl),
            "frames": len(frames), "wire_bits": bits, "wire_us": {"500000": w},
            "ratio_pct": {"500000": round(100.0 * _stats(tot)["median"] / w, 3)},
            "note": "no format stage: the same telemetry formatting as RS485 applies"}


# ------------------------------------------------------------------ section: loop
def section_loop(reps, n=16, sweeps=3):
    gw, clock, uart = gateway(n)
    frames = uart.frames
    per = []
    for _ in range(reps):
        p = gw.poller
        s0 = p.sweep_count
        us = 0
        while p.sweep_count < s0 + sweeps:
            t = time.ticks_us()
            gw.step()
            us += time.ticks_diff(time.ticks_us(), t)
            clock.advance_us(1000)
        per.append(us // sweeps)
    w115, _ = wire_us(frames, n, 115200)
    w96, _ = wire_us(frames, n, 9600)
    med = _stats(per)["median"]
    return {"modules": n, "cpu_us_per_sweep": _stats(per), "control_steps": gw.control_steps,
            "ratio_pct": {"115200": round(100.0 * med / w115, 3), "9600": round(100.0 * med / w96, 3)}}


# ------------------------------------------------------------------ section: alloc
def _alloc(fn, *args):
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    fn(*args)
    a1 = gc.mem_alloc()
    gc.enable()
    return a1 - a0


def _locked(fn, a=None, b=None, c=None, k=0):
    micropython.heap_lock()
    try:
        if k == 0:
            fn()
        elif k == 1:
            fn(a)
        elif k == 2:
            fn(a, b)
        else:
            fn(a, b, c)
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok


def section_alloc(n=16):
    from bankgate import aggregate
    gw, clock, uart = gateway(n)
    frames = uart.frames
    p = gw.poller
    adm = gw.admission
    for _ in range(3):
        _one_sweep_decode(gw, clock)
        gw._control(clock.ticks_ms())
    now = clock.ticks_ms()
    res = {}

    def decode_sweep():
        s0 = p.sweep_count
        while p.sweep_count == s0:
            p.service(clock.ticks_ms())
            clock.advance_us(1000)

    idm = p.discovery.slot_fault_mask()
    res["decode"] = _alloc(decode_sweep)
    res["health"] = _alloc(gw.health.update, clock.ticks_ms())
    now = clock.ticks_ms()
    res["admission"] = _alloc(adm.step, now, 0, idm, True)
    res["aggregate"] = _alloc(aggregate.update, gw.bank, adm.admitted_mask)
    res["metrics"] = _alloc(gw.metrics.update, now + 50, adm.admitted_mask)
    res["diagnoser"] = _alloc(gw.diagnoser.step, now + 50, adm.admitted_mask, adm.expected_mask)
    res["control_step"] = _alloc(gw._control, clock.ticks_ms())
    res["snapshot"] = _alloc(gw.snapshot)
    res["format_bank_and_modules"] = _alloc(_format, gw)
    # heap_lock proofs: any allocation raises MemoryError inside the lock
    lock = {}
    p.service(clock.ticks_ms())
    clock.advance_us(1000)

    def one_transaction():
        p.service(clock.ticks_ms())
        clock.advance_us(1000)

    ok = True
    for _ in range(3 * n):
        ok = ok and _locked(one_transaction)
    lock["decode"] = ok
    now = clock.ticks_ms()
    lock["admission"] = _locked(lambda: adm.step(now, 0, idm, True))
    lock["metrics"] = _locked(gw.metrics.update, now + 100, adm.admitted_mask, k=2)
    lock["control_step"] = _locked(gw._control, clock.ticks_ms(), k=1)
    res["heap_lock_ok"] = lock
    # the MQTT stage: telemetry producing one bank message into the store-and-forward ring
    res["mqtt"] = _alloc_mqtt(n, frames)
    res["modules"] = n
    return res


def _alloc_mqtt(n, frames):
    from fakemqtt import FakeBroker, fake_net
    broker = FakeBroker()
    net = fake_net(broker)
    gw, clock, uart = make_gateway(n, frames, net)
    tel = gw.telemetry
    for _ in range(3000):         # connected, discovery sent, steady state
        gw.step()
        clock.advance_us(1000)
    now = clock.ticks_ms()
    tel._next_bank = now          # the bank message is due now
    b_bank = _alloc(tel._produce, now)
    b_mod = _alloc(tel._produce, now)          # then one module message
    b_send = _alloc(tel.service, now, 50)      # and publishing what is queued
    return {"bank_message": b_bank, "module_message": b_mod, "publish_pass": b_send,
            "online": tel.online, "published": tel.published}


# ------------------------------------------------------------------ section: metrics
def section_metrics(reps, n=16, batch=50):
    from bankgate.metrics import Metrics
    from metrics_float import MetricsFloat, compare
    gw, clock, uart = gateway(n)
    frames = uart.frames
    mask = gw.admission.admitted_mask
    cfg = gw.cfg
    fx = Metrics(cfg, gw.bank)
    fl = MetricsFloat(cfg, gw.bank)
    now = clock.ticks_ms()
    tf, tl = [], []
    for r in range(reps):
        t = time.ticks_us()
        for k in range(batch):
            fx.update(now + 100 * k, mask)
        tf.append(time.ticks_diff(time.ticks_us(), t) / batch)
        t = time.ticks_us()
        for k in range(batch):
            fl.update(now + 100 * k, mask)
        tl.append(time.ticks_diff(time.ticks_us(), t) / batch)
        gc.collect()
    fx.update(now + 100 * batch, mask)
    out = fl.update(now + 100 * batch, mask)
    worst, where = compare(fx, out)
    a_fx = _alloc(fx.update, now + 100 * batch + 100, mask)
    a_fl = _alloc(fl.update, now + 100 * batch + 100, mask)
    mf = _stats(tf)["median"]
    ml = _stats(tl)["median"]
    return {"modules": n, "fixed_us": _stats(tf), "float_us": _stats(tl),
            "float_over_fixed": round(ml / mf, 2) if mf else None,
            "fixed_alloc_bytes": a_fx, "float_alloc_bytes": a_fl,
            "max_abs_diff": worst, "max_diff_at": where}


# ------------------------------------------------------------------ simulator sections
def _sim_scenario(n, baud, dur):
    addrs = list(range(2, 2 + n))
    return {"name": "bench", "duration_s": dur, "report_s": 3600, "check_ms": 1000,
            "modules": [{"soc_pct": 60} for _ in range(n)],
            "terminal": {"disconnect": False}, "bus": {"baud": baud},
            "config": {"bank": {"expected_modules": n, "addresses": addrs, "baud": baud,
                                "scan_to": 1 + n},
                       "gating": {"max_age_ms": 5000 if baud >= 115200 else 15000},
                       "contactors": {"outputs": ["k%d" % i for i in range(n)],
                                      "link_isolated_input": "iso"}}}


def _sim(n, baud, dur):
    from bgsim import runner
    from bgsim import scenario as sc
    s = sc.validate(_sim_scenario(n, baud, dur))
    return runner.Simulation(s, out=lambda d: None)


def section_period(quick):
    out = {}
    for baud in ((115200,) if quick else (115200, 9600)):
        n = 16
        warm = 15 if baud == 115200 else 120
        win = (10 if quick else 60) if baud == 115200 else 180
        sim = _sim(n, baud, warm + win + 1)
        clk = sim.clock
        acc = {"us": 0, "tx": 0, "on": False}
        char_us = sim.wire.char_us
        for r in sim.wire.responders:
            f = r[0]
            ta = r[1]

            def w(q, f=f, ta=ta):
                # every responder sees every request; count the one that answers
                o = f(q)
                if acc["on"] and o:
                    acc["tx"] += 1
                    acc["us"] += (len(q) + len(o)) * char_us + ta
                return o
            r[0] = w
        marks = {}

        def mark(k):
            marks[k] = (clk.now_us, sim.gw.poller.sweep_count)
            acc["on"] = k == 0
        clk.at_us(warm * 1000000, mark, 0)
        clk.at_us((warm + win) * 1000000, mark, 1)
        sim.run()
        (t0, s0), (t1, s1) = marks[0], marks[1]
        sweeps = s1 - s0
        period = (t1 - t0) / sweeps if sweeps else None
        bound_all = acc["us"] / sweeps if sweeps else None
        out[str(baud)] = {
            "modules": n, "window_s": win, "sweeps": sweeps,
            "period_ms": round(period / 1000, 2) if period else None,
            "bound_ms": round(bound_all / 1000, 2) if bound_all else None,
            "ratio": round(period / bound_all, 3) if period and bound_all else None,
            "transactions_per_sweep": round(acc["tx"] / sweeps, 2) if sweeps else None,
            "admitted": bin(sim.gw.admission.admitted_mask).count("1"),
        }
        del sim
        gc.collect()
    return out


def section_reaction(quick):
    from bgsim.bms import alarm_bits
    out = {}
    for baud in ((115200,) if quick else (115200, 9600)):
        n = 16
        trials = 3 if quick else 8
        t_start = 15 if baud == 115200 else 150
        gap = 6 if baud == 115200 else 40
        sim = _sim(n, baud, t_start + trials * gap + 5)
        clk = sim.clock
        char_us = sim.wire.char_us
        crit = sim.cfg["gating"]["critical_alarms"]
        state = {"k": -1, "t_inj": 0, "t_vis": -1}
        res_vis, res_inj = [], []
        closed_at = {}

        for i, r in enumerate(sim.wire.responders):
            f = r[0]
            ta = r[1]

            def w(q, f=f, ta=ta, i=i):
                o = f(q)
                if o and i == state["k"] and state["t_vis"] < 0 and q[7] == 0x34 and q[8] == 0x34:
                    b = sim.bmses[i]
                    if (b.alarms | b.protections) & crit:
                        state["t_vis"] = clk.now_us + ta + len(o) * char_us
                return o
            r[0] = w

        def inject(j):
            # a module whose branch is closed, starting at a varying slot; the injection
            # instants vary (0.137 s steps) so the alarm meets different phases of the sweep
            k = -1
            for d in range(n):
                c = (j * 5 + 3 + d) % n
                if sim.hw.outputs["k%d" % c].value():
                    k = c
                    break
            if k < 0:
                return
            state["k"] = k
            state["t_inj"] = clk.now_us
            state["t_vis"] = -1
            closed_at[j] = 1
            b = sim.bmses[k]
            b.inject(alarm_bits(["cell_ov"]), True, sim.bank.t_s + gap / 2)
            b.update(sim.bank.t_s, 0.0)
            clk.after_us(int(gap / 2 * 1000000) - 500000, measure, j, k)

        def measure(j, k):
            pin = sim.hw.outputs["k%d" % k]
            t_open = None
            for t, v in pin.history:
                if v == 0 and t >= state["t_inj"]:
                    t_open = t
                    break
            if closed_at[j] and t_open is not None and state["t_vis"] >= 0:
                res_vis.append((t_open - state["t_vis"]) / 1000.0)
                res_inj.append((t_open - state["t_inj"]) / 1000.0)

        for j in range(trials):
            clk.at_us(int((t_start + j * gap + 0.137 * j) * 1000000), inject, j)
        sim.run()
        out[str(baud)] = {
            "trials": trials, "measured": len(res_vis),
            "from_wire_ms": _stats(res_vis) if res_vis else None,
            "from_injection_ms": _stats(res_inj) if res_inj else None,
            "period_ms": sim.cfg["control"]["period_ms"],
            "loop_max_us": sim.gw.loop_max_us,
        }
        del sim
        gc.collect()
    return out


def main(argv):
    reps = 5
    sections = None
    quick = False
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--reps":
            i += 1
            reps = int(argv[i])
        elif a == "--sections":
            i += 1
            sections = argv[i].split(",")
        elif a == "--quick":
            quick = True
        i += 1
    out = {"port": {"impl": sys.implementation.name, "version": list(sys.implementation.version),
                    "bits": 64 if sys.maxsize > 2 ** 32 else 32, "platform": sys.platform},
           "reps": reps}
    todo = sections or ["cycle", "loop", "alloc", "metrics", "period", "reaction"]
    t0 = time.ticks_ms()
    for name in todo:
        t = time.ticks_ms()
        if name == "cycle":
            out[name] = section_cycle(reps)
        elif name == "loop":
            out[name] = section_loop(reps)
        elif name == "alloc":
            out[name] = section_alloc()
        elif name == "metrics":
            out[name] = section_metrics(reps)
        elif name == "period":
            out[name] = section_period(quick)
        elif name == "reaction":
            out[name] = section_reaction(quick)
        out.setdefault("wall_s", {})[name] = time.ticks_diff(time.ticks_ms(), t) / 1000.0
        gc.collect()
    out["wall_s"]["total"] = time.ticks_diff(time.ticks_ms(), t0) / 1000.0
    out["missing"] = list(fwcompat.MISSING)
    sys.stdout.write("\x1eBENCH " + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
