# The gateway: wires the bus, admission, metrics, inverter link and telemetry into
# one cooperative loop (docs/architecture.md).  Runs the same on the ESP32 (via
# bankgate.firmware) and on the unix port (simulator, tests, `bankgate run`).
#
# Safety structure of the loop:
# - a control step (bus health -> admission -> contactor outputs) runs every
#   control.period_ms, and at once when a decoded frame changes a module's alarm
#   bits or check result (a critical alarm opens in the iteration that decodes it);
# - the watchdog is fed only after a control step completed, so a hung or
#   crashing loop resets the chip, and a reset leaves every coil released;
# - telemetry and the console get what is left of the period, with a budget,
#   and are state machines that never wait on a socket;
# - any exception escaping a step releases every output before it propagates.
from micropython import const

from bankgate import aggregate
from bankgate import clock as tk
import array

from bankgate.events import EV_ALARM, EV_BOOT, EventLog
from bankgate.model import Bank

_DATA_PERIOD_MS = const(1000)   # metrics/diagnoses period: they describe trends (seconds), so
                                # they run once a second on the newest data; admission, the
                                # safety decision, runs every control period and at once when
                                # a decoded frame changes a module's check result (_urgent)
_MAX_IDLE_MS = const(20)        # never idle longer than this (device: keeps the console responsive)
_CAN_BURST = const(63)          # CAN: further changed frames decoded per iteration (_drain_can)
# the codes the control step passes on, from their one home (not copied)
from bankgate.bushealth import DUPLICATE_ADDRESS as _BUS_DUPLICATE
from bankgate.bushealth import TERMINATION_SUSPECT as _BUS_TERMINATION
from bankgate.bushealth import WIRING_NOISE as _BUS_NOISE
from bankgate.discovery import F_DUPLICATE as _F_DUPLICATE


class Gateway:
    def __init__(self, hw, cfg, net=None, console=None):
        self.hw = hw
        self.cfg = cfg
        self.config_error = None
        hw.release_all()
        now = hw.clock.ticks_ms()
        self.bank = Bank()
        self.events = EventLog(64)
        self.events.emit(now, EV_BOOT)
        from bankgate.derate import Derate
        self.derate = Derate(cfg)     # derate-only remote controls (MQTT); RAM only, off at boot
        # telemetry first: its ring and MQTT buffers are the largest blocks the firmware
        # allocates (8 KiB + 4 KiB + 1 KiB), and a heap still empty has them contiguous; built
        # last they need a larger heap (docs/performance.md).  It reads only bank and events here.
        self.telemetry = None
        if cfg["mqtt"]["enabled"] and net is not None:
            from bankgate.telemetry import Telemetry
            self.telemetry = Telemetry(net, cfg, self)

        from bankgate.poller import Poller
        from bankgate.bushealth import BusHealth
        from bankgate.admission import Admission
        from bankgate.metrics import Metrics
        from bankgate.diagnose import Diagnoser

        self.poller = Poller(hw, cfg, self.bank, self.events)
        self.health = BusHealth(hw, cfg, self.bank, self.poller, self.events)
        self.admission = Admission(hw, cfg, self.bank, self.events)
        self.metrics = Metrics(cfg, self.bank)
        self.diagnoser = Diagnoser(cfg, self.bank, self.metrics, self.events)
        self.inverter = None
        if cfg["inverter"]["enabled"] and hw.can_inverter is not None:
            from bankgate.inverter import InverterLink
            self.inverter = InverterLink(hw, cfg, self.bank, self.admission, self.events)
        self.console = console

        # last alarm / protection bits seen per slot: a change emits EV_ALARM
        n = len(self.bank.modules)
        self._alarms = array.array("i", bytes(4 * n))
        self._prots = array.array("i", bytes(4 * n))
        self.period_ms = cfg["control"]["period_ms"]
        self.r_conf_min = cfg["diagnosis"]["r_conf_min"]
        self.next_control = now
        self.next_data = now
        self.cycles = 0
        self.control_steps = 0
        self.loop_max_us = 0          # worst CPU time of one step() (control part, excluding telemetry)
        self.telemetry_max_us = 0     # worst CPU time spent in telemetry in one step()
        if hasattr(hw, "start_watchdog"):
            hw.start_watchdog(cfg["control"]["watchdog_ms"])

    # ------------------------------------------------------------------ loop
    def step(self):
        """One loop iteration; never blocks.  Returns ms until the next deadline."""
        hw = self.hw
        clk = hw.clock
        t0 = clk.ticks_us()
        try:
            now = clk.ticks_ms()
            slot = self.poller.service(now)
            if tk.due(now, self.next_control) or (slot >= 0 and self._urgent(slot, now)):
                self._control(now)
            if slot >= 0 and not self.poller.is_can:
                # RS485: the answer is decoded and acted on; send the next request in this
                # same iteration (no extra loop pass per transaction, no idle bus time).
                # CAN: service() stopped after the frame that changed `slot`; the rest of the
                # burst is decoded frame by frame, each changed slot checked (_drain_can).
                self.poller.service(clk.ticks_ms())
            elif slot >= 0:
                self._drain_can(now)
            if self.inverter is not None:
                self.inverter.service(now)
        except BaseException as e:
            hw.release_all()
            raise e             # (not a bare raise: the simulator may compile this natively)
        t1 = clk.ticks_us()
        dt = tk.diff(t1, t0)
        if dt > self.loop_max_us:
            self.loop_max_us = dt
        if self.telemetry is not None:
            # whatever is left of the period, at least 1 ms; the client never blocks
            self.telemetry.service(now, 5)
            dt = tk.diff(clk.ticks_us(), t1)
            if dt > self.telemetry_max_us:
                self.telemetry_max_us = dt
        if self.console is not None:
            self.console.service(now)
        self.cycles += 1
        # deadlines from the time NOW, after this iteration's work (starting a request
        # waits out its wire time): measured from the iteration's start they would
        # oversleep by that much
        t = clk.ticks_ms()
        wait = tk.diff(self.next_control, t)
        w = self.poller.wait_ms(t)
        if w < wait:
            wait = w
        if self.inverter is not None:
            w = self.inverter.wait_ms(t)
            if w < wait:
                wait = w
        if wait > _MAX_IDLE_MS:
            wait = _MAX_IDLE_MS
        return wait if wait > 0 else 0

    def _control(self, now):
        self.health.update(now)
        bus_fault = 0 if self.health.ok() else self.health.verdict
        if bus_fault == 0 and self.poller.discovery.has_code(_F_DUPLICATE):
            # a duplicate address anywhere means the address plan is wrong: no module
            # joins until it is fixed (the seed: "address, order and termination are
            # correct" before closing), not only the slot whose replies collide
            bus_fault = _BUS_DUPLICATE
        inv_ok = True
        if self.inverter is not None:
            inv_ok = self.inverter.heartbeat_ok
        self._alarm_events(now)
        adm = self.admission
        v = self.health.verdict
        adm.bus_join_block = v if (v == _BUS_TERMINATION or v == _BUS_NOISE) else 0
        self.derate.step(now, adm)    # expiry; hold_joins for this step
        adm.step(now, bus_fault, self.poller.discovery.slot_fault_mask(), inv_ok)
        # issue 15: what the inverter sees counts only admitted modules with fresh data
        aggregate.update(self.bank, adm.admitted_mask & self.poller.fresh_mask(now))
        self.derate.limit(adm, self.bank.soc_pm)   # only lowers the limits just computed
        if tk.due(now, self.next_data):
            self.next_data = tk.add(now, _DATA_PERIOD_MS)
            self.metrics.update(now, adm.admitted_mask)
            adm.use_measured_loop(self.metrics, self.r_conf_min)   # measured loop R below the configured
            self.diagnoser.step(now, adm.admitted_mask, adm.expected_mask, adm.pending_mask())
        self.next_control = tk.add(now, self.period_ms)
        self.control_steps += 1
        wdt = self.hw.wdt
        if wdt is not None:
            wdt.feed()

    def _drain_can(self, now):
        """CAN module bus: service() returns after each frame that changed a record.
        Decode the rest of the received burst here, one changed frame at a time, each
        changed slot through the urgent check before the next frame is decoded: a
        critical alarm arriving as frame k of a burst opens in this iteration.  Bounded:
        at most _CAN_BURST more changed frames (each call reads at most the poller's
        CAN_MAX_FRAMES); the rest waits for the next iteration."""
        p = self.poller
        for _ in range(_CAN_BURST):
            slot = p.service(now)
            if slot < 0:
                return
            if self._urgent(slot, now):
                self._control(now)

    def _urgent(self, slot, now):
        """A decoded frame changed slot's record: does it need a control step now?
        Yes when the module's alarm or protection bits changed or its admission
        checks give another result (Admission.urgent); otherwise the step waits for
        the period (the safety bound is control.period_ms either way, and a 16-module
        bus decodes ~90 frames/s, each of which used to run the whole step)."""
        if slot < len(self._alarms):
            m = self.bank.modules[slot]
            if m.alarms != self._alarms[slot] or m.protections != self._prots[slot]:
                return True
        return self.admission.urgent(slot, now, self.poller.discovery.slot_fault_mask())

    def _alarm_events(self, now):
        """EV_ALARM (a = alarm bits, b = protection bits) whenever a module's BMS
        alarm or protection bits change.  Allocation-free."""
        al = self._alarms
        pr = self._prots
        for m in self.bank.modules:
            if m.addr < 0:
                continue
            i = m.slot
            if m.alarms != al[i] or m.protections != pr[i]:
                al[i] = m.alarms
                pr[i] = m.protections
                self.events.emit(now, EV_ALARM, m.addr, m.alarms, m.protections)

    def run(self, stop=None):
        """The main loop.  On the device `stop` is None: it runs until reset."""
        hw = self.hw
        try:
            while stop is None or not stop():
                wait = self.step()
                if wait:
                    hw.idle(wait)
        finally:
            hw.release_all()

    # -------------------------------------------------------------- reporting
    def outputs(self):
        return {name: pin.value() for name, pin in self.hw.outputs.items()}

    def module_snapshot(self, m):
        """One module as JSON-able integers and names (allocates)."""
        from bankgate.admission.checks import CHECK_NAMES, MOD_STATE_NAMES
        s = m.slot
        v = self.admission.view(s)
        if v is not None:
            state, reason, value, dv = MOD_STATE_NAMES[v[0]], CHECK_NAMES[v[1]], v[2], v[4]
        else:
            state, reason, value, dv = "unexpected", "not_configured", m.addr, 0
        # online: this module answered and its analog data is within gating.max_age_ms.
        # A slot that never answered (absent, or analog data a group answer put there) has
        # no measurements: null, never a voltage it did not report itself
        heard = m.seen and m.analog_valid
        online = heard and tk.diff(self.hw.clock.ticks_ms(), m.t_analog) <= self.cfg["gating"]["max_age_ms"]
        return {
            "slot": s, "addr": m.addr, "state": state, "reason": reason, "value": value, "dv_mv": dv,
            "online": online, "mv": m.voltage_mv if heard else None,
            "ma": m.current_ma if heard else None,
            "soc_pm": m.soc_pm if heard else None, "soh_pm": m.soh_pm if heard else None,
            "temp_dc": max(m.temp_dc[i] for i in range(m.n_temps)) if heard and m.n_temps else None,
            "cell_min_mv": min(m.cell_mv[i] for i in range(m.n_cells)) if heard and m.n_cells else None,
            "cell_max_mv": max(m.cell_mv[i] for i in range(m.n_cells)) if heard and m.n_cells else None,
            "chg_limit_ma": m.chg_limit_ma, "dsg_limit_ma": m.dsg_limit_ma,
            "alarms": m.alarms, "protections": m.protections,
            "serial": m.serial_str() if m.serial_len else None,
            "model": m.model_str() if m.model_len else None,
            "sw_version": m.sw_version, "cycles": m.cycles,
            "errors": m.st_checksum + m.st_framing + m.st_rtn + m.st_invalid, "timeouts": m.st_timeouts,
        }

    def bank_fields(self, now):
        """The bank-level part of snapshot() (no modules, metrics or diagnoses): what telemetry
        publishes on <base>/bank, built from the live records (allocates)."""
        a = self.admission.snapshot()
        b = self.bank
        inv = self.inverter
        return {
            "t_ms": now,
            "state": a["state"], "reason": a["reason"], "value": a["value"],
            "mv": b.bank_mv, "ma": b.bank_ma, "soc_pm": b.soc_pm, "soh_pm": b.soh_pm,
            "temp_dc": b.temp_dc, "link_mv": b.link_mv, "capacity_mah": b.capacity_mah,
            "admitted": a["admitted"], "expected": a["expected"],
            "limits": {"chg_ma": a["chg_limit_ma"], "dsg_ma": a["dsg_limit_ma"],
                       "chg_v_mv": a["chg_v_mv"], "dsg_v_mv": a["dsg_v_mv"]},
            "ramp_down": a["ramp_down"], "faults": a["faults"], "topology": a["topology"],
            "na_checks": a["na_checks"],     # checks the family cannot evaluate (issue 15)
            "outputs": self.outputs(),
            "bus": self.health.snapshot(),
            "discovery": self.poller.discovery.snapshot(),
            "inverter": inv.snapshot() if inv is not None else None,
            "loop_max_us": self.loop_max_us, "events_seq": self.events.seq,
        }

    def snapshot(self):
        """Everything an observer needs, as JSON-able integers and names (allocates)."""
        d = self.bank_fields(self.hw.clock.ticks_ms())
        d["modules"] = [self.module_snapshot(m) for m in self.bank.modules if m.addr >= 0]
        d["metrics"] = self.metrics.snapshot()
        d["diagnoses"] = self.diagnoser.snapshot()
        return d
