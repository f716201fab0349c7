# Test support for bankgate.metrics: build a Bank from JSON-able module lists,
# run Metrics.update() twice (previous state, then the state under test) and
# return snapshot() plus the energy sub-unit accumulators.  Called from CPython
# through the MpWorker (tests/host/test_metrics_oracle.py), many cases per call.
#
# A case is a dict:
#   "mask": admitted_mask, "t0": first update tick, "dt": ms to the second update,
#   "link": [link_mv at the first update, link_mv at the second] (-1 = not measured),
#   "cfg": config overrides (optional),
#   "mods": [[slot, valid, v_mv, i_ma, rem_mah, tot_mah, soc_pm, [temp_dc..], [cell_mv..],
#             v_prev_mv, i_prev_ma], ...]
from bankgate import clock, config
from bankgate.metrics import Metrics
from bankgate.model import Bank

_bank = Bank()
_cfgs = {}


def _cfg(over):
    key = repr(over)
    c = _cfgs.get(key)
    if c is None:
        c = config.validate(over)
        _cfgs[key] = c
    return c


def load(bank, mods, prev):
    for m in bank.modules:
        m.analog_valid = False
        m.addr = -1
    for e in mods:
        m = bank.modules[e[0]]
        m.addr = e[0] + 2
        m.analog_valid = bool(e[1])
        m.voltage_mv = e[9] if prev else e[2]
        m.current_ma = e[10] if prev else e[3]
        m.remaining_mah = e[4]
        m.total_mah = e[5]
        m.soc_pm = e[6]
        temps = e[7]
        m.n_temps = len(temps)
        for j in range(len(temps)):
            m.temp_dc[j] = temps[j]
        cells = e[8]
        m.n_cells = len(cells)
        for j in range(len(cells)):
            m.cell_mv[j] = cells[j]


def run_case(c):
    bank = _bank
    met = Metrics(_cfg(c.get("cfg", {})), bank)
    bank.link_mv = c["link"][0]
    load(bank, c["mods"], True)
    met.update(c["t0"], c["mask"])
    bank.link_mv = c["link"][1]
    load(bank, c["mods"], False)
    met.update(clock.add(c["t0"], c["dt"]), c["mask"])
    snap = met.snapshot()
    snap["e_mj"] = list(met.e_mj)
    snap["e_uj"] = list(met.e_uj)
    snap["e_nj"] = list(met.e_nj)
    return snap


def run_cases(cases):
    return [run_case(c) for c in cases]
