"""`bankgate status`'s text view (issue 18, part 5): only the configured outputs in natural
order, units a person reads, absent modules shown as absent, a pending reason with its value
and limit.  The reply dicts are shaped like bankgate.console's status reply."""
from bankgate_host.status_cmd import summary
from bankgate_host.words import check_value, natural_sorted

SIM_OUTPUTS = {"k%d" % i: 0 for i in range(1, 17)}
SIM_OUTPUTS.update(main=0, precharge=0)


def _mod(slot, addr, **kw):
    m = {"slot": slot, "addr": addr, "state": "pending", "reason": "ok", "value": 0, "dv_mv": 0,
         "online": True, "mv": 53100, "ma": -1250, "soc_pm": 655, "temp_dc": 231}
    m.update(kw)
    return m


def test_only_configured_outputs_in_natural_order():
    outs = dict(SIM_OUTPUTS, k2=1, k10=1)
    st = {"state": "closed", "outputs": outs, "faults": [],
          "configured_outputs": ["k10", "k2", "k1", "k11", "k3", "k4", "k5", "k6", "k7", "k8", "k9"]}
    line = [ln for ln in summary(st).splitlines() if ln.startswith("outputs:")][0]
    assert line == ("outputs: k1 open, k2 closed, k3 open, k4 open, k5 open, k6 open, k7 open, k8 open, "
                    "k9 open, k10 closed, k11 open")
    assert "precharge" not in line and "k16" not in line


def test_without_a_configuration_every_output_naturally_sorted():
    line = [ln for ln in summary({"state": "config_error", "outputs": SIM_OUTPUTS}).splitlines()
            if ln.startswith("outputs:")][0]
    names = [p.split()[0] for p in line[len("outputs: "):].split(", ")]
    assert names == natural_sorted(SIM_OUTPUTS) and names[:3] == ["k1", "k2", "k3"]
    assert names.index("k10") == 9


def test_units_absent_modules_and_pending_dv_with_value_and_limit():
    st = {"state": "waiting", "reason": "bank_wait", "outputs": {"k1": 0, "k2": 0, "k3": 0},
          "configured_outputs": ["k1", "k2", "k3"], "faults": [], "mv": 53120, "ma": -2500, "soc_pm": 655,
          "admitted": 0, "expected": 3, "gating": {"max_dv_mv": 500},
          "modules": [_mod(0, 2, reason="dv", value=1200, dv_mv=1200),
                      _mod(1, 3, state="absent", reason="absent", online=False, mv=0, ma=0, soc_pm=0),
                      _mod(2, 4, state="closed")]}
    text = summary(st)
    assert "bank: 53.12 V  -2.5 A  SOC 65.5 %  admitted 0/3" in text
    assert "module 2 (slot 0): pending, dv 1.20 V (limit 0.50 V): 53.10 V, -1.2 A, SOC 65.5 %, 23.1 degC" in text
    assert "module 3 (slot 1): absent, absent (no answer)" in text
    assert "0 mV" not in text and "0.00 V" not in text and " pm" not in text


def test_check_values_in_their_units():
    assert check_value("dv", 1234) == "1.23 V"
    assert check_value("soc_spread", 55) == "5.5 %"
    assert check_value("spread", 250) == "0.25 V"
    assert check_value("frozen", 7) == "7"          # no unit known: the number as it is
