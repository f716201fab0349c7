# The firmware ALONE in a small heap (part of `bankgate bench`):
#
#   micropython -X heapsize=64k bench_alone.py [n] [steps]   -> "\x1eBENCH {"alone": {...}}"
#
# No simulator: 16 modules answer instantly on a fake RS485 port (tools/mp/benchrig.py),
# MQTT telemetry is on and talks to the recording broker stand-in (tools/mp/fakemqtt.py).
# The run builds the Gateway, brings every module in and runs `steps` loop iterations
# (several poll sweeps, telemetry formatting and publishing).  It reports, in bytes of
# this port's heap (gc.mem_alloc after gc.collect unless said otherwise):
#   stub_bytes       the instant-answer frames (not firmware; subtracted everywhere)
#   code_bytes       importing the firmware modules: on the unix port bytecode is loaded
#                    INTO the heap; on the ESP32 the modules are frozen into flash
#                    (firmware/manifest.py) and only their globals live in RAM
#   objects_bytes    the Gateway and everything it preallocates (config dict included),
#                    live after warm-up
#   live_max_bytes   largest live heap of the firmware (code + objects) over the run
#   used_max_bytes   largest heap use seen between collections (live + not yet collected)
#   transient_max    largest allocation burst of one loop iteration (gc disabled)
# An allocation failure is reported as "error" (the run needs a larger heap).
import gc
import json
import sys

gc.collect()
_A0 = gc.mem_alloc()


def main(n=16, steps=4000):
    res = {"modules": n, "steps": steps}
    gc.collect()
    res["heap_total"] = gc.mem_free() + gc.mem_alloc()
    res["interpreter_bytes"] = _A0
    try:
        import benchrig
        frames = benchrig.build_frames(n)
        if "bmsproto" in sys.modules:
            del sys.modules["bmsproto"]
        gc.collect()
        a1 = gc.mem_alloc()
        res["stub_bytes"] = a1 - _A0
        import fwcompat
        fwcompat.ensure_firmware()
        import fakemqtt
        from bankgate import config  # noqa: F401
        from bankgate import app  # noqa: F401
        from bankgate import poller, bushealth, admission, metrics, diagnose  # noqa: F401
        from bankgate import telemetry  # noqa: F401
        gc.collect()
        a2 = gc.mem_alloc()
        res["code_bytes"] = a2 - a1
        # a breakdown of the biggest preallocated parts (built separately, then dropped)
        parts = {}
        gc.collect()
        b0 = gc.mem_alloc()
        cfg = benchrig.bench_config(n, True)
        gc.collect()
        parts["config_dict"] = gc.mem_alloc() - b0
        from bankgate.model import Bank
        b0 = gc.mem_alloc()
        bank = Bank()
        gc.collect()
        parts["bank_16_modules"] = gc.mem_alloc() - b0
        b0 = gc.mem_alloc()
        mt = metrics.Metrics(cfg, bank)
        gc.collect()
        parts["metrics"] = gc.mem_alloc() - b0
        res["parts_bytes"] = parts
        del cfg, bank, mt
        gc.collect()
        broker = fakemqtt.FakeBroker()
        net = fakemqtt.fake_net(broker)
        gw, clock, uart = benchrig.make_gateway(n, frames, net)
        gc.collect()
        a3 = gc.mem_alloc()
        res["objects_bytes"] = a3 - a2
        live = a3
        used = a3
        burst = 0
        for k in range(steps):
            if k % 97 == 0:
                gc.collect()
                gc.disable()
                b0 = gc.mem_alloc()
                gw.step()
                b = gc.mem_alloc() - b0
                gc.enable()
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
        res["live_max_bytes"] = live - a1
        res["used_max_bytes"] = used - a1
        res["transient_max"] = burst
        res["sim_ms"] = clock.ms()
        res["sweeps"] = gw.poller.sweep_count
        res["admitted"] = bin(gw.admission.admitted_mask).count("1")
        res["published"] = broker.publishes
        res["online"] = gw.telemetry.online
        res["missing"] = list(fwcompat.MISSING)
        res["ok"] = res["admitted"] == n and broker.publishes > 0
    except MemoryError as e:
        res["error"] = "MemoryError: %s" % (e,)
        res["ok"] = False
    gc.collect()
    res["free_at_end"] = gc.mem_free()
    return res


def _arg(i, d):
    return int(sys.argv[i]) if len(sys.argv) > i else d


r = main(_arg(1, 16), _arg(2, 4000))
sys.stdout.write("\x1eBENCH " + json.dumps({"alone": r}) + "\n")
