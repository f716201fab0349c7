# Latched faults across resets: the record (bankgate.latchstore), its atomic replace
# under a power cut at every point of a write, corrupt / unreadable files, writes only
# on change (counted), and Admission restoring the latches before its first step.
# The filesystem is the simulator's (simfs.SimFS): it outlives an Admission the way
# the flash outlives a reset.
# mpy-heapsize: 512k
import mptest
from simfs import DeviceReset, SimFS
from test_admission import ALM_CELL_OV, Rig, _no_alloc_run, _quiet, adm

from bankgate import latchstore as ls
from bankgate.contactor import F_FAIL_CLOSE, F_LATCH_STORE, F_WELD_CURRENT, F_WELDED
from bankgate.events import EV_FAULT_LATCHED

A = (F_WELDED, 2, 1)                 # (faults, slot, value)
B = (F_WELDED | F_FAIL_CLOSE, 2, 1)
NONE = (0, -1, 0)


def _state(st):
    return (st.faults, st.slot, st.value) if st.faults else NONE


def _fresh(fs):
    st = ls.LatchStore(fs)
    v = st.load()
    return v, st


# ------------------------------------------------------------------ the record
def test_record_roundtrip_extremes():
    buf = bytearray(ls.SIZE)
    for f, slot, val, gen in ((0x3F, -1, -(2 ** 31), 0), (1, 15, 2 ** 31 - 1, 65535),
                              (F_WELD_CURRENT, 0, -10000, 7), (0, -1, 0, 1)):
        ls.encode(buf, f, slot, val, gen)
        assert ls.decode(bytes(buf)) == (f, slot, val, gen)


def test_crc_is_the_ccitt_false_check_value():
    assert ls.crc16(b"123456789", 9) == 0x29B1


def test_every_damaged_record_is_corrupt():
    buf = bytearray(ls.SIZE)
    ls.encode(buf, F_WELDED, 1, 123, 1)
    good = bytes(buf)
    for k in range(ls.SIZE):                      # any single byte changed
        for x in (0x01, 0x80, 0xFF):
            d = bytearray(good)
            d[k] ^= x
            assert ls.decode(bytes(d)) is None, (k, x)
    for n in range(ls.SIZE):                      # truncated (torn) at any length
        assert ls.decode(good[:n]) is None
    assert ls.decode(good + b"\x00") is None
    fs = SimFS({ls.PATH: good[:9]})
    v, st = _fresh(fs)
    assert v == ls.CORRUPT and st.faults == 0 and not st.known


def test_missing_file_is_no_latches():
    fs = SimFS()
    v, st = _fresh(fs)
    assert v == ls.MISSING and _state(st) == NONE and st.known
    assert st.save(0, -1, 0) is False and fs.ops == 0     # nothing to write


def test_unreadable_file():
    class BadFs(SimFS):
        def open(self, path, mode):
            raise OSError(5, "EIO")
    v, st = _fresh(BadFs())
    assert v == ls.UNREADABLE and "EIO" in st.last_error


# ------------------------------------------------------------------ writes
def test_write_only_on_change_counted():
    fs = SimFS()
    st = _fresh(fs)[1]
    assert st.save(*A) and st.writes == 1 and fs.writes == 1 and fs.renames == 1
    for _ in range(100):
        assert st.save(*A) is False
    assert st.writes == 1 and fs.writes == 1 and fs.ops == 3     # open, write, rename once
    assert st.save(*B) and st.save(0, -1, 0)
    assert st.save(0, -1, 0) is False
    assert st.writes == 3 and fs.writes == 3
    assert ls.TMP not in fs.files                 # renamed away every time
    v, again = _fresh(fs)                         # what a reboot reads
    assert v == ls.OK and _state(again) == NONE and again.gen == 3
    assert again.save(0, -1, 0) is False          # equal to the file: no write after boot


def test_write_error_keeps_the_old_file_and_is_counted():
    fs = SimFS()
    st = _fresh(fs)[1]
    st.save(*A)
    fs.fail(1)
    assert st.save(*B) is False and st.errors == 1 and "EIO" in st.last_error
    assert _state(_fresh(fs)[1]) == A
    assert st.save(*B) and _state(_fresh(fs)[1]) == B    # the next change writes it


def _cut_save(fs, new, op, keep):
    st = _fresh(fs)[1]
    fs.cut(op, keep)
    e = mptest.raises(DeviceReset, st.save, *new)
    assert e.kind == "hard"


def test_power_cut_at_any_point_leaves_old_or_new():
    for old in (None, A, NONE):
        for op in (1, 2, 3):                      # open(tmp) truncation, data write, rename
            for keep in range(ls.SIZE + 1):
                fs = SimFS()
                if old is not None:
                    _fresh(fs)[1].save(*A)
                    if old == NONE:
                        _fresh(fs)[1].save(0, -1, 0)
                _cut_save(fs, B, op, keep)
                v, st = _fresh(fs)
                assert v in (ls.OK, ls.MISSING), (old, op, keep, v)
                if old is None:
                    # a fresh device: no record, or the complete tmp of the cut write
                    # (taken because latches.bin does not exist): old or new
                    complete = op == 3 or (op == 2 and keep == ls.SIZE)
                    assert _state(st) == (B if complete else NONE), (op, keep, _state(st))
                else:
                    assert _state(st) == old, (old, op, keep, _state(st))   # rename is last
                if op == 1:
                    break                         # keep plays no part in the truncation
    # the cut never reached the file: the same save completes afterwards
    fs = SimFS()
    _cut_save(fs, A, 2, 7)
    st = _fresh(fs)[1]
    assert st.save(*A) and _state(_fresh(fs)[1]) == A


class FatLikeFs(SimFS):
    """A volume whose rename refuses an existing destination (EEXIST)."""

    def rename(self, old, new):
        if new in self.files:
            raise OSError(17, "EEXIST")
        SimFS.rename(self, old, new)


def test_volume_without_replacing_rename():
    fs = FatLikeFs()
    st = _fresh(fs)[1]
    assert st.save(*A) and st.save(*B)
    assert _state(_fresh(fs)[1]) == B and ls.TMP not in fs.files
    # ops of a replace: open(tmp) 1, write 2, rename (refused, not counted), remove 3, rename 4
    fs2 = FatLikeFs()
    _fresh(fs2)[1].save(*A)
    _cut_save(fs2, B, 3, 0)                       # power lost in the remove: old
    assert _state(_fresh(fs2)[1]) == A
    fs3 = FatLikeFs()
    _fresh(fs3)[1].save(*A)
    _cut_save(fs3, B, 4, 0)                       # lost between remove and rename: only tmp left
    assert ls.PATH not in fs3.files
    v, st = _fresh(fs3)
    assert v == ls.OK and _state(st) == B         # the complete tmp is the new state


# ------------------------------------------------------------------ admission
def _reboot(r):
    """RAM lost: a new Admission on the same hardware (and filesystem)."""
    r.a = adm.Admission(r.hw, r.cfg, r.bank, r.ev)
    return r.a


def _welded_then_repaired(fs):
    r = Rig(fb=True, physics=True)
    r.hw.fs = fs
    _reboot(r)
    assert r.run(20000, until=lambda: r.a.state == adm.BANK_CLOSED)
    r.fb_follow[2] = False                        # k3 welded
    r.m(2).protections = ALM_CELL_OV
    r.run(400)
    assert r.a.faults == F_WELDED and r.a.fault_slot == 2
    assert r.a.store.writes == 1
    # the weld is gone physically (contactor replaced) and the alarm cleared, but
    # nobody reset the fault locally: only the latch keeps the bank open now
    r.fb_follow[2] = True
    r.hw.inputs["fb_k3"].value(0)
    r.m(2).protections = 0
    return r


def test_latch_restored_before_the_first_step_and_holds():
    fs = SimFS()
    r = _welded_then_repaired(fs)
    r.run(5000)
    assert r.a.faults == F_WELDED and not any(r.out(i) for i in range(3))
    t_boot = r.clock.now_us
    a = _reboot(r)
    # before any step: restored, every output released
    assert a.faults == F_WELDED and a.fault_slot == 2 and a.fault_value == 1
    assert not any(r.out(i) for i in range(3))
    assert any(e[2] == F_WELDED for e in r.events(EV_FAULT_LATCHED) if e[0] == r.now())
    r.run(60000)
    assert a.state == adm.BANK_FAULT and a.faults == F_WELDED
    for name in r.outs:
        assert not [t for t, v in r.hw.outputs[name].history if v and t >= t_boot], name
    assert a.store.writes == 0                    # 60 s of steps: no write
    assert a.reset_faults(r.now()) and a.store.writes == 1
    assert _state(_fresh(fs)[1]) == NONE          # the clear is persisted
    assert r.run(20000, until=lambda: r.a.state == adm.BANK_CLOSED)
    a = _reboot(r)                                # nothing comes back
    assert a.faults == 0 and a.store.writes == 0
    assert r.run(20000, until=lambda: r.a.state == adm.BANK_CLOSED)


def test_without_a_filesystem_nothing_persists():
    r = Rig()
    assert r.a.store is None
    r.a._latch(F_WELDED, 0, 1, r.now())
    assert _reboot(r).faults == 0


def test_corrupt_file_is_a_latched_fault_until_a_local_reset():
    fs = SimFS({ls.PATH: b"\xff" * 16})
    r = Rig(physics=True)
    r.hw.fs = fs
    a = _reboot(r)
    assert a.faults == F_LATCH_STORE and a.fault_value == ls.CORRUPT
    assert _state(_fresh(fs)[1]) == (F_LATCH_STORE, -1, ls.CORRUPT)   # persisted as a latch
    r.run(30000)
    assert a.state == adm.BANK_FAULT and not any(r.out(i) for i in range(3))
    assert a.store.writes == 1
    a = _reboot(r)                                # still latched after another reset
    assert a.faults == F_LATCH_STORE and a.store.writes == 0
    assert a.reset_faults(r.now())
    assert _fresh(fs)[0] == ls.OK and _state(_fresh(fs)[1]) == NONE
    assert r.run(20000, until=lambda: r.a.state == adm.BANK_CLOSED)


def test_unreadable_file_is_a_latched_fault():
    class BadFs(SimFS):
        def open(self, path, mode):
            if "r" in mode:
                raise OSError(5, "EIO")
            return SimFS.open(self, path, mode)
    r = Rig()
    r.hw.fs = BadFs()
    a = _reboot(r)
    assert a.faults == F_LATCH_STORE and a.fault_value == ls.UNREADABLE
    r.run(10000)
    assert not any(r.out(i) for i in range(3))


def test_restored_slot_outside_the_bank_is_bank_wide():
    fs = SimFS()
    _fresh(fs)[1].save(F_FAIL_CLOSE, 9, 0)        # written by a larger configuration
    r = Rig()
    r.hw.fs = fs
    a = _reboot(r)
    assert a.faults == F_FAIL_CLOSE and a.fault_slot == -1


def test_step_allocates_nothing_with_a_store_and_a_restored_latch():
    fs = SimFS()
    _fresh(fs)[1].save(F_WELD_CURRENT, 1, 5000)
    r = Rig(physics=True, n=3)
    r.hw.fs = fs
    _reboot(r)
    _quiet(r)
    _no_alloc_run(r, 5000)
    assert r.a.state == adm.BANK_FAULT and r.a.store.writes == 0


def test_device_files_on_a_real_filesystem():
    # bankgate.hal.Files (the device's hw.fs: built-in open, os.rename/remove) on the
    # unix port's filesystem: rename replaces an existing file, errors map to verdicts
    import os
    import time
    from bankgate.hal import Files
    d = "/tmp/bg_latch_%d" % time.ticks_us()
    os.mkdir(d)
    path, tmp = d + "/latches.bin", d + "/latches.tmp"
    try:
        fs = Files()
        st = ls.LatchStore(fs, path, tmp)
        assert st.load() == ls.MISSING
        assert st.save(*A) and st.save(*B) and st.writes == 2
        st2 = ls.LatchStore(fs, path, tmp)
        assert st2.load() == ls.OK and _state(st2) == B and st2.gen == 2
        mptest.raises(OSError, os.stat, tmp)      # renamed away
        with open(path, "r+b") as f:
            f.seek(5)
            f.write(b"\x00")
        assert ls.LatchStore(fs, path, tmp).load() == ls.CORRUPT
        os.remove(path)
        os.mkdir(path)                            # a directory where the file should be
        st3 = ls.LatchStore(fs, path, tmp)
        assert st3.load() == ls.UNREADABLE
        assert st3.save(*A) is False and st3.errors == 1
        os.rmdir(path)
    finally:
        for p in (path, tmp):
            try:
                os.remove(p)
            except OSError:
                pass
        os.rmdir(d)
