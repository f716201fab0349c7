# The inverter link (bankgate.inverter) on a fake CAN bus with a second
# controller playing the inverter.
import mptest
from bankgate.events import EV_INVERTER
from invsupport import Rig

HEALTHY = (52000, 20000, 600, 990, 250, 0, 0, 0)


def test_sends_the_six_frames_every_period_through_a_three_deep_queue():
    r = Rig({"period_ms": 1000})
    r.admit([HEALTHY, HEALTHY])
    r.run_ms(100)
    assert sorted(r.frames) == [0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E]
    assert r.link.frames_sent == 6 and r.link.overruns == 0
    assert r.link.tx_busy > 0            # the 3-deep queue pushed back and the link waited
    r.run_ms(2000)
    assert r.link.frames_sent == 18      # one set per period, nothing lost


def test_enable_and_limits_follow_admission():
    r = Rig()
    r.admit([HEALTHY, HEALTHY, HEALTHY], chg_ma=90000, dsg_ma=120000)
    r.run_ms(50)
    assert r.frames[0x35C][0] & 0xC0 == 0xC0
    assert r.frames[0x351][2:4] == bytes((0x84, 0x03))      # 900 = 90.0 A
    assert r.frames[0x359][4] == 3                          # module count = admitted
    for what in ("fault", "ramp", "open"):
        r = Rig()
        r.admit([HEALTHY, HEALTHY], chg_ma=90000, dsg_ma=120000)
        if what == "fault":
            r.adm.faults = 1
        elif what == "ramp":
            r.adm.ramp_down = True
        else:
            r.adm.admitted_mask = 0
            r.adm.admitted = 0
        r.run_ms(50)
        assert r.frames[0x35C][0] & 0xC0 == 0, what
        assert r.frames[0x351][2:6] == bytes(4), what       # both current limits 0
    assert r.frames[0x359][4] == 0                          # nothing admitted: count 0


def test_heartbeat_lost_and_restored_raise_events():
    r = Rig({"heartbeat_timeout_ms": 3000})
    r.admit([HEALTHY])
    assert not r.link.heartbeat_ok
    r.heartbeat()
    r.run_ms(10)
    assert r.link.heartbeat_ok
    for _ in range(5):                     # a keep-alive every second keeps it alive
        r.run_ms(1000)
        r.heartbeat()
    assert r.link.heartbeat_ok
    r.run_ms(3100)                          # silence longer than the timeout
    assert not r.link.heartbeat_ok
    r.heartbeat()
    r.run_ms(10)
    assert r.link.heartbeat_ok
    out = [0] * 5
    seen = []
    for seq in range(r.events.oldest(), r.events.seq + 1):
        if r.events.get(seq, out) and out[1] == EV_INVERTER:
            seen.append(out[3])
    assert seen == [1, 0, 1]


def test_alarm_bits_of_admitted_modules_only():
    from bankgate.model import ALM_MOD_OV, ALM_DSG_OC
    r = Rig()
    r.admit([HEALTHY, (52000, 0, 500, 1000, 250, ALM_MOD_OV, ALM_DSG_OC, 0)])
    r.run_ms(50)
    assert r.frames[0x359][0] & 0x02 and r.frames[0x359][2] & 0x80
    r.adm.admitted_mask = 0b01            # the alarming module is not admitted
    r.run_ms(1000)
    assert r.frames[0x359][0] == 0 and r.frames[0x359][2] == 0


def test_service_allocates_nothing():
    r = Rig({"period_ms": 100})
    r.admit([HEALTHY] * 16)
    r.run_ms(300)
    link = r.link
    clock = r.clock
    for _ in range(400):
        mptest.no_alloc(link.service, clock.ticks_ms())
        clock.advance_us(1000)
        while r.inv.recv(r.rx) >= 0:
            pass
    assert link.frames_sent >= 6 * 6
