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
_TI = "total_increasing"
_A = "value_json.admitted"     # bank values: unknown while nothing is admitted


def _g(expr):
    """Bank value template: expr while a module is admitted, else none (unknown)."""
    return "{{ (%s) if %s else none }}" % (expr, _A)


def _n(key, expr):
    """Module value template: expr when value_json.<key> is a number, else none."""
    return "{{ (%s) if value_json.%s is number else none }}" % (expr, key)


# (component, object_id, name, topic, value_template, device_class, unit, state_class,
#  display precision, entity_category)   topic: b bank, m metrics, d diagnoses, e event
_BANK = (
    ("sensor", "voltage", "Bank voltage", "b", _g("value_json.mv / 1000"), "voltage", "V", _M, 2, None),
    ("sensor", "current", "Bank current", "b", _g("value_json.ma / 1000"), "current", "A", _M, 1, None),
    ("sensor", "power", "Bank power", "b", _g("(value_json.mv * value_json.ma / 1000000) | round(0)"),
     "power", "W", _M, 0, None),
    ("sensor", "soc", "Bank SOC", "b", _g("value_json.soc_pm / 10"), "battery", "%", _M, 1, None),
    ("sensor", "soh", "Bank SOH", "b", _g("value_json.soh_pm / 10"), None, "%", _M, 1, None),
    ("sensor", "temperature", "Bank temperature", "b", _g("value_json.temp_dc / 10"), "temperature",
     "\u00b0C", _M, 1, None),
    ("sensor", "chg_limit", "Charge current limit", "b", _g("value_json.limits.chg_ma / 1000"),
     "current", "A", _M, 1, None),
    ("sensor", "dsg_limit", "Discharge current limit", "b", _g("value_json.limits.dsg_ma / 1000"),
     "current", "A", _M, 1, None),
    ("sensor", "chg_v_limit", "Charge voltage limit", "b", _g("value_json.limits.chg_v_mv / 1000"),
     "voltage", "V", _M, 2, None),
    ("sensor", "dsg_v_limit", "Discharge voltage limit", "b", _g("value_json.limits.dsg_v_mv / 1000"),
     "voltage", "V", _M, 2, None),
    ("sensor", "admitted", "Modules admitted", "b", "{{ value_json.admitted }}", None, None, _M, 0, None),
    ("sensor", "state", "Bank state", "b", "{{ value_json.state }}", "enum", None, None, None, None),
    ("sensor", "reason", "Bank reason", "b", "{{ value_json.reason }}", None, None, None, None, _DIAG),
    ("binary_sensor", "fault", "Bank fault", "b", "{{ 'ON' if value_json.faults else 'OFF' }}",
     "problem", None, None, None, None),
    ("sensor", "energy_chg", "Charge energy", "b", _n("e_chg_wh", "value_json.e_chg_wh"),
     "energy", "Wh", _TI, 0, None),
    ("sensor", "energy_dsg", "Discharge energy", "b", _n("e_dsg_wh", "value_json.e_dsg_wh"),
     "energy", "Wh", _TI, 0, None),
    ("sensor", "bus", "Module bus", "b", "{{ value_json.bus.verdict }}", None, None, None, None, _DIAG),
    ("sensor", "diagnoses", "Active diagnoses", "d", "{{ value_json.active | count }}", None, None, _M, 0,
     None),
    ("sensor", "circulating", "Circulating current", "m", "{{ value_json.metrics.circ_ma / 1000 }}",
     "current", "A", _M, 1, _DIAG),
    ("sensor", "imbalance", "Current imbalance", "m", "{{ value_json.metrics.imbalance_pm / 10 }}",
     None, "%", _M, 1, _DIAG),
    ("sensor", "v_spread", "Module voltage spread", "m", "{{ value_json.metrics.v_spread_mv }}",
     "voltage", "mV", _M, 0, _DIAG),
    ("sensor", "soc_spread", "SOC spread", "m", "{{ value_json.metrics.soc_spread_pm / 10 }}",
     None, "%", _M, 1, _DIAG),
    ("sensor", "tel_dropped", "Telemetry dropped", "m", "{{ value_json.mqtt.dropped }}", None, None, _TI,
     0, _DIAG),
    ("sensor", "tel_reconnects", "MQTT reconnects", "m", "{{ value_json.mqtt.reconnects }}", None, None,
     _TI, 0, _DIAG),
    ("sensor", "last_event", "Last event", "e", "{{ value_json.ev }}", None, None, None, None, _DIAG),
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
    ("sensor", "voltage", "Voltage", _n("mv", "value_json.mv / 1000"), "voltage", "V", _M, 2, None),
    ("sensor", "current", "Current", _n("ma", "value_json.ma / 1000"), "current", "A", _M, 1, None),
    ("sensor", "soc", "SOC", _n("soc_pm", "value_json.soc_pm / 10"), "battery", "%", _M, 1, None),
    ("sensor", "soh", "SOH", _n("soh_pm", "value_json.soh_pm / 10"), None, "%", _M, 1, None),
    ("sensor", "temperature", "Temperature", _n("temp_dc", "value_json.temp_dc / 10"),
     "temperature", "\u00b0C", _M, 1, None),
    ("sensor", "cell_min", "Cell min", _n("cell_min_mv", "value_json.cell_min_mv / 1000"),
     "voltage", "V", _M, 3, None),
    ("sensor", "cell_max", "Cell max", _n("cell_max_mv", "value_json.cell_max_mv / 1000"),
     "voltage", "V", _M, 3, None),
    ("sensor", "cell_delta", "Cell delta", _n("cell_delta_mv", "value_json.cell_delta_mv"),
     "voltage", "mV", _M, 0, None),
    ("sensor", "chg_limit", "Charge current limit", _n("chg_limit_ma", "value_json.chg_limit_ma / 1000"),
     "current", "A", _M, 1, _DIAG),
    ("sensor", "dsg_limit", "Discharge current limit",
     _n("dsg_limit_ma", "value_json.dsg_limit_ma / 1000"), "current", "A", _M, 1, _DIAG),
    ("sensor", "cycles", "Cycles", _n("cycles", "value_json.cycles"), None, None, _TI, 0, _DIAG),
    ("sensor", "energy_chg", "Charge energy", _n("e_chg_wh", "value_json.e_chg_wh"), "energy", "Wh", _TI, 0,
     None),
    ("sensor", "energy_dsg", "Discharge energy", _n("e_dsg_wh", "value_json.e_dsg_wh"), "energy", "Wh",
     _TI, 0, None),
    ("sensor", "share", "Current share", _n("share_pm", "value_json.share_pm / 10"), None, "%", _M, 1,
     _DIAG),
    ("sensor", "resistance", "Branch resistance", _n("r_mohm", "value_json.r_mohm"), None, "m\u03a9",
     _M, 0, _DIAG),
    ("sensor", "state", "State", "{{ value_json.state }}", "enum", None, None, None, None),
    ("sensor", "reason", "Reason", "{{ value_json.reason }}", None, None, None, None, _DIAG),
    ("binary_sensor", "fault", "Fault",
     "{{ 'ON' if value_json.alarms or value_json.protections else 'OFF' }}", "problem", None, None, None,
     None),
    ("binary_sensor", "online", "Online", "{{ 'ON' if value_json.avail else 'OFF' }}",
     "connectivity", None, None, None, _DIAG),
    ("sensor", "bus_errors", "Bus errors", "{{ value_json.errors }}", None, None, _TI, 0, _DIAG),
    ("sensor", "bus_timeouts", "Bus timeouts", "{{ value_json.timeouts }}", None, None, _TI, 0, _DIAG),
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
            self._device = {"identifiers": ["bankgate_" + g], "name": name,
                            "manufacturer": "bankgate", "model": "parallel bank gateway",
                            "sw_version": self.version}
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
        d = {"identifiers": ["bankgate_%s_m%d" % (self.gid, addr)],
             "via_device": "bankgate_" + self.gid}
        m = self._module(addr)
        model = m.model_str() if m is not None and m.model_len else None
        d["name"] = "%s %d" % (model, addr) if model else "Module %d" % addr
        if model:
            d["model"] = model
        if m is not None and m.serial_len:
            d["serial_number"] = m.serial_str()
        if m is not None and m.sw_version >= 0:
            d["sw_version"] = "%d.%d" % (m.sw_version >> 8, m.sw_version & 0xFF)
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
        return {"name": name, "unique_id": uid, "object_id": uid,
                "availability": [{"topic": self.status}], "device": dev}

    def _sensor(self, d, state, tpl, dcls, unit, scls, prec, cat):
        d["state_topic"] = state
        d["value_template"] = tpl
        if dcls:
            d["device_class"] = dcls
        if unit:
            d["unit_of_measurement"] = unit
        if scls:
            d["state_class"] = scls
        if prec is not None:
            d["suggested_display_precision"] = prec
        if cat:
            d["entity_category"] = cat

    def _topic(self, comp, oid):
        return "%s/%s/%s/%s/config" % (self.prefix, comp, self.gid, oid)

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
            self._sensor(d, self.base + "/bank", "{{ 'ON' if value_json.outputs['%s'] else 'OFF' }}" % out,
                         "power", None, None, None, None)
            return self._topic("binary_sensor", "contactor_" + out), d
        i -= len(self.outputs)
        if i < len(_BUTTONS):
            cmd, name = _BUTTONS[i]
            d = self._base("bankgate_%s_cmd_%s" % (self.gid, cmd), name, self.device())
            d["command_topic"] = "%s/cmd/%s" % (self.base, cmd)
            d["payload_press"] = "{}"
            d["entity_category"] = _CONF
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
        t = self.base + {"b": "/bank", "m": "/metrics", "d": "/diagnoses", "e": "/event"}[src]
        self._sensor(d, t, tpl, dcls, unit, scls, prec, cat)
        if dcls == "enum":
            d["options"] = list(_BANK_OPTIONS)
        a = _attr(_BANK_ATTR, oid)
        if a is not None:
            d["json_attributes_topic"] = t
            d["json_attributes_template"] = a
        return self._topic(comp, "bank_" + oid), d

    def _control(self, i):
        comp, name, label, unit, mx = _CONTROLS[i]
        d = self._base("bankgate_%s_ctl_%s" % (self.gid, name), label, self.device())
        d["command_topic"] = "%s/cmd/%s" % (self.base, name)
        d["state_topic"] = self.base + "/derate"
        d["value_template"] = "{{ value_json.%s }}" % name
        d["entity_category"] = _CONF
        if comp == "switch":
            d["payload_on"] = '{"value": 1}'
            d["payload_off"] = '{"value": 0}'
            d["state_on"] = 1
            d["state_off"] = 0
        else:
            d["command_template"] = '{"value": {{ value | int }}}'
            d["min"] = 0
            d["max"] = self.cap_a if mx == "c" or mx == "d" else mx
            d["step"] = 1
            d["mode"] = "box"
            d["unit_of_measurement"] = unit
        return self._topic(comp, "ctl_" + name), d

    def _module_entity(self, addr, j):
        mt = "%s/module/%d" % (self.base, addr)
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
            d["availability"].append({"topic": mt, "value_template":
                                      "{{ 'online' if value_json.avail else 'offline' }}"})
            d["availability_mode"] = "all"
        self._sensor(d, mt, tpl, dcls, unit, scls, prec, cat)
        if dcls == "enum":
            d["options"] = list(_MODULE_OPTIONS)
        a = _attr(_MODULE_ATTR, oid)
        if a is not None:
            d["json_attributes_topic"] = mt
            d["json_attributes_template"] = a
        return self._topic(comp, "m%d_%s" % (addr, oid)), d
