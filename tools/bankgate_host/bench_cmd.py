"""`bankgate bench` -- measurements of the firmware under the unix MicroPython port.

    bankgate bench                full run (several repetitions, 9600 baud simulations,
                                  smallest heap the firmware alone runs in)
    bankgate bench --quick        few repetitions, 115200 baud only (tests use this)
    bankgate bench --json         one JSON object instead of the table

What is measured and how: docs/performance.md.  The MicroPython side is
tools/rigs/bench.py (CPU time, allocations, fixed vs float metrics, poll period and
reaction time in simulated time) and tools/rigs/bench_alone.py (the firmware alone in
a small heap: run at 64 KiB, the target, and bisected for the smallest heap it runs
in).  The heap figures that count come from the 32-bit unix port with the firmware
FROZEN in (bytecode in the executable, as in ESP32 flash; 31-bit small ints, 4-byte
words, 16-byte GC blocks: tools/bankgate_host/frozen32.py builds it from
firmware/manifest.py with ../shared/micropython32/build.sh and caches it under
build/frozen32/); the 64-bit figures (bytecode in the heap) are kept beside them.
CPU times are wall-clock microseconds of the unix port on this host: run it
on an otherwise idle machine; each figure is the median of the repetitions, with
min/max as the spread.

Exit code 0 when the measurements ran (whether or not a target is met: the
"targets" object says which are), 1 when a MicroPython run failed.
"""
import json
import os
import subprocess
import sys

from . import frozen32, mpy

BENCH_HEAPSIZE = "4m"          # the simulator sections share the heap with the bank model
TARGET_HEAP = "64k"            # 64-bit port, bytecode in the heap (historical figure)
TARGET_HEAP32_KIB = 96         # issue 17: the firmware alone runs in a 96 KiB heap (frozen, 32-bit)
GUARD_HEAP32_KIB = 96          # what tests/host/test_heap32.py holds it to: the target, met again
                               # (lost when the Home Assistant work merged; docs/performance.md)
TARGET_LIVE32_BYTES = 64 * 1024   # ... with at most 64 KiB live
_MARK = "\x1eBENCH "


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="few repetitions, 115200 baud only, no heap bisection (for tests)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 9, quick 3)")
    p.add_argument("--sections", default=None,
                   help="comma-separated subset of cycle,loop,alloc,metrics,period,reaction,sim,freshness")


class BenchError(RuntimeError):
    pass


def _run(script, args, heapsize, timeout=1800):
    proc = mpy.run([os.path.join(mpy.RIGS, script)] + list(args), heapsize=heapsize,
                   timeout=timeout)
    for line in proc.stdout.split("\n"):      # not splitlines(): it splits at \x1e too
        i = line.find(_MARK)          # (something may have printed without a newline first)
        if i >= 0:
            return json.loads(line[i + len(_MARK):])
    raise BenchError("%s (heap %s) failed, rc=%s:\n%s\n%s" % (
        script, heapsize, proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:]))


def _kib(text):
    return int(text.rstrip("k"))


_RIG = {}


def rig_bytes(binary):
    """Heap bytes the bench rig itself holds before the firmware starts (its .mpy code, the
    instant-answer frames, the fake broker and hardware; bench_alone's stub_bytes), rounded up
    to 1 KiB.  The device has none of it, so every frozen run gets this much on top of the
    heap it is said to run in: "runs in 96 KiB" means 96 KiB for interpreter + firmware."""
    if binary not in _RIG:
        r = run_frozen(1024, binary=binary, rig=0)
        if "stub_bytes" not in r:
            raise BenchError("bench_alone did not run on %s: %s" % (binary, r.get("error")))
        _RIG[binary] = (r["stub_bytes"] + script_bytes(binary, r) + 1023) // 1024
    return _RIG[binary]


def bare_interpreter_bytes(binary):
    """gc.mem_alloc() of the binary with nothing loaded: what the interpreter itself holds at
    start (on the device main.py is frozen: no script bytecode in the heap)."""
    proc = subprocess.run([binary, "-X", "heapsize=64k", "-c",
                           "import gc; gc.collect(); print(gc.mem_alloc())"],
                          capture_output=True, text=True, timeout=60)
    try:
        return int(proc.stdout.split()[-1])
    except (ValueError, IndexError):
        raise BenchError("bare interpreter on %s: rc=%s %s" % (binary, proc.returncode, proc.stderr[-300:]))


def script_bytes(binary, r):
    """Bytes of bench_alone.py's own bytecode (loaded from .mpy before it takes its first
    reading, so it was counted as "interpreter_bytes"): its reading minus the bare
    interpreter's.  Part of the rig: the device runs a frozen main.py instead."""
    return max(0, r.get("interpreter_bytes", 0) - bare_interpreter_bytes(binary))


def run_frozen(heap_k, parts=False, binary=None, steps=4000, rig=None):
    """bench_alone on the frozen 32-bit binary with heap_k KiB for the firmware (plus the rig's
    own bytes, rig_bytes()); its "alone" dict."""
    args = ["16", str(steps)] + (["parts"] if parts else [])
    binary = binary or frozen32.frozen_binary()
    extra = rig_bytes(binary) if rig is None else rig
    proc = frozen32.run("bench_alone", args, "%dk" % (heap_k + extra), binary=binary)
    for line in proc.stdout.split("\n"):
        i = line.find(_MARK)
        if i >= 0:
            r = json.loads(line[i + len(_MARK):])["alone"]
            r["heapsize"] = "%dk" % heap_k
            r["rig_kib"] = extra
            return r
    # an out-of-memory crash outside the script's own handler (e.g. while importing)
    return {"ok": False, "heapsize": "%dk" % heap_k,
            "error": "rc=%s: %s" % (proc.returncode, (proc.stderr or proc.stdout)[-300:].strip())}


def min_heap_frozen(lo_k=32, hi_k=512, step_k=4, binary=None, band=8):
    """Smallest heap (KiB, multiple of step_k) the frozen firmware runs in: bisection, then the
    band*step_k KiB above the result are checked too (fragmentation makes "runs" not quite
    monotonic in the heap size: the answer is a size at and above which every size tried ran)."""
    if not run_frozen(hi_k, binary=binary).get("ok"):
        return None
    lo, hi = lo_k, hi_k            # invariant: hi runs; lo is not known to run
    while hi - lo > step_k:
        mid = (lo + hi) // 2 // step_k * step_k
        if mid <= lo:
            break
        if run_frozen(mid, binary=binary).get("ok"):
            hi = mid
        else:
            lo = mid
    k = hi + step_k
    while k < min(hi_k, hi + band * step_k):
        if not run_frozen(k, binary=binary).get("ok"):
            hi = k + step_k
        k += step_k
    return hi


def measure_frozen32(full=True, binary=None):
    """The issue-17 heap figures: frozen 32-bit binary, 16 modules, MQTT on."""
    try:
        binary = binary or frozen32.frozen_binary()
    except (frozen32.KitMissing, RuntimeError) as e:
        return {"error": str(e)}
    out = {"binary": os.path.relpath(binary, mpy.REPO) if binary.startswith(mpy.REPO) else binary}
    at = run_frozen(TARGET_HEAP32_KIB, binary=binary)
    out["at_96k"] = at
    out["at_guard"] = at if at.get("ok") else run_frozen(GUARD_HEAP32_KIB, binary=binary)
    big = run_frozen(1024, binary=binary)
    if at.get("ok"):
        # the figures at the target; the burst (probed with the GC off) only where that
        # cannot fail the run: from the 1 MiB run
        out["figures"] = dict(at, transient_max=big.get("transient_max"))
    else:
        out["figures"] = big
    if full:
        out["parts"] = run_frozen(1024, parts=True, binary=binary).get("parts_bytes")
        out["min_heap_kib"] = min_heap_frozen(binary=binary)
    return out


def min_heap(lo_k=128, hi_k=1024, step_k=16):
    """Smallest -X heapsize (KiB, multiple of step_k) at which bench_alone.py runs."""
    ok_hi = _run("bench_alone.py", [], "%dk" % hi_k)["alone"]
    if not ok_hi.get("ok"):
        return None
    lo, hi = lo_k, hi_k            # invariant: hi runs; lo is not known to run
    while hi - lo > step_k:
        mid = (lo + hi) // 2 // step_k * step_k
        if mid <= lo:
            break
        r = _run("bench_alone.py", [], "%dk" % mid)["alone"]
        if r.get("ok"):
            hi = mid
        else:
            lo = mid
    return hi


SIM_SCENARIO = os.path.join(mpy.REPO, "tests", "scenarios", "perf_16_modules.json")
SIM_SPEED_TARGET = 100.0       # issue 4: >= 100 x real time, 16 modules, RS485 115200 baud


def _sim_run(emit):
    from .simulate_cmd import SIM_HEAPSIZE
    proc = mpy.run([os.path.join(mpy.CLI, "cli_simulate.py"), SIM_SCENARIO], heapsize=SIM_HEAPSIZE,
                   timeout=1800, emit=emit)
    res = None
    for line in proc.stdout.splitlines():
        if line.startswith("{") and '"result"' in line:
            res = json.loads(line)
    if proc.returncode != 0 or res is None:
        raise BenchError("simulate %s (%s) failed, rc=%s:\n%s" % (SIM_SCENARIO, emit, proc.returncode,
                                                                   proc.stderr[-3000:]))
    return res


def measure_sim(reps):
    """Simulated seconds per wall second of `bankgate simulate` on the 16-module
    RS485 115200 reference scenario: `reps` runs as simulate runs it (native), one
    compiled to bytecode as the device runs it, for the ratio."""
    runs = [_sim_run("native") for _ in range(reps)]
    sp = sorted(r["speed"] for r in runs)
    byte = _sim_run("bytecode")
    r0 = runs[0]
    return {"scenario": os.path.basename(SIM_SCENARIO), "sim_s": r0["sim_s"],
            "requests_per_sim_s": r0["rs485_requests"] / r0["sim_s"],
            "speed": {"median": sp[len(sp) // 2], "min": sp[0], "max": sp[-1]},
            "bytecode_speed": byte["speed"],
            "wall_ms_per_sim_s": 1000.0 / sp[-1]}


def measure_freshness(quick):
    """Issue 15: worst-case age of alarm data per baud and module count vs its bound
    (tools/rigs/bench_fresh.py, bankgate.pollplan)."""
    return _run("bench_fresh.py", ["--quick"] if quick else [], BENCH_HEAPSIZE)["freshness"]


def freshness_lines(rows):
    L = ["", "Age of alarm data (issue 15: poll plan, every contactor closed, across an identity re-read)",
         "  %-6s %3s %9s %9s %11s %11s %9s" % ("baud", "N", "max_age", "sweep_ms", "plan_worst",
                                               "measured", "within")]
    for r in rows:
        L.append("  %-6s %3s %9s %9s %11s %11s %9s" % (
            r["baud"], r["modules"], r["max_age_ms"], r["sweep_ms"], r["plan_worst_age_ms"],
            r["measured_worst_age_ms"], "yes" if r["ok"] else "NO"))
    return L


def measure(quick=False, reps=None, sections=None):
    reps = reps or (3 if quick else 9)
    args = ["--reps", str(reps)]
    if quick:
        args.append("--quick")
    want = sections.split(",") if sections else None
    mp_sections = [x for x in want if x != "sim" and x != "freshness"] if want else None
    out = {}
    if mp_sections is None or mp_sections:
        if mp_sections:
            args += ["--sections", ",".join(mp_sections)]
        out = _run("bench.py", args, BENCH_HEAPSIZE)
    if want is None or "sim" in want:
        out["sim"] = measure_sim(1 if quick else 3)
    if want is None or "freshness" in want:
        out["freshness"] = measure_freshness(quick)
    if not sections:
        alone = _run("bench_alone.py", [], TARGET_HEAP)["alone"]
        alone["heapsize"] = TARGET_HEAP
        out["heap"] = {"at_64k": alone}
        if not alone.get("ok"):
            # where it does run, for the figures (and, in a full run, the smallest heap)
            big = _run("bench_alone.py", [], BENCH_HEAPSIZE)["alone"]
            big["heapsize"] = BENCH_HEAPSIZE
            out["heap"]["at_4m"] = big
        if not quick:
            out["heap"]["min_heap_kib"] = min_heap()
        out["heap32"] = measure_frozen32(full=not quick)
    out["targets"] = targets(out)
    return out


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(out):
    """The issue's targets, each {"value", "limit", "ok"} (ok None: not measured)."""
    t = {}

    def put(name, value, limit, ok, note=""):
        t[name] = {"value": value, "limit": limit, "ok": ok if value is not None else None}
        if note:
            t[name]["note"] = note

    r = _get(out, "cycle", "rs485", "16", "ratio_pct", "115200")
    put("cycle_cpu_vs_wire_16_115200_pct", r, 0.5, r is not None and r <= 0.5,
        "CPU of one control cycle / RS485 wire time, 16 modules, host")
    p = _get(out, "period", "115200", "ratio")
    put("poll_period_vs_bound_115200", p, 1.10, p is not None and p <= 1.10)
    p9 = _get(out, "period", "9600", "ratio")
    if p9 is not None:
        put("poll_period_vs_bound_9600", p9, 1.10, p9 <= 1.10)
    for stage in ("decode", "admission", "metrics"):
        b = _get(out, "alloc", stage)
        lock = _get(out, "alloc", "heap_lock_ok", stage)
        put("alloc_%s_bytes" % stage, b, 0, b == 0 and lock is True)
    h32 = _get(out, "heap32", "at_96k")
    if h32 is not None:
        put("frozen32_runs_in_96k", bool(h32.get("ok")), True, bool(h32.get("ok")),
            "firmware alone, 16 modules, MQTT on, frozen into the 32-bit port")
        lv = _get(out, "heap32", "figures", "live_max_bytes")
        put("frozen32_live_max_bytes", lv, TARGET_LIVE32_BYTES, lv is not None and lv <= TARGET_LIVE32_BYTES)
    elif _get(out, "heap32", "error"):
        put("frozen32_runs_in_96k", None, True, None, "not measured: " + out["heap32"]["error"][:200])
    h = _get(out, "heap", "at_64k")
    if h is not None:
        put("firmware_alone_in_64k", bool(h.get("ok")), True, bool(h.get("ok")),
            "64-bit unix port, bytecode in the heap (see docs/performance.md)")
    fx = _get(out, "metrics", "fixed_alloc_bytes")
    put("metrics_fixed_alloc_bytes", fx, 0, fx == 0)
    sp = _get(out, "sim", "speed", "max")
    put("sim_speed_16_115200_x", sp, SIM_SPEED_TARGET, sp is not None and sp >= SIM_SPEED_TARGET,
        "bankgate simulate, simulated s per wall s, best run")
    fr = out.get("freshness")
    if fr:
        worst = max(r["measured_worst_age_ms"] * 1000 // r["max_age_ms"] for r in fr)
        put("alarm_age_within_bound", all(r["ok"] for r in fr), True, all(r["ok"] for r in fr),
            "every baud/module count: measured worst age <= plan bound <= max_age_ms "
            "(worst %d permille of max_age_ms)" % worst)
    react = _get(out, "reaction", "115200", "from_wire_ms", "max")
    per = _get(out, "reaction", "115200", "period_ms")
    put("reaction_from_wire_ms", react, per, react is not None and per is not None and react <= per,
        "alarm reply on the wire -> outputs open, simulated time")
    return t


# ------------------------------------------------------------------ table
def _fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return ("%%.%df" % nd) % x
    return str(x)


def table(out):
    L = []
    port = out.get("port")
    if port:
        L.append("bankgate bench -- unix port %s (%d-bit), %s repetitions, median [min..max]"
                 % (".".join(str(v) for v in port.get("version", [])[:3]), port.get("bits", 0),
                    out.get("reps")))
    else:
        L.append("bankgate bench -- median [min..max]")
    cyc = out.get("cycle")
    if cyc:
        L.append("")
        L.append("Control cycle CPU time (decode every module + 1 control step + telemetry JSON)")
        L.append("  %-7s %3s %9s %9s %9s %9s %11s %10s %10s" % (
            "bus", "N", "cpu_us", "decode", "control", "format", "wire_ms", "cpu/wire", "@9600"))
        for n, r in sorted(cyc.get("rs485", {}).items(), key=lambda kv: int(kv[0])):
            if "error" in r:
                L.append("  rs485   %3s  %s" % (n, r["error"]))
                continue
            c = r["cpu_us"]
            L.append("  %-7s %3s %9s %9s %9s %9s %11s %9s%% %9s%%" % (
                "rs485", n, "%d[%d..%d]" % (c["median"], c["min"], c["max"]),
                r["decode_us"]["median"], r["control_us"]["median"], r["format_us"]["median"],
                _fmt(r["wire_us"]["115200"] / 1000.0), _fmt(r["ratio_pct"]["115200"], 3),
                _fmt(r["ratio_pct"]["9600"], 3)))
        for n, r in sorted(cyc.get("can", {}).items(), key=lambda kv: int(kv[0])):
            c = r["cpu_us"]
            L.append("  %-7s %3s %9s %9s %9s %9s %11s %9s%%" % (
                "can500k", n, "%d[%d..%d]" % (c["median"], c["min"], c["max"]),
                r["decode_us"]["median"], r["control_us"]["median"], "-",
                _fmt(r["wire_us"]["500000"] / 1000.0), _fmt(r["ratio_pct"]["500000"], 3)))
    lp = out.get("loop")
    if lp:
        c = lp["cpu_us_per_sweep"]
        L.append("")
        L.append("Main loop as it runs (control step every period and on a changed check), %d modules:"
                 % lp["modules"])
        L.append("  %d us CPU per poll sweep [%d..%d] = %s %% of the wire time at 115200, %s %% at 9600"
                 % (c["median"], c["min"], c["max"], _fmt(lp["ratio_pct"]["115200"], 3),
                    _fmt(lp["ratio_pct"]["9600"], 3)))
    per = out.get("period")
    if per:
        L.append("")
        L.append("Poll sweep period, real Gateway on the simulated wire (simulated time)")
        for baud, r in sorted(per.items(), key=lambda kv: -int(kv[0])):
            L.append("  %6s baud, %d modules: %s ms achieved, %s ms wire-time bound, ratio %s "
                     "(%s sweeps, %s transactions/sweep)" % (
                         baud, r["modules"], _fmt(r["period_ms"], 2), _fmt(r["bound_ms"], 2),
                         _fmt(r["ratio"], 3), r["sweeps"], _fmt(r["transactions_per_sweep"], 2)))
    al = out.get("alloc")
    if al:
        L.append("")
        L.append("Bytes allocated per steady-state stage (%d modules; gc disabled, mem_alloc deltas)"
                 % al.get("modules", 0))
        for k in ("decode", "health", "admission", "aggregate", "metrics", "diagnoser",
                  "control_step", "snapshot", "format_bank_and_modules"):
            if k in al:
                L.append("  %-26s %8s" % (k, al[k]))
        m = al.get("mqtt", {})
        L.append("  %-26s %8s   (+ one module message %s, publish pass %s)" % (
            "mqtt bank message", m.get("bank_message"), m.get("module_message"), m.get("publish_pass")))
        L.append("  heap_lock proofs: %s" % ", ".join(
            "%s %s" % (k, "ok" if v else "ALLOCATES") for k, v in sorted(al.get("heap_lock_ok", {}).items())))
    mt = out.get("metrics")
    if mt:
        L.append("")
        L.append("Metrics, %d modules: fixed point %s us, float %s us (float/fixed %s); "
                 "allocated per update: fixed %s B, float %s B; largest difference %s"
                 % (mt["modules"], _fmt(mt["fixed_us"]["median"]), _fmt(mt["float_us"]["median"]),
                    _fmt(mt["float_over_fixed"], 2), mt["fixed_alloc_bytes"], mt["float_alloc_bytes"],
                    mt["max_abs_diff"]))
    re_ = out.get("reaction")
    if re_:
        L.append("")
        L.append("Reaction to a critical alarm (simulated time, 16 modules)")
        for baud, r in sorted(re_.items(), key=lambda kv: -int(kv[0])):
            w, i = r.get("from_wire_ms"), r.get("from_injection_ms")
            L.append("  %6s baud: alarm reply on the wire -> outputs open %s ms (max %s); alarm in the "
                     "BMS -> open %s ms [%s..%s] (%d trials)" % (
                         baud, _fmt(w and w["median"], 2), _fmt(w and w["max"], 2),
                         _fmt(i and i["median"]), _fmt(i and i["min"]), _fmt(i and i["max"]),
                         r["measured"]))
    sm = out.get("sim")
    if sm:
        v = sm["speed"]
        L.append("")
        L.append("Simulator speed (`bankgate simulate`, %s: 16 modules, RS485 115200 baud, %.0f requests "
                 "per simulated s)" % (sm["scenario"], sm["requests_per_sim_s"]))
        L.append("  %s x real time [%s..%s] compiled native (%s ms CPU per simulated s at best); "
                 "%s x compiled to bytecode" % (_fmt(v["median"]), _fmt(v["min"]), _fmt(v["max"]),
                                                _fmt(sm["wall_ms_per_sim_s"], 2), _fmt(sm["bytecode_speed"])))
    if out.get("freshness"):
        L.extend(freshness_lines(out["freshness"]))
    hp = out.get("heap")
    if hp:
        L.append("")
        a = hp.get("at_64k", {})
        L.append("Firmware alone, 16 modules, MQTT on: -X heapsize=64k %s" % (
            "runs" if a.get("ok") else "FAILS (%s)" % a.get("error", "?")))
        b = a if a.get("ok") else hp.get("at_4m", {})
        if b:
            L.append("  (figures from heapsize=%s) bytecode %s B, objects %s B, live max %s B, "
                     "used max %s B (64-bit port)" % (
                         b.get("heapsize"), b.get("code_bytes"), b.get("objects_bytes"),
                         b.get("live_max_bytes"), b.get("used_max_bytes")))
            if b.get("parts_bytes"):
                L.append("  parts: %s" % ", ".join("%s %s B" % kv for kv in sorted(b["parts_bytes"].items())))
        if hp.get("min_heap_kib") is not None:
            L.append("  smallest heap it runs in: %s KiB" % hp["min_heap_kib"])
    h32 = out.get("heap32")
    if h32:
        L.append("")
        if h32.get("error"):
            L.append("Firmware alone, frozen 32-bit port: not measured (%s)" % h32["error"][:300])
        else:
            a = h32.get("at_96k", {})
            f = h32.get("figures", {})
            L.append("Firmware alone, 16 modules, MQTT on, FROZEN into the 32-bit port (as on the ESP32): "
                     "-X heapsize=96k %s" % ("runs" if a.get("ok") else "FAILS (%s)" % a.get("error", "?")))
            L.append("  %-34s %12s %12s" % ("(bytes)", "32-bit frozen", "64-bit heap"))
            x = hp or {}
            x = x.get("at_64k") if (x.get("at_64k") or {}).get("ok") else x.get("at_4m", {})
            x = x or {}
            for k, label in (("objects_bytes", "objects after warm-up"), ("live_max_bytes", "largest live heap"),
                             ("used_max_bytes", "largest used between collections"),
                             ("transient_max", "largest transient (one iteration)"),
                             ("code_bytes", "module code/globals")):
                L.append("  %-34s %12s %12s" % (label, f.get(k), x.get(k)))
            if h32.get("min_heap_kib") is not None:
                L.append("  smallest heap it runs in: %s KiB (32-bit frozen)%s" % (
                    h32["min_heap_kib"], "" if not (hp or {}).get("min_heap_kib") else
                    ", %s KiB (64-bit, bytecode in the heap)" % hp["min_heap_kib"]))
            if h32.get("parts"):
                L.append("  budget per part: %s" % ", ".join("%s %s" % kv for kv in sorted(h32["parts"].items())))
    tg = out.get("targets")
    if tg:
        L.append("")
        L.append("Targets")
        for k, v in tg.items():
            ok = v["ok"]
            L.append("  %-36s %-8s limit %-6s %s" % (
                k, _fmt(v["value"], 3), v["limit"], "met" if ok else ("MISSED" if ok is False else "not measured")))
    return "\n".join(L)


def main(args):
    try:
        out = measure(args.quick, args.reps, args.sections)
    except (BenchError, mpy.MicroPythonNotFound, subprocess.TimeoutExpired) as e:
        sys.stderr.write("bankgate bench: %s\n" % (e,))
        return 1
    if args.json:
        sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    else:
        sys.stdout.write(table(out) + "\n")
    return 0
