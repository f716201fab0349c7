# Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).
#
# One device (the gateway) with:
#   bank sensors     voltage V, current A, power W, SOC %, SOH %, temperature degC, charge/discharge
#                    current limits A, charge/discharge voltage limits V, admitted modules, state (enum)
#   per module       voltage, current, SOC, temperature, cell min/max V, state (enum) + binary sensors
#                    "fault" (alarm or protection bits set) and "online"
#   binary sensors   one per contactor output (device_class power: on = closed), bank fault (problem)
#   diagnoses        number of active diagnoses
#   buttons          rescan the module bus, republish discovery (the only commands; see commands.py)
#
# Units: the telemetry JSON keeps the firmware's integers (mV, mA, permille, 0.1 degC) so nothing is
# lost and a subscriber never sees floats; HA gets SI units through `value_template` (e.g.
# "{{ value_json.mv / 1000 }}" with unit "V").  Availability follows <prefix>/<id>/status
# (online/offline, retained, Last Will).  Config topics are retained:
#   <discovery_prefix>/<component>/<gateway_id>/<object_id>/config
# and are republished on every (re)connect and when HA announces itself (<discovery_prefix>/status).
# Messages are built one at a time (message(i)) so the ~50 payloads never sit in RAM together.
import json

# (component, object_id, name, state suffix, value_template, device_class, unit, state_class)
_BANK = (
    ("sensor", "voltage", "Bank voltage", "{{ value_json.mv / 1000 }}", "voltage", "V", "measurement"),
    ("sensor", "current", "Bank current", "{{ value_json.ma / 1000 }}", "current", "A", "measurement"),
    ("sensor", "power", "Bank power", "{{ (value_json.mv * value_json.ma / 1000000) | round(0) }}",
     "power", "W", "measurement"),
    ("sensor", "soc", "Bank SOC", "{{ value_json.soc_pm / 10 }}", "battery", "%", "measurement"),
    ("sensor", "soh", "Bank SOH", "{{ value_json.soh_pm / 10 }}", None, "%", "measurement"),
    ("sensor", "temperature", "Bank temperature", "{{ value_json.temp_dc / 10 }}", "temperature",
     "\u00b0C", "measurement"),
    ("sensor", "chg_limit", "Charge current limit", "{{ value_json.limits.chg_ma / 1000 }}",
     "current", "A", "measurement"),
    ("sensor", "dsg_limit", "Discharge current limit", "{{ value_json.limits.dsg_ma / 1000 }}",
     "current", "A", "measurement"),
    ("sensor", "chg_v_limit", "Charge voltage limit", "{{ value_json.limits.chg_v_mv / 1000 }}",
     "voltage", "V", "measurement"),
    ("sensor", "dsg_v_limit", "Discharge voltage limit", "{{ value_json.limits.dsg_v_mv / 1000 }}",
     "voltage", "V", "measurement"),
    ("sensor", "admitted", "Modules admitted", "{{ value_json.admitted }}", None, None, "measurement"),
    ("sensor", "state", "Bank state", "{{ value_json.state }}", None, None, None),
    ("binary_sensor", "fault", "Bank fault", "{{ 'ON' if value_json.faults else 'OFF' }}",
     "problem", None, None),
)

_MODULE = (
    ("sensor", "voltage", "voltage", "{{ value_json.mv / 1000 }}", "voltage", "V", "measurement"),
    ("sensor", "current", "current", "{{ value_json.ma / 1000 }}", "current", "A", "measurement"),
    ("sensor", "soc", "SOC", "{{ value_json.soc_pm / 10 }}", "battery", "%", "measurement"),
    ("sensor", "temperature", "temperature",
     "{{ (value_json.temp_dc / 10) if value_json.temp_dc is number else none }}",
     "temperature", "\u00b0C", "measurement"),
    ("sensor", "cell_min", "cell min",
     "{{ (value_json.cell_min_mv / 1000) if value_json.cell_min_mv is number else none }}",
     "voltage", "V", "measurement"),
    ("sensor", "cell_max", "cell max",
     "{{ (value_json.cell_max_mv / 1000) if value_json.cell_max_mv is number else none }}",
     "voltage", "V", "measurement"),
    ("sensor", "state", "state", "{{ value_json.state }}", None, None, None),
    ("binary_sensor", "fault", "fault",
     "{{ 'ON' if value_json.alarms or value_json.protections else 'OFF' }}", "problem", None, None),
    ("binary_sensor", "online", "online", "{{ 'ON' if value_json.online else 'OFF' }}",
     "connectivity", None, None),
)


class Discovery:
    def __init__(self, cfg, base, status_topic, version="0"):
        m = cfg["mqtt"]
        self.prefix = m["discovery_prefix"]
        self.gid = cfg["gateway_id"]
        self.base = base
        self.status = status_topic
        self.version = version
        self.addrs = list(cfg["bank"]["addresses"])
        self.outputs = list(cfg["contactors"]["outputs"])
        self._device = None

    def set_addresses(self, addrs):
        """Module addresses to describe (configured ones, plus any discovered later)."""
        self.addrs = list(addrs)

    def count(self):
        return len(_BANK) + len(self.outputs) + 1 + 2 + len(_MODULE) * len(self.addrs)

    def device(self):
        if self._device is None:
            self._device = {"identifiers": ["bankgate_" + self.gid], "name": "bankgate " + self.gid,
                            "manufacturer": "bankgate", "model": "parallel bank gateway",
                            "sw_version": self.version}
        return self._device

    def _cfg(self, comp, oid, name, state, tpl, dcls, unit, scls):
        uid = "bankgate_%s_%s" % (self.gid, oid)
        d = {"name": name, "unique_id": uid, "state_topic": state,
             "value_template": tpl, "availability_topic": self.status,
             "payload_available": "online", "payload_not_available": "offline",
             "device": self.device()}
        if dcls:
            d["device_class"] = dcls
        if unit:
            d["unit_of_measurement"] = unit
        if scls:
            d["state_class"] = scls
        topic = "%s/%s/%s/%s/config" % (self.prefix, comp, self.gid, oid)
        return topic, d

    def message(self, i):
        """(topic, payload) of discovery message i (0 <= i < count()), both str."""
        nb = len(_BANK)
        if i < nb:
            comp, oid, name, tpl, dcls, unit, scls = _BANK[i]
            topic, d = self._cfg(comp, "bank_" + oid, name, self.base + "/bank", tpl, dcls, unit, scls)
            return topic, json.dumps(d, separators=(",", ":"))
        i -= nb
        if i < len(self.outputs):
            out = self.outputs[i]
            topic, d = self._cfg("binary_sensor", "contactor_" + out, "Contactor " + out,
                                 self.base + "/bank",
                                 "{{ 'ON' if value_json.outputs['%s'] else 'OFF' }}" % out,
                                 "power", None, None)
            return topic, json.dumps(d, separators=(",", ":"))
        i -= len(self.outputs)
        if i == 0:
            topic, d = self._cfg("sensor", "diagnoses", "Active diagnoses", self.base + "/diagnoses",
                                 "{{ value_json.active | count }}", None, None, "measurement")
            return topic, json.dumps(d, separators=(",", ":"))
        i -= 1
        if i < 2:
            cmd = ("rescan", "discovery")[i]
            uid = "bankgate_%s_cmd_%s" % (self.gid, cmd)
            d = {"name": ("Rescan module bus", "Republish discovery")[i], "unique_id": uid,
                 "command_topic": "%s/cmd/%s" % (self.base, cmd),
                 "payload_press": "{}", "availability_topic": self.status,
                 "payload_available": "online", "payload_not_available": "offline",
                 "device": self.device()}
            return ("%s/button/%s/cmd_%s/config" % (self.prefix, self.gid, cmd),
                    json.dumps(d, separators=(",", ":")))
        i -= 2
        addr = self.addrs[i // len(_MODULE)]
        comp, oid, name, tpl, dcls, unit, scls = _MODULE[i % len(_MODULE)]
        topic, d = self._cfg(comp, "m%d_%s" % (addr, oid), "Module %d %s" % (addr, name),
                             "%s/module/%d" % (self.base, addr), tpl, dcls, unit, scls)
        return topic, json.dumps(d, separators=(",", ":"))
