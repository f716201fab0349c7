"""`bankgate status` and the demo/commission summaries for a slot that never answered, in the
shape Gateway.module_snapshot() now gives it (online false, measurements null: see
tests/mp/test_absent_slot.py): shown as absent / no answer, never with a voltage, and the
formatters accept the nulls."""
from bankgate_host.status_cmd import summary
from bankgate_host.words import _module_summary


def _absent(slot, addr, reason="absent", state="absent"):
    return {"slot": slot, "addr": addr, "state": state, "reason": reason, "value": addr, "dv_mv": 0,
            "online": False, "mv": None, "ma": None, "soc_pm": None, "soh_pm": None, "temp_dc": None,
            "cell_min_mv": None, "cell_max_mv": None}


def test_never_heard_slot_reads_absent_without_a_voltage():
    st = {"state": "degraded", "outputs": {"k1": 1, "k2": 0}, "configured_outputs": ["k1", "k2"],
          "faults": [], "admitted": 1, "expected": 2,
          "modules": [{"slot": 0, "addr": 2, "state": "admitted", "reason": "ok", "value": 0, "dv_mv": 0,
                       "online": True, "mv": 49500, "ma": 0, "soc_pm": 500, "temp_dc": 250},
                      _absent(1, 3)]}
    text = summary(st)
    assert "module 3 (slot 1): absent, absent (no answer)" in text, text
    line = [ln for ln in text.splitlines() if "module 3" in ln][0]
    assert " V" not in line and "?" not in line
    assert _module_summary(_absent(1, 3)) == "module 3: absent (no answer)"


def test_heard_but_blocked_slot_without_data_says_no_data():
    st = {"state": "degraded", "outputs": {"k1": 0}, "configured_outputs": ["k1"], "faults": [],
          "modules": [_absent(0, 2, reason="id_fault", state="blocked")]}
    text = summary(st)
    assert "module 2 (slot 0): blocked, id_fault, no data" in text, text
