# A module's identity does not outlive it: Module.clear_data() / clear_identity() and the
# poller forgetting a lost module's identity once its data went stale, end to end with
# the real poller, discovery and admission on the fake RS485 wire (tests/support/pollrig.py,
# the simulator's BMS emulation answering).
# mpy-heapsize: 1m
# mpy-timeout: 900
import records
from fakehw import FakeAdc, FakePin
from pollrig import Rig

from bankgate import admission as adm
from bankgate import clock
from bankgate.model import Module


def _identified(m):
    m.serial[:4] = b"OLD1"
    m.serial_len = 4
    m.model[:7] = b"US3000C"
    m.model_len = 7
    m.manufacturer[:5] = b"PYLON"
    m.manufacturer_len = 5
    m.sw_version = 0x0102
    m.proto_version = 0x35
    m.id_valid = True


def test_clear_data_forgets_identity_and_everything_the_module_reported():
    m = Module(0)
    records.healthy(m, 2, 52000, 1000)
    _identified(m)
    m.params_valid = True
    m.cell_hi_mv = 3600
    m.clear_data()
    assert not (m.analog_valid or m.alarm_valid or m.mgmt_valid or m.params_valid or m.id_valid)
    assert (m.serial_len, m.model_len, m.manufacturer_len) == (0, 0, 0)
    assert (m.sw_version, m.proto_version) == (-1, -1)
    assert (m.n_cells, m.total_mah, m.voltage_mv, m.chg_limit_ma, m.dsg_limit_ma) == (0, 0, 0, 0, 0)
    assert m.cell_hi_mv == 0 and m.addr == 2 and m.slot == 0
    # a later serial-number-only read (0x93 sets id_valid) brings back no model or firmware
    m.serial[:4] = b"NEW1"
    m.serial_len = 4
    m.id_valid = True
    assert m.model_len == 0 and m.sw_version < 0


def test_clear_identity_keeps_measured_data():
    m = Module(0)
    records.healthy(m, 2, 52000, 1000)
    _identified(m)
    m.clear_identity()
    assert not m.id_valid and m.model_len == 0 and m.sw_version == -1 and m.serial_len == 0
    assert m.analog_valid and m.voltage_mv == 52000 and m.mgmt_valid


class GateRig(Rig):
    """pollrig.Rig (poller + discovery + bus health on the fake wire, emulated modules)
    with the real Admission on the same bank, stepped as the Gateway does: the
    discovery's slot fault mask goes into admission, the DC link reads the bank."""

    def __init__(self, **kw):
        Rig.__init__(self, **kw)
        n = len(self.cfg["bank"]["addresses"])
        self.outs = ["k%d" % i for i in range(n)]
        for o in self.outs:
            self.hw.outputs[o] = FakePin(self.clock, 0, o)
        self.hw.link_sensor = FakeAdc(0)
        from bankgate.events import EventLog
        self.a = adm.Admission(self.hw, self.cfg, self.bank, EventLog(64))
        self.t_step = 0

    def step(self):
        Rig.step(self)
        now = self.clock.ticks_ms()
        if clock.diff(now, self.t_step) >= 50:
            self.t_step = now
            mv = 0
            for i in range(len(self.outs)):
                m = self.bank.modules[i]
                if m.analog_valid:
                    mv = m.voltage_mv
            self.hw.link_sensor.mv = mv          # modules at rest: all at one voltage
            self.a.step(now, 0, self.poller.discovery.slot_fault_mask(), True)

    def out(self, i):
        return self.hw.outputs[self.outs[i]].value()

    def run_until(self, cond, ms):
        end = self.clock.ms() + ms
        while self.clock.ms() < end:
            self.step()
            if cond():
                return True
        return False


# codes that stop a module at or before the identity checks (it was not judged on an
# identity that passed): anything else means the identity checks passed
_BEFORE_ID = (adm.CHK_ABSENT, adm.CHK_STALE, adm.CHK_ID_FAULT, adm.CHK_NO_ALARM_DATA,
              adm.CHK_NO_LIMITS, adm.CHK_NO_ID, adm.CHK_MODEL)


def test_module_replaced_at_the_same_address_is_not_admitted_on_the_old_identity():
    r = GateRig(addresses=(2, 3), approved_models=["US3000C"])
    assert r.run_until(lambda: r.out(0) and r.out(1), 60000), \
        [adm.CHECK_NAMES[r.a.mod_reason[i]] for i in (0, 1)]
    old = r.stubs[3][0]
    old.online = False                             # module 3 taken out...
    assert r.run_until(lambda: not r.out(1), 20000)
    r.run_ms(30000)                                # ... for a while (lost, stale, re-probed)
    assert r.a.mod_reason[1] in (adm.CHK_ABSENT, adm.CHK_STALE) and r.out(0), \
        adm.CHECK_NAMES[r.a.mod_reason[1]]
    new = r.add_module(3, model="US2000B", serial="REPLACEMENT00003")
    m = r.bank.modules[1]
    reasons = set()
    end = r.clock.ms() + 60000
    while r.clock.ms() < end:
        r.step()
        reasons.add(r.a.mod_reason[1])
        assert not r.out(1), adm.CHECK_NAMES[r.a.mod_reason[1]]
        assert r.a.mod_reason[1] in _BEFORE_ID, \
            (adm.CHECK_NAMES[r.a.mod_reason[1]], m.model_str(), m.id_valid)
    assert new.answered > 0
    # the new module was read and judged on its own identity: wrong model
    assert m.model_str() == "US2000B" and r.a.mod_reason[1] == adm.CHK_MODEL, \
        [adm.CHECK_NAMES[c] for c in reasons]
    assert r.out(0)


def test_module_replaced_by_an_approved_one_joins_after_its_identity_is_read():
    r = GateRig(addresses=(2, 3), approved_models=["US3000C"])
    assert r.run_until(lambda: r.out(0) and r.out(1), 60000)
    r.stubs[3][0].online = False
    r.run_ms(30000)
    r.add_module(3, model="US3000C", serial="REPLACEMENT00003")
    assert r.run_until(lambda: r.out(1), 120000), adm.CHECK_NAMES[r.a.mod_reason[1]]
    assert r.bank.modules[1].serial_str() == "REPLACEMENT00003"


def test_short_dropout_keeps_the_identity():
    # lost (3 timeouts) and re-probed (REPROBE_MS) while its data is younger than
    # max_age_ms: the identity is kept (and re-read as usual)
    r = GateRig(addresses=(2, 3), approved_models=["US3000C"], over={"gating": {"max_age_ms": 20000}})
    assert r.run_until(lambda: r.out(0) and r.out(1), 60000)
    st = r.stubs[3][0]
    st.online = False
    p = r.poller
    assert r.run_until(lambda: p.lost_mask & 2, 5000), (p.lost_mask, p._miss[1], r.out(1))
    st.online = True
    assert r.run_until(lambda: not (p.lost_mask & 2), 10000)
    assert r.bank.modules[1].model_str() == "US3000C" and r.bank.modules[1].id_valid
