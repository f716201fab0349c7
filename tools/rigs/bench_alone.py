# The firmware ALONE in a small heap (part of `bankgate bench`):
#
#   micropython -X heapsize=96k bench_alone.py [n] [steps] [parts] [ring=BYTES]  -> "\x1eBENCH {"alone": {...}}"
#   (ring=BYTES: mqtt.ring_bytes instead of the default, for the what-if figure in docs/performance.md)
#
# `bankgate bench` runs it on the 32-bit unix port with the firmware FROZEN in (as on the
# device: bytecode in flash, tools/bankgate_host/frozen32.py; "frozen": true) and on the
# 64-bit venv port with the firmware's bytecode in the heap (side by side).
#
# No simulator: 16 modules answer instantly on a fake RS485 port (tools/rigs/benchrig.py),
# MQTT telemetry is on and talks to a broker stand-in that allocates nothing (tools/fakes/leanmqtt.py:
# on the device the TCP/IP stack's buffers are outside the MicroPython heap).
# The run builds the Gateway, brings every module in and runs `steps` loop iterations
# (several poll sweeps, telemetry formatting and publishing).  It reports, in bytes of
# this port's heap (gc.mem_alloc after gc.collect unless said otherwise):
#   stub_bytes       the host-side helpers (bench rig, fake broker and hardware) and the
#                    instant-answer frames (not firmware; subtracted everywhere).  The firmware
#                    modules the rig imports (FIRMWARE_FIRST) are imported before it and
#                    counted as firmware: firmware_preloaded_bytes, part of code_bytes and live
#   config_bytes     the validated configuration dict (the validator is then freed, as
#                    bankgate.firmware.load() does on the device)
#   code_bytes       importing the firmware modules: frozen, only their globals, classes and
#                    functions live in RAM; not frozen (64-bit lane), their bytecode too
#   objects_bytes    the Gateway and everything it preallocates (config dict included),
#                    live after warm-up ("objects after warm-up")
#   live_max_bytes   largest live heap of the firmware (config + code + objects) over the run
#   used_max_bytes   largest heap use seen between collections (live + not yet collected)
#   transient_max    largest allocation burst of one loop iteration (gc disabled; probed only
#                    with PROBE_FREE free, so None in a small heap: take it from a large one)
#   parts_bytes      (argument "parts") the budget per part: each component constructed once
#                    more on the running gateway's collaborators and measured alone
# An allocation failure is reported as "error" (the run needs a larger heap).
import gc
import json
import sys

gc.collect()
_A0 = gc.mem_alloc()


def _delta(make):
    gc.collect()
    b0 = gc.mem_alloc()
    obj = make()
    gc.collect()
    return obj, gc.mem_alloc() - b0


def parts(gw, cfg):
    """Bytes of each part of the firmware's preallocated state, built once more alone."""
    import fakemqtt
    from bankgate import events, model
    from bankgate.admission import Admission
    from bankgate.bushealth import BusHealth
    from bankgate.diagnose import Diagnoser
    from bankgate.metrics import Metrics
    from bankgate.poller import Poller
    from bankgate.telemetry import Telemetry
    hw, bank, ev = gw.hw, gw.bank, gw.events
    out = {}
    # the admission's constructor imports familycaps, which build_gateway then frees: loaded
    # here first so that the admission part is its records alone
    import bankgate.familycaps  # noqa: F401
    for name, make in (
            ("bank_records", model.Bank),
            ("event_log", lambda: events.EventLog(64)),
            ("poller_and_bus_buffers", lambda: Poller(hw, cfg, bank, ev)),
            ("bus_health", lambda: BusHealth(hw, cfg, bank, gw.poller, ev)),
            ("admission", lambda: Admission(hw, cfg, bank, ev)),
            ("metrics", lambda: Metrics(cfg, bank)),
            ("diagnoser", lambda: Diagnoser(cfg, bank, gw.metrics, ev)),
            ("energy_counters", lambda: __import__("bankgate.energy").energy.Energy(hw.fs)),
            ("telemetry_ring_and_buffers", lambda: Telemetry(fakemqtt.fake_net(fakemqtt.FakeBroker()), cfg, gw))):
        try:
            obj, out[name] = _delta(make)
        except Exception as e:  # noqa: BLE001
            out[name] = "%s: %s" % (type(e).__name__, e)
        obj = None
    # one of each message telemetry encodes (transient: dict + JSON text + bytes)
    t = gw.telemetry
    if t is not None and hasattr(t, "_produce_live"):
        gc.collect()
        b0 = gc.mem_alloc()
        gc.disable()
        from bankgate.telemetry import bank_fields
        d = bank_fields(gw, 0)
        b = json.dumps(d).encode()
        out["transient_bank_message"] = gc.mem_alloc() - b0
        b0 = gc.mem_alloc()
        d = gw.module_snapshot(gw.bank.modules[0])
        b = json.dumps(d).encode()
        out["transient_module_message"] = gc.mem_alloc() - b0
        b0 = gc.mem_alloc()
        if hasattr(t, "_put_stream"):
            # as telemetry writes it: the small rest dict, then the metrics key by key (one
            # 16-element list at a time) into a counting sink; with the GC off this counts
            # every list ever made, an upper bound of what is live at once
            from bankgate import telemetry as tm
            rest = {"bus": gw.health.snapshot(), "inverter": None, "mqtt": t.stats()}
            k = tm._Sink()
            tm._write_metrics(k, 0, gw.metrics, rest)
            out["transient_metrics_message"] = gc.mem_alloc() - b0
            rest = k = None
        else:
            d = {"metrics": gw.metrics.snapshot(), "bus": gw.health.snapshot()}
            b = json.dumps(d).encode()
            out["transient_metrics_message"] = gc.mem_alloc() - b0
        d = b = None
        gc.enable()
    from bankgate import firmware
    firmware.forget("bankgate.familycaps")
    gc.collect()
    b0 = gc.mem_alloc()
    gc.disable()
    snap = gw.snapshot()
    out["transient_whole_snapshot_not_used"] = gc.mem_alloc() - b0
    snap = None
    gc.enable()
    return out


PROBE_FREE = 32 * 1024      # free heap needed for a burst probe (an iteration's garbage: < 8 KB)


FIRMWARE_FIRST = ("bankgate", "bankgate.clock", "bankgate.model", "bankgate.hal", "bankgate.net",
                  "bankgate.proto", "bankgate.proto.errors", "bankgate.proto.fast", "bankgate.proto.frame")


def main(n=16, steps=4000, want_parts=False):
    res = {"modules": n, "steps": steps, "bits": 32 if sys.maxsize < 2 ** 32 else 64}
    gc.collect()
    res["heap_total"] = gc.mem_free() + gc.mem_alloc()
    res["interpreter_bytes"] = _A0
    try:
        # the firmware modules the rig itself imports (fakehw, bmsproto): imported first and
        # counted as firmware (code_bytes, live), not as rig (stub_bytes)
        gc.collect()
        f0 = gc.mem_alloc()
        for name in FIRMWARE_FIRST:
            __import__(name)
        gc.collect()
        pre = gc.mem_alloc() - f0
        res["firmware_preloaded_bytes"] = pre
        before = set(sys.modules)
        import benchrig
        import fakemqtt
        frames = benchrig.build_frames(n)
        if "bmsproto" in sys.modules:
            del sys.modules["bmsproto"]
        import leanmqtt
        from simfs import SimFS
        fs = SimFS()            # the device's flash filesystem (hw.fs): latches and energy persist
        broker = fakemqtt.FakeBroker()
        net = leanmqtt.lean_net(broker)         # allocates nothing while the firmware runs
        gc.collect()
        a1 = gc.mem_alloc()
        res["stub_bytes"] = a1 - _A0 - pre
        # firmware modules the rig imported beyond FIRMWARE_FIRST (their bytes would be
        # charged to the rig): must stay empty (tests/host/test_heap32.py)
        res["preloaded"] = sorted(m for m in sys.modules if m.startswith("bankgate") and m not in before)
        # the configuration, validated as bankgate.firmware.load() does, then the validator
        # (bankgate.config and bankgate.boards) freed: nothing may import it again
        from bankgate import config
        res["frozen"] = getattr(config, "__file__", "/")[:1] != "/"   # frozen: "bankgate/config.py"
        gc.collect()
        c0 = gc.mem_alloc()
        cfg = benchrig.bench_config(n, True)
        config.board_defaults(cfg, {}, {"psram": "none"})   # a plain ESP32, as firmware.load() does
        if RING_BYTES:
            cfg["mqtt"]["ring_bytes"] = RING_BYTES      # what-if figure (`ring=N` argument)
        gc.collect()
        res["config_bytes"] = gc.mem_alloc() - c0
        config = None
        from bankgate import firmware
        firmware.forget("bankgate.config", "bankgate.boards", "bankgate.jsonfile")
        gc.collect()
        a1c = gc.mem_alloc()
        from bankgate import app  # noqa: F401
        from bankgate import poller, bushealth, admission, metrics, diagnose  # noqa: F401
        from bankgate import telemetry  # noqa: F401
        gc.collect()
        a2 = gc.mem_alloc()
        res["code_bytes"] = a2 - a1c + pre
        gw, clock, uart = benchrig.make_gateway(n, frames, net, cfg=cfg, fs=fs)
        gc.collect()
        a3 = gc.mem_alloc()
        res["objects_bytes"] = a3 - a2 + res["config_bytes"]
        live = a3
        used = a3
        burst = 0
        probes = 0
        for k in range(steps):
            if k % 97 == 0:
                gc.collect()
            if k % 97 == 0 and gc.mem_free() >= PROBE_FREE:
                # the burst probe runs the iteration with the GC off, which the device never
                # does: only where the probe cannot be what fails (in a small heap an
                # iteration's garbage -- a burst of HA discovery messages -- then found no
                # room, and the run was charged a failure the firmware does not have)
                gc.disable()
                b0 = gc.mem_alloc()
                gw.step()
                b = gc.mem_alloc() - b0
                gc.enable()
                probes += 1
                if b > burst:
                    burst = b
            else:
                gw.step()
            clock.advance_us(1000)
            m = gc.mem_alloc()
            if m > used:
                used = m
            if k % 500 == 0:
                gc.collect()
                m = gc.mem_alloc()
                if m > live:
                    live = m
        res["live_max_bytes"] = live - a1 + pre
        res["used_max_bytes"] = used - a1 + pre
        res["transient_max"] = burst if probes else None
        res["burst_probes"] = probes
        res["sim_ms"] = clock.ms()
        res["sweeps"] = gw.poller.sweep_count
        res["admitted"] = bin(gw.admission.admitted_mask).count("1")
        res["published"] = broker.publishes
        res["online"] = gw.telemetry.online
        res["telemetry_errors"] = gw.telemetry.internal_errors
        if gw.telemetry.last_exception is not None:
            import io
            buf = io.StringIO()
            sys.print_exception(gw.telemetry.last_exception, buf)
            res["telemetry_exception"] = buf.getvalue()[-600:]
        res["config_reimported"] = "bankgate.config" in sys.modules
        res["loaded"] = sorted(m for m in sys.modules if m.startswith("bankgate"))
        res["ok"] = (res["admitted"] == n and broker.publishes > 0 and gw.telemetry.online
                     and not gw.telemetry.internal_errors)
        if want_parts:
            try:
                res["parts_bytes"] = parts(gw, cfg)
            except MemoryError as e:
                res["parts_error"] = "MemoryError: %s" % (e,)
    except MemoryError as e:
        res["error"] = "MemoryError: %s" % (e,)
        res["ok"] = False
        try:
            import io
            buf = io.StringIO()
            sys.print_exception(e, buf)
            res["where"] = buf.getvalue()[-600:]
        except MemoryError:
            pass
    gc.collect()
    res["free_at_end"] = gc.mem_free()
    return res


def _arg(i, d):
    return int(sys.argv[i]) if len(sys.argv) > i else d


RING_BYTES = 0
for _a in sys.argv[3:]:
    if _a.startswith("ring="):
        RING_BYTES = int(_a[5:])
r = main(_arg(1, 16), _arg(2, 4000), "parts" in sys.argv[3:])
sys.stdout.write("\x1eBENCH " + json.dumps({"alone": r}) + "\n")
