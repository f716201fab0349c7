# The Gateway loop's scheduling (bankgate.app): the control step runs every
# control.period_ms and AT ONCE when a decoded frame changes a module's alarm bits or
# check result; other frames cost only that slot's checks; the next request leaves in
# the iteration that decoded the previous answer.  Instant-answer bank (benchrig).
# mpy-heapsize: 512k
import benchrig

N = 4


def _gw():
    frames = benchrig.build_frames(N)
    gw, clock, uart = benchrig.make_gateway(N, frames)
    assert gw.admission.admitted_mask == (1 << N) - 1
    return gw, clock, uart, frames


def test_unchanged_frames_do_not_run_the_control_step():
    gw, clock, uart, _ = _gw()
    period = gw.period_ms
    s0 = gw.control_steps
    t0 = clock.ticks_ms()
    d0 = gw.poller.transactions
    for _ in range(2000):
        gw.step()
        clock.advance_us(1000)
    elapsed = clock.ticks_ms() - t0
    frames = gw.poller.transactions - d0
    steps = gw.control_steps - s0
    assert frames > 10 * (elapsed // period), (frames, elapsed)     # many more frames than periods
    # one step per period; an iteration can end up to one request's wire time (~2 ms)
    # after the deadline, so a period may stretch by that much, never shrink
    assert elapsed // (period + 3) - 2 <= steps <= elapsed // period + 2, (steps, elapsed, period)


def test_critical_alarm_opens_in_the_iteration_that_decodes_it():
    gw, clock, uart, frames = _gw()
    slot = 2
    addr = 2 + slot
    alarm = benchrig.build_frames(N, alarm_slot=slot)
    frames[addr << 8 | 0x44] = alarm[addr << 8 | 0x44]
    # let the period's control step run just before, so only the frame can trigger one
    gw.next_control = clock.ticks_ms() + 10 * gw.period_ms
    pin = gw.hw.outputs["k%d" % slot]
    assert pin.value() == 1
    steps = gw.control_steps
    for k in range(2000):
        gw.step()
        if gw.bank.modules[slot].protections:
            break
        clock.advance_us(1000)
    assert gw.bank.modules[slot].protections, "alarm never decoded"
    # same iteration: the output is open and a control step ran, before the period
    assert pin.value() == 0
    assert gw.control_steps == steps + 1
    assert gw.admission.mod_state[slot] != 5            # not MOD_ADMITTED
    for i in range(N):
        if i != slot:
            assert gw.hw.outputs["k%d" % i].value() == 1


def test_next_request_leaves_in_the_same_iteration():
    gw, clock, uart, _ = _gw()
    p = gw.poller
    # with the instant bank, every iteration that decodes an answer sends the next
    # request: one transaction per iteration (no extra loop pass per request)
    t0 = p.transactions
    n0 = uart.transactions
    for _ in range(50):
        gw.step()
        clock.advance_us(1000)
    assert p.transactions - t0 >= 49
    assert uart.transactions - n0 >= 49


def test_urgent_is_read_only_and_allocation_free():
    import mptest
    gw, clock, uart, _ = _gw()
    adm = gw.admission
    now = clock.ticks_ms()
    before = (bytes(adm.mod_state), bytes(adm.mod_reason), adm.state, gw.events.seq)
    for i in range(N):
        assert not adm.urgent(i, now, 0)
    assert not adm.urgent(N + 3, now, 0)                 # beyond the expected slots
    assert mptest.no_alloc(gw._urgent, 1, now) is False
    m = gw.bank.modules[1]
    m.protections |= adm.rules.crit & -adm.rules.crit               # one critical bit
    assert adm.urgent(1, now, 0)
    assert (bytes(adm.mod_state), bytes(adm.mod_reason), adm.state, gw.events.seq) == before


def _can_gw():
    """A CAN module bus (pylontech-can) Gateway, warmed up until every module is admitted.
    Frames arrive once a second as a burst of 6 frames per module."""
    import bench
    from fakehw import FakeHardware, SimClock
    from bankgate.app import Gateway
    frames = bench.can_frames(N)
    clock = SimClock()
    hw = FakeHardware(clock, outputs=["k%d" % i for i in range(N)])
    can = bench.InstantCan(frames)
    hw.can_modules = can
    hw.link_sensor = benchrig.ConstSensor(benchrig.module_data(0)["pack"]["voltage_mv"])
    cfg = benchrig.bench_config(N, False, "can")
    cfg["bank"]["firmware_same"] = False          # CAN frames carry no BMS software version
    gw = Gateway(hw, cfg, None)
    # the Pylontech CAN frame set reports no cells: a CAN module cannot pass the
    # cell-count check (a limitation of the CAN family today, reported); this test is
    # about frame scheduling, so admission is told to expect the 0 cells CAN reports
    gw.admission.rules.cells = 0
    for t in range(60000):
        if t % 1000 == 0:
            can.arm()
        gw.step()
        clock.advance_us(1000)
        if gw.admission.admitted_mask == (1 << N) - 1 and t % 1000 == 999:
            break
    assert gw.admission.admitted_mask == (1 << N) - 1, gw.admission.snapshot()
    return gw, clock, can, frames


def test_can_alarm_frame_k_of_a_burst_opens_in_the_iteration_that_decodes_it():
    # a burst of 16 frames is waiting; frame k is a critical alarm (0x359) for module
    # `slot`, the others are ordinary frames.  One loop iteration must decode frame k
    # AND open that module's output, for every position k (counted in frames: the
    # controller's read index, not service() calls)
    from bankgate.proto import pylon_can as pc
    from bankgate.poller import can_id_for
    gw, clock, can, frames = _can_gw()
    slot = 1
    buf = bytearray(8)
    pc.encode_359(buf, 0x04, 0, 1, False)          # protection: cell over-voltage
    alarm = (can_id_for(2 + slot, 0x359), bytes(buf[:7]))
    normal = [f for f in frames if f[0] != alarm[0]]
    pin = gw.hw.outputs["k%d" % slot]
    for k in range(16):
        assert pin.value() == 1
        burst = normal[:k] + [alarm] + normal[k:15]
        assert len(burst) == 16
        can.frames = burst
        can.arm()
        gw.next_control = clock.ticks_ms() + 10 * gw.period_ms   # only the frame may trigger a step
        steps = gw.control_steps
        gw.step()
        assert can.i >= k + 1, (k, can.i)                          # frame k was decoded ...
        assert gw.bank.modules[slot].protections, k
        assert pin.value() == 0, k                                 # ... and acted on at once
        assert gw.control_steps > steps
        for i in range(N):
            if i != slot:
                assert gw.hw.outputs["k%d" % i].value() == 1
        # recover: the alarm clears, the module rejoins (next test position)
        can.frames = frames
        for t in range(1, 30000):
            if t % 1000 == 0:                      # a pack sends its set once a second
                can.arm()
            gw.step()
            clock.advance_us(1000)
            if pin.value() == 1 and t % 1000 == 999:
                break
        assert pin.value() == 1, (k, gw.admission.snapshot()["modules"][slot])


def test_can_burst_every_changed_frame_is_checked():
    # every frame of a burst that changed a record goes through the urgent check in the
    # iteration that decodes it: checks offered == frames that changed a slot
    gw, clock, can, frames = _can_gw()
    p = gw.poller
    changed = [0]
    real = p.service

    def counted(now):
        s = real(now)
        if s >= 0:
            changed[0] += 1
        return s
    p.service = counted
    checked = [0]
    real_urgent = gw._urgent

    def urgent(slot, now):
        checked[0] += 1
        return real_urgent(slot, now)
    gw._urgent = urgent
    gw.next_control = clock.ticks_ms() + 100 * gw.period_ms
    can.arm()
    gw.step()
    assert can.i == len(frames)                   # the whole burst in one iteration
    assert changed[0] == len(frames)
    assert checked[0] == changed[0]


def test_mqtt_rescan_keeps_the_duplicate_verdict_in_force():
    # a duplicate address is found (16 garbled replies at address 3): every module opens.
    # The MQTT `rescan` command must not lift that verdict while the new scan runs:
    # no output may close from the command until the scan has ended
    from bankgate import discovery as dsc
    from bankgate.telemetry import commands as cmds
    gw, clock, uart, _ = _gw()
    d = gw.poller.discovery
    for _ in range(16):
        d.note(1, dsc.R_CORRUPT, clock.ticks_ms())
    assert d.has(dsc.F_DUPLICATE, 3)
    for _ in range(20000):
        gw.step()
        clock.advance_us(1000)
        if not any(gw.outputs().values()):
            break
    assert not any(gw.outputs().values())
    scans = d.scans
    assert cmds.execute(gw, cmds.CMD_RESCAN, None, None) == cmds.OK
    steps = 0
    while d.scans == scans:
        gw.step()
        clock.advance_us(1000)
        steps += 1
        assert steps < 20000
        assert d.has(dsc.F_DUPLICATE, 3), steps
        assert d.slot_fault_mask() & (1 << 1)
        assert not any(gw.outputs().values()), steps
    assert steps >= N, steps                          # one probe per scanned address
    assert d.has(dsc.F_DUPLICATE, 3)                  # a scan does not decide it
