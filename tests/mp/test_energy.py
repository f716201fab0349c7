# Energy counters (bankgate.energy): what is published never goes backwards across any number
# of resets, including power lost in the middle of a write; writes are rare (every STEP_WH or
# PERIOD_MS); fold() allocates nothing; counters follow the module address.  The filesystem
# is the simulator's (simfs.SimFS): it outlives an Energy object the way flash outlives a reset.
import array

import mptest
from simfs import DeviceReset, SimFS

from bankgate import energy as en
from bankgate.metrics import WH_MAX


class _Mod:
    def __init__(self, addr):
        self.addr = addr


class _Bank:
    def __init__(self, addrs):
        self.modules = [_Mod(a) for a in addrs] + [_Mod(-1) for _ in range(16 - len(addrs))]


class _Metrics:
    """Metrics' energy arrays: per slot, Wh since boot (restart at 0 with every boot)."""

    def __init__(self):
        self.e_chg_wh = array.array("i", bytes(64))
        self.e_dsg_wh = array.array("i", bytes(64))


def _boot(fs, **kw):
    e = en.Energy(fs, **kw)
    e.load()
    return e


class _Rng:
    def __init__(self, s):
        self.s = s

    def next(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x3FFFFFFF
        return (self.s >> 8) % n


def test_record_roundtrip_and_damage():
    fs = SimFS()
    e = _boot(fs)
    assert e.verdict == en.MISSING
    bank, mt = _Bank([2, 3, 9]), _Metrics()
    mt.e_chg_wh[0] = 150
    mt.e_dsg_wh[2] = WH_MAX
    assert e.fold(0, mt, bank)                        # >= STEP_WH unsaved: written
    assert e.writes == 1 and en.TMP not in fs.files and len(fs.files[en.PATH]) == en.SIZE
    again = _boot(fs)
    assert again.verdict == en.OK
    assert again.module(2) == (150, 0) and again.module(9) == (0, WH_MAX) and again.module(3) is None   # never counted
    assert (again.pb_chg, again.pb_dsg) == (150, WH_MAX) and again.module(4) is None
    good = fs.files[en.PATH]
    for k in (0, 5, 17, en.SIZE - 1):                 # any damaged byte: corrupt, starts at 0
        d = bytearray(good)
        d[k] ^= 0x10
        e = _boot(SimFS({en.PATH: bytes(d)}))
        assert e.verdict == en.CORRUPT and e.module(2) is None and e.pb_chg == 0, (k, e.verdict, e.module(2), e.pb_chg)
    e = _boot(SimFS({en.TMP: good}))                  # a replace cut between remove and rename
    assert e.verdict == en.OK and e.module(2) == (150, 0)


def test_writes_are_rare_step_or_period():
    fs = SimFS()
    e = _boot(fs, step_wh=100, period_ms=900000)
    bank, mt = _Bank([2]), _Metrics()
    t = 0x3FFFF000                                    # the tick counter wraps during the test
    for i in range(99):
        mt.e_chg_wh[0] += 1
        assert not e.fold(t, mt, bank)
        t = (t + 1000) & 0x3FFFFFFF
    assert e.writes == 0 and e.pb_chg == 0 and e.unsaved == 99
    mt.e_chg_wh[0] += 1
    assert e.fold(t, mt, bank) and e.writes == 1 and e.pb_chg == 100 and e.module(2) == (100, 0)
    mt.e_chg_wh[0] += 3                               # a little, then nothing for 15 minutes
    n = 0
    while not e.fold(t, mt, bank):
        t = (t + 1000) & 0x3FFFFFFF
        n += 1
    assert 899 <= n <= 901 and e.writes == 2 and e.pb_chg == 103
    for _ in range(5000):                             # nothing unsaved: never written
        t = (t + 60000) & 0x3FFFFFFF
        assert not e.fold(t, mt, bank)
    assert e.writes == 2 and fs.writes == 2


def test_fold_allocates_nothing():
    fs = SimFS()
    e = _boot(fs, step_wh=1000000)
    bank, mt = _Bank(list(range(2, 18))), _Metrics()
    for s in range(16):
        mt.e_chg_wh[s] = s + 1
        mt.e_dsg_wh[s] = 2 * s
    mptest.no_alloc(e.fold, 5, mt, bank)
    assert e.b_chg == 136 and e.chg[15] == 16 and e.writes == 0


def test_counters_follow_the_address_and_reuse_departed_entries():
    fs = SimFS()
    e = _boot(fs, step_wh=1)
    bank, mt = _Bank(list(range(2, 18))), _Metrics()
    for s in range(16):
        mt.e_chg_wh[s] = 10 + s
    e.fold(0, mt, bank)
    assert e.module(2) == (10, 0) and e.module(17) == (25, 0)
    # reboot; address 2 now answers in slot 5 and address 7 in slot 0
    e = _boot(fs, step_wh=1)
    bank, mt = _Bank(list(range(2, 18))), _Metrics()
    bank.modules[0].addr, bank.modules[5].addr = 7, 2
    mt.e_chg_wh[5] = 1
    e.fold(0, mt, bank)
    assert e.module(2) == (11, 0) and e.module(7) == (15, 0)
    # a 17th address replaces one no longer in the bank (it starts at 0); the bank total keeps all
    bank.modules[3].addr = 40
    mt.e_chg_wh[3] = 4
    e.fold(0, mt, bank)
    assert e.module(40) == (4, 0) and e.module(5) is None
    assert e.pb_chg == sum(10 + s for s in range(16)) + 1 + 4


def test_published_energy_never_goes_backwards_across_resets_and_cut_writes():
    fs = SimFS()
    rng = _Rng(7)
    addrs = [2, 3, 4, 5]
    true_c = [0, 0, 0, 0]
    seen = {}                                         # the most HA has been shown, per series
    boots = cuts = 0
    lost_bound = 0
    for boot in range(150):
        boots += 1
        try:
            e = _boot(fs, step_wh=50, period_ms=60000)
            bank, mt = _Bank(addrs), _Metrics()
            t = rng.next(0x3FFFFFFF)
            for _ in range(rng.next(400)):
                s = rng.next(4)
                k = rng.next(8)
                mt.e_chg_wh[s] += k
                mt.e_dsg_wh[(s + 1) & 3] += k // 2
                true_c[s] += k
                if rng.next(60) == 0:
                    fs.cut(1 + rng.next(3), rng.next(en.SIZE))
                t = (t + 1 + rng.next(5000)) & 0x3FFFFFFF
                e.fold(t, mt, bank)
                vals = [("bank", e.pb_chg), ("bankd", e.pb_dsg)]
                for a in addrs:
                    got = e.module(a)
                    if got is not None:
                        vals.append(((a, 0), got[0]))
                        vals.append(((a, 1), got[1]))
                for key, v in vals:
                    assert v >= seen.get(key, 0), (boot, key, v, seen.get(key))
                    seen[key] = v
        except DeviceReset:
            cuts += 1
        fs.cut(0)
        lost_bound += 50 + 8 * 2                      # unsaved < step, plus one fold's growth
    e = _boot(fs)
    assert cuts > 5 and e.writes == 0 and e.verdict == en.OK
    for i, a in enumerate(addrs):
        c = e.module(a)[0]
        assert c <= true_c[i]
    assert sum(true_c) - e.pb_chg <= lost_bound and e.pb_chg > sum(true_c) // 2, (sum(true_c), e.pb_chg)
