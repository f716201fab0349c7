# A small emulated BMS for the poller / discovery / bus-health tests: answers the
# requests of one RS485 address with frames built by tools/sim/bmsproto.py.  The
# full bank simulator (tools/sim/bgsim) is the realistic one; this stub is only
# what those tests need: configurable identity, switchable presence, a serial
# number that can be swapped, group (FF) answers, and canned malformed replies.
#
#   stub = BmsStub("pylontech", 2, serial="PPTAH0123456789", n_cells=15)
#   wire.attach(stub)                 # responder(request_bytes) -> bytes or None
#   stub.online = False               # stops answering (module offline)
#   stub.serial = "OTHER..."          # a different module at this address (swap)
#   stub.group = [stub3, stub4]       # master: answer INFO FF with itself + these
#   stub.override = b"~2002..."       # next replies are these bytes (malformed tests)
# Allocates freely (host-side fake).
import bmsproto


def _hex(b, i):
    return int(bytes(b[i:i + 2]).decode(), 16)


def parse_request(req):
    """(adr, cid2, info_bytes) of a Pylontech-style request, or None."""
    try:
        req = bytes(req)
        s = req.index(b"~")
        e = req.index(b"\r", s)
        body = req[s + 1:e]
        adr = _hex(body, 2)
        cid2 = _hex(body, 6)
        lenid = ((_hex(body, 8) << 8) | _hex(body, 10)) & 0xFFF
        info = bytes(_hex(body, 12 + 2 * k) for k in range(lenid // 2))
        return adr, cid2, info
    except Exception:
        return None


class BmsStub:
    def __init__(self, family, addr, serial=None, model="US3000C", sw_version=0x0102,
                 n_cells=15, cell_mv=3300, total_mah=74000, soc_pm=500, current_ma=0):
        self.family = family
        self.addr = addr
        self.serial = serial or ("STUBSERIAL%06d" % addr)
        self.model = model
        self.sw_version = sw_version
        self.n_cells = n_cells
        self.cell_mv = cell_mv
        self.total_mah = total_mah
        self.soc_pm = soc_pm
        self.current_ma = current_ma
        self.online = True
        self.group = None          # list of other stubs: this one is the group master
        self.override = None       # bytes to send instead of the real reply
        self.override_count = 0    # how many replies use the override (-1: forever)
        self.override_cmd = None   # only replace replies to this command (None: all)
        self.requests = 0
        self.answered = 0
        self.last_cmd = -1

    # the pack as bmsproto wants it
    def pack(self):
        rem = self.total_mah * self.soc_pm // 1000
        return {"cells_mv": [self.cell_mv] * self.n_cells, "temps_dc": [250, 240, 241, 242, 243],
                "current_ma": self.current_ma, "voltage_mv": self.cell_mv * self.n_cells,
                "remaining_mah": rem, "total_mah": self.total_mah, "cycles": 12}

    def alarm(self):
        return {"cell_flags": [0] * self.n_cells, "temp_flags": [0] * 5, "status": [0, 0x0E, 0, 0, 0]}

    def reply(self, cmd, info):
        f = self.family
        a = self.addr
        if cmd == 0x42 and info == b"\xff" and f == "pylontech":
            if self.group is None:
                return bmsproto.error_response(f, a, 0x90)
            packs = [self.pack()] + [s.pack() for s in self.group]
            return bmsproto.analog_group_response(a, packs)
        if cmd == 0x42:
            return bmsproto.analog_response(f, a, self.pack())
        if cmd == 0x44:
            return bmsproto.alarm_response(f, a, self.alarm())
        if cmd == 0x4F:
            return bmsproto.version_response(f, a)
        if cmd in (0x51, 0xC1):
            return bmsproto.response(f, cmd, a, {"model": self.model, "sw_version": self.sw_version,
                                                  "manufacturer": "STUB"})
        if cmd in (0x93, 0xC2):
            return bmsproto.response(f, cmd, a, {"serial": self.serial})
        if cmd == 0x47:
            return bmsproto.params_response(f, a, {
                "cell_hi_mv": 3650, "cell_lo_mv": 2800, "cell_uv_mv": 2500, "chg_ma": 37000,
                "mod_hi_mv": 54000, "mod_lo_mv": 45000, "mod_uv_mv": 42000, "dsg_ma": 37000})
        if cmd == 0x92:
            return bmsproto.mgmt_response(f, a, {"chg_v_mv": 53250, "dsg_v_mv": 47000,
                                                 "chg_limit_ma": 37000, "dsg_limit_ma": 37000,
                                                 "mgmt_flags": 0xC0})
        return bmsproto.error_response(f, a, 0x04)

    def __call__(self, request):
        p = parse_request(request)
        if p is None:
            return None
        adr, cmd, info = p
        if adr != self.addr:
            return None
        self.requests += 1
        if not self.online:
            return None
        self.last_cmd = cmd
        if self.override is not None and self.override_count != 0 and \
                (self.override_cmd is None or self.override_cmd == cmd):
            if self.override_count > 0:
                self.override_count -= 1
            self.answered += 1
            return self.override
        self.answered += 1
        return self.reply(cmd, info)


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
    """Poller (+ BusHealth) on a FakeRs485Wire with BmsStubs answering.

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
        self.stubs = {}
        for a in (stubs if stubs is not None else addresses):
            self.add_stub(BmsStub(family, a))
        self.bank = Bank()
        self.events = EventLog(64)
        self.poller = Poller(hw, self.cfg, self.bank, self.events)
        self.health = BusHealth(hw, self.cfg, self.bank, self.poller, self.events) if health else None
        self.changed = 0

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
