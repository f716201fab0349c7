"""Every Home Assistant discovery config the firmware publishes, checked by Home Assistant
itself (the `homeassistant` package pinned in the Makefile, `make test-ha`, venv .venv-ha):

- the MQTT discovery schema of each platform (sensor, binary_sensor, button, number, switch),
  and no key silently dropped by it (HA removes unknown keys from discovery payloads);
- the sensor rules HA applies to every state: units allowed per device class, state classes
  valid for the device class, enum sensors without unit/state class;
- every value_template, json_attributes_template and availability template rendered by HA's
  template engine against the state messages the same firmware published: numeric sensors
  give a number or None (unknown), enum sensors one of their options, binary sensors ON/OFF.

The configs come from tools/rigs/ha_dump.py: the real Gateway on fake hardware, 16 modules,
every option on (mqtt.ha_cells), run under MicroPython by the main venv (.venv)."""
import asyncio
import json
import os
import re
import subprocess
import sys

import pytest
import voluptuous as vol
from homeassistant.components.mqtt import binary_sensor, button, number, sensor, switch
from homeassistant.components.mqtt.abbreviations import ABBREVIATIONS, DEVICE_ABBREVIATIONS
from homeassistant.components.mqtt.discovery import TOPIC_MATCHER
from homeassistant.components.sensor import (DEVICE_CLASS_STATE_CLASSES, DEVICE_CLASS_UNITS,
                                             NON_NUMERIC_DEVICE_CLASSES, SensorDeviceClass)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST_PY = os.environ.get("BANKGATE_HOST_PYTHON", os.path.join(REPO, ".venv", "bin", "python"))
N = 16
CELLS = 15                     # bank.cells default

SCHEMAS = {"sensor": sensor.DISCOVERY_SCHEMA, "binary_sensor": binary_sensor.DISCOVERY_SCHEMA,
           "button": button.DISCOVERY_SCHEMA, "number": number.DISCOVERY_SCHEMA,
           "switch": switch.DISCOVERY_SCHEMA}
# keys this HA version drops that newer ones use: an MQTT sensor's enum `options` (ignored by
# 2024.3, which then accepts any state of an enum sensor)
DROPPED_OK = {"sensor": {"options"}}


def _dump():
    code = ("import sys; from bankgate_host import mpy; "
            "p = mpy.run([mpy.RIGS + '/ha_dump.py', '%d'], heapsize='1m', timeout=900); "
            "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); sys.exit(p.returncode)" % N)
    p = subprocess.run([HOST_PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    configs, states = {}, {}
    for line in p.stdout.splitlines():
        topic, payload = json.loads(line)
        (configs if topic.startswith("homeassistant/") else states)[topic] = payload
    return configs, states


def expand(payload):
    """What HA's discovery does to a payload before its schema sees it (mqtt/discovery.py,
    async_discovery_message_received: abbreviations with HA's own tables, then "~")."""
    d = {ABBREVIATIONS.get(k, k): v for k, v in payload.items()}
    if "device" in d:
        d["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in d["device"].items()}
    if "availability" in d:
        d["availability"] = [{ABBREVIATIONS.get(k, k): v for k, v in a.items()} for a in d["availability"]]
    base = d.pop("~", None)
    if base is not None:
        for k, v in d.items():
            if isinstance(v, str) and v and k.endswith("topic"):
                if v[0] == "~":
                    d[k] = base + v[1:]
                if v[-1] == "~":
                    d[k] = v[:-1] + base
        for a in d.get("availability", []):
            t = a.get("topic")
            if t and t[0] == "~":
                a["topic"] = base + t[1:]
    return d


@pytest.fixture(scope="module")
def dump():
    configs, states = _dump()
    return {t: expand(json.loads(p)) for t, p in configs.items()}, states


def check_schema(topic, cfg):
    """HA's discovery checks of one config; returns the validated config.  Raises
    vol.Invalid / AssertionError for a config HA would reject or partly ignore."""
    m = _match(topic)
    assert m, "not a discovery topic: " + topic
    comp = m.group("component")
    assert comp in SCHEMAS, topic
    out = SCHEMAS[comp](dict(cfg))
    dropped = set(cfg) - set(out) - DROPPED_OK.get(comp, set())
    assert not dropped, "%s: keys Home Assistant ignores: %s" % (topic, sorted(dropped))
    if "device" in cfg:
        assert set(cfg["device"]) <= set(out["device"]), (topic, cfg["device"], out["device"])
    return comp, out


def check_sensor_rules(topic, cfg):
    """The rules SensorEntity enforces on every state (units per device class, state classes,
    enum), as errors instead of HA's log lines."""
    dc = cfg.get("device_class")
    unit = cfg.get("unit_of_measurement")
    sc = cfg.get("state_class")
    if dc is None:
        return
    dcl = SensorDeviceClass(dc)
    if dcl in NON_NUMERIC_DEVICE_CLASSES:
        assert unit is None, "%s: unit on non-numeric device class %s" % (topic, dc)
        assert sc is None, "%s: state class on non-numeric device class %s" % (topic, dc)
    if dcl is SensorDeviceClass.ENUM:
        assert cfg.get("options"), "%s: enum sensor without options" % topic
        assert "suggested_display_precision" not in cfg, topic
    units = DEVICE_CLASS_UNITS.get(dcl)
    if units is not None:
        assert unit in units, "%s: unit %r not valid for %s (%s)" % (topic, unit, dc, sorted(map(str, units)))
    classes = DEVICE_CLASS_STATE_CLASSES.get(dcl)
    if sc is not None and classes is not None:
        assert sc in classes, "%s: state class %s impossible for %s" % (topic, sc, dc)


def _numeric(cfg):
    return (cfg.get("state_class") is not None or cfg.get("unit_of_measurement") is not None
            or cfg.get("suggested_display_precision") is not None
            or (cfg.get("device_class") not in (None, "enum", "timestamp", "date")))


def render_checks(configs, states):
    """Render every template with HA's engine against the published state; returns the list
    of problems (empty: all good)."""
    async def run():
        hass = HomeAssistant("/tmp")
        problems = []

        def render(tpl, payload):
            t = Template(tpl, hass)
            return t.async_render_with_possible_json_value(payload, "<<TEMPLATE ERROR>>")

        for topic, cfg in sorted(configs.items()):
            comp = _match(topic).group("component")
            for av in cfg.get("availability", []):
                if av["topic"].endswith("/status"):
                    continue
                if "value_template" in av:
                    got = render(av["value_template"], states[av["topic"]])
                    if got not in ("online", "offline"):
                        problems.append("%s: availability renders %r" % (topic, got))
            st = cfg.get("state_topic")
            if st is None:
                continue
            if st not in states:
                if not st.endswith(("/derate", "/event")):    # published by ctl / on events only
                    problems.append("%s: no message on its state topic %s" % (topic, st))
                continue
            got = str(render(cfg["value_template"], states[st]))
            if comp == "binary_sensor" and got not in ("ON", "OFF"):
                problems.append("%s: binary sensor renders %r" % (topic, got))
            if comp == "sensor" and cfg.get("device_class") == "enum" and got not in cfg["options"]:
                problems.append("%s: enum renders %r, not an option" % (topic, got))
            elif comp == "sensor" and _numeric(cfg) and got != "None":
                try:
                    float(got)
                except ValueError:
                    problems.append("%s: numeric sensor renders %r" % (topic, got))
            if "json_attributes_template" in cfg:
                a = render(cfg["json_attributes_template"], states[cfg["json_attributes_topic"]])
                try:
                    if not isinstance(json.loads(a), dict):
                        raise ValueError
                except ValueError:
                    problems.append("%s: attributes render %r" % (topic, a))
        await hass.async_stop(force=True)
        return problems

    return asyncio.run(run())


# ---------------------------------------------------------------------------------- tests
def test_every_config_passes_home_assistants_schema(dump):
    configs, _ = dump
    comps = {}
    for topic, cfg in configs.items():
        comp, _ = check_schema(topic, cfg)
        comps[comp] = comps.get(comp, 0) + 1
        if comp == "sensor":
            check_sensor_rules(topic, cfg)
    # bank 24 sensors + 1 binary; 16 contactors; 2 buttons; 4 numbers + 1 switch; per module
    # 19 sensors + 2 binary + one per cell
    assert comps == {"sensor": 24 + N * (19 + CELLS), "binary_sensor": 1 + 16 + N * 2, "button": 2,
                     "number": 4, "switch": 1}, comps
    uids = [c["unique_id"] for c in configs.values()]
    assert len(set(uids)) == len(uids)


def test_devices_gateway_and_one_per_module(dump):
    configs, _ = dump
    devs = {}
    for cfg in configs.values():
        d = cfg["device"]
        devs.setdefault(d["identifiers"][0], d)
    gw = devs.pop("bankgate_bankgate")
    assert gw["name"] == "bankgate" and gw["sw_version"] == _version()
    assert len(devs) == N
    for ident, d in devs.items():
        addr = int(re.match(r"bankgate_bankgate_m(\d+)$", ident).group(1))
        assert d["via_device"] == "bankgate_bankgate"
        assert d["name"] == "US5000 %d" % addr and d["model"] == "US5000", d
        assert d["serial_number"].startswith("BENCH") and re.match(r"\d+\.\d+$", d["sw_version"]), d
    for cfg in configs.values():            # no entity name repeats its device's name
        assert not cfg["name"].lower().startswith(cfg["device"]["name"].lower()), cfg["name"]


def test_energy_sensors_are_for_the_energy_dashboard(dump):
    configs, _ = dump
    energy = [c for c in configs.values() if c.get("device_class") == "energy"]
    assert len(energy) == 2 + 2 * N
    for c in energy:
        assert c["state_class"] == "total_increasing" and c["unit_of_measurement"] == "Wh"


def test_controls_follow_the_derate_contract(dump):
    configs, _ = dump
    ctl = {t.split("/")[3]: c for t, c in configs.items() if "/ctl_" in t}
    assert sorted(ctl) == ["ctl_chg_cap_a", "ctl_chg_stop_soc", "ctl_dsg_cap_a", "ctl_dsg_stop_soc",
                           "ctl_hold_joins"]
    for name, c in ctl.items():
        short = name[4:]
        assert c["command_topic"] == "bankgate/bankgate/cmd/" + short
        assert c["state_topic"] == "bankgate/bankgate/derate"
        assert c["value_template"] == "{{ value_json.%s }}" % short
        assert c["entity_category"] == "config"
    # default config: gating.max_limit_ma 500 A x 16 configured modules
    assert ctl["ctl_chg_cap_a"]["max"] == 8000 and ctl["ctl_dsg_cap_a"]["max"] == 8000
    assert ctl["ctl_chg_stop_soc"]["max"] == 100 and ctl["ctl_chg_stop_soc"]["min"] == 0
    assert ctl["ctl_hold_joins"]["payload_on"] == '{"value": 1}'
    hass_tpl = ctl["ctl_chg_cap_a"]["command_template"]
    assert json.loads(_render_once(hass_tpl, {"value": 42.0})) == {"value": 42}


def test_every_template_renders_against_the_published_states(dump):
    configs, states = dump
    assert render_checks(configs, states) == []


def test_absent_module_and_empty_bank_are_unavailable_or_unknown(dump):
    configs, states = dump
    mt = "bankgate/bankgate/module/5"
    gone = json.loads(states[mt])
    gone.update({"avail": 0, "online": False})
    bank = json.loads(states["bankgate/bankgate/bank"])
    bank["admitted"] = 0
    st = dict(states, **{mt: json.dumps(gone), "bankgate/bankgate/bank": json.dumps(bank)})
    cfg = configs["homeassistant/sensor/bankgate/m5_voltage/config"]
    assert cfg["availability_mode"] == "all"
    av = [a for a in cfg["availability"] if a["topic"] == mt][0]
    assert _render_once(av["value_template"], st[mt], raw=True) == "offline"
    for oid in ("voltage", "soc", "soh", "chg_limit", "temperature"):
        c = configs["homeassistant/sensor/bankgate/bank_%s/config" % oid]
        assert _render_once(c["value_template"], st[c["state_topic"]], raw=True) == "None", oid


def test_the_checks_reject_broken_configs(dump):
    """Each check above fails on a config that is wrong in one way (proof they can fail)."""
    configs, states = dump
    base = configs["homeassistant/sensor/bankgate/m5_energy_chg/config"]
    broken = [
        dict(base, unit_of_measurement="A"),                      # unit not valid for energy
        dict(base, state_class="measurement"),                    # impossible for energy
        dict(base, state_topic="bankgate/#/module/5"),            # not a valid topic filter
        dict(base, entity_category="controls"),                   # no such category
        dict(base, device=dict(base["device"], via="x")),         # unknown device key
        dict(base, expire="5"),                                   # a key HA would ignore
        dict(configs["homeassistant/sensor/bankgate/m5_state/config"], unit_of_measurement="x"),
    ]
    for cfg in broken:
        with pytest.raises((vol.Invalid, AssertionError, ValueError), match=""):
            check_schema("homeassistant/sensor/bankgate/m5_energy_chg/config", cfg)
            check_sensor_rules("homeassistant/sensor/bankgate/m5_energy_chg/config", cfg)
    num = configs["homeassistant/number/bankgate/ctl_chg_cap_a/config"]
    with pytest.raises(vol.Invalid):
        check_schema("homeassistant/number/bankgate/ctl_chg_cap_a/config", dict(num, min=10, max=5))
    bad = {"homeassistant/sensor/bankgate/m5_voltage/config":
           dict(base, value_template="{{ value_json.state }}", device_class="voltage")}
    assert render_checks(bad, states)


def _match(topic):
    """HA's own topic match, after it strips the discovery prefix (mqtt.discovery)."""
    prefix = "homeassistant/"
    return TOPIC_MATCHER.fullmatch(topic[len(prefix):]) if topic.startswith(prefix) else None


def _version():
    with open(os.path.join(REPO, "lib", "bankgate", "__init__.py")) as f:
        return re.search(r'^VERSION\s*=\s*"([^"]+)"', f.read(), re.M).group(1)


def _render_once(tpl, payload, raw=False):
    async def run():
        hass = HomeAssistant("/tmp")
        t = Template(tpl, hass)
        if raw:
            out = t.async_render_with_possible_json_value(payload, "<<ERR>>")
        else:
            out = t.async_render(payload, parse_result=False)
        await hass.async_stop(force=True)
        return str(out)
    return asyncio.run(run())
