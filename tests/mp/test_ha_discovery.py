# Home Assistant discovery (bankgate.telemetry.ha) and the HA fields of telemetry
# (bankgate.telemetry.hadata) on the MicroPython side, both lanes: counts, one message at a time
# without holding the others, devices, availability, the controls' contract, module freshness,
# names instead of codes.  Home Assistant's own schemas check the same configs in tests/ha
# (`make test-ha`).
# mpy-heapsize: 512k
import gc
import json

from bankgate import VERSION
from bankgate import config as bgconfig
from bankgate.events import EV_ALARM, EV_BANK_STATE, EV_BOOT, EV_CHECK_FAIL, EV_MODULE_STATE
from bankgate.model import ALM_CELL_OV, ALM_CHG_OT, Bank
from bankgate.telemetry import ha
from bankgate.telemetry.hadata import HaData, event_what, reason_limit

BASE = "bankgate/bankgate"


def _cfg(n=16, cells=False, gid="bankgate"):
    return bgconfig.validate({
        "gateway_id": gid,
        "bank": {"expected_modules": n, "addresses": list(range(2, 2 + n)), "scan_from": 2,
                 "scan_to": 1 + n},
        "contactors": {"outputs": ["k%d" % i for i in range(n)]},
        "mqtt": {"enabled": True, "ha_cells": cells}})


class _Gw:
    def __init__(self, n):
        self.bank = Bank()
        for i in range(n):
            self.bank.modules[i].addr = 2 + i


def _disc(n=16, cells=False, gw=None, gid="bankgate"):
    return ha.Discovery(_cfg(n, cells, gid), BASE, BASE + "/status", gw=gw)


def test_counts_and_every_message_is_json_with_a_unique_id():
    assert _disc(16, False).count() == 25 + 16 + 2 + 5 + 16 * 21
    for cells, per in ((True, 21 + 15),):
        d = _disc(16, cells)
        assert d.count() == 25 + 16 + 2 + 5 + 16 * per, (cells, d.count())
        gc.collect()
        ids = [None] * d.count()               # object ids (unique_id = prefix + object id)
        for i in range(d.count()):
            topic, payload = d.message(i)
            p = json.loads(payload)
            parts = topic.split("/")
            assert len(parts) == 5 and parts[0] == "homeassistant" and parts[2] == "bankgate", topic
            assert parts[4] == "config" and parts[1] in ("sensor", "binary_sensor", "button", "number",
                                                          "switch"), topic
            assert p["~"] == BASE and p["avty"][0] == {"t": "~/status"}
            assert p["uniq_id"] == "bankgate_bankgate_" + parts[3], (p["uniq_id"], topic)
            ids[i] = parts[3]
            assert len(payload) < 1000, (topic, len(payload))
        ids.sort()
        for i in range(1, len(ids)):
            assert ids[i] != ids[i - 1], ids[i]


def test_messages_are_built_one_at_a_time():
    # per-module devices cost no RAM per module beyond the address list: the Discovery
    # object of 16 modules is as large as that of 1 (+ the list), and producing every message
    # leaves nothing behind
    c1, c16 = _cfg(1), _cfg(16)
    gc.collect()
    a0 = gc.mem_alloc()
    d1 = ha.Discovery(c1, BASE, BASE + "/status")
    gc.collect()
    a1 = gc.mem_alloc()
    d16 = ha.Discovery(c16, BASE, BASE + "/status")
    gc.collect()
    a16 = gc.mem_alloc()
    assert (a16 - a1) - (a1 - a0) < 16 * 16 + 64, (a1 - a0, a16 - a1)   # addresses + outputs lists
    d16.message(0)
    gc.collect()
    base = gc.mem_alloc()
    for i in range(d16.count()):
        d16.message(i)
    gc.collect()
    assert gc.mem_alloc() - base < 256, gc.mem_alloc() - base
    assert d1.count() < d16.count()


def test_devices_no_name_doubling_and_one_version():
    gw = _Gw(16)
    m = gw.bank.modules[3]                      # address 5
    m.model[0:6] = b"US5000"
    m.model_len = 6
    m.serial[0:4] = b"S123"
    m.serial_len = 4
    m.sw_version = (2 << 8) | 7
    d = _disc(16, gw=gw)
    dev = d.device()
    assert dev["name"] == "bankgate" and dev["sw"] == VERSION and dev["ids"] == ["bankgate_bankgate"]
    assert _disc(gid="garage").device()["name"] == "bankgate garage"
    md = d.module_device(5)
    assert md == {"ids": ["bankgate_bankgate_m5"], "via_device": "bankgate_bankgate", "name": "US5000 5",
                  "mdl": "US5000", "sn": "S123", "sw": "2.7"}, md
    assert d.module_device(6) == {"ids": ["bankgate_bankgate_m6"], "via_device": "bankgate_bankgate",
                                  "name": "Module 6"}
    k = d.identity_key()
    m.sw_version = (2 << 8) | 8
    assert d.identity_key() != k


def _find(d, suffix):
    for i in range(d.count()):
        topic, payload = d.message(i)
        if topic.endswith("/" + suffix + "/config"):
            return json.loads(payload)
    raise AssertionError("no " + suffix)


def test_module_entities_are_unavailable_when_the_module_is_not_fresh():
    d = _disc(4)
    v = _find(d, "m3_voltage")
    assert v["avty_mode"] == "all" and v["avty"][1] == {
        "t": "~/module/3", "val_tpl": "{{ 'online' if value_json.avail else 'offline' }}"}
    assert v["dev"]["ids"] == ["bankgate_bankgate_m3"] and v["stat_t"] == "~/module/3"
    assert v["dev_cla"] == "voltage" and v["unit_of_meas"] == "V" and v["sug_dsp_prc"] == 2
    on = _find(d, "m3_online")                  # the connectivity sensor itself stays available
    assert len(on["avty"]) == 1 and on["ent_cat"] == "diagnostic"
    st = _find(d, "m3_state")
    assert st["dev_cla"] == "enum" and "pending" in st["ops"] and "unexpected" in st["ops"]
    assert "unit_of_meas" not in st and "stat_cla" not in st
    e = _find(d, "m3_energy_chg")
    assert (e["dev_cla"], e["unit_of_meas"], e["stat_cla"]) == ("energy", "Wh", "total_increasing")
    soc = _find(d, "bank_soc")
    assert "if value_json.admitted else none" in soc["val_tpl"]
    assert _find(d, "cmd_discovery")["ent_cat"] == "config"


def test_controls_contract():
    d = _disc(16)
    cap = _find(d, "ctl_chg_cap_a")
    assert cap["cmd_t"] == "~/cmd/chg_cap_a" and cap["stat_t"] == "~/derate"
    assert cap["cmd_tpl"] == '{"value": {{ value | int }}}' and cap["val_tpl"] == "{{ value_json.chg_cap_a }}"
    assert (cap["min"], cap["max"], cap["step"], cap["unit_of_meas"]) == (0, 8000, 1, "A")
    assert ha.cap_max_a(_cfg(4)) == 2000                 # 500 A x 4 modules
    soc = _find(d, "ctl_dsg_stop_soc")
    assert (soc["min"], soc["max"], soc["unit_of_meas"], soc["ent_cat"]) == (0, 100, "%", "config")
    hold = _find(d, "ctl_hold_joins")
    assert hold["pl_on"] == '{"value": 1}' and hold["pl_off"] == '{"value": 0}'
    assert hold["stat_on"] == "1" and hold["stat_off"] == "0"


class _Hw:
    fs = None


class _FullGw(_Gw):
    def __init__(self, n):
        super().__init__(n)
        self.hw = _Hw()
        self.metrics = None


def test_module_fields_freshness_names_and_limit():
    cfg = _cfg(4)
    gw = _FullGw(4)
    x = HaData(cfg, gw)
    assert x.energy is None                          # no filesystem: energy unknown, not 0
    m = gw.bank.modules[0]
    m.analog_valid = True
    m.t_analog = 1000
    d = {"reason": "ok"}
    x.module(d, m, 1000)                             # data, but the module never answered
    assert d["avail"] == 0                           # (a group answer filled the slot)
    m.seen = True
    m.alarms = ALM_CHG_OT
    m.protections = ALM_CELL_OV
    d = {"reason": "dv", "cell_min_mv": 3300, "cell_max_mv": 3312}
    x.module(d, m, 1000 + cfg["gating"]["max_age_ms"])
    assert d["avail"] == 1 and d["cell_delta_mv"] == 12 and d["limit"] == cfg["gating"]["max_dv_mv"]
    assert d["alarm_names"] == ["charge_ot"] and d["protection_names"] == ["cell_ov"]
    assert d["e_chg_wh"] is None and d["share_pm"] is None
    d = {"reason": "ok", "cell_min_mv": None, "cell_max_mv": None}
    x.module(d, m, 1001 + cfg["gating"]["max_age_ms"])      # one ms too old: unavailable
    assert d["avail"] == 0 and d["cell_delta_mv"] is None and d["limit"] is None
    m.analog_valid = False
    x.module(d, m, 1000)
    assert d["avail"] == 0
    assert reason_limit(cfg, "inrush") == cfg["gating"]["max_inrush_ma"]


def test_events_carry_names():
    assert event_what(EV_BANK_STATE, 3, 2) == "closed<-joining"
    assert event_what(EV_MODULE_STATE, 2, 26) == "pending:dv"
    assert event_what(EV_CHECK_FAIL, 26, 812) == "dv"
    assert event_what(EV_ALARM, ALM_CHG_OT, ALM_CELL_OV) == "charge_ot,protect_cell_ov"
    assert event_what(EV_BOOT, 0, 0) == ""
    assert event_what(EV_BANK_STATE, 99, 0) == "99<-boot"
