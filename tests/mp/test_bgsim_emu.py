# mpy-heapsize: 1m
# The emulated BMSes answer the firmware's own requests, and the firmware's own
# decoders read back the module's physical state (tools/sim/bgsim/emu.py, bms.py).
from bankgate import model
from bankgate.model import ALM_CELL_OV, ALM_CHG_OT, ALM_DSG_OC
from bankgate.proto import pace, pylontech
from bankgate.proto.errors import E_OK

from bgsim import emu
from bgsim.bms import Bms, alarm_bits
from bgsim.physics import SimBank, SimModule


def make(addr=2, soc=0.6, current=-12.3, family="pylontech", cells=15, **kw):
    m = SimModule(0, cells=cells, soc=soc, cell_spread_v=0.012, capacity_ah=100.0)
    m.current_a = current
    b = Bms(m, addr, serial="PPTBH02400012345", model="US5000", sw_version="2.3", **kw)
    b.update(0.0, 0.1)
    peers = []
    r = emu.Rs485Bms(b, family, peers)
    peers.append(r)
    return m, b, r


def ask(proto, responder, cmd, addr, mod):
    req = bytearray(32)
    n = proto.encode_request(cmd, addr, req)
    resp = responder(bytes(req[:n]))
    assert resp is not None, "no answer to 0x%02X" % cmd
    return proto.decode(cmd, bytearray(resp), len(resp), addr, mod, 1234)


def test_pylontech_analog_matches_physics():
    m, b, r = make()
    mod = model.Module(0)
    assert ask(pylontech, r, 0x42, 2, mod) == E_OK
    assert mod.n_cells == 15
    cells = m.cell_v()
    for k in range(15):
        assert abs(mod.cell_mv[k] - cells[k] * 1000) <= 0.5
    assert mod.current_ma == -12300                       # 100 mA steps: -12.3 A exactly
    assert abs(mod.voltage_mv - m.terminal_v() * 1000) <= 0.5
    assert mod.total_mah == 100000 and abs(mod.remaining_mah - 60000) <= 1
    assert mod.temp_dc[4] == round(m.term_c * 10)


def test_identity_limits_and_params():
    m, b, r = make()
    mod = model.Module(0)
    for cmd in (0x4F, 0x51, 0x93, 0x47, 0x92):
        assert ask(pylontech, r, cmd, 2, mod) == E_OK, "cmd 0x%02X" % cmd
    assert mod.serial_str() == "PPTBH02400012345"
    assert mod.model_str().strip() == "US5000"
    assert mod.sw_version == 0x0203
    assert mod.chg_limit_ma == 50000 and mod.dsg_limit_ma == 50000
    assert mod.chg_v_mv == 15 * 3500


def test_address_unplug_and_bad_checksum():
    m, b, r = make(addr=3)
    req = bytearray(32)
    n = pylontech.encode_request(0x42, 2, req)
    assert r(bytes(req[:n])) is None                      # not our address
    n = pylontech.encode_request(0x42, 3, req)
    good = bytes(req[:n])
    assert r(good) is not None
    b.addr = 5                                            # address changed on the module
    assert r(good) is None
    n = pylontech.encode_request(0x42, 5, req)
    assert r(bytes(req[:n])) is not None
    b.plugged = False
    assert r(bytes(req[:n])) is None
    b.plugged = True
    bad = bytearray(req[:n])
    bad[-3] = ord("0") if bad[-3] != ord("0") else ord("1")
    resp = r(bytes(bad))
    assert resp is not None and resp[7:9] == b"02"        # RTN 02: checksum error
    assert r(b"garbage") is None


def test_alarms_from_physics_and_injection():
    m, b, r = make(current=-80.0)                         # 80 A > 1.05 x 50 A rated
    mod = model.Module(0)
    assert ask(pylontech, r, 0x44, 2, mod) == E_OK
    assert mod.alarms & ALM_DSG_OC
    b.inject(alarm_bits(["cell_ov", "charge_ot"]))
    b.update(0.0, 0.1)
    assert ask(pylontech, r, 0x44, 2, mod) == E_OK
    assert mod.alarms & ALM_CELL_OV and mod.alarms & ALM_CHG_OT
    # sustained over-current above 1.5 x rated: protection, the BMS opens its switch
    m2, b2, r2 = make(current=-80.0)
    b2.dsg_rated_a = 50.0
    m2.current_a = -90.0
    for k in range(12):
        b2.update(k * 0.1, 0.1)
    assert m2.bms_open and b2.protections & ALM_DSG_OC
    assert ask(pylontech, r2, 0x44, 2, mod) == E_OK
    assert mod.protections & ALM_DSG_OC


def test_pace_family():
    m, b, r = make(family="pace", cells=16, current=7.77)
    mod = model.Module(0)
    assert ask(pace, r, 0x42, 2, mod) == E_OK
    assert mod.n_cells == 16 and mod.current_ma == 7770   # PACE: 10 mA steps
    assert ask(pace, r, 0x44, 2, mod) == E_OK
    assert ask(pace, r, 0xC2, 2, mod) == E_OK


def test_group_query_answers_for_master_and_slaves():
    peers = []
    mods = []
    for i, a in enumerate((2, 3, 4)):
        m = SimModule(i, soc=0.3 + 0.2 * i)
        b = Bms(m, a)
        b.update(0.0, 0.1)
        r = emu.Rs485Bms(b, "pylontech", peers)
        peers.append(r)
        mods.append(m)
    bank = model.Bank()
    for i, a in enumerate((2, 3, 4)):
        bank.modules[i].addr = a
    req = bytearray(32)
    n = pylontech.encode_group_request(0x42, 2, req)
    resp = peers[0](bytes(req[:n]))
    got = pylontech.decode_group(0x42, bytearray(resp), len(resp), bank, 2, 0)
    assert got == 3 or got == E_OK, got
    for i in range(3):
        assert abs(bank.modules[i].soc_pm - round(mods[i].soc * 1000)) <= 1


def test_can_frames_decode():
    from bankgate.proto import pylon_can
    m, b, r = make(addr=3, current=-20.0)
    mod = model.Module(0)
    frames = emu.can_frames(b.report(), 3)
    assert len(frames) == 6
    for cid, data in frames:
        assert (cid - 0x400) >> 4 == 3
        pid = 0x350 + (cid & 0xF)
        assert pylon_can.decode(pid, bytearray(data) + bytearray(8 - len(data)), len(data), mod, 0) == E_OK
    assert mod.current_ma == -20000 and mod.chg_limit_ma == 50000


# ------------------------------------------------------------ fast answers
# The polled commands (0x42, 0x44, Pylontech 0x92) are answered by bgsim.answers from
# Bms.refresh()'s integers; the reference is bmsproto fed with emu's data dicts of
# Bms.report() (responder.fast = False).  Same bytes over random module states.
def _random_state(rnd, m, b):
    m.soc = rnd.choice((0.0, 0.02, 0.5, 0.97, 1.0, rnd.random()))
    m.current_a = rnd.choice((0.0, 0.3, -0.6, 55.0, -90.0, rnd.uniform(-120, 120)))
    m.temp_c = rnd.choice((-25.0, -1.0, 5.0, 25.0, 48.0, 58.0, rnd.uniform(-30, 70)))
    m.term_c = m.temp_c + rnd.uniform(-2, 12)
    m.cell_spread_v = rnd.choice((0.0, 0.012, 0.4))
    m.capacity_ah = rnd.choice((50.0, 60.0, 100.0, 280.0))
    b.forced_alarms = 0
    b.forced_prot = 0
    b.forced_trip = False
    if rnd.random() < 0.5:
        b.inject(rnd.getrandbits(16), protect=rnd.random() < 0.3, trip=rnd.random() < 0.5)
    m.bms_open = rnd.random() < 0.15
    b.update(rnd.uniform(0, 100), 0.1)
    if rnd.random() < 0.2:
        b.alarms |= rnd.getrandbits(16)          # bits alarm_data maps from the flags
        b.protections |= rnd.getrandbits(16)


def test_fast_answers_equal_bmsproto_reference():
    import random as rnd
    rnd.seed(4)
    req = bytearray(32)
    for family, proto in (("pylontech", pylontech), ("pace", pace)):
        for cells in (14, 15, 16):
            m, b, fast = make(family=family, cells=cells, addr=rnd.randint(1, 15))
            ref = emu.Rs485Bms(b, family, [])
            ref.fast = False
            for trial in range(40):
                _random_state(rnd, m, b)
                for cmd in (0x42, 0x44, 0x92, 0x47, 0x4F):
                    n = proto.encode_request(cmd, b.addr, req) if cmd != 0x4F or family == "pylontech" \
                        else None
                    if n is None:
                        continue
                    q = bytes(req[:n])
                    a = fast(q)
                    ra = ref(q)
                    assert a == ra, (family, cells, trial, hex(cmd), a, ra)


def test_fast_answer_reused_while_unchanged():
    m, b, r = make(current=0.0)
    r.stamp = lambda: 7                         # physics time: unchanged between requests
    req = bytearray(32)
    n = pylontech.encode_request(0x42, 2, req)
    q = bytes(req[:n])
    a1 = r(q)
    a2 = r(q)
    assert a2 is a1                             # same state, same answer object
    m.current_a = -40.0
    b.update(0.1, 0.1)                          # a new update: recomputed, new bytes
    a3 = r(q)
    assert a3 != a1
    mod = model.Module(0)
    assert pylontech.decode(0x42, bytearray(a3), len(a3), 2, mod, 0) == E_OK
    assert mod.current_ma == -40000


def test_report_integers_equal_the_physics():
    import random as rnd
    rnd.seed(9)
    m, b, r = make()
    for trial in range(30):
        _random_state(rnd, m, b)
        rep = b.report()
        assert rep["cell_mv"] == [int(round(v * 1000)) for v in m.cell_v()]
        tc = m.temp_c
        assert rep["temp_dc"] == [int(round(x * 10)) for x in (tc + 3.0, tc, tc - 0.5, tc + 0.5, m.term_c)]
        assert rep["voltage_mv"] == int(round(m.terminal_v() * 1000))
        assert rep["current_ma"] == (0 if m.bms_open else int(round(m.current_a * 1000)))
        assert rep["remaining_mah"] == int(round(m.soc * int(round(m.capacity_ah * 1000))))
        assert rep["alarms"] == b.alarms and rep["protections"] == b.protections
        assert rep["chg_limit_ma"] == int(round(b.chg_limit_a * 1000))


def _ref_parse_request(req):
    # emu._parse_request before the viper decoder (bytes.fromhex + a character loop)
    from bankgate.proto import frame
    n = len(req)
    if n < frame.OVERHEAD or req[0] != 0x7E or req[n - 1] != 0x0D or (n - 2) % 2:
        return None
    try:
        vals = bytes.fromhex(bytes(req[1:n - 1]).decode())
    except (ValueError, UnicodeError):
        return None
    for c in req[1:n - 1]:
        if c > 0x46 or (0x3A <= c <= 0x40) or c < 0x30:
            return None
    lenid = ((vals[4] << 8) | vals[5]) & 0xFFF
    info = bytes(vals[6:6 + lenid // 2])
    cs = (vals[-2] << 8) | vals[-1]
    ok = cs == frame.chksum(req, 1, n - 5) and len(info) * 2 == lenid and lenid == n - frame.OVERHEAD
    return vals[0], vals[1], vals[2], vals[3], info, ok


def test_parse_request_equals_reference_on_damaged_requests():
    import random as rnd
    rnd.seed(11)
    buf = bytearray(40)
    reqs = []
    for cmd in (0x42, 0x44, 0x47, 0x92, 0x51, 0x93, 0x4F):
        n = pylontech.encode_request(cmd, rnd.randint(0, 255), buf)
        reqs.append(bytes(buf[:n]))
        n = pylontech.encode_group_request(0x42, 2, buf) if cmd == 0x42 else n
        reqs.append(bytes(buf[:n]))
    for trial in range(400):
        q = bytearray(rnd.choice(reqs))
        for k in range(rnd.randint(0, 2)):
            q[rnd.randint(0, len(q) - 1)] = rnd.choice(b"0123456789ABCDEFabcG~\r ")
        if rnd.random() < 0.1:
            q = q[:rnd.randint(0, len(q))]
        q = bytes(q)
        assert emu._parse_request(q) == _ref_parse_request(q), q
