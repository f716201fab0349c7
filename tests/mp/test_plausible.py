# Data that must make sense (bankgate.plausible): the analog fingerprint of every
# protocol commit, the frozen-data rule (charge that flowed with nothing changing),
# the implausibility checks (cell sum vs module voltage, current vs rating), and how
# admission acts on them (not fresh: block joins, open a closed output at once).
# mpy-heapsize: 512k
import mptest
from test_admission import Rig, adm, all_closed, config

from bankgate import plausible as pl
from bankgate.model import Module, note_analog


def _cfg(**g):
    return config.validate({"gating": g})


def _module(mv=52000, ma=0):
    m = Module(0)
    m.addr = 2
    m.n_cells = 15
    for k in range(15):
        m.cell_mv[k] = mv // 15
    m.n_temps = 2
    m.temp_dc[0] = 250
    m.temp_dc[1] = 245
    m.voltage_mv = mv
    m.current_ma = ma
    m.soc_pm = 600
    m.remaining_mah = 60000
    m.total_mah = 100000
    m.analog_valid = True
    note_analog(m)
    return m


def test_codes_match_admission():
    assert pl.CHK_FROZEN == adm.CHK_FROZEN == 30
    assert pl.CHK_CELL_SUM == adm.CHK_CELL_SUM == 31
    assert pl.CHK_CURRENT_RANGE == adm.CHK_CURRENT_RANGE == 32
    assert adm.CHECK_NAMES[30:33] == ("frozen", "cell_sum", "current_range")


def test_fingerprint_changes_with_content_only():
    m = _module()
    seen = [m.fp]
    note_analog(m)                               # the same content again: the same fingerprint
    assert m.fp == seen[0]

    def changed():
        note_analog(m)
        assert m.fp not in seen, seen
        seen.append(m.fp)
    for field, v in (("current_ma", -100), ("voltage_mv", 52010), ("soc_pm", 601),
                     ("remaining_mah", 60001), ("total_mah", 99999)):
        setattr(m, field, v)
        changed()
    m.cell_mv[14] += 1
    changed()
    m.temp_dc[1] -= 1
    changed()
    # two cells trading values is a change too (position matters)
    a, b = m.cell_mv[0], m.cell_mv[1]
    m.cell_mv[0] = a + 7
    m.cell_mv[1] = b - 7
    changed()
    # extreme values stay small ints (the 32-bit port: 31-bit small ints) and allocate nothing
    m.current_ma = -(1 << 26)
    m.voltage_mv = 65535
    m.remaining_mah = (1 << 24) - 1
    for k in range(15):
        m.cell_mv[k] = 65535
    mptest.no_alloc(note_analog, m)
    assert 0 <= m.fp < (1 << 30)
    # one attribute, no second one (a 60th Module attribute grows every record)
    assert not hasattr(m, "fp_changes")


def test_protocol_commits_fingerprint_pylontech_and_can():
    import benchrig
    import bmsproto
    from bankgate.proto import pylontech, pylon_can as pc
    d = benchrig.module_data(0)["pack"]
    m = Module(0)
    buf = bmsproto.response("pylontech", 0x42, 2, d)
    assert pylontech.decode(0x42, buf, len(buf), 2, m, 1000) == 0
    f = m.fp
    assert f != 0
    assert pylontech.decode(0x42, buf, len(buf), 2, m, 2000) == 0   # replayed frame
    assert m.fp == f
    d["remaining_mah"] += 10
    buf = bmsproto.response("pylontech", 0x42, 2, d)
    assert pylontech.decode(0x42, buf, len(buf), 2, m, 3000) == 0
    assert m.fp != f
    # CAN: 0x356 (V, I, T) and 0x355 (SOC) are the analog content
    m = Module(0)
    b = bytearray(8)
    pc.encode_356(b, 52000, -20000, 250)
    assert pc.decode(0x356, b, 6, m, 0) == 0
    f = m.fp
    assert pc.decode(0x356, b, 6, m, 100) == 0
    assert m.fp == f
    pc.encode_355(b, 60, 100)
    assert pc.decode(0x355, b, 4, m, 200) == 0
    assert m.fp != f
    f = m.fp
    pc.encode_356(b, 52010, -20000, 250)
    assert pc.decode(0x356, b, 6, m, 300) == 0
    assert m.fp != f


def test_frozen_after_the_charge_not_the_time():
    cfg = _cfg(frozen_mah=1000, frozen_min_ma=2000)
    m = _module(ma=-20000)                       # 20 A: 1 Ah takes 180 s
    mods = [m]
    dq = pl.DataChecks(cfg, 1, 0)
    t = 0
    dq.update(t, mods, 1, 0, 0, 0)               # first sight of this content
    for _ in range(179):
        t += 1000
        dq.update(t, mods, 1, 0, 0, 0)
    assert not dq.frozen[0] and dq.check(0, m) == 0
    t += 1000
    dq.update(t, mods, 1, 0, 0, 0)
    assert dq.frozen[0]
    assert dq.check(0, m) == pl.CHK_FROZEN and dq.value == 1000
    # the verdict holds while the content stays the same (the same frame again)...
    for _ in range(100):
        t += 1000
        note_analog(m)
        dq.update(t, mods, 1, 0, 0, 0)
    assert dq.check(0, m) == pl.CHK_FROZEN and dq.value == 1000
    # ... and clears with the first changed frame
    m.voltage_mv += 1
    note_analog(m)
    dq.update(t + 1000, mods, 1, 0, 0, 0)
    assert not dq.frozen[0] and dq.check(0, m) == 0


def test_unchanged_at_rest_is_not_frozen_and_small_currents_do_not_count():
    cfg = _cfg(frozen_mah=500, frozen_min_ma=2000)
    m = _module(ma=0)
    dq = pl.DataChecks(cfg, 1, 0)
    t = 0
    for _ in range(24 * 3600):                   # a day at rest, open
        t += 1000
        dq.update(t, [m], 1, 0, 0, 0)
    assert not dq.frozen[0]
    m.current_ma = 1500                          # float current below frozen_min_ma
    note_analog(m)
    for _ in range(24 * 3600):
        t += 1000
        dq.update(t, [m], 1, 0, 0, 0)
    assert not dq.frozen[0]


def test_closed_module_frozen_on_a_zero_amp_frame_counts_its_bank_share():
    cfg = _cfg(frozen_mah=500, frozen_min_ma=2000)
    m = _module(ma=0)
    dq = pl.DataChecks(cfg, 1, 0)
    t = 0
    for _ in range(100):                         # open: its own 0 A, nothing counts
        t += 1000
        dq.update(t, [m], 1, 0, 60000, 3)
    assert not dq.frozen[0]
    for _ in range(90):                          # closed in a bank carrying 60 A over 3: 20 A
        t += 1000
        dq.update(t, [m], 1, 1, -60000, 3)
    assert dq.frozen[0]


def test_implausible_cell_sum_and_current():
    cfg = _cfg(cell_sum_tol_mv=1500)
    dq = pl.DataChecks(cfg, 1, 0)
    m = _module(mv=52000)
    assert dq.check(0, m) == 0
    m.voltage_mv = 52000 + 1600
    assert dq.check(0, m) == pl.CHK_CELL_SUM and dq.value == -1610
    m.voltage_mv = 52000 - 1400
    assert dq.check(0, m) == 0
    m.cell_mv[3] = 0                             # a dead sense line
    assert dq.check(0, m) == pl.CHK_CELL_SUM
    m = _module(mv=52000)
    m.n_cells = 0                                # CAN: no cells, no cell-sum check
    m.voltage_mv = 40000
    assert dq.check(0, m) == 0
    # current vs the module's own rating (0x47), else gating.max_limit_ma
    m = _module()
    m.params_valid = True
    m.params_chg_ma = 50000
    m.params_dsg_ma = 100000
    m.current_ma = -200000
    assert dq.check(0, m) == 0                   # 2 x 100 A
    m.current_ma = -200100
    assert dq.check(0, m) == pl.CHK_CURRENT_RANGE and dq.value == -200100
    m.params_valid = False                       # fallback: 2 x 500 A
    assert dq.check(0, m) == 0
    m.current_ma = 1000100
    assert dq.check(0, m) == pl.CHK_CURRENT_RANGE


def test_update_and_check_allocate_nothing():
    cfg = _cfg(frozen_mah=500)
    mods = [_module(ma=-30000) for _ in range(4)]
    dq = pl.DataChecks(cfg, 4, 0)
    def upd(t):
        dq.update(t, mods, 4, 0b1111, -120000, 4)
    for k in range(80):
        mptest.no_alloc(upd, 1000 * (k + 1))
    assert dq.frozen[0]
    for i in range(4):
        assert mptest.no_alloc(dq.check, i, mods[i]) == pl.CHK_FROZEN


def _frozen_rig(main=False):
    r = Rig({"gating": {"frozen_mah": 500}}, main=main)
    for i in range(3):
        note_analog(r.m(i))
    r.run(20000, until=lambda: all_closed(r))
    assert all_closed(r)
    return r


def test_frozen_data_opens_a_closed_branch_at_once_and_blocks_its_rejoin():
    r = _frozen_rig()
    for i in range(3):
        r.m(i).current_ma = -20000
        note_analog(r.m(i))
    # slot 1 keeps its content (a replaying BMS: fresh t_analog, same numbers); the
    # others' numbers move every step
    opened = -1
    for k in range(2000):
        for i in (0, 2):
            r.m(i).voltage_mv += 1 if k % 2 else -1
            note_analog(r.m(i))
        r.run(50)
        if not r.out(1):
            opened = k
            break
    assert opened > 0, r.a.snapshot()["modules"][1]
    assert r.a.mod_reason[1] == adm.CHK_FROZEN and r.a.mod_value[1] >= 500
    assert r.out(0) and r.out(2)                 # the others stay
    assert not r.a.faults                        # its replayed 20 A is no weld
    r.run(20000)
    assert not r.out(1) and r.a.mod_reason[1] == adm.CHK_FROZEN
    assert not r.a.faults
    # the content changes: the verdict clears, it may join again
    r.m(1).current_ma = 0
    note_analog(r.m(1))
    r.run(20000, until=lambda: r.out(1))
    assert r.out(1)


def test_frozen_data_opens_the_main_contactor():
    r = _frozen_rig(main=True)
    for i in range(3):
        r.m(i).current_ma = -20000
        note_analog(r.m(i))
    r.run(100000, until=lambda: not r.out(0))
    assert not r.out(0)
    assert r.a.mod_reason[0] == adm.CHK_FROZEN
    assert not r.a.faults


def test_implausible_frame_is_urgent_and_opens_at_once():
    r = _frozen_rig()
    now = r.now()
    m = r.m(2)
    m.voltage_mv += 3000                         # the frame just decoded
    assert r.a.urgent(2, now, 0)
    r.step()
    assert not r.out(2) and r.a.mod_reason[2] == adm.CHK_CELL_SUM
    assert r.a.mod_value[2] < -2900
    assert r.a.state in (adm.BANK_DEGRADED,)     # critical: no ramp-down
    r.run(10000)
    assert not r.out(2)                          # it cannot rejoin
    m.voltage_mv -= 3000
    r.run(20000, until=lambda: r.out(2))
    assert r.out(2)
