# Test support for the inverter link: a stand-in for the admission object (only
# the attributes InverterLink reads) and a rig with a fake CAN bus where a second
# controller plays the inverter.
from bankgate import config
from bankgate.events import EventLog
from bankgate.inverter import InverterLink
from bankgate.model import Bank
from fakecan import FakeCan, FakeCanBus
from fakehw import FakeHardware


class AdmissionStub:
    def __init__(self):
        self.admitted_mask = 0
        self.admitted = 0
        self.faults = 0
        self.ramp_down = False
        self.chg_limit_ma = 0
        self.dsg_limit_ma = 0
        self.chg_v_mv = 0
        self.dsg_v_mv = 0


class Rig:
    def __init__(self, inverter_cfg=None):
        self.hw = FakeHardware()
        self.clock = self.hw.clock
        self.bus = FakeCanBus(self.clock, 500000)
        self.hw.can_inverter = FakeCan(self.bus, name="gateway")
        self.inv = FakeCan(self.bus, rx_queue_len=64, name="inverter")
        cfg = config.defaults()
        if inverter_cfg:
            cfg["inverter"].update(inverter_cfg)
        self.cfg = config.validate(cfg)
        self.bank = Bank()
        self.adm = AdmissionStub()
        self.events = EventLog(32)
        self.link = InverterLink(self.hw, self.cfg, self.bank, self.adm, self.events)
        self.rx = bytearray(8)
        self.frames = {}

    def admit(self, specs, chg_ma=100000, dsg_ma=150000, chg_v_mv=53200, dsg_v_mv=45000):
        """specs: list of (mv, ma, soc_pm, soh_pm, temp_dc, protections, alarms, mgmt_flags)."""
        from bankgate import aggregate
        mask = 0
        for i, (mv, ma, soc, soh, t, prot, alm, flags) in enumerate(specs):
            m = self.bank.modules[i]
            m.addr = 2 + i
            m.voltage_mv = mv
            m.current_ma = ma
            m.soc_pm = soc
            m.soh_pm = soh
            m.total_mah = 100000
            m.n_temps = 1
            m.temp_dc[0] = t
            m.protections = prot
            m.alarms = alm
            m.mgmt_flags = flags
            m.analog_valid = True
            mask |= 1 << i
        a = self.adm
        a.admitted_mask = mask
        a.admitted = len(specs)
        a.chg_limit_ma, a.dsg_limit_ma, a.chg_v_mv, a.dsg_v_mv = chg_ma, dsg_ma, chg_v_mv, dsg_v_mv
        aggregate.update(self.bank, mask)

    def run_ms(self, ms, step_ms=1):
        """Run the link for `ms` simulated milliseconds; collect frames the inverter got."""
        end = self.clock.now_us + ms * 1000
        while self.clock.now_us < end:
            self.link.service(self.clock.ticks_ms())
            self.clock.advance_us(step_ms * 1000)
            while True:
                r = self.inv.recv(self.rx)
                if r < 0:
                    break
                self.frames[r >> 4] = bytes(self.rx[: r & 15])

    def heartbeat(self):
        assert self.inv.send(0x305, bytes(8), 8)


def frames_for(state):
    """For host oracle tests: one period of frames for a JSON-described bank.
    state: {"modules": [[mv, ma, soc_pm, soh_pm, temp_dc, prot, alarms, flags], ...],
            "limits": [chg_ma, dsg_ma, chg_v_mv, dsg_v_mv], "faults": int, "ramp_down": bool}
    Returns {hex id: hex data} and the bank aggregates."""
    rig = Rig()
    lim = state["limits"]
    rig.admit([tuple(m) for m in state["modules"]], lim[0], lim[1], lim[2], lim[3])
    rig.adm.faults = state.get("faults", 0)
    rig.adm.ramp_down = state.get("ramp_down", False)
    rig.run_ms(50)
    b = rig.bank
    return {"frames": {"%x" % k: v.hex() for k, v in rig.frames.items()},
            "bank": {"mv": b.bank_mv, "ma": b.bank_ma, "soc_pm": b.soc_pm, "soh_pm": b.soh_pm,
                     "temp_dc": b.temp_dc}}
