# Fuzzing the RS485 decoders (bankgate.proto.pylontech.decode / decode_group, pace.decode,
# framing in proto.frame) under the unix port, and proof that fuzzed input cannot close a
# contactor.  The generator, the per-input checks and the oracles are in
# tests/fuzz/fuzzrun_proto.py and fuzzlib.py; docs/fuzzing.md describes them.  These are the
# `make test` counts; tests/mp/test_fuzz_long.py runs the same functions with 100 000 inputs.
# mpy-timeout: 600
# mpy-heapsize: 320k
# (the fuzz harness's fingerprints and mutators share the heap with a full Admission; the
# firmware's own footprint is measured by `bankgate bench`, not here)
import fuzzlib
import fuzzrun_proto as R
import mptest

from bankgate.proto import pylontech as PY


def test_fuzz_pylontech_decode():
    R.run_pylontech()


def test_fuzz_pace_decode():
    R.run_pace()


def test_fuzz_pylontech_decode_group():
    R.run_group(2000)


def test_fuzzed_frames_never_close_a_contactor():
    R.run_no_close()


def test_fuzzlib_detects_a_changed_record():
    # the oracle itself: a one-element change in an array, a text byte, or a new
    # attribute changes the fingerprint; restoring the value restores it
    m = R.populated(PY, R.pylontech_seeds(2), 2)
    fp = fuzzlib.Fingerprint(m, R.PY_WRITES)
    h = fp.full()
    m.cell_mv[23] ^= 1
    assert fp.full() != h
    m.cell_mv[23] ^= 1
    assert fp.full() == h
    m.serial[15] ^= 0x40
    assert fp.full() != h
    m.serial[15] ^= 0x40
    r_alarm = fp.rest(PY.CMD_ALARM)
    m.current_ma = -m.current_ma - 1  # an analog field: the 0x44 view sees it change
    assert fp.full() != h and fp.rest(PY.CMD_ALARM) != r_alarm
    m.current_ma = -m.current_ma - 1
    assert fp.full() == h
    r = fp.rest(PY.CMD_ANALOG)
    m.voltage_mv += 1                 # an analog field: the 0x42 view ignores it
    assert fp.rest(PY.CMD_ANALOG) == r and fp.full() != h
    m.voltage_mv -= 1
    m.current_ma, m.voltage_mv = m.voltage_mv, m.current_ma     # values trading places
    assert fp.full() != h
    m.current_ma, m.voltage_mv = m.voltage_mv, m.current_ma
    m.extra = 0
    assert fp.full() != h


def test_fuzz_harness_reports_injected_bugs():
    # run_rs485 around a Pylontech decoder with one injected bug at a time: each kind of
    # failure is reported, with the seed and iteration that reproduce it
    fuzzlib.QUIET = True                  # keep the expected failures out of the output
    orig = R.populated
    try:
        for kind, text in (("leak", "changed the record"), ("raise", "raised"),
                           ("alloc", "allocated"), ("range", "soc_pm"),
                           ("foreign", "does not own")):
            fam = R._Broken(kind)

            def armed_populated(f, s, a):
                m = orig(PY, s, a)        # fill the record with the real decoder, then arm
                fam.armed = True
                return m
            R.populated = armed_populated
            e = mptest.raises(AssertionError, R.run_rs485, "broken." + kind, fam,
                              R.pylontech_seeds(2), R.PY_WRITES, R.check_pylontech, 3000, R.SEED)
            R.populated = orig
            assert text in str(e) and "seed=0x" in str(e), (kind, str(e)[:200])
    finally:
        R.populated = orig
        fuzzlib.QUIET = False
