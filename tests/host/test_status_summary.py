"""`bankgate status` shows what survives a reset: the persisted latch file's verdict and bits."""
from bankgate_host.status_cmd import summary


def test_summary_shows_the_persisted_latches():
    st = {"state": "fault", "faults": ["weld_current"], "outputs": {"k1": 0, "k2": 0},
          "latch_store": {"file": "latches.bin", "verdict": "ok", "faults": 4, "writes": 1,
                          "errors": 0, "last_error": None}}
    text = summary(st)
    assert "latched faults: weld_current" in text
    assert "persisted (latches.bin): ok, fault bits 0x04, 1 write(s)" in text
    st["latch_store"].update(errors=1, last_error="write latches.bin: OSError(5)")
    assert "1 failed: write latches.bin: OSError(5)" in summary(st)


def test_summary_without_a_latch_store():
    text = summary({"state": "closed", "faults": [], "outputs": {"k1": 1}})
    assert "latched faults: none" in text and "persisted" not in text
