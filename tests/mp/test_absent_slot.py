# A configured slot whose module never answered reports offline with no measurements,
# in every view built from the records: the snapshot (`bankgate status`, the console),
# the MQTT module message and its Home Assistant fields (avail), although a group answer
# (0x42 INFO FF, decoded by pack position) put analog data into the slot's record
# (tests/scenarios/adm_wrong_address.json: address 3's module answers at 9).
# mpy-heapsize: 1m
from bgsim import runner
from bgsim import scenario as sc

from bankgate import clock
from bankgate.telemetry.hadata import HaData


def _wrong_address():
    s = sc.validate({
        "name": "absent_slot", "duration_s": 60,
        "defaults": {"model": "US5000", "sw_version": "1.4", "cells": 15, "capacity_mah": 100000},
        "modules": [{}, {"addr": 9}, {}],
        "config": {"bank": {"expected_modules": 3, "addresses": [2, 3, 4],
                            "approved_models": ["US5000"]},
                   "contactors": {"outputs": ["k1", "k2", "k3"], "link_isolated_input": "iso"}}})
    lines = []
    sim = runner.Simulation(s, lines.append)
    return sim


_MEASURED = ("mv", "ma", "soc_pm", "soh_pm", "temp_dc", "cell_min_mv", "cell_max_mv")


def _module(snap, addr):
    for d in snap["modules"]:
        if d["addr"] == addr:
            return d
    raise AssertionError("no module %d in %r" % (addr, [d["addr"] for d in snap["modules"]]))


def test_never_heard_slot_is_offline_without_a_voltage_in_every_view():
    sim = _wrong_address()
    sim.run(10)
    gw = sim.gw
    m = gw.bank.modules[1]
    assert m.addr == 3 and not m.seen
    d = _module(gw.snapshot(), 3)                 # what `bankgate status` prints from
    assert d["state"] == "absent" and d["online"] is False, d
    for k in _MEASURED:
        assert d[k] is None, (k, d)
    # the MQTT module message: module_snapshot + the HA fields, as telemetry builds it
    now = gw.hw.clock.ticks_ms()
    t = HaData(gw.cfg, gw).module(gw.module_snapshot(m), m, now)
    assert t["online"] is False and t["mv"] is None and t["avail"] == 0, t
    assert t["cell_delta_mv"] is None
    # the modules that answer are online with their voltage
    for a in (2, 4):
        d = _module(gw.snapshot(), a)
        assert d["online"] is True and d["mv"] > 40000 and d["soc_pm"] is not None, d
    d = _module(gw.snapshot(), 9)                 # the unexpected address answers: online
    assert d["state"] == "unexpected" and d["online"] is True and d["mv"] > 40000, d


def test_silent_module_goes_offline_after_max_age_and_keeps_its_last_values():
    sim = _wrong_address()
    sim.run(10)
    gw = sim.gw
    m = gw.bank.modules[0]
    m.t_analog = clock.add(gw.hw.clock.ticks_ms(), -gw.cfg["gating"]["max_age_ms"] - 1)
    d = gw.module_snapshot(m)
    assert d["online"] is False and d["mv"] == m.voltage_mv, d   # stale: last value, offline
    t = HaData(gw.cfg, gw).module(gw.module_snapshot(m), m, gw.hw.clock.ticks_ms())
    assert t["avail"] == 0
