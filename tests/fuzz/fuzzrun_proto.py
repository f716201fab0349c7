# Fuzzing the RS485 decoders (bankgate.proto.pylontech / pace, framing in proto.frame)
# under the unix port, and proof that fuzzed input cannot close a contactor.
#
# Inputs: valid seed frames from the simulator's encoders (tools/sim/bmsproto.py) and real
# captures, mutated by fuzzlib.Mutator (bit flips, byte replace/insert/delete, truncation,
# splicing, INFO mutated and re-checksummed, every RTN, wrong VER/ADR/CID1, lying LENGTH,
# random hex, random bytes), decoded with the seed's command (1 in 16: any command) and
# address (1 in 32: a wrong one), with n sometimes 0, -1, past the data or past the buffer.
#
# Checks per input:
#   - nothing escapes the decoder, and it allocates nothing (heap locked around the call);
#   - the result is E_OK or a known negative code (bankgate.proto.errors);
#   - rejected: the Module record is unchanged (fingerprint of every attribute, arrays by
#     content);
#   - accepted: only the fields of that command changed, and every value is inside its
#     documented range (docs/protocols.md; see the check_* functions).
# Each run also asserts that the fuzzer reached every rejection code it should (a shallow
# fuzzer that never gets past the checksum would otherwise pass silently).
#
# make test: FAST inputs per decoder; make fuzz: tests/mp/test_fuzz_long.py calls the same
# run_* functions with >= 100 000.  A failure prints "seed=0x... i=N": call the run_* with
# that seed and count N + 1 to reproduce it.
#
# This module holds the run_* functions (generator, checks, oracles); the pytest items are in
# tests/mp/test_fuzz_proto.py (fast counts, `make test`) and tests/mp/test_fuzz_long*.py
# (>= 100 000 inputs, `make fuzz`).  They live in tests/fuzz because the harness recompiles
# tests/fuzz when a file changes, while a test module imported by another test module
# would run from a stale compiled copy.
import micropython

import bmsproto
from fakehw import FakeAdc, FakeHardware, SimClock
from fuzzlib import Fingerprint, Mutator, RawFrame, Rate, Rng, fail

from bankgate import admission as adm
from bankgate import config, model
from bankgate.model import MAX_CELLS, MAX_TEMPS
from bankgate.proto import errors
from bankgate.proto import pace as PC
from bankgate.proto import pylontech as PY
from bankgate.proto.errors import E_OK

FAST = 2500             # inputs per decoder in `make test`
SEED = 0x5EED0001

# ------------------------------------------------------------------ what a command may write
ANALOG = ("n_cells", "cell_mv", "n_temps", "temp_dc", "current_ma", "voltage_mv", "remaining_mah",
          "total_mah", "cycles", "soc_pm", "analog_valid", "t_analog",
          "fp")     # the analog fingerprint (bankgate.model.note_analog)
ALARM = ("alarms", "protections", "status", "alarm_valid", "t_alarm")
MGMT = ("chg_v_mv", "dsg_v_mv", "chg_limit_ma", "dsg_limit_ma", "mgmt_flags", "mgmt_valid", "t_mgmt")
PARAMS = ("cell_hi_mv", "cell_lo_mv", "cell_uv_mv", "mod_hi_mv", "mod_lo_mv", "mod_uv_mv",
          "params_chg_ma", "params_dsg_ma", "params_valid")
MFR = ("model", "model_len", "manufacturer", "manufacturer_len", "sw_version", "id_valid", "t_id")
SERIAL = ("serial", "serial_len", "id_valid", "t_id")
VERSION = ("proto_version", "id_valid", "t_id")

PY_WRITES = {PY.CMD_ANALOG: ANALOG, PY.CMD_ALARM: ALARM, PY.CMD_MGMT: MGMT,
             PY.CMD_PARAMS: PARAMS, PY.CMD_MFR: MFR, PY.CMD_SERIAL: SERIAL,
             PY.CMD_VERSION: VERSION}
# PACE sends no limits: each accepted 0x42 also writes the limit stand-in (issue 15,
# bankgate.familycaps.pace_limits)
PC_WRITES = {PC.CMD_ANALOG: ANALOG + ("soh_pm",) + MGMT, PC.CMD_ALARM: ALARM,
             PC.CMD_MFR: ("model", "model_len", "manufacturer", "manufacturer_len", "id_valid",
                          "t_id"),
             PC.CMD_SERIAL: SERIAL, PC.CMD_VERSION: VERSION}
OTHER_CMDS = (0x00, 0x41, 0x43, 0x45, 0x47, 0x51, 0x61, 0x92, 0x93, 0xC1, 0xC2, 0xFF)

# ------------------------------------------------------------------ seeds
UP2500_42 = (b"~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73"
             b"FFFA680EFFFF04FFFF00000174E401B198E906\r")
PACE_42 = (b"~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC6"
           b"0CC7060B9B0B990B990B990BB30BBCFF1FCCCD12D303286A008C2710E1E4\r")
PACE_44 = (b"~25014600004C00011000000000000000000000000000000000060000000000000000000000"
           b"0E000000000000EF3A\r")
PACE_C1 = b"~25014600602850313653313030412D313831322D312E30302000F58E\r"
PACE_C2 = (b"~25014600B05031383132313031333830333039442020202020202020202020202020202020202020"
           b"202020202020EE0F\r")


def _pack(n_cells, n_temps, mv_cell=3300, rem=37000, tot=50000, cur=-12300, **kw):
    p = {"cells_mv": [mv_cell + (k % 7) for k in range(n_cells)],
         "temps_dc": [250 + k for k in range(n_temps)], "current_ma": cur,
         "voltage_mv": n_cells * mv_cell, "remaining_mah": rem, "total_mah": tot, "cycles": 321}
    p.update(kw)
    return p


def _alarm(n_cells, n_temps, family="pylontech", **kw):
    a = {"cell_flags": [0] * n_cells, "temp_flags": [0] * n_temps,
         "status": [0] * (9 if family == "pace" else 5)}
    a.update(kw)
    return a


PARAMS_VAL = {"cell_hi_mv": 3650, "cell_lo_mv": 2900, "cell_uv_mv": 2700, "chg_ma": 50000,
              "mod_hi_mv": 54000, "mod_lo_mv": 45000, "mod_uv_mv": 42000, "dsg_ma": 100000}
MGMT_VAL = {"chg_v_mv": 53250, "dsg_v_mv": 47000, "chg_limit_ma": 25000, "dsg_limit_ma": 50000,
            "mgmt_flags": 0xC0}
MFR_VAL = {"model": "US3000C", "sw_version": 0x0102, "manufacturer": "PYLON"}


def pylontech_seeds(addr=2):
    R = bmsproto
    fam = "pylontech"
    out = [RawFrame(UP2500_42, PY.CMD_ANALOG, 2)] if addr == 2 else []
    frames = (
        (PY.CMD_ANALOG, R.analog_response(fam, addr, _pack(15, 5))),
        (PY.CMD_ANALOG, R.analog_response(fam, addr, _pack(24, 8, rem=150000, tot=200000))),
        (PY.CMD_ANALOG, R.analog_response(fam, addr, _pack(1, 1, rem=0, tot=1, cur=0))),
        (PY.CMD_ANALOG, R.analog_response(fam, addr, _pack(16, 4, rem=0xFFFFFF, tot=0xFFFFFF,
                                                           cur=-3276800))),
        (PY.CMD_ALARM, R.alarm_response(fam, addr, _alarm(15, 5))),
        (PY.CMD_ALARM, R.alarm_response(fam, addr, _alarm(24, 8, extra=True,
                                                          status=[0xFF, 0, 0, 1, 0]))),
        (PY.CMD_ALARM, R.alarm_response(fam, addr, _alarm(16, 2, cell_flags=[2] + [0] * 15,
                                                          charge_current_flag=0xF0))),
        (PY.CMD_MGMT, R.mgmt_response(fam, addr, MGMT_VAL)),
        (PY.CMD_PARAMS, R.params_response(fam, addr, PARAMS_VAL)),
        (PY.CMD_MFR, R.mfr_response(fam, addr, MFR_VAL)),
        (PY.CMD_SERIAL, R.serial_response(fam, addr, {"serial": "PPTAP0123456789A"})),
        (PY.CMD_VERSION, R.version_response(fam, addr, 0x35)),
        (PY.CMD_ANALOG, R.error_response(fam, addr, 0x04)),
    )
    for cmd, f in frames:
        out.append(RawFrame(f, cmd, addr))
    return out


def pace_seeds(addr=1):
    R = bmsproto
    fam = "pace"
    out = []
    if addr == 1:
        out = [RawFrame(PACE_42, PC.CMD_ANALOG, 1), RawFrame(PACE_44, PC.CMD_ALARM, 1),
               RawFrame(PACE_C1, PC.CMD_MFR, 1), RawFrame(PACE_C2, PC.CMD_SERIAL, 1)]
    frames = (
        (PC.CMD_ANALOG, R.analog_response(fam, addr, _pack(16, 6, tot=103460, design_mah=100000))),
        (PC.CMD_ANALOG, R.analog_response(fam, addr, _pack(24, 8, udi=2))),
        (PC.CMD_ANALOG, R.analog_response(fam, addr, _pack(1, 2, rem=0, tot=10, cur=0))),
        (PC.CMD_ALARM, R.alarm_response(fam, addr, _alarm(16, 6, "pace"))),
        (PC.CMD_ALARM, R.alarm_response(fam, addr, _alarm(24, 8, "pace",
                                                          status=[0xFF, 0xFF, 0, 0, 0x37, 0, 0,
                                                                  0xFF, 0xFF]))),
        (PC.CMD_MFR, R.mfr_response(fam, addr, {"hw_version": "P16S100A-1812-1.00"})),
        (PC.CMD_SERIAL, R.serial_response(fam, addr, {"serial": "SN0123456789"})),
        (PC.CMD_VERSION, R.version_response(fam, addr)),
        (PC.CMD_ALARM, R.error_response(fam, addr, 0x91)),
    )
    for cmd, f in frames:
        out.append(RawFrame(f, cmd, addr))
    return out


def populated(family_mod, seeds, addr):
    """A Module at `addr` with every field filled by decoding the valid seeds, so that
    'unchanged' is checked against real content, not zeros."""
    m = model.Module(0)
    m.addr = addr
    m.seen = True
    for f in seeds:
        if f.addr == addr:
            b = bytearray(f.frame)
            family_mod.decode(f.cmd, b, len(b), addr, m, 1)
    assert m.analog_valid and m.alarm_valid and m.id_valid
    return m


# ------------------------------------------------------------------ range checks (on E_OK)
def _printable(arr, n):
    for k in range(n):
        if arr[k] < 0x20 or arr[k] > 0x7E:
            return False
    return True


def check_analog(m, now, cur_max, tot_max):
    n = m.n_cells
    if not 1 <= n <= MAX_CELLS:
        return "n_cells %d" % n
    for k in range(MAX_CELLS):
        v = m.cell_mv[k]
        if (k < n and not 1 <= v <= 5000) or (k >= n and v != 0):
            return "cell_mv[%d] %d" % (k, v)
    nt = m.n_temps
    if not 1 <= nt <= MAX_TEMPS:
        return "n_temps %d" % nt
    for k in range(MAX_TEMPS):
        t = m.temp_dc[k]
        if (k < nt and not -500 <= t <= 1500) or (k >= nt and t != 0):
            return "temp_dc[%d] %d" % (k, t)
    if not -cur_max <= m.current_ma <= cur_max:
        return "current_ma %d" % m.current_ma
    if not 1 <= m.voltage_mv <= 0xFFFE:
        return "voltage_mv %d" % m.voltage_mv
    tot = m.total_mah
    rem = m.remaining_mah
    if not 0 < tot <= tot_max or not 0 <= rem <= tot:
        return "capacity %d/%d" % (rem, tot)
    exact = rem * 1000 // tot          # host-side oracle (64-bit ints)
    if not 0 <= m.soc_pm <= 1000 or abs(m.soc_pm - exact) > 2:
        return "soc_pm %d (exact %d)" % (m.soc_pm, exact)
    if not 0 <= m.cycles <= 0xFFFF:
        return "cycles %d" % m.cycles
    if not m.analog_valid or m.t_analog != now:
        return "analog_valid/t_analog"
    return None


def check_alarm(m, now):
    if m.alarms & ~0x0FFF or m.protections & ~0x0FFF:
        return "alarm bits %x/%x" % (m.alarms, m.protections)
    if not m.alarm_valid or m.t_alarm != now:
        return "alarm_valid/t_alarm"
    return None


def check_common(m):
    """Every int attribute inside the ESP32 small-int range."""
    for k, v in m.__dict__.items():
        if type(v) is int and not -(1 << 30) < v < (1 << 30):
            return "%s %d outside +-2**30" % (k, v)
    return None


def check_pylontech(m, cmd, now):
    if cmd == PY.CMD_ANALOG:
        return check_analog(m, now, 3276800, 0xFFFFFF)
    if cmd == PY.CMD_ALARM:
        return check_alarm(m, now)
    if cmd == PY.CMD_MGMT:
        if not 1 <= m.chg_v_mv <= 0xFFFE or not 0 <= m.dsg_v_mv <= 0xFFFE:
            return "mgmt voltages %d %d" % (m.chg_v_mv, m.dsg_v_mv)
        if not 0 <= m.chg_limit_ma <= 3276800 or not 0 <= m.dsg_limit_ma <= 3276800:
            return "mgmt limits %d %d" % (m.chg_limit_ma, m.dsg_limit_ma)
        if not 0 <= m.mgmt_flags <= 0xFF or not m.mgmt_valid or m.t_mgmt != now:
            return "mgmt flags/valid"
        return None
    if cmd == PY.CMD_PARAMS:
        if not 0 < m.cell_lo_mv < m.cell_hi_mv <= 5000:
            return "params cell %d %d" % (m.cell_lo_mv, m.cell_hi_mv)
        if not 0 < m.mod_lo_mv < m.mod_hi_mv <= 0xFFFE:
            return "params module %d %d" % (m.mod_lo_mv, m.mod_hi_mv)
        if not -32768 <= m.cell_uv_mv <= 32767 or not 0 <= m.mod_uv_mv <= 0xFFFF:
            return "params uv"
        if not 0 <= m.params_chg_ma <= 3276800 or not 0 <= m.params_dsg_ma <= 3276800:
            return "params currents"
        return None if m.params_valid else "params_valid"
    if cmd == PY.CMD_MFR:
        if not 0 <= m.model_len <= 10 or not _printable(m.model, m.model_len):
            return "model"
        if not 0 <= m.manufacturer_len <= 20 or not _printable(m.manufacturer, m.manufacturer_len):
            return "manufacturer"
        if not 0 <= m.sw_version <= 0xFFFF:
            return "sw_version %d" % m.sw_version
        return None if m.id_valid and m.t_id == now else "id_valid/t_id"
    if cmd == PY.CMD_SERIAL:
        if not 1 <= m.serial_len <= 16 or not _printable(m.serial, m.serial_len):
            return "serial"
        return None if m.id_valid and m.t_id == now else "id_valid/t_id"
    if cmd == PY.CMD_VERSION:
        if not 0 <= m.proto_version <= 0xFF:
            return "proto_version %d" % m.proto_version
        return None if m.id_valid and m.t_id == now else "id_valid/t_id"
    return "accepted unsupported command 0x%02X" % cmd


def check_pace(m, cmd, now):
    if cmd == PC.CMD_ANALOG:
        e = check_analog(m, now, 327680, 655340)
        if e is None and not 0 <= m.soh_pm <= 1000:
            e = "soh_pm %d" % m.soh_pm
        return e
    if cmd == PC.CMD_ALARM:
        return check_alarm(m, now)
    if cmd == PC.CMD_MFR:
        if not 0 <= m.model_len <= 10 or not _printable(m.model, m.model_len):
            return "model"
        if not 1 <= m.manufacturer_len <= 20 or not _printable(m.manufacturer, m.manufacturer_len):
            return "manufacturer"
        return None if m.id_valid and m.t_id == now else "id_valid/t_id"
    if cmd == PC.CMD_SERIAL:
        if not 1 <= m.serial_len <= 16 or not _printable(m.serial, m.serial_len):
            return "serial"
        return None if m.id_valid and m.t_id == now else "id_valid/t_id"
    if cmd == PC.CMD_VERSION:
        return None if 0 <= m.proto_version <= 0xFF and m.id_valid else "version"
    return "accepted unsupported command 0x%02X" % cmd


# Codes a working fuzzer must reach: framing, checksums, header, every RTN, content.
RS485_CODES = (errors.E_SOI, errors.E_EOI, errors.E_HEX, errors.E_LENGTH, errors.E_LCHKSUM,
               errors.E_CHKSUM, errors.E_TRUNCATED, errors.E_VER, errors.E_ADDR, errors.E_CID1,
               errors.E_RTN_VER, errors.E_RTN_CHKSUM, errors.E_RTN_LCHKSUM, errors.E_RTN_CID2,
               errors.E_RTN_FORMAT, errors.E_RTN_DATA, errors.E_RTN_ADDR, errors.E_RTN_INTERNAL,
               errors.E_RTN_UNKNOWN, errors.E_PLAUSIBLE, errors.E_UNSUPPORTED, E_OK)


def _decode_locked(dec, cmd, buf, n, addr, m, now):
    """dec(...) with the heap locked; returns (code, None) or (None, exception)."""
    micropython.heap_lock()
    try:
        r = dec(cmd, buf, n, addr, m, now)
    except BaseException as e:       # MemoryError here = the decoder allocated
        micropython.heap_unlock()
        return None, e
    micropython.heap_unlock()
    return r, None


def run_rs485(name, fam, seeds, writes, check, count, seed, must_reach=RS485_CODES):
    """Fuzz fam.decode with `count` inputs; returns {code: how many}."""
    rng = Rng(seed)
    mut = Mutator(rng, seeds)
    buf = mut.buf
    addrs = []
    for f in seeds:
        if f.addr not in addrs:
            addrs.append(f.addr)
    mods = {}
    fps = {}
    full = {}
    rest = {}
    for a in addrs:
        mods[a] = populated(fam, seeds, a)
        fps[a] = Fingerprint(mods[a], writes)
        full[a] = fps[a].full()
        rest[a] = {}
    cmds = tuple(writes) + OTHER_CMDS
    codes = {}
    accepted_mutants = 0
    rate = Rate(name)
    for i in range(count):
        n = mut.next()
        f = mut.seed_frame
        cmd = f.cmd if rng.below(16) else rng.pick(cmds)
        addr = f.addr if rng.below(32) else rng.pick((0, f.addr + 1, 0xFF, 0x100 + f.addr, -1))
        k = rng.below(64)
        if k == 0:
            n = rng.pick((0, -1, -0x8000, len(buf), len(buf) + 1, n + 1))
        m = mods[f.addr]
        fp = fps[f.addr]
        rc = rest[f.addr]
        if cmd not in rc:
            rc[cmd] = fp.rest(cmd)
        now = (i * 7 + 3) & 0x3FFFFFFF
        r, exc = _decode_locked(fam.decode, cmd, buf, n, addr, m, now)
        if exc is not None:
            # re-run without the lock to name the real exception (or the allocation)
            try:
                fam.decode(cmd, buf, n, addr, m, now)
                what = "allocated with the heap locked (%r)" % (exc,)
            except BaseException as e2:
                what = "raised %r" % (e2,)
            fail("%s cmd=0x%02X addr=%d n=%d: %s" % (name, cmd, addr, n, what), seed, i, buf,
                 max(0, min(n, len(buf))))
        codes[r] = codes.get(r, 0) + 1
        if r != E_OK:
            if type(r) is not int or r >= 0 or r not in errors.ERROR_NAMES:
                fail("%s returned %r" % (name, r), seed, i, buf, max(0, n))
            if fp.full() != full[f.addr]:
                fail("%s rejected (%s) but changed the record" % (name, errors.name(r)), seed, i,
                     buf, max(0, n))
            continue
        if mut.strategy != 11:
            accepted_mutants += 1
        e = check(m, cmd, now) or check_common(m)
        if e is None and fp.rest(cmd) != rc[cmd]:
            e = "accepted cmd 0x%02X wrote fields it does not own" % cmd
        if e is not None:
            fail("%s accepted an implausible record: %s" % (name, e), seed, i, buf, n)
        full[f.addr] = fp.full()
        rest[f.addr] = {}
    rate.done(count, "accepted=%d (mutants %d) codes=%s" % (
        codes.get(E_OK, 0), accepted_mutants,
        ",".join(["%s:%d" % (errors.name(c), codes[c]) for c in sorted(codes)])))
    missing = [errors.name(c) for c in must_reach if c not in codes]
    assert not missing, "%s: the fuzzer never reached %s (seed=0x%08x count=%d)" % (
        name, missing, seed, count)
    assert accepted_mutants > 0, "no mutated frame was ever accepted: the fuzzer stays shallow"
    return codes


def run_pylontech(count=FAST, seed=SEED):
    seeds = pylontech_seeds(2) + pylontech_seeds(0x12)
    return run_rs485("pylontech.decode", PY, seeds, PY_WRITES, check_pylontech, count, seed)


def run_pace(count=FAST, seed=SEED + 1):
    seeds = pace_seeds(1) + pace_seeds(0x0F)
    return run_rs485("pace.decode", PC, seeds, PC_WRITES, check_pace, count, seed)


# ------------------------------------------------------------------ whole-group decode
def group_seeds(first):
    R = bmsproto
    packs = [_pack(15, 5), _pack(16, 4, rem=150000, tot=200000), _pack(24, 8, cur=0)]
    alarms = [_alarm(15, 5), _alarm(16, 4, extra=True), _alarm(24, 8, status=[0x80, 0, 0, 0, 1])]
    out = [RawFrame(R.analog_group_response(first, packs), PY.CMD_ANALOG, first),
           RawFrame(R.analog_group_response(first, packs[:1]), PY.CMD_ANALOG, first),
           RawFrame(R.alarm_group_response(first, alarms), PY.CMD_ALARM, first),
           RawFrame(R.alarm_group_response(first, alarms[1:]), PY.CMD_ALARM, first),
           RawFrame(R.alarm_group_response(first, alarms, extra=True), PY.CMD_ALARM, first),
           RawFrame(R.error_response("pylontech", first, 0x90), PY.CMD_ALARM, first)]
    return out


def run_group(count=FAST, seed=SEED + 2):
    """pylontech.decode_group into a Bank (slots at addresses 2, 3, 4 and 9)."""
    rng = Rng(seed)
    first = 2
    seeds = group_seeds(first)
    mut = Mutator(rng, seeds)
    buf = mut.buf
    bank = model.Bank(4)
    for i, a in enumerate((2, 3, 4, 9)):
        m = bank.modules[i]
        m.addr = a
        for f in pylontech_seeds(a):
            b = bytearray(f.frame)
            PY.decode(f.cmd, b, len(b), a, m, 1)
    fps = [Fingerprint(m, PY_WRITES) for m in bank.modules]
    full = [fp.full() for fp in fps]
    rest_cache = {}                   # cmd -> [fp.rest(cmd) per slot], reset on acceptance
    codes = {}
    written = 0
    rate = Rate("pylontech.decode_group")
    for i in range(count):
        n = mut.next()
        cmd = mut.seed_frame.cmd if rng.below(16) else rng.pick((PY.CMD_ANALOG, PY.CMD_ALARM, 0x47))
        rests = rest_cache.get(cmd)
        if rests is None:
            rests = rest_cache[cmd] = [fp.rest(cmd) for fp in fps]
        now = (i * 11 + 5) & 0x3FFFFFFF
        micropython.heap_lock()
        try:
            r = PY.decode_group(cmd, buf, n, bank, first, now)
            exc = None
        except BaseException as e:
            exc = e
        micropython.heap_unlock()
        if exc is not None:
            fail("decode_group raised or allocated: %r" % (exc,), seed, i, buf, n)
        codes[r] = codes.get(r, 0) + 1
        if r < 0:
            for k, fp in enumerate(fps):
                if fp.full() != full[k]:
                    fail("decode_group rejected (%s) but changed slot %d" % (errors.name(r), k),
                         seed, i, buf, n)
            continue
        if r > 3:                     # at most the three slots at 2, 3, 4 can be written
            fail("decode_group wrote %d packs" % r, seed, i, buf, n)
        written += r
        for k, fp in enumerate(fps):
            m = bank.modules[k]
            if fp.rest(cmd) != rests[k]:
                fail("decode_group wrote foreign fields of slot %d" % k, seed, i, buf, n)
            if fp.full() != full[k]:
                e = check_pylontech(m, cmd, now) or check_common(m)
                if e is not None or m.addr == 9:
                    fail("decode_group slot %d: %s" % (k, e or "slot outside the group"),
                         seed, i, buf, n)
            full[k] = fp.full()
        rest_cache = {}
    rate.done(count, "packs_written=%d codes=%s" % (
        written, ",".join(["%s:%d" % (errors.name(c) if c <= 0 else "w%d" % c, codes[c])
                           for c in sorted(codes)])))
    for c in (errors.E_CHKSUM, errors.E_TRUNCATED, errors.E_PLAUSIBLE, errors.E_RTN_ADDR,
              errors.E_UNSUPPORTED):
        assert c in codes, "decode_group: fuzzer never reached %s" % errors.name(c)
    assert written > 0
    return codes


class _Broken:
    """pylontech with one injected bug, to prove run_rs485 reports each kind of failure."""

    def __init__(self, kind):
        self.kind = kind
        self.armed = False            # off while populated() fills the record

    def decode(self, cmd, buf, n, addr, m, now):
        r = PY.decode(cmd, buf, n, addr, m, now)
        if not self.armed:
            return r
        k = self.kind
        if k == "leak" and r == errors.E_CHKSUM:
            m.cycles += 1             # a rejected frame changes the record
        elif k == "raise" and r == errors.E_HEX:
            raise IndexError("injected")
        elif k == "alloc" and r == errors.E_LENGTH:
            return len([r])           # allocates (heap locked): -> failure
        elif k == "range" and r == E_OK and cmd == PY.CMD_ANALOG:
            m.soc_pm = 1001
        elif k == "foreign" and r == E_OK and cmd == PY.CMD_ALARM:
            m.voltage_mv ^= 1         # an alarm frame writes an analog field
        return r


# ------------------------------------------------------------------ no contactor closes
def _admission_rig(clock):
    cfg = config.validate({"bank": {"expected_modules": 3, "addresses": [2, 3, 4]},
                           "gating": {"topology": "branch"},
                           "contactors": {"outputs": ["k1", "k2", "k3"]}})
    hw = FakeHardware(clock, outputs=["k1", "k2", "k3"])
    hw.link_sensor = FakeAdc(49500)
    return cfg, hw


def _fill(m, addr, now, alarm=None, analog=True):
    """Fill slot m through the decoder from valid frames (what a healthy poll cycle does)."""
    R = bmsproto
    fam = "pylontech"
    frames = [(PY.CMD_MGMT, R.mgmt_response(fam, addr, MGMT_VAL)),
              (PY.CMD_PARAMS, R.params_response(fam, addr, PARAMS_VAL)),
              (PY.CMD_MFR, R.mfr_response(fam, addr, MFR_VAL))]
    if analog:
        frames.append((PY.CMD_ANALOG, R.analog_response(fam, addr, _pack(15, 5, cur=0))))
    if alarm is not None:
        frames.append((PY.CMD_ALARM, R.alarm_response(fam, addr, alarm)))
    for cmd, f in frames:
        b = bytearray(f)
        assert PY.decode(cmd, b, len(b), addr, m, now) == E_OK
    m.addr = addr
    m.seen = True


def run_no_close(count_steps=400, frames_per_step=6, seed=SEED + 3):
    """Admission (the real one, branch topology, 3 modules) on FakeHardware.  Each slot is
    held back by one condition that only an ACCEPTED frame could clear:
        slot 0 (addr 2): alarm status never read          (needs an accepted 0x44)
        slot 1 (addr 3): a critical over-temperature alarm (needs an accepted clean 0x44)
        slot 2 (addr 4): analog data older than max_age    (needs an accepted 0x42)
    Every step the three slots are offered fuzzed frames (mutants of exactly the frames that
    would clear them); the ones the decoder rejects go into the real records, accepted ones
    are set aside.  No output may ever be energised.  Then the clearing frames are decoded
    for real and every output must close (the test can fail: the blocks were the only thing
    holding the bank open)."""
    clock = SimClock(20000 * 1000)
    cfg, hw = _admission_rig(clock)
    bank = model.Bank()
    from bankgate.events import EventLog
    ev = EventLog(256)
    t0 = clock.ticks_ms()
    R = bmsproto
    ok_alarm = _alarm(15, 5)
    hot = _alarm(15, 5, temp_flags=[0, 2, 0, 0, 0])
    _fill(bank.modules[0], 2, t0)                          # no 0x44 ever accepted
    _fill(bank.modules[1], 3, t0, alarm=hot)
    _fill(bank.modules[2], 4, 0, alarm=ok_alarm)           # analog decoded at t=0: 20 s old
    for i in range(3):
        bank.modules[i].t_mgmt = t0
    a = adm.Admission(hw, cfg, bank, ev)
    fixes = [RawFrame(R.alarm_response("pylontech", 2, ok_alarm), PY.CMD_ALARM, 2),
             RawFrame(R.alarm_response("pylontech", 3, ok_alarm), PY.CMD_ALARM, 3),
             RawFrame(R.analog_response("pylontech", 4, _pack(15, 5, cur=0)), PY.CMD_ANALOG, 4)]
    rng = Rng(seed)
    mut = Mutator(rng, fixes)
    buf = mut.buf
    scratch = model.Module(15)
    fps = [Fingerprint(bank.modules[i], PY_WRITES) for i in range(3)]
    fed = 0
    set_aside = 0
    for step in range(count_steps):
        clock.advance_us(50000)
        now = clock.ticks_ms()
        for i in range(3):           # the parts a healthy poll keeps fresh (not the blocked ones)
            m = bank.modules[i]
            m.t_mgmt = now
            if i != 2:
                m.t_analog = now
            if i != 0:
                m.t_alarm = now
        for _ in range(frames_per_step):
            n = mut.next()
            f = mut.seed_frame
            scratch.addr = f.addr
            if PY.decode(f.cmd, buf, n, f.addr, scratch, now) == E_OK:
                set_aside += 1       # an accepted frame is not fuzz that must be ignored
                continue
            slot = f.addr - 2
            m = bank.modules[slot]
            h = fps[slot].full()
            r = PY.decode(f.cmd, buf, n, f.addr, m, now)
            if r == E_OK or fps[slot].full() != h:
                fail("rejected frame changed slot %d" % slot, seed, step, buf, n)
            fed += 1
        a.step(now, 0, 0, True)
        for name, pin in hw.outputs.items():
            if pin.value() or pin.history:
                fail("output %s energised by fuzzed input at step %d (reasons %s)" % (
                    name, step, [adm.CHECK_NAMES[a.mod_reason[k]] for k in range(3)]), seed, step)
    want = (adm.CHK_NO_ALARM_DATA, adm.CHK_ALARM, adm.CHK_STALE)
    got = tuple(a.mod_reason[k] for k in range(3))
    assert got == want, [adm.CHECK_NAMES[c] for c in got]
    assert a.admitted == 0 and a.state in (adm.BANK_WAITING, adm.BANK_JOINING)
    assert fed >= count_steps * frames_per_step // 2, (fed, set_aside)
    # the control: the real clearing frames close every output
    for f in fixes:
        b = bytearray(f.frame)
        assert PY.decode(f.cmd, b, len(b), f.addr, bank.modules[f.addr - 2], now) == E_OK
    for step in range(600):
        clock.advance_us(50000)
        now = clock.ticks_ms()
        for i in range(3):
            m = bank.modules[i]
            m.t_mgmt = m.t_analog = m.t_alarm = now
        a.step(now, 0, 0, True)
        if a.admitted == 3:
            break
    assert a.admitted == 3, [adm.CHECK_NAMES[a.mod_reason[k]] for k in range(3)]
    assert all(p.value() == 1 for p in hw.outputs.values())
    print("FUZZRATE admission_no_close steps=%d fed=%d set_aside=%d" % (count_steps, fed, set_aside))
    return fed
