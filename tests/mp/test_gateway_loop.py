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
    m.protections |= adm.crit & -adm.crit               # one critical bit
    assert adm.urgent(1, now, 0)
    assert (bytes(adm.mod_state), bytes(adm.mod_reason), adm.state, gw.events.seq) == before


def test_can_bus_every_decoded_frame_goes_through_the_check():
    # on CAN, service() decodes the next received frame: the loop must not call it a
    # second time in the same iteration (that frame's slot would skip the urgent check)
    import bench
    from fakehw import FakeHardware, SimClock
    from bankgate.app import Gateway
    frames = bench.can_frames(N)
    clock = SimClock()
    hw = FakeHardware(clock, outputs=["k%d" % i for i in range(N)])
    can = bench.InstantCan(frames)
    hw.can_modules = can
    hw.link_sensor = benchrig.ConstSensor(0)
    gw = Gateway(hw, benchrig.bench_config(N, False, "can"), None)
    p = gw.poller
    calls = [0, 0]                    # service() calls, of which returned a slot
    real = p.service

    def counted(now):
        s = real(now)
        calls[0] += 1
        if s >= 0:
            calls[1] += 1
        return s
    p.service = counted
    checked = [0]
    real_urgent = gw._urgent

    def urgent(slot, now):
        checked[0] += 1
        return real_urgent(slot, now)
    gw._urgent = urgent
    for _ in range(4):
        can.arm()
        for _ in range(2 * len(frames)):
            before = calls[0]
            gw.step()
            assert calls[0] - before == 1
        clock.advance_us(1000000)
    assert calls[1] > 0
    # every frame that changed a slot was offered to the check (unless a periodic
    # control step ran in that iteration anyway)
    assert checked[0] + gw.control_steps >= calls[1]
