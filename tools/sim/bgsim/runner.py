# The scenario runner: the REAL firmware main loop (bankgate.app.Gateway) on fake
# hardware (tools/fakes/fakehw.py, tools/fakes/fakebus.py) against the bank model
# (bgsim.physics + bgsim.bms + bgsim.emu), in simulated time, reporting JSON lines.
#
#   sim = Simulation(scenario_dict, out=callable(line_dict))
#   rc = sim.run(until_s=None)          # simulated time, as fast as it computes
#   rc = sim.run_realtime(until_s=None, speed=1.0)   # clock follows wall time
#
# Wiring (what the firmware sees is exactly what a board gives it):
#   hw.outputs[name]   FakePin; on_change drives the model's contactor coil
#   hw.inputs[name]    auxiliary feedback contacts: follow the CONTACTS (a welded
#                      contactor keeps its feedback closed)
#   hw.link_sensor     read_mv(): the DC-link voltage of the model
#   hw.uart            FakeUart on a FakeRs485Wire; each module's BMS is a responder, and
#                      wire.route calls only the one(s) at the request's address (a wrapper
#                      put around sim.wire.responders[i] sees only the requests module i's
#                      BMS would answer; set sim.wire.route = None to see every request)
#   hw.can_modules     FakeCan on the module CAN bus (bank.bus "can"): modules broadcast
#   hw.can_inverter    FakeCan on the inverter bus; the simulated inverter on the
#                      other end sends the 0x305 heartbeat, records every frame and
#                      (obey_limits) clips its current to the 0x351 limits / 0x35C
#                      enable flags it last received
# Schedule on the SimClock: a physics step every step_ms (and, exactly, at every
# coil change and link-voltage read), inverter service every step, timeline
# actions at their times, expectation checks every check_ms, a state line every
# report_s.
#
# Output lines (dicts handed to `out`, printed as JSON by the CLI):
#   {"t", "type": "start"|"state"|"event"|"can"|"mqtt"|"action"|"expect"|"error"|"result", ...}
#   {"t", "type": "reboot", "kind": "hard"|"soft", "why", "boot": n} when the firmware restarts
# Reboot and power loss (docs/scenarios.md, "Reboot and power loss"): hw.fs is a
# simulated device filesystem (simfs.SimFS) that belongs to the simulation and
# survives a reboot; a `reboot` action or a power cut armed by `fs_cut` raises
# simfs.DeviceReset inside the running firmware, _run_fw catches it, the outputs
# are released (a reset does that) and a new Gateway starts on the same hardware,
# physics and contacts (a welded contact stays welded).
# Exit codes: 0 every expectation held, 1 some failed, 2 invalid scenario/config,
# 3 the firmware could not be started.
import micropython
import gc
import json
import sys
import time

from bankgate import config as bgconfig
from bankgate.events import EVENT_NAMES

import fakebus
from fakehw import FakeHardware, SimClock
from simfs import DeviceReset, SimFS
from bgsim import emu
from bgsim import scenario as sc
from bgsim.bms import Bms, alarm_bits
from bgsim.physics import Contactor, Fuse, SimBank, SimModule, cable_ohm

RC_OK = 0
RC_FAILED = 1
RC_INVALID = 2
RC_FIRMWARE = 3

_CAN_MOD_PERIOD_US = 1000000
_HEARTBEAT_US = 1000000

# Collect after this many bytes were allocated (gc.threshold) while a scenario runs.
# The unix port allocates the frame of a bytecode function with more than ~11 words
# of locals + stack on the heap and frees it on return; a freed block pulls the
# allocator's search start back, and every allocation of two or more blocks then
# scans from there over everything allocated since the last collection.  Without a
# threshold the heap fills completely between collections and that scan came to
# ~75 % of the run time (perf: gc_alloc).  The simulator's hot paths are now
# @micropython.native (no heap frame) and allocate far less, which moved the
# optimum from 192 kB to 768 kB (16 modules, best of 3: 25.9 -> 20.4 ms CPU per
# simulated second; docs/scenarios.md, "Speed").
GC_THRESHOLD = 768 * 1024


def _r(x, nd=3):
    return round(x, nd) if isinstance(x, float) else x


def _one_of(v, want):
    return v in want if isinstance(want, list) else v == want


def print_line(d):
    """One JSON line, "t" and "type" first (MicroPython dicts have no order)."""
    d = dict(d)
    head = '{"t": %s, "type": %s' % (json.dumps(d.pop("t", None)), json.dumps(d.pop("type", None)))
    rest = json.dumps(d)
    sys.stdout.write(head + (", " + rest[1:] if len(rest) > 2 else "}"))
    sys.stdout.write("\n")


class LinkSensor:
    """hw.link_sensor: DC-link voltage of the model, brought up to date first."""

    def __init__(self, sim, where="link"):
        self.sim = sim
        self.where = where           # "link": inverter side; "bus": battery busbar

    @micropython.native
    def read_mv(self):
        sim = self.sim
        if self.where == "bus":
            sim.advance()
            return int(round(sim.bank.bus_v * 1000))
        dt = (sim.clock.now_us - sim.t_phys_us) / 1e6
        return int(round(sim.bank.link_v_after(dt) * 1000))


class Inverter:
    """The simulated inverter: a current profile (+ = charging the bank), limited by
    what the gateway tells it on CAN when obey_limits is set."""

    def __init__(self, spec):
        self.profile = spec["profile"]
        self.interp = spec["interp"]
        self.repeat_s = spec["repeat_s"]
        self.t0 = 0.0
        self.obey = spec["obey_limits"]
        self.min_v = spec["min_v"]
        self.heartbeat = spec["heartbeat"]
        self.override_a = None
        self.ccl_a = None            # last 0x351 limits received (None: never)
        self.dcl_a = None
        self.flags = None            # last 0x35C flags
        self.frames = 0

    @micropython.native
    def requested(self, t_s):
        if self.override_a is not None:
            return self.override_a
        return sc.profile_at(self.profile, t_s - self.t0, self.interp, self.repeat_s)

    @micropython.native
    def current(self, bank):
        if bank.link_v < self.min_v:
            return 0.0
        i = self.requested(bank.t_s)
        if self.obey:
            if self.ccl_a is None:
                return 0.0
            if i > 0:
                lim = self.ccl_a if (self.flags is None or self.flags & 0x80) else 0.0
                i = min(i, lim)
            elif i < 0:
                lim = self.dcl_a if (self.flags is None or self.flags & 0x40) else 0.0
                i = max(i, -lim)
        return i

    def frame(self, cid, data):
        self.frames += 1
        if cid == 0x351 and len(data) >= 6:
            self.ccl_a = ((data[2] | (data[3] << 8)) ^ 0x8000) - 0x8000
            self.ccl_a = abs(self.ccl_a) / 10.0
            d = ((data[4] | (data[5] << 8)) ^ 0x8000) - 0x8000
            self.dcl_a = abs(d) / 10.0
        elif cid == 0x35C and len(data) >= 1:
            self.flags = data[0]


class Simulation:
    def __init__(self, scen, out=None, net=None, all_frames=False):
        self.s = scen
        self.out = out or print_line
        self.all_frames = all_frames
        self.cfg = bgconfig.validate(scen["config"])
        cfg = self.cfg
        self.clock = clock = SimClock(tick_start_ms=scen["device"]["tick_start_ms"])
        cc = cfg["contactors"]
        inputs = list(cc["feedback"])
        for key in ("reset_input", "link_isolated_input"):
            if cc.get(key) and cc[key] not in inputs:
                inputs.append(cc[key])
        self.hw = hw = FakeHardware(clock, outputs=cc["outputs"], inputs=inputs)
        hw.fs = self.fs = SimFS()    # the device filesystem: survives a simulated reboot
        self.boots = 1
        self.step_us = scen["step_ms"] * 1000
        self.t_phys_us = 0
        self.failed_start = None

        # -- modules and their branches
        self.mods = []
        self.bmses = []
        for i, f in enumerate(scen["modules"]):
            m, b = self._build_module(i, f)
            self.mods.append(m)
            self.bmses.append(b)
        term = scen["terminal"]
        self.contactors = {}
        main = pre = None
        self.disconnect = None
        self.iso_pin = None
        fb = cc["feedback"]
        outs = cc["outputs"]
        if cfg["gating"]["topology"] == "main":
            main = Contactor(outs[0], hw.inputs[fb[0]] if fb else None)
            pre = Contactor(outs[1], hw.inputs[fb[1]] if fb else None)
            self.contactors[outs[0]] = main
            self.contactors[outs[1]] = pre
        else:
            # the main battery disconnect (manual) between the busbar and the inverter's
            # DC link; its auxiliary contact is the firmware's "link isolated" input
            iso = hw.inputs.get(cc.get("link_isolated_input") or "")
            self.disconnect = Contactor("disconnect", None)
            self.disconnect.set_coil(1 if term["disconnect"] else 0)
            self.iso_pin = iso
            main = self.disconnect
            # branch k is wired to the k-th module of the scenario (its position, not its
            # address: a wrong DIP switch does not move a cable), unless a module names
            # its output explicitly
            explicit = [f["output"] for f in scen["modules"] if f["output"] is not None]
            for k, name in enumerate(outs):
                idx = -1
                for i, f in enumerate(scen["modules"]):
                    if f["output"] == name:
                        idx = i
                if idx < 0 and name not in explicit and k < len(scen["modules"]) \
                        and scen["modules"][k]["output"] is None:
                    idx = k
                c = Contactor(name, hw.inputs[fb[k]] if fb else None)
                self.contactors[name] = c
                if idx >= 0:
                    self.mods[idx].contactor = c
        for name, c in self.contactors.items():
            c._sync()
            hw.outputs[name].on_change = self._coil_handler(c)
        self.bank = bank = SimBank(self.mods, link_c_f=term["link_uf"] * 1e-6,
                                   bleed_ohm=term["bleed_ohm"], main=main, precharge=pre,
                                   precharge_ohm=term["precharge_ohm"],
                                   main_ohm=term["main_mohm"] / 1000.0, link_v=term["link_v"])
        mode = term["link_sensor"]
        if mode == "auto":
            mode = "none" if (pre is None and cc.get("link_isolated_input")) else "link"
        self.sensor_mode = mode
        if mode != "none":
            hw.link_sensor = LinkSensor(self, mode)
        self._sync_iso()
        self.inverter = Inverter(scen["inverter"])
        bank.inverter = self.inverter.current
        bank.inv_min_v = scen["inverter"]["min_v"]
        bank.inv_max_v = scen["inverter"]["max_v"]

        # -- module bus
        b = cfg["bank"]
        bus = scen["bus"]
        self.family = bus["family"] or b["family"]
        baud = bus["baud"] or b["baud"]
        self.is_can = b["bus"] == "can"
        self.wire = None
        self.mod_can = []
        self._can_cache = [None] * len(self.bmses)   # per module: ((gen, addr), frame set)
        if self.is_can:
            model = fakebus.ElectricalModel(terminators=bus["terminators"], length_m=bus["cable_m"],
                                            bitrate=baud, noise_ppm=int(bus["noise"] * 1e6),
                                            nodes=len(self.mods) + 1)
            self.mbus = fakebus.FakeCanBus(clock, baud, model, scen["seed"])
            hw.can_modules = fakebus.FakeCan(self.mbus, tx_queue_len=8, rx_queue_len=64, name="gw")
            for i, bm in enumerate(self.bmses):
                node = fakebus.FakeCan(self.mbus, tx_queue_len=8, name="m%d" % i)
                self.mod_can.append(node)
                clock.at_us(20000 + 37000 * i, self._can_module_tick, i)
        else:
            model = fakebus.ElectricalModel(terminators=bus["terminators"], length_m=bus["cable_m"],
                                            bitrate=baud, noise_ppm=int(bus["noise"] * 1e6),
                                            nodes=len(self.mods) + 1)
            self.wire = fakebus.FakeRs485Wire(clock, baud, model, scen["seed"])
            peers = []
            for bm in self.bmses:
                r = emu.Rs485Bms(bm, self.family, peers, None, self._stamp)
                peers.append(r)
                self.wire.attach(r)
            self.responders = peers
            self.wire.route = self._route
            self._route_buf = []
            self.uart = fakebus.FakeUart(self.wire)
            hw.uart = self.uart
            hw.de_pin = self.uart.de
        # -- inverter bus
        self.ibus = fakebus.FakeCanBus(clock, 500000, None, scen["seed"] + 1)
        hw.can_inverter = fakebus.FakeCan(self.ibus, tx_queue_len=8, name="gw-inv")
        self.inv_can = fakebus.FakeCan(self.ibus, tx_queue_len=4, rx_queue_len=64, name="inverter")
        self._rxbuf = bytearray(8)
        self._last_frame = {}
        self._in_uart = hw.uart
        self._in_cm = hw.can_modules
        self._in_ci = hw.can_inverter
        hw.input_ready = self._input_ready

        # -- network: with MQTT enabled and no real network given, a recording
        # stand-in broker (tools/fakes/fakemqtt.py) receives what the gateway publishes
        self.broker = None
        if net is None and cfg["mqtt"]["enabled"]:
            import fakemqtt
            self.broker = fakemqtt.FakeBroker()
            self.broker.on_publish = self._on_publish
            if not scen["mqtt"]["broker"]:
                self.broker.set_broker(False)
            net = fakemqtt.fake_net(self.broker)
        self.mqtt_messages = 0

        # -- firmware
        self.gw = None
        self.net = net
        if scen["firmware"]:
            try:
                from bankgate.app import Gateway
                self.gw = Gateway(hw, cfg, net)
            except ImportError as e:
                self.failed_start = "firmware not available: %s" % (e,)

        # Wake the firmware's idle when a clean answer is complete, not at its first byte
        # (fakebus.FakeUart.wake_first_byte): ~2 loop iterations per request instead of 5.
        # Not with MQTT: the telemetry client is serviced on every loop iteration and has
        # no deadline of its own in Gateway.step's wait, so its timing follows how often
        # the loop wakes; those runs keep the byte-level wake-ups (and their timing).
        if self.wire is not None and (self.gw is None or self.gw.telemetry is None):
            self.uart.wake_first_byte = False

        # -- bookkeeping
        self.ev_seq = 0
        self.events_seen = []
        self._evbuf = [0, 0, 0, 0, 0]
        self.expect = [dict(e, _i=i) for i, e in enumerate(scen["expect"])]
        for e in self.expect:
            e["_state"] = None       # None pending, True held, False failed
            e["_detail"] = ""
        self._snap = None
        self._snap_t = -1
        self._part_t = -1
        self._parts = {}
        self._report_t = -1
        self.truncated = False

    # ------------------------------------------------------------ building
    def _build_module(self, i, f):
        if f["cable_mohm"] is not None:
            r_cable = f["cable_mohm"] / 1000.0
        else:
            r_cable = cable_ohm(f["cable_m"], f["cable_mm2"])
        fuse = Fuse(f["fuse_a"], f["fuse_i2t_a2s"], f["fuse_trip_factor"], f["fuse_trip_s"])
        m = SimModule(i, chemistry=f["chemistry"], cells=f["cells"],
                      capacity_ah=f["capacity_mah"] / 1000.0 * f["soh_pct"] / 100.0,
                      soc=f["soc_pct"] / 100.0, r_int_ohm=f["r_int_mohm"] / 1000.0,
                      r_cable_ohm=r_cable, r_lug_ohm=f["lug_mohm"] / 1000.0,
                      ambient_c=f["ambient_c"], temp_c=f["temp_c"], rth_k_w=f["rth_k_w"],
                      tau_s=f["tau_s"], term_rth_k_w=f["term_rth_k_w"], term_tau_s=f["term_tau_s"],
                      cell_spread_v=f["cell_spread_mv"] / 1000.0, fuse=fuse)
        m.breaker = f["breaker"]
        b = Bms(m, f["addr"], serial=f["serial"], model=f["model"], manufacturer=f["manufacturer"],
                sw_version=f["sw_version"], design_ah=f["capacity_mah"] / 1000.0,
                chg_rated_a=f["chg_limit_a"], dsg_rated_a=f["dsg_limit_a"], oc_protect=f["oc_protect"],
                oc_delay_s=f["oc_delay_s"], ot_alarm_c=f["ot_alarm_c"], ut_alarm_c=f["ut_alarm_c"],
                recover_s=f["recover_s"], taper_soc=f["taper_soc_pct"] / 100.0, cycles=f["cycles"])
        b.plugged = f["plugged"]
        b.update(0.0, 0.0)
        return m, b

    def _sync_iso(self):
        if self.iso_pin is not None and self.disconnect is not None:
            self.iso_pin.value(0 if self.disconnect.closed else 1)

    def _on_publish(self, topic, payload):
        self.mqtt_messages += 1
        try:
            p = bytes(payload).decode()
        except UnicodeError:
            p = "".join("%02X" % x for x in payload)
        self.out({"t": self.t(), "type": "mqtt", "topic": bytes(topic).decode(), "payload": p})

    def _stamp(self):
        return self.t_phys_us

    @micropython.native
    def _route(self, req):
        # the wire calls only the responders this returns: an emulated BMS answers
        # nothing unless it is plugged and the request is a frame for its address
        # (bgsim.emu.Rs485Bms.__call__), so the others need not be asked
        out = self._route_buf
        del out[:]
        p = emu.parse_request(req)
        if p is None:
            return out
        adr = p[1]
        bms = self.bmses
        for i in range(len(bms)):
            b = bms[i]
            if b.addr == adr and b.plugged:
                out.append(i)
        return out

    @micropython.native
    def _input_ready(self):
        # hw.input_ready: does any bus have input for the firmware (idle wake-up)
        u = self._in_uart
        if u is not None and u.any() > 0:
            return True
        cm = self._in_cm
        if cm is not None and cm.any() > 0:
            return True
        return self._in_ci.any() > 0

    def _coil_handler(self, c):
        def h(v):
            self.advance()
            c.set_coil(v)
        return h

    # ------------------------------------------------------------ physics
    @micropython.native
    def advance(self):
        """Integrate the model up to the clock's current time."""
        now = self.clock.now_us
        dt_us = now - self.t_phys_us
        if dt_us <= 0:
            return
        self.t_phys_us = now
        dt = dt_us / 1e6
        self.bank.step(dt)
        t = self.bank.t_s
        for b in self.bmses:
            b.update(t, dt)

    @micropython.native
    def _tick(self):
        self.advance()
        self._inverter_service()
        self.clock.after_us(self.step_us, self._tick)

    @micropython.native
    def _inverter_service(self):
        ic = self.inv_can
        buf = self._rxbuf
        t = self.t()
        while True:
            r = ic.recv(buf)
            if r < 0:
                break
            cid = r >> 4
            data = bytes(buf[:r & 0xF])
            self.inverter.frame(cid, data)
            if self.all_frames or self._last_frame.get(cid) != data:
                self._last_frame[cid] = data
                self._drain_events()      # earlier events first: the output's t only goes forward
                self.out({"t": t, "type": "can", "id": "0x%03X" % cid,
                          "data": "".join("%02X" % x for x in data)})

    @micropython.native
    def _heartbeat(self):
        if self.inverter.heartbeat:
            self.inv_can.send(0x305, bytes(8), 8)
        self.clock.after_us(_HEARTBEAT_US, self._heartbeat)

    @micropython.native
    def _can_module_tick(self, i):
        # The frame set carries the BMS's state of the latest physics step (as an RS485
        # answer does: bgsim.emu.Rs485Bms), built once per change of the BMS's integers
        # (Bms.gen) and address, not per send.
        bm = self.bmses[i]
        if bm.plugged:
            r = bm.report(self.t_phys_us)
            key = (bm.gen, bm.addr)
            c = self._can_cache[i]
            if c is None or c[0] != key:
                c = self._can_cache[i] = (key, emu.can_frames(r, bm.addr))
            node = self.mod_can[i]
            for cid, data in c[1]:
                node.send(cid, data, len(data))
        self.clock.after_us(_CAN_MOD_PERIOD_US, self._can_module_tick, i)

    # ------------------------------------------------------------ timeline
    def _action(self, ev):
        self.advance()
        do = ev["do"]
        line = {"t": self.t(), "type": "action", "do": do}
        for k in ev:
            if k not in ("at", "do"):
                line[k] = ev[k]
        self.out(line)
        i = ev.get("module")
        m = self.mods[i] if i is not None else None
        b = self.bmses[i] if i is not None else None
        if do == "set":
            if "field" in ev:
                self._set_module(i, ev["field"], ev["value"])
            elif "bus" in ev:
                self._set_bus(ev["bus"], ev["value"])
            elif "inverter" in ev:
                k = ev["inverter"]
                if k == "current_a":
                    self.inverter.override_a = ev["value"]
                elif k in ("obey_limits", "min_v", "heartbeat", "repeat_s", "interp"):
                    setattr(self.inverter, {"obey_limits": "obey"}.get(k, k), ev["value"])
                else:
                    raise sc.ScenarioError("timeline", "unknown inverter field %r" % k)
            elif "terminal" in ev:
                k = ev["terminal"]
                if k == "link_uf":
                    self.bank.link_c_f = ev["value"] * 1e-6
                elif k == "bleed_ohm":
                    self.bank.bleed_ohm = float(ev["value"])
                elif k == "precharge_ohm":
                    self.bank.precharge_ohm = float(ev["value"])
                else:
                    raise sc.ScenarioError("timeline", "unknown terminal field %r" % k)
        elif do == "unplug":
            b.plugged = False
        elif do == "plug":
            b.plugged = True
        elif do == "address":
            b.addr = ev["value"]
        elif do == "alarm":
            until = self.bank.t_s + ev["for_s"] if "for_s" in ev else 1e18
            b.inject(alarm_bits(ev["alarms"]), ev.get("protect", False), until, ev.get("trip", False))
            b.update(self.bank.t_s, 0.0)
        elif do == "clear_alarm":
            b.clear_injected()
        elif do == "freeze":
            b.frozen = bool(ev.get("value", True))
        elif do == "skew_voltage":
            b.skew_mv = int(ev["mv"])
        elif do == "blow_fuse":
            m.fuse.blown = True
            m.fuse.t_blown_s = self.bank.t_s
        elif do == "replace_fuse":
            m.fuse.replace()
        elif do == "loosen_lug":
            m.r_lug_ohm = ev["mohm"] / 1000.0
        elif do == "breaker":
            m.breaker = bool(ev["value"])
        elif do in ("weld", "stick", "free"):
            c = self.contactors.get(ev["output"])
            if c is None:
                raise sc.ScenarioError("timeline", "no contactor output %r" % ev["output"])
            c.set_mode({"weld": "welded", "stick": "stuck", "free": "normal"}[do])
        elif do == "output":
            self.hw.outputs[ev["output"]].value(ev["value"])
        elif do == "heartbeat":
            self.inverter.heartbeat = bool(ev["value"])
        elif do == "inverter":
            if "profile" in ev:
                self.inverter.profile = ev["profile"]
                self.inverter.t0 = self.bank.t_s
                self.inverter.override_a = None
            if "current_a" in ev:
                self.inverter.override_a = ev["current_a"]
        elif do == "mqtt_broker":
            self.broker_up = bool(ev["value"] in (True, "start", "up", 1))
            target = self.broker if self.broker is not None else self.net
            hook = getattr(target, "set_broker", None)
            if hook is not None:
                hook(self.broker_up)
        elif do == "disconnect":
            if self.disconnect is None:
                raise sc.ScenarioError("timeline", "disconnect: only in branch topology")
            self.disconnect.set_coil(1 if ev["value"] else 0)
            self._sync_iso()
        elif do == "reset_faults":
            if self.gw is not None:
                self.gw.admission.reset_faults(self.clock.ticks_ms())
        elif do == "reboot":
            if self.gw is not None:
                raise DeviceReset(ev.get("value", "hard"), "timeline")
        elif do == "fs_cut":
            self.fs.cut(ev.get("op", 1), ev.get("keep", 0))
        elif do == "fs_fail":
            self.fs.fail(ev["value"])
        elif do == "fs_corrupt":
            self.fs.corrupt(ev.get("path", "latches.bin"), ev.get("byte", 0))

    # ------------------------------------------------------------ reboot
    def _run_fw(self, stop):
        """gw.run(stop), restarting the firmware whenever the device resets."""
        while True:
            try:
                self.gw.run(stop)
                return
            except DeviceReset as r:
                self._reboot(r)

    def _reboot(self, r):
        """The device restarted: RAM (the Gateway) is lost, the outputs were released
        (Gateway.run's fail-safe exit; a reset de-energises every coil), the simulated
        filesystem, the physics and the contacts carry on.  hard: ticks restart at 0."""
        from bankgate.app import Gateway
        hw = self.hw
        clk = self.clock
        while True:
            hw.release_all()
            self._drain_events()
            self.gw = None
            self.boots += 1
            if r.kind == "hard":
                clk.set_ticks_ms(0)     # a hard reset restarts the tick counters
            self.out({"t": self.t(), "type": "reboot", "kind": r.kind, "why": r.why,
                      "boot": self.boots})
            # the peripherals restart empty: what waited in the receive buffers is lost
            buf = self._rxbuf
            if self._in_uart is not None:
                while self._in_uart.any() > 0 and self._in_uart.readinto(buf):
                    pass
            for c in (self._in_cm, self._in_ci):
                while c is not None and c.recv(buf) >= 0:
                    pass
            self._snap = None
            self._snap_t = -1
            self._part_t = -1
            self._parts = {}
            self.ev_seq = 0
            gc.collect()
            try:
                self.gw = Gateway(hw, self.cfg, self.net)
                return
            except DeviceReset as again:     # power lost while the new firmware wrote
                r = again

    def _set_module(self, i, k, v):
        m = self.mods[i]
        b = self.bmses[i]
        if k == "soc_pct":
            m.soc = v / 100.0
        elif k == "r_int_mohm":
            m.r_int_ohm = v / 1000.0
        elif k == "cable_mohm":
            m.r_cable_ohm = v / 1000.0
        elif k in ("cable_m", "cable_mm2"):
            f = self.s["modules"][i]
            f[k] = v
            m.r_cable_ohm = cable_ohm(f["cable_m"], f["cable_mm2"])
        elif k == "lug_mohm":
            m.r_lug_ohm = v / 1000.0
        elif k == "temp_c":
            m.temp_c = float(v)
        elif k == "ambient_c":
            m.ambient_c = float(v)
        elif k == "cell_spread_mv":
            m.cell_spread_v = v / 1000.0
        elif k == "capacity_mah":
            m.capacity_ah = v / 1000.0
        elif k == "soh_pct":
            m.capacity_ah = b.design_ah * v / 100.0
        elif k in ("chg_limit_a", "dsg_limit_a"):
            setattr(b, k.replace("limit", "rated"), float(v))
        elif k == "plugged":
            b.plugged = bool(v)
        elif k == "breaker":
            m.breaker = bool(v)
        elif k == "addr":
            b.addr = v
        elif k in ("serial", "model", "manufacturer"):
            setattr(b, k, v)
        elif k == "sw_version":
            from bgsim.bms import _version
            b.sw_version = _version(v)
        elif k in ("ot_alarm_c", "ut_alarm_c", "recover_s", "oc_protect", "oc_delay_s"):
            setattr(b, k, float(v))
        elif k in ("rth_k_w", "tau_s", "term_rth_k_w", "term_tau_s"):
            setattr(m, k, float(v))
        elif k == "fuse_a":
            m.fuse.rating_a = float(v)
        else:
            raise sc.ScenarioError("timeline", "module field %r cannot be changed while running" % k)
        b.update(self.bank.t_s, 0.0)

    def _set_bus(self, k, v):
        w = self.wire
        if w is None:
            bus = self.mbus
            if k == "noise":
                bus.set_error_ppm(int(v * 1e6))
                return
            raise sc.ScenarioError("timeline", "CAN module bus: only noise can be set")
        spec = dict(self.s["bus"])
        spec[k] = v
        self.s["bus"] = spec
        if k in ("noise", "terminators", "cable_m"):
            w.model = fakebus.ElectricalModel(terminators=spec["terminators"], length_m=spec["cable_m"],
                                              bitrate=w.baud, noise_ppm=int(spec["noise"] * 1e6),
                                              nodes=len(self.mods) + 1)
            w.error_ppm = w.model.byte_error_ppm
        else:
            raise sc.ScenarioError("timeline", "bus field %r cannot be changed while running" % k)

    # ------------------------------------------------------------ observation
    @micropython.native
    def t(self):
        return round(self.clock.now_us / 1e6, 3)

    def snapshot(self):
        """gw.snapshot() once per instant (it allocates)."""
        if self.gw is None:
            return None
        if self._snap_t != self.clock.now_us:
            # no fallback: a snapshot that fails is a firmware failure and fails the run
            self._snap = self.gw.snapshot()
            self._snap_t = self.clock.now_us
        return self._snap

    def sim_state(self):
        mods = []
        for m, b in zip(self.mods, self.bmses):
            mods.append({
                "addr": b.addr, "soc_pct": _r(m.soc * 100, 2), "current_a": _r(m.current_a, 2),
                "voltage_v": _r(m.terminal_v(), 3), "temp_c": _r(m.temp_c, 2), "term_c": _r(m.term_c, 2),
                "conducting": m.conducting(), "fuse_blown": m.fuse.blown, "bms_open": m.bms_open,
                "plugged": b.plugged, "alarms": b.alarms, "protections": b.protections,
            })
        bk = self.bank
        return {"link_v": _r(bk.link_v), "bus_v": _r(bk.bus_v), "bank_a": _r(bk.bank_a, 2),
                "inverter_a": _r(bk.inverter_a, 2), "modules": mods}

    @micropython.native
    def sim_value(self, field, i=None):
        bk = self.bank
        if field == "link_v":
            return bk.link_v
        if field == "bus_v":
            return bk.bus_v
        if field == "bank_a":
            return bk.bank_a
        if field == "inverter_a":
            return bk.inverter_a
        if field == "soc_spread_pct":
            hi = lo = self.mods[0].soc
            for m in self.mods:
                if m.soc > hi:
                    hi = m.soc
                if m.soc < lo:
                    lo = m.soc
            return (hi - lo) * 100
        if field == "max_abs_current_a":
            return max(abs(m.current_a) for m in self.mods)
        m = self.mods[i]
        b = self.bmses[i]
        if field == "soc_pct":
            return m.soc * 100
        if field == "current_a":
            return m.current_a
        if field == "voltage_v":
            return m.terminal_v()
        if field == "ocv_v":
            return m.ocv()
        if field == "temp_c":
            return m.temp_c
        if field == "term_c":
            return m.term_c
        if field == "fuse_blown":
            return m.fuse.blown
        if field == "bms_open":
            return m.bms_open
        if field == "conducting":
            return m.conducting()
        if field == "contactor_closed":
            return m.contactor.closed if m.contactor is not None else None
        if field == "charge_ah":
            return m.charge_ah
        if field == "r_branch_mohm":
            return m.r_total() * 1000
        if field == "bms_alarms":
            return b.alarms
        if field == "bms_protections":
            return b.protections
        if field == "chg_limit_a":
            return b.chg_limit_a
        if field == "dsg_limit_a":
            return b.dsg_limit_a
        if field == "bms_trips":
            return b.trips
        raise KeyError(field)

    @micropython.native
    def _drain_events(self):
        gw = self.gw
        if gw is None:
            return
        ev = gw.events
        start = self.ev_seq + 1
        if start < ev.oldest():
            self.out({"t": self.t(), "type": "event", "name": "lost", "count": ev.oldest() - start})
            start = ev.oldest()
        buf = self._evbuf
        for seq in range(start, ev.seq + 1):
            if ev.get(seq, buf):
                name = EVENT_NAMES.get(buf[1], str(buf[1]))
                self.events_seen.append((name, buf[2], buf[3], buf[4]))
                self.out({"t": round(buf[0] / 1000.0, 3), "type": "event", "seq": seq, "name": name,
                          "addr": buf[2], "a": buf[3], "b": buf[4]})
        self.ev_seq = ev.seq

    def report(self):
        if self._report_t == self.clock.now_us:
            return
        self._report_t = self.clock.now_us
        self.advance()
        self._drain_events()
        line = {"t": self.t(), "type": "state", "sim": self.sim_state()}
        snap = self.snapshot()
        if snap is not None:
            line["bank"] = snap.get("state")
            line["gw"] = snap
        self.out(line)

    def _report_tick(self):
        self.report()
        self.clock.after_us(int(self.s["report_s"] * 1e6), self._report_tick)

    # ------------------------------------------------------------ expectations
    @micropython.native
    def _gw_part(self, part, arg=None):
        """One part of gw.snapshot() without building the whole snapshot (the checks
        run every check_ms; a 16-module snapshot is tens of kB of garbage):
          "state"      snapshot["state"]          (admission bank state name)
          "module"     the snapshot["modules"] entry with addr == arg, or None
          "diagnoses"  snapshot["diagnoses"]
        computed with the same firmware functions gw.snapshot() uses, once per instant;
        falls back to the full snapshot when the firmware lacks a piece."""
        if self.gw is None:
            return None
        now = self.clock.now_us
        if self._part_t != now:
            self._part_t = now
            self._parts = {}
        key = (part, arg)
        if key in self._parts:
            return self._parts[key]
        gw = self.gw
        v = None
        try:
            if part == "state":
                from bankgate.admission import STATE_NAMES
                v = STATE_NAMES[gw.admission.state]
            elif part == "module":
                v = None
                for m in gw.bank.modules:
                    if m.addr >= 0 and m.addr == arg:
                        v = gw.module_snapshot(m)
                        break
            elif part == "diagnoses":
                v = gw.diagnoser.snapshot()
            else:
                raise KeyError(part)
        except (AttributeError, TypeError, KeyError, ValueError, IndexError, ImportError):
            snap = self.snapshot()
            if snap is None:
                v = None
            elif part == "module":
                v = None
                for md in snap.get("modules", ()):
                    if md.get("addr") == arg:
                        v = md
                        break
            else:
                v = snap.get(part)
        self._parts[key] = v
        return v

    def _mod_view(self, i):
        """(state, reason) of scenario module i as the firmware sees it, by its address."""
        if self.gw is None:
            return None, None
        md = self._gw_part("module", self.bmses[i].addr)
        if md is None:
            return "absent", None
        return md.get("state"), md.get("reason")

    def _diag_present(self, code, i=None):
        d = self._gw_part("diagnoses")
        if d is None:
            return False
        items = d
        if isinstance(d, dict):
            items = d.get("active", d)
        if isinstance(items, dict):
            found = code in items
            return found
        addr = self.bmses[i].addr if i is not None else None
        for it in items:
            if isinstance(it, dict):
                if code in (it.get("name"), it.get("code")) and \
                        (addr is None or it.get("addr", it.get("module")) in (addr, None)):
                    return True
            elif it == code:
                return True
        return False

    @staticmethod
    @micropython.native
    def _match(val, e):
        if "eq" in e and val != e["eq"]:
            return False
        if "ne" in e and val == e["ne"]:
            return False
        if "min" in e and (val is None or val < e["min"]):
            return False
        if "max" in e and (val is None or val > e["max"]):
            return False
        return True

    def holds(self, e):
        """(bool, detail) for one expectation's condition at this instant."""
        det = []
        ok = self._eval(e, det)
        return ok, "; ".join(det)

    @micropython.native
    def _eval(self, e, det):
        """Whether e's condition holds now.  det: a list to append the detail parts
        to, or None: no detail (check() asks this way every check_ms and builds the
        detail only for the line it prints).  Every part is evaluated either way:
        a "path" part takes the instant's gw.snapshot(), which a state line at the
        same instant then reuses."""
        ok = True
        if "bank_state" in e:
            v = self._gw_part("state")
            if det is not None:
                det.append("bank_state=%s" % v)
            ok = ok and _one_of(v, e["bank_state"])
        if "module" in e and ("state" in e or "reason" in e):
            st, rs = self._mod_view(e["module"])
            if det is not None:
                det.append("module %d state=%s reason=%s" % (e["module"], st, rs))
            if "state" in e:
                ok = ok and _one_of(st, e["state"])
            if "reason" in e:
                ok = ok and _one_of(rs, e["reason"])
        if "output" in e:
            v = self.hw.outputs[e["output"]].value()
            if det is not None:
                det.append("output %s=%d" % (e["output"], v))
            ok = ok and v == e.get("value", 1)
        if "diagnosis" in e:
            p = self._diag_present(e["diagnosis"], e.get("module"))
            if det is not None:
                det.append("diagnosis %s present=%s" % (e["diagnosis"], p))
            ok = ok and p == e.get("present", True)
        if "event" in e:
            addr = self.bmses[e["module"]].addr if "module" in e else None
            p = False
            for n, a, ea, eb in self.events_seen:
                if n == e["event"] and (addr is None or a == addr) and ("a" not in e or ea == e["a"]) \
                        and ("b" not in e or eb == e["b"]):
                    p = True
                    break
            if det is not None:
                det.append("event %s seen=%s" % (e["event"], p))
            ok = ok and p == e.get("present", True)
        if "sim" in e:
            v = self.sim_value(e["sim"], e.get("module"))
            if det is not None:
                det.append("sim %s=%s" % (e["sim"], _r(v, 4) if isinstance(v, float) else v))
            ok = ok and self._match(v, e)
        if "path" in e:
            v = self._path(e["path"])
            if det is not None:
                det.append("%s=%s" % (e["path"], v))
            ok = ok and self._match(v, e)
        if "can" in e:
            v, what = self._can_value(e)
            if det is not None:
                det.append("%s=%s" % (what, v))
            ok = ok and self._match(v, e)
        return ok

    def _can_value(self, e):
        """A field of the most recent frame the simulated inverter received with
        the id `e["can"]` (as "0x359" or an int): `"byte": k` -> data[k],
        `"u16"`/`"s16": k` -> little-endian word at offset k (unsigned/signed),
        `"bit": [k, b]` -> (data[k] >> b) & 1; none of them: the data as hex.
        None when no such frame (or byte) has been received yet."""
        cid = e["can"]
        cid = int(cid, 16) if isinstance(cid, str) else cid
        data = self._last_frame.get(cid)
        name = "can 0x%03X" % cid
        if "byte" in e:
            k = e["byte"]
            return (data[k] if data is not None and k < len(data) else None), "%s[%d]" % (name, k)
        for key in ("u16", "s16"):
            if key in e:
                k = e[key]
                if data is None or k + 1 >= len(data):
                    return None, "%s %s@%d" % (name, key, k)
                v = data[k] | (data[k + 1] << 8)
                if key == "s16" and v >= 0x8000:
                    v -= 0x10000
                return v, "%s %s@%d" % (name, key, k)
        if "bit" in e:
            k, b = e["bit"]
            return (((data[k] >> b) & 1) if data is not None and k < len(data) else None), \
                "%s[%d].b%d" % (name, k, b)
        return (None if data is None else "".join("%02X" % x for x in data)), name

    def _path(self, path):
        parts = path.split(".")
        root = parts[0]
        if root == "gw":
            cur = self.snapshot()
        elif root == "sim":
            cur = self.sim_state()
        else:
            raise sc.ScenarioError("expect.path", "must start with gw. or sim.")
        for p in parts[1:]:
            if cur is None:
                return None
            if isinstance(cur, list):
                try:
                    cur = cur[int(p)]
                except (ValueError, IndexError):
                    return None
            elif isinstance(cur, dict):
                cur = cur.get(p)
            else:
                return None
        return cur

    def _needs_fw(self, e):
        return any(k in e for k in ("bank_state", "diagnosis", "event", "state", "reason", "can")) or \
            ("path" in e and e["path"].startswith("gw."))

    def _resolve(self, e, ok, detail):
        e["_state"] = ok
        e["_detail"] = detail
        line = {"t": self.t(), "type": "expect", "index": e["_i"], "ok": ok, "detail": detail}
        if "note" in e:
            line["note"] = e["note"]
        self.out(line)

    @micropython.native
    def check(self, final=False):
        self.advance()
        self._drain_events()
        t = self.t()
        for e in self.expect:
            if e["_state"] is not None:
                continue
            if self.gw is None and self._needs_fw(e):
                if final:
                    self._resolve(e, False, "needs the firmware, which is not running")
                continue
            # the condition without its detail text first; holds() (the same
            # evaluation, at the same instant) builds the text only to print it
            if "at" in e:
                if t + 1e-9 >= e["at"]:
                    ok, det = self.holds(e)
                    self._resolve(e, ok, det)
            elif "by" in e:
                if self._eval(e, None) or t + 1e-9 >= e["by"] or final:
                    ok, det = self.holds(e)
                    self._resolve(e, ok, det)
            else:
                t0, t1 = e["during"]
                if t + 1e-9 >= t0:
                    if not self._eval(e, None) or t + 1e-9 >= t1:
                        ok, det = self.holds(e)
                        self._resolve(e, ok, det)
            if final and e["_state"] is None:
                due = e["during"][1] if "during" in e else e.get("at", e.get("by"))
                if self.truncated and due > t + 1e-9:
                    e["_state"] = "skipped"
                    self.out({"t": t, "type": "expect", "index": e["_i"], "ok": None,
                              "detail": "not reached: run stopped by --until at %.1f s" % t})
                elif "during" in e and t + 1e-9 >= e["during"][0]:
                    self._resolve(e, True, "held until the end (%.1f s)" % t)
                else:
                    self._resolve(e, False, "run ended at %.1f s before the expectation was due" % t)

    @micropython.native
    def _check_tick(self):
        self.check()
        self.clock.after_us(self.s["check_ms"] * 1000, self._check_tick)

    # ------------------------------------------------------------ running
    def _schedule(self, end_us):
        c = self.clock
        c.at_us(self.step_us, self._tick)
        c.at_us(0, self._heartbeat)
        c.at_us(int(self.s["report_s"] * 1e6), self._report_tick)
        c.at_us(self.s["check_ms"] * 1000, self._check_tick)
        for ev in self.s["timeline"]:
            if ev["at"] * 1e6 <= end_us:
                c.at_us(int(ev["at"] * 1e6), self._action, ev)
        for e in self.expect:
            for k in ("at", "by"):
                if k in e and e[k] * 1e6 <= end_us:
                    c.at_us(int(e[k] * 1e6), self.check)
            if "during" in e:
                for x in e["during"]:
                    if x * 1e6 <= end_us:
                        c.at_us(int(x * 1e6), self.check)

    def _start_line(self):
        self.out({"t": 0.0, "type": "start", "scenario": self.s["name"], "modules": len(self.mods),
                  "family": self.family, "bus": "can" if self.is_can else "rs485",
                  "topology": self.cfg["gating"]["topology"], "firmware": self.gw is not None,
                  "duration_s": self.s["duration_s"]})

    def _finish(self, until_s, wall_s):
        self.report()
        self.check(final=True)
        failed = [e for e in self.expect if e["_state"] is False]
        ok = not failed and self.failed_start is None
        speed = until_s / wall_s if wall_s > 0 else None
        passed = [e for e in self.expect if e["_state"] is True]
        res = {"t": self.t(), "type": "result", "ok": ok, "expectations": len(self.expect),
               "passed": len(passed), "failed": len(failed),
               "not_reached": len(self.expect) - len(passed) - len(failed),
               "sim_s": _r(self.t()), "wall_s": _r(wall_s), "speed": _r(speed, 1) if speed else None}
        if self.gw is not None:
            res["cycles"] = self.gw.cycles
            res["loop_max_us"] = self.gw.loop_max_us
        if self.boots > 1:
            res["boots"] = self.boots
        if self.wire is not None:
            res["rs485_requests"] = self.wire.requests
        res["can_frames_to_inverter"] = self.inverter.frames
        res["mqtt_messages"] = self.mqtt_messages
        self.out(res)
        if self.failed_start is not None:
            return RC_FIRMWARE
        return RC_OK if ok else RC_FAILED

    def _stopper(self, end_us):
        # gw.run's stop(): at the end, the firmware's view is captured before gw.run
        # releases every output (its fail-safe exit), so the final state line shows
        # the bank as the scenario left it
        clk = self.clock

        def stop():
            if clk.now_us >= end_us:
                self.snapshot()
                return True
            return False
        return stop

    def run(self, until_s=None):
        """Run in simulated time to until_s (default the scenario's duration)."""
        dur = self.s["duration_s"]
        until_s = dur if until_s is None else min(until_s, dur)
        self.truncated = until_s < dur
        self._start_line()
        if self.failed_start is not None:
            self.out({"t": 0.0, "type": "error", "error": self.failed_start})
            return RC_FIRMWARE
        end_us = int(until_s * 1e6)
        self._schedule(end_us)
        thr = _gc_tune()
        t0 = time.ticks_ms()
        clk = self.clock
        try:
            if self.gw is not None:
                self._run_fw(self._stopper(end_us))
            else:
                clk.advance_us(end_us - clk.now_us)
        finally:
            _gc_restore(thr)
        wall = time.ticks_diff(time.ticks_ms(), t0) / 1000.0
        return self._finish(until_s, wall)

    def run_realtime(self, until_s=None, speed=1.0):
        """Run with simulated time following wall-clock time x speed (for `bankgate
        run --sim`: a real broker, a person watching).  until_s None: forever."""
        # stopped before the scenario's end (demo --seconds): what was not yet due is
        # "not reached", as with `simulate --until`, not failed
        self.truncated = until_s is not None and until_s < self.s["duration_s"]
        self._start_line()
        if self.failed_start is not None:
            self.out({"t": 0.0, "type": "error", "error": self.failed_start})
            return RC_FIRMWARE
        end_us = int(until_s * 1e6) if until_s is not None else 1 << 62
        self._schedule(end_us)
        clk = self.clock
        hw = self.hw
        t0 = time.ticks_us()
        sim_idle = hw.idle

        def idle(ms):
            target = clk.now_us + ms * 1000
            while True:
                wall_us = time.ticks_diff(time.ticks_us(), t0) * speed
                if wall_us >= target:
                    break
                time.sleep_ms(max(1, min(ms, int((target - wall_us) / 1000 / speed))))
            sim_idle(ms)

        hw.idle = idle
        if self.gw is not None:
            self._run_fw(self._stopper(end_us))
        else:
            while clk.now_us < end_us:
                idle(20)
        wall = time.ticks_diff(time.ticks_us(), t0) / 1e6
        return self._finish(clk.now_us / 1e6, wall)


def _gc_tune():
    # returns the threshold in force before (gc.threshold() -> -1: none)
    try:
        old = gc.threshold()
        gc.threshold(GC_THRESHOLD)
        return old
    except (AttributeError, TypeError):    # CPython: no gc.threshold
        return None


def _gc_restore(old):
    if old is not None:
        gc.threshold(old)


def run_file(path, until_s=None, out=None, all_frames=False, net=None):
    """Load, validate and run a scenario file; returns the exit code."""
    out = out or print_line
    try:
        s = sc.load(path)
        sim = Simulation(s, out, net=net, all_frames=all_frames)
    except (sc.ScenarioError, bgconfig.ConfigError, ValueError, OSError) as e:
        out({"t": 0.0, "type": "error", "error": "invalid scenario %s: %s" % (path, e)})
        return RC_INVALID
    return sim.run(until_s)


def run_realtime(path_or_scenario, until_s=None, speed=1.0, out=None, net=None):
    """REAL-TIME entry point (for `bankgate run --sim`): the same model and firmware
    with the simulated clock following wall time.  Returns the exit code."""
    s = path_or_scenario
    if isinstance(s, str):
        s = sc.load(s)
    else:
        s = sc.validate(s)
        if s["name"] is None:
            s["name"] = "realtime"
    return Simulation(s, out or print_line, net=net).run_realtime(until_s, speed)
