# Where does the time of a simulated run go?  (The unix port has no cProfile and no
# sys.settrace, so this instruments by hand.)
#
#   .venv/bin/python -c "import sys; from bankgate_host import mpy; p = mpy.run(
#       ['tools/rigs/simprof.py'] + sys.argv[1:], heapsize='2m', timeout=3000);
#       print(p.stdout, p.stderr)" tests/scenarios/perf_16_modules.json [--until S] [options]
#   (mpy.run compiles the tree and sets MICROPYPATH; 2m is the simulator's heap)
#
# Builds bgsim.runner.Simulation, wraps the interesting functions/methods with
# wall-clock counters (time.ticks_us) and prints one line per stage:
#   name  calls  total ms  us/call  % of the run
# Times are INCLUSIVE (a stage containing another counts it too) and include the
# wrapper's own overhead (about 1-2 us per call), so read them as an upper bound.
# --no-wrap runs without instrumentation (the true speed).
# --alloc counts heap bytes allocated (gc.mem_alloc differences) instead of
#   microseconds; a call during which the GC ran counts 0, so the numbers are a
#   lower bound.  gc.mem_alloc() scans the whole heap: keep the heap small (2m)
#   and the run short (--until 5).
# --only a,b wraps only the stages whose label contains one of the strings.
# --gc-threshold N overrides bgsim.runner.GC_THRESHOLD for the run.
# Note: wrapping changes the heap's allocation pattern, and on this port that changes
# the allocator's cost (docs/scenarios.md, "Speed"): compare wrapped runs with each
# other and take the true speed from --no-wrap.
import gc
import sys
import time

from bgsim import runner
from bgsim import scenario as sc

_tus = time.ticks_us
_tdiff = time.ticks_diff


def _sub(a, b):
    # allocation mode: a collection in between makes the difference negative; count 0
    d = a - b
    return d if d > 0 else 0

STATS = {}          # name -> [calls, total_us]
ONLY = None         # --only a,b: wrap only the stages whose label contains one of these


def wrap(obj, name, label=None):
    """Replace obj.name (method of an instance, function of a module) by a timed
    wrapper.  Returns False when obj has no such attribute."""
    f = getattr(obj, name, None)
    if f is None:
        return False
    key = label or name
    if ONLY is not None and not any(x in key for x in ONLY):
        return False
    st = STATS.setdefault(key, [0, 0])

    def w(*a, **kw):
        t = _tus()
        try:
            return f(*a, **kw)
        finally:
            st[0] += 1
            st[1] += _tdiff(_tus(), t)

    setattr(obj, name, w)
    return True


def instrument(sim):
    gw = sim.gw
    clk = sim.clock
    hw = sim.hw
    wrap(gw, "step", "gw.step")
    wrap(gw, "_control", "gw._control")
    wrap(gw.poller, "service", "poller.service")
    wrap(gw.poller, "_finish", "poller._finish")
    wrap(gw.poller, "_start_next", "poller._start_next")
    wrap(gw.poller.rs, "poll", "rs485.poll")
    wrap(gw.poller.rs, "start", "rs485.start")
    fam = gw.poller.fam
    wrap(fam, "decode", "fam.decode")
    wrap(gw.health, "update", "health.update")
    wrap(gw.admission, "step", "admission.step")
    for k in ("_bank_checks", "_weld_branch", "_step_branch", "_step_main", "_pending", "_bank_state",
              "_check", "_set", "_gate"):
        wrap(gw.admission, k, "admission." + k)
    wrap(gw.admission.ct, "check", "contactor.check")
    wrap(gw.admission.ct, "sync", "contactor.sync")
    from bankgate import limits
    wrap(limits, "current_limit", "limits.current_limit")
    wrap(limits, "voltage_limits", "limits.voltage_limits")
    wrap(gw.metrics, "update", "metrics.update")
    wrap(gw.diagnoser, "step", "diagnoser.step")
    if gw.inverter is not None:
        wrap(gw.inverter, "service", "inverter.service")
    from bankgate import aggregate
    wrap(aggregate, "update", "aggregate.update")
    wrap(hw, "idle", "hw.idle")
    wrap(clk, "advance_us", "clock.advance_us")
    wrap(sim, "_tick", "sim._tick (physics+inv)")
    wrap(sim, "advance", "sim.advance (physics)")
    wrap(sim, "_inverter_service", "sim._inverter_service")
    wrap(sim, "check", "sim.check")
    wrap(sim, "report", "sim.report")
    if sim.wire is not None:
        w = sim.wire
        wrap(w, "_request_done", "wire._request_done")
        wrap(w, "_corrupt", "wire._corrupt")
        u = sim.uart
        wrap(u, "_tx_finished", "uart._tx_finished")
        wrap(u, "_arrive", "uart._arrive")
        wrap(u, "any", "uart.any")
        wrap(u, "readinto", "uart.readinto")
        wrap(u, "write", "uart.write")
        from bgsim import emu
        import bmsproto
        wrap(emu, "parse_request", "emu.parse_request")
        wrap(bmsproto, "response", "bmsproto.response")
        for b in sim.bmses:
            wrap(b, "report", "bms.report")
            wrap(b, "update", "bms.update")
        wrap(sim.bank, "step", "bank.step")
        # responders: wrap the list entries (the wire calls r[0](req))
        st = STATS.setdefault("responder (all)", [0, 0])
        for r in w.responders:
            f = r[0]

            def mk(f):
                def w2(req):
                    t = _tus()
                    try:
                        return f(req)
                    finally:
                        st[0] += 1
                        st[1] += _tdiff(_tus(), t)
                return w2
            r[0] = mk(f)
    if hw.input_ready is not None:
        st2 = STATS.setdefault("hw.input_ready", [0, 0])
        f = hw.input_ready

        def ir():
            t = _tus()
            try:
                return f()
            finally:
                st2[0] += 1
                st2[1] += _tdiff(_tus(), t)
        hw.input_ready = ir


def main(argv):
    path = None
    until = None
    nowrap = False
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--until":
            i += 1
            until = float(argv[i])
        elif a == "--no-wrap":
            nowrap = True
        elif a == "--gc-threshold":
            i += 1
            runner.GC_THRESHOLD = int(argv[i])   # what Simulation.run() sets
        elif a == "--alloc":
            global _tus, _tdiff
            _tus = gc.mem_alloc
            _tdiff = _sub
        elif a == "--only":
            i += 1
            global ONLY
            ONLY = argv[i].split(",")
        else:
            path = a
        i += 1
    s = sc.load(path)
    res = {}

    def out(d):
        if d.get("type") == "result":
            res.update(d)
        elif d.get("type") == "expect" and d.get("ok") is False:
            print("EXPECT FAILED", d)

    sim = runner.Simulation(s, out)
    if not nowrap:
        instrument(sim)
    t0 = _tus()
    w0 = time.ticks_us()
    sim.run(until)
    wall_us = _tdiff(_tus(), t0)
    base = wall_us
    if _tus is gc.mem_alloc:
        print("ALLOCATION MODE: 'ms' columns are kB, 'us/call' bytes per call")
        wall_us = time.ticks_diff(time.ticks_us(), w0)
        base = 0
        for k in STATS:
            if STATS[k][1] > base:
                base = STATS[k][1]
        print("largest stage allocated %d bytes (%% column: of that)" % base)
    print("sim %.1f s  wall %.2f s  speed %.1f x  cycles %s  requests %s  ok %s" % (
        res.get("sim_s", 0), wall_us / 1e6, res.get("sim_s", 0) * 1e6 / wall_us, res.get("cycles"),
        res.get("rs485_requests"), res.get("ok")))
    rows = sorted(STATS.items(), key=lambda kv: -kv[1][1])
    print("%-28s %9s %10s %9s %6s" % ("stage", "calls", "total ms", "us/call", "%"))
    for k, (n, us) in rows:
        if n:
            print("%-28s %9d %10.1f %9.1f %6.1f" % (k, n, us / 1000, us / n, 100.0 * us / base))


main(sys.argv)
