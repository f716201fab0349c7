# The poller test rig: the Poller (+ BusHealth) on the fake RS485 wire with the bank
# simulator's BMS emulation answering (bgsim.emu.Rs485Bms on a bgsim.bms.Bms: the one
# BMS emulation every test uses, tools/README.md).  What the poller / discovery /
# bus-health tests need on top of it is here: a module at rest with a chosen identity,
# and canned (malformed) replies injected in front of the emulation.
#
#   mod = EmuModule("pylontech", 2, serial="PPTAH0123456789", n_cells=15)
#   wire.attach(mod)                  # responder(request_bytes) -> bytes or None
#   mod.online = False                # stops answering (BMS asleep / cable out)
#   mod.serial = "OTHER..."           # a different module at this address (swap)
#   mod.override = b"~2002..."        # next replies are these bytes (malformed tests)
#   mod.hook = fn(cmd)                # called before the emulation answers cmd
#   mod.filter = fn(cmd, info, reply) # rewrite the emulation's reply to cmd
# The group query (Pylontech 0x42/0x44 INFO FF) is answered by the addressed module
# for every plugged module of the rig at its address or above (bgsim.emu).
# Allocates freely (host-side fake).
from bgsim import emu
from bgsim.bms import Bms
from bgsim.physics import SimModule


class EmuModule:
    """One module at rest (no current, 25 degC) answering on the wire through the
    simulator's emulation, plus test-only canned replies."""

    def __init__(self, family, addr, serial=None, model="US3000C", sw_version=0x0102,
                 n_cells=15, capacity_ah=74.0, soc=0.5, peers=None):
        self.family = family
        self.phys = SimModule(addr, cells=n_cells, capacity_ah=capacity_ah, soc=soc)
        self.bms = Bms(self.phys, addr, serial=serial or ("STUBSERIAL%06d" % addr),
                       model=model, manufacturer="STUB", sw_version=sw_version)
        self.bms.update(0.0, 0.1)
        self.peers = peers if peers is not None else []
        self.emu = emu.Rs485Bms(self.bms, family, self.peers)
        self.peers.append(self.emu)
        self.override = None       # bytes to send instead of the emulation's reply
        self.override_count = 0    # how many replies use the override (-1: forever)
        self.override_cmd = None   # only replace replies to this command (None: all)
        self.hook = None           # fn(cmd): runs before the emulation answers
        self.filter = None         # fn(cmd, info, reply bytes) -> bytes or None
        self.requests = 0
        self.answered = 0
        self.last_cmd = -1

    @property
    def addr(self):
        return self.bms.addr

    @property
    def online(self):
        return self.bms.plugged

    @online.setter
    def online(self, v):
        self.bms.plugged = bool(v)

    @property
    def serial(self):
        return self.bms.serial

    @serial.setter
    def serial(self, s):
        self.bms.serial = s

    def __call__(self, request):
        p = emu.parse_request(request)
        if p is None or p[1] != self.bms.addr:
            return None
        self.requests += 1
        if not self.bms.plugged:
            return None
        cmd = p[3]
        self.last_cmd = cmd
        if self.override is not None and self.override_count != 0 and \
                (self.override_cmd is None or self.override_cmd == cmd):
            if self.override_count > 0:
                self.override_count -= 1
            self.answered += 1
            return self.override
        if self.hook is not None:
            self.hook(cmd)
        out = self.emu(request)
        if self.filter is not None:
            out = self.filter(cmd, p[4], out)
        if out is not None:
            self.answered += 1
        return out


# ---------------------------------------------------------------- test rig
class TermBoard:
    """The gateway's switchable 120 ohm terminator and idle-voltage ADC on a fake
    wire: switching the pin rebuilds the wire's ElectricalModel with one more (or
    one fewer) terminator, so both the idle voltage and the byte error rate follow."""

    def __init__(self, wire, clock, others, model_kw):
        from fakehw import FakePin
        self.wire = wire
        self.others = others
        self.model_kw = model_kw
        self.pin = FakePin(clock, 0, "terminator")
        self.pin.on_change = self._changed
        self.reads = 0
        self._changed(0)

    def _changed(self, v):
        from fakebus import ElectricalModel
        m = ElectricalModel(terminators=self.others + (1 if v else 0), **self.model_kw)
        self.wire.model = m
        self.wire.error_ppm = m.byte_error_ppm

    def read_mv(self):
        self.reads += 1
        return self.wire.model.idle_mv


class Rig:
    """Poller (+ BusHealth) on a FakeRs485Wire with EmuModules answering.

    addresses: configured addresses; stubs: addresses that have a module (default:
    the configured ones); model: ElectricalModel keyword arguments; term_others:
    give the board a terminator switch + idle ADC with that many other terminators.
    """

    def __init__(self, addresses=(2, 3, 4), stubs=None, family="pylontech", baud=115200,
                 model=None, seed=1, term_others=None, scan=None, health=True, tick_start_ms=0, over=None,
                 **bank):
        from fakehw import SimClock, FakeHardware
        from fakebus import ElectricalModel, FakeRs485Wire, FakeUart
        from bankgate import config
        from bankgate.events import EventLog
        from bankgate.model import Bank
        from bankgate.poller import Poller
        from bankgate.bushealth import BusHealth
        self.clock = SimClock(tick_start_ms=tick_start_ms)
        hw = FakeHardware(self.clock)
        kw = {"bitrate": baud, "nodes": len(stubs if stubs is not None else addresses) + 1}
        kw.update(model or {})
        self.wire = FakeRs485Wire(self.clock, baud, model=ElectricalModel(**kw), seed=seed)
        self.uart = FakeUart(self.wire)
        hw.uart = self.uart
        hw.de_pin = self.uart.de
        uart = self.uart
        hw.input_ready = lambda: uart.any() > 0
        self.term = None
        if term_others is not None:
            self.term = TermBoard(self.wire, self.clock, term_others, kw)
            hw.terminator = self.term.pin
            hw.idle_adc = self.term
        self.hw = hw
        addresses = list(addresses)
        b = {"addresses": addresses, "expected_modules": len(addresses), "family": family,
             "baud": baud}
        if scan is not None:
            b["scan_from"], b["scan_to"] = scan
        else:
            b["scan_from"] = min(addresses)
            b["scan_to"] = max(addresses + list(stubs or []))
        b.update(bank)
        raw = {"bank": b, "contactors": {"outputs": ["k%d" % i for i in range(len(addresses))]}}
        for k, v in (over or {}).items():      # other sections (gating, control ...)
            raw[k] = v
        self.cfg = config.validate(raw)
        self.family = family
        self.peers = []            # every module's emulation (group queries)
        self.stubs = {}
        for a in (stubs if stubs is not None else addresses):
            self.add_stub(EmuModule(family, a, peers=self.peers))
        self.bank = Bank()
        self.events = EventLog(64)
        self.poller = Poller(hw, self.cfg, self.bank, self.events)
        self.health = BusHealth(hw, self.cfg, self.bank, self.poller, self.events) if health else None
        self.changed = 0

    def add_module(self, addr, **kw):
        """Plug another emulated module (EmuModule keywords) onto the wire."""
        return self.add_stub(EmuModule(self.family, addr, peers=self.peers, **kw))

    def add_stub(self, stub):
        self.wire.attach(stub)
        self.stubs.setdefault(stub.addr, []).append(stub)
        return stub

    def step(self):
        now = self.clock.ticks_ms()
        if self.poller.service(now) >= 0:
            self.changed += 1
        if self.health is not None:
            self.health.update(now)
        w = self.poller.wait_ms(now)
        if w > 0:
            self._spin = 0
            self.hw.idle(w)
        else:
            self._spin = getattr(self, "_spin", 0) + 1
            if self._spin > 50:          # no progress without time: let time pass
                self._spin = 0
                self.hw.idle(1)

    def run_ms(self, ms):
        end = self.clock.ms() + ms
        while self.clock.ms() < end:
            self.step()

    def run_tx(self, n, limit_ms=10000000):
        """Run until the poller completed n more transactions."""
        target = self.poller.transactions + n
        end = self.clock.ms() + limit_ms
        while self.poller.transactions < target and self.clock.ms() < end:
            self.step()

    def run_sweeps(self, n, limit_ms=10000000):
        target = self.poller.sweep_count + n
        end = self.clock.ms() + limit_ms
        while self.poller.sweep_count < target and self.clock.ms() < end:
            self.step()

    def events_of(self, code):
        out = []
        rec = [0] * 5
        ev = self.events
        for s in range(ev.oldest(), ev.seq + 1):
            if ev.get(s, rec) and rec[1] == code:
                out.append((rec[2], rec[3], rec[4]))
        return out


class ReplayUart:
    """An allocation-free stand-in for the UART, for heap-locked tests: answers
    each request from a table prepared in advance (request hash -> reply bytes),
    instantly.  Only for proving that poller + driver + decoder allocate nothing;
    timing and collisions are the FakeRs485Wire's job."""

    def __init__(self, baud=115200):
        self.baudrate = baud
        self.table = {}
        self._cur = None
        self._pos = 0
        self.requests = 0
        self.unknown = 0

    @staticmethod
    def key(buf, n):
        h = 0
        for i in range(n):
            h = (h * 31 + buf[i]) & 0xFFFFFF
        return h

    def learn(self, request, reply):
        self.table[self.key(request, len(request))] = reply

    def write(self, buf):
        self.requests += 1
        r = self.table.get(self.key(buf, len(buf)))
        if r is None:
            self.unknown += 1
        self._cur = r
        self._pos = 0
        return len(buf)

    def txdone(self):
        return True

    def any(self):
        return 0 if self._cur is None else len(self._cur) - self._pos

    def readinto(self, buf, nbytes=-1):
        r = self._cur
        if r is None or self._pos >= len(r):
            return None
        k = len(r) - self._pos
        if k > len(buf):
            k = len(buf)
        p = self._pos
        for i in range(k):
            buf[i] = r[p + i]
        self._pos = p + k
        return k
