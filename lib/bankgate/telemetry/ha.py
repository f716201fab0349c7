# Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).
#
# Devices: the gateway (identifiers ["bankgate_<gateway_id>"], sw_version = bankgate.VERSION, the
# version the CLI shows) and one device per module address (identifiers
# ["bankgate_<gateway_id>_m<addr>"], name "<model> <addr>" once the identity is read, else
# "Module <addr>", serial_number, the module firmware as sw_version, via_device the gateway).
# Entity names never repeat the device name (HA prefixes the device name itself).
#
# Entities come from the tables below, one discovery message at a time (message(i)): nothing
# holds all the payloads, the tables are constant tuples (frozen into flash on the device) and
# a message costs one dict and its JSON text.  docs/mqtt.md lists every entity.
#
# Payloads use Home Assistant's documented key abbreviations ("stat_t" = state_topic, "dev" =
# device, ...; homeassistant/components/mqtt/abbreviations.py) and "~" for <base>: about half
# the bytes of the long form, on the wire and in the heap while a message is built.
#
# Units: the telemetry JSON keeps the firmware's integers (mV, mA, permille, 0.1 degC); the
# value_template converts to the SI unit HA expects.  Availability: every entity follows
# <base>/status (retained, Last Will); module entities also follow their own module topic
# (value_json.avail: data fresh), availability_mode "all" -- an absent or stale module is
# *unavailable*, never 0.  Bank values with no module admitted render `none` (unknown).
import json

from bankgate import VERSION
from bankgate.admission import MOD_STATE_NAMES, STATE_NAMES

_J = (",", ":")
_DIAG = "diagnostic"
_CONF = "config"
_M = "measurement"


# (component, object_id, name, topic, value_template, device_class, unit, state_class,
#  display precision, entity_category)   topic: b bank, m metrics, d diagnoses, e event
# Literal constants only, so mpy-cross keeps the tables in flash (frozen), not in the heap.
# Bank values render `none` (unknown) while nothing is admitted (value_json.admitted 0);
# module values `none` where the module has no such data.
_BANK = (
    ("sensor", "voltage", "Bank voltage", "b",
     "{{ (value_json.mv / 1000) if value_json.admitted else none }}",
     "voltage", "V", "measurement", 2, None),
    ("sensor", "current", "Bank current", "b",
     "{{ (value_json.ma / 1000) if value_json.admitted else none }}",
     "current", "A", "measurement", 1, None),
    ("sensor", "power", "Bank power", "b",
     "{{ ((value_json.mv * value_json.ma / 1000000) | round(0)) if value_json.admitted else none }}",
     "power", "W", "measurement", 0, None),
    ("sensor", "soc", "Bank SOC", "b",
     "{{ (value_json.soc_pm / 10) if value_json.admitted else none }}",
     "battery", "%", "measurement", 1, None),
    ("sensor", "soh", "Bank SOH", "b",
     "{{ (value_json.soh_pm / 10) if value_json.admitted else none }}",
     None, "%", "measurement", 1, None),
    ("sensor", "temperature", "Bank temperature", "b",
     "{{ (value_json.temp_dc / 10) if value_json.admitted else none }}",
     "temperature", "\u00b0C", "measurement", 1, None),
    ("sensor", "chg_limit", "Charge current limit", "b",
     "{{ (value_json.limits.chg_ma / 1000) if value_json.admitted else none }}",
     "current", "A", "measurement", 1, None),
    ("sensor", "dsg_limit", "Discharge current limit", "b",
     "{{ (value_json.limits.dsg_ma / 1000) if value_json.admitted else none }}",
     "current", "A", "measurement", 1, None),
    ("sensor", "chg_v_limit", "Charge voltage limit", "b",
     "{{ (value_json.limits.chg_v_mv / 1000) if value_json.admitted else none }}",
     "voltage", "V", "measurement", 2, None),
    ("sensor", "dsg_v_limit", "Discharge voltage limit", "b",
     "{{ (value_json.limits.dsg_v_mv / 1000) if value_json.admitted else none }}",
     "voltage", "V", "measurement", 2, None),
    ("sensor", "admitted", "Modules admitted", "b",
     "{{ value_json.admitted }}",
     None, None, "measurement", 0, None),
    ("sensor", "state", "Bank state", "b", "{{ value_json.state }}", "enum", None, None, None, None),
    ("sensor", "reason", "Bank reason", "b", "{{ value_json.reason }}", None, None, None, None, "diagnostic"),
    ("binary_sensor", "fault", "Bank fault", "b",
     "{{ 'ON' if value_json.faults else 'OFF' }}",
     "problem", None, None, None, None),
    ("sensor", "energy_chg", "Charge energy", "b",
     "{{ (value_json.e_chg_wh) if value_json.e_chg_wh is number else none }}",
     "energy", "Wh", "total_increasing", 0, None),
    ("sensor", "energy_dsg", "Discharge energy", "b",
     "{{ (value_json.e_dsg_wh) if value_json.e_dsg_wh is number else none }}",
     "energy", "Wh", "total_increasing", 0, None),
    ("sensor", "bus", "Module bus", "b",
     "{{ value_json.bus.verdict }}",
     None, None, None, None, "diagnostic"),
    ("sensor", "diagnoses", "Active diagnoses", "d",
     "{{ value_json.active | count }}",
     None, None, "measurement", 0, None),
    ("sensor", "circulating", "Circulating current", "m",
     "{{ value_json.metrics.circ_ma / 1000 }}",
     "current", "A", "measurement", 1, "diagnostic"),
    ("sensor", "imbalance", "Current imbalance", "m",
     "{{ value_json.metrics.imbalance_pm / 10 }}",
     None, "%", "measurement", 1, "diagnostic"),
    ("sensor", "v_spread", "Module voltage spread", "m",
     "{{ value_json.metrics.v_spread_mv }}",
     "voltage", "mV", "measurement", 0, "diagnostic"),
    ("sensor", "soc_spread", "SOC spread", "m",
     "{{ value_json.metrics.soc_spread_pm / 10 }}",
     None, "%", "measurement", 1, "diagnostic"),
    ("sensor", "tel_dropped", "Telemetry dropped", "m",
     "{{ value_json.mqtt.dropped }}",
     None, None, "total_increasing", 0, "diagnostic"),
    ("sensor", "tel_reconnects", "MQTT reconnects", "m",
     "{{ value_json.mqtt.reconnects }}",
     None, None, "total_increasing", 0, "diagnostic"),
    ("sensor", "last_event", "Last event", "e", "{{ value_json.ev }}", None, None, None, None, "diagnostic"),
)

# json_attributes_template per bank object_id (the attributes an installer reads)
_BANK_ATTR = (
    ("reason", "{{ {'reason': value_json.reason, 'value': value_json.value, "
               "'faults': value_json.faults} | tojson }}"),
    ("fault", "{{ {'faults': value_json.faults} | tojson }}"),
    ("bus", "{{ value_json.bus | tojson }}"),
    ("diagnoses", "{{ {'active': value_json.active} | tojson }}"),
    ("last_event", "{{ value_json | tojson }}"),
)

_MODULE = (
    ("sensor", "voltage", "Voltage",
     "{{ (value_json.mv / 1000) if value_json.mv is number else none }}",
     "voltage", "V", "measurement", 2, None),
    ("sensor", "current", "Current",
     "{{ (value_json.ma / 1000) if value_json.ma is number else none }}",
     "current", "A", "measurement", 1, None),
    ("sensor", "soc", "SOC",
     "{{ (value_json.soc_pm / 10) if value_json.soc_pm is number else none }}",
     "battery", "%", "measurement", 1, None),
    ("sensor", "soh", "SOH",
     "{{ (value_json.soh_pm / 10) if value_json.soh_pm is number else none }}",
     None, "%", "measurement", 1, None),
    ("sensor", "temperature", "Temperature",
     "{{ (value_json.temp_dc / 10) if value_json.temp_dc is number else none }}",
     "temperature", "\u00b0C", "measurement", 1, None),
    ("sensor", "cell_min", "Cell min",
     "{{ (value_json.cell_min_mv / 1000) if value_json.cell_min_mv is number else none }}",
     "voltage", "V", "measurement", 3, None),
    ("sensor", "cell_max", "Cell max",
     "{{ (value_json.cell_max_mv / 1000) if value_json.cell_max_mv is number else none }}",
     "voltage", "V", "measurement", 3, None),
    ("sensor", "cell_delta", "Cell delta",
     "{{ (value_json.cell_delta_mv) if value_json.cell_delta_mv is number else none }}",
     "voltage", "mV", "measurement", 0, None),
    ("sensor", "chg_limit", "Charge current limit",
     "{{ (value_json.chg_limit_ma / 1000) if value_json.chg_limit_ma is number else none }}",
     "current", "A", "measurement", 1, "diagnostic"),
    ("sensor", "dsg_limit", "Discharge current limit",
     "{{ (value_json.dsg_limit_ma / 1000) if value_json.dsg_limit_ma is number else none }}",
     "current", "A", "measurement", 1, "diagnostic"),
    ("sensor", "cycles", "Cycles",
     "{{ (value_json.cycles) if value_json.cycles is number else none }}",
     None, None, "total_increasing", 0, "diagnostic"),
    ("sensor", "energy_chg", "Charge energy",
     "{{ (value_json.e_chg_wh) if value_json.e_chg_wh is number else none }}",
     "energy", "Wh", "total_increasing", 0, None),
    ("sensor", "energy_dsg", "Discharge energy",
     "{{ (value_json.e_dsg_wh) if value_json.e_dsg_wh is number else none }}",
     "energy", "Wh", "total_increasing", 0, None),
    ("sensor", "share", "Current share",
     "{{ (value_json.share_pm / 10) if value_json.share_pm is number else none }}",
     None, "%", "measurement", 1, "diagnostic"),
    ("sensor", "resistance", "Branch resistance",
     "{{ (value_json.r_mohm) if value_json.r_mohm is number else none }}",
     None, "m\u03a9", "measurement", 0, "diagnostic"),
    ("sensor", "state", "State", "{{ value_json.state }}", "enum", None, None, None, None),
    ("sensor", "reason", "Reason", "{{ value_json.reason }}", None, None, None, None, "diagnostic"),
    ("binary_sensor", "fault", "Fault",
     "{{ 'ON' if value_json.alarms or value_json.protections else 'OFF' }}",
     "problem", None, None, None, None),
    ("binary_sensor", "online", "Online",
     "{{ 'ON' if value_json.avail else 'OFF' }}",
     "connectivity", None, None, None, "diagnostic"),
    ("sensor", "bus_errors", "Bus errors",
     "{{ value_json.errors }}",
     None, None, "total_increasing", 0, "diagnostic"),
    ("sensor", "bus_timeouts", "Bus timeouts",
     "{{ value_json.timeouts }}",
     None, None, "total_increasing", 0, "diagnostic"),
)

_MODULE_ATTR = (
    ("reason", "{{ {'reason': value_json.reason, 'value': value_json.value, 'limit': value_json.limit, "
               "'dv_mv': value_json.dv_mv} | tojson }}"),
    ("fault", "{{ {'alarms': value_json.alarm_names, 'protections': value_json.protection_names} "
              "| tojson }}"),
)

# derate-only controls (bankgate.derate / telemetry.commands; docs/mqtt.md "Controls"):
# (component, name, label, unit, max: "c" charge / "d" discharge current of the config, or 100)
_CONTROLS = (
    ("number", "chg_cap_a", "Charge current cap", "A", "c"),
    ("number", "dsg_cap_a", "Discharge current cap", "A", "d"),
    ("number", "chg_stop_soc", "Charge stop SOC", "%", 100),
    ("number", "dsg_stop_soc", "Discharge stop SOC", "%", 100),
    ("switch", "hold_joins", "Hold joins", None, None),
)

_BUTTONS = (("rescan", "Rescan module bus"), ("discovery", "Republish discovery"))

_BANK_OPTIONS = STATE_NAMES + ("config_error",)
_MODULE_OPTIONS = MOD_STATE_NAMES + ("unexpected",)


def cap_max_a(cfg):
    """Largest charge/discharge current cap (A): the most the configured bank may be given,
    gating.max_limit_ma (the module rating every module limit is held to) x configured modules."""
    return cfg["gating"]["max_limit_ma"] * len(cfg["bank"]["addresses"]) // 1000


def _attr(table, oid):
    for k, tpl in table:
        if k == oid:
            return tpl
    return None


class Discovery:
    def __init__(self, cfg, base, status_topic, version=VERSION, gw=None):
        m = cfg["mqtt"]
        self.prefix = m["discovery_prefix"]
        self.gid = cfg["gateway_id"]
        self.base = base
        self.status = status_topic
        self.version = version
        self.gw = gw                          # module identities (bank.modules), optional
        self.addrs = list(cfg["bank"]["addresses"])
        self.outputs = list(cfg["contactors"]["outputs"])
        self.cells = cfg["bank"]["cells"] if m.get("ha_cells") else 0
        self.cap_a = cap_max_a(cfg)
        self._device = None

    def set_addresses(self, addrs):
        """Module addresses to describe (configured ones, plus any discovered later)."""
        self.addrs = list(addrs)

    def per_module(self):
        return len(_MODULE) + self.cells

    def count(self):
        return (len(_BANK) + len(self.outputs) + len(_BUTTONS) + len(_CONTROLS)
                + self.per_module() * len(self.addrs))

    def device(self):
        if self._device is None:
            g = self.gid
            name = g if g.lower().startswith("bankgate") else "bankgate " + g
            self._device = {"ids": ["bankgate_" + g], "name": name,
                            "mf": "bankgate", "mdl": "parallel bank gateway",
                            "sw": self.version}
        return self._device

    def _module(self, addr):
        """(the module record or None) for addr."""
        gw = self.gw
        bank = getattr(gw, "bank", None) if gw is not None else None
        if bank is None:
            return None
        for m in bank.modules:
            if m.addr == addr:
                return m
        return None

    def module_device(self, addr):
        d = {"ids": ["bankgate_%s_m%d" % (self.gid, addr)],
             "via_device": "bankgate_" + self.gid}
        m = self._module(addr)
        model = m.model_str() if m is not None and m.model_len else None
        d["name"] = "%s %d" % (model, addr) if model else "Module %d" % addr
        if model:
            d["mdl"] = model
        if m is not None and m.serial_len:
            d["sn"] = m.serial_str()
        if m is not None and m.sw_version >= 0:
            d["sw"] = "%d.%d" % (m.sw_version >> 8, m.sw_version & 0xFF)
        return d

    def identity_key(self):
        """Changes when a module identity (model, serial, firmware) is read: discovery must be
        republished so the module devices show it."""
        gw = self.gw
        bank = getattr(gw, "bank", None) if gw is not None else None
        if bank is None:
            return 0
        k = 0
        for m in bank.modules:
            if m.addr >= 0:
                k = (k * 3 + m.model_len + m.serial_len * 17 + (m.sw_version & 0xFFFF) * 401) & 0xFFFFFF
        return k

    def _base(self, uid, name, dev):
        return {"name": name, "uniq_id": uid, "obj_id": uid,
                "avty": [{"t": "~/status"}], "dev": dev, "~": self.base}

    def _sensor(self, d, state, tpl, dcls, unit, scls, prec, cat):
        d["stat_t"] = state
        d["val_tpl"] = tpl
        if dcls:
            d["dev_cla"] = dcls
        if unit:
            d["unit_of_meas"] = unit
        if scls:
            d["stat_cla"] = scls
        if prec is not None:
            d["sug_dsp_prc"] = prec
        if cat:
            d["ent_cat"] = cat

    def _topic(self, comp, oid):
        return "%s/%s/%s/%s/config" % (self.prefix, comp, self.gid, oid)

    def send(self, c, sink, i):
        """Discovery message i straight into client c's tx buffer: counted, then written in
        place by json.dump through sink (telemetry's _Sink): no payload string is built.
        False: no room now (nothing written)."""
        topic, d = self.config(i)
        sink.buf = None
        sink.p = 0
        json.dump(d, sink, separators=_J)
        n = sink.p
        topic = topic.encode()
        if not c.fits(len(topic), n, 0):
            return False
        sink.p = c.publish_into(topic, n, True)
        sink.buf = c.t.tx
        sink.lim = sink.p + n
        json.dump(d, sink, separators=_J)
        sink.buf = None
        return True

    def message(self, i):
        """(topic, payload) of discovery message i (0 <= i < count()), both str."""
        topic, d = self.config(i)
        return topic, json.dumps(d, separators=_J)

    def config(self, i):
        """(topic, dict) of discovery message i."""
        nb = len(_BANK)
        if i < nb:
            return self._bank(i)
        i -= nb
        if i < len(self.outputs):
            out = self.outputs[i]
            uid = "bankgate_%s_contactor_%s" % (self.gid, out)
            d = self._base(uid, "Contactor " + out, self.device())
            self._sensor(d, "~/bank", "{{ 'ON' if value_json.outputs['%s'] else 'OFF' }}" % out,
                         "power", None, None, None, None)
            return self._topic("binary_sensor", "contactor_" + out), d
        i -= len(self.outputs)
        if i < len(_BUTTONS):
            cmd, name = _BUTTONS[i]
            d = self._base("bankgate_%s_cmd_%s" % (self.gid, cmd), name, self.device())
            d["cmd_t"] = "~/cmd/" + cmd
            d["pl_prs"] = "{}"
            d["ent_cat"] = _CONF
            return self._topic("button", "cmd_" + cmd), d
        i -= len(_BUTTONS)
        if i < len(_CONTROLS):
            return self._control(i)
        i -= len(_CONTROLS)
        per = self.per_module()
        return self._module_entity(self.addrs[i // per], i % per)

    def _bank(self, i):
        comp, oid, name, src, tpl, dcls, unit, scls, prec, cat = _BANK[i]
        uid = "bankgate_%s_bank_%s" % (self.gid, oid)
        d = self._base(uid, name, self.device())
        t = {"b": "~/bank", "m": "~/metrics", "d": "~/diagnoses", "e": "~/event"}[src]
        self._sensor(d, t, tpl, dcls, unit, scls, prec, cat)
        if dcls == "enum":
            d["ops"] = list(_BANK_OPTIONS)
        a = _attr(_BANK_ATTR, oid)
        if a is not None:
            d["json_attr_t"] = t
            d["json_attr_tpl"] = a
        return self._topic(comp, "bank_" + oid), d

    def _control(self, i):
        comp, name, label, unit, mx = _CONTROLS[i]
        d = self._base("bankgate_%s_ctl_%s" % (self.gid, name), label, self.device())
        d["cmd_t"] = "~/cmd/" + name
        d["stat_t"] = "~/derate"
        d["val_tpl"] = "{{ value_json.%s }}" % name
        d["ent_cat"] = _CONF
        if comp == "switch":
            d["pl_on"] = '{"value": 1}'
            d["pl_off"] = '{"value": 0}'
            d["stat_on"] = "1"
            d["stat_off"] = "0"
        else:
            d["cmd_tpl"] = '{"value": {{ value | int }}}'
            d["min"] = 0
            d["max"] = self.cap_a if mx == "c" or mx == "d" else mx
            d["step"] = 1
            d["mode"] = "box"
            d["unit_of_meas"] = unit
        return self._topic(comp, "ctl_" + name), d

    def _module_entity(self, addr, j):
        mt = "~/module/%d" % addr
        if j < len(_MODULE):
            comp, oid, name, tpl, dcls, unit, scls, prec, cat = _MODULE[j]
        else:
            c = j - len(_MODULE)
            comp, oid, name, dcls, unit, scls, prec, cat = (
                "sensor", "cell%d" % (c + 1), "Cell %d" % (c + 1), "voltage", "V", _M, 3, _DIAG)
            tpl = ("{{ (value_json.cells[%d] / 1000) if value_json.cells is defined and "
                   "value_json.cells | count > %d else none }}" % (c, c))
        uid = "bankgate_%s_m%d_%s" % (self.gid, addr, oid)
        d = self._base(uid, name, self.module_device(addr))
        if oid != "online":
            # the module's own data: unavailable (not 0) while it is absent or stale
            d["avty"].append({"t": mt, "val_tpl":
                                      "{{ 'online' if value_json.avail else 'offline' }}"})
            d["avty_mode"] = "all"
        self._sensor(d, mt, tpl, dcls, unit, scls, prec, cat)
        if dcls == "enum":
            d["ops"] = list(_MODULE_OPTIONS)
        a = _attr(_MODULE_ATTR, oid)
        if a is not None:
            d["json_attr_t"] = mt
            d["json_attr_tpl"] = a
        return self._topic(comp, "m%d_%s" % (addr, oid)), d
