# Configuration: the schema (names, types, defaults, ranges, documentation) and the
# validator that runs on the device and, through `bankgate config check`, on the
# host under the unix port.  docs/configuration.md is generated from SCHEMA.
#
# A validated configuration is a plain dict of dicts with every default filled in;
# components read their section once, at construction.  Units are in the names.
#
# Schema entry: key -> (kind, default, lo, hi, doc)
#   kind: "int" (lo/hi inclusive bounds), "bool", "str" (lo/hi = length bounds),
#         "enum" (lo = tuple of allowed values), "ints" / "strs" (lists; lo/hi bound
#         the length), "dict" (free-form JSON object, checked by its owner).

SCHEMA = {
    "gateway_id": ("str", "bankgate", 1, 32, "Name of this gateway in MQTT topics and Home Assistant."),
    "board": ("str", "sim", 1, 40, "Board definition name (boards/<name>.json)."),
    "bank": {
        "expected_modules": ("int", 3, 1, 16, "How many modules the bank must have."),
        "family": ("enum", "pylontech", ("pylontech", "pace", "pylontech-can"),
                   None, "BMS protocol family of the module network."),
        "bus": ("enum", "rs485", ("rs485", "can"), None, "Physical module network."),
        "baud": ("int", 115200, 1200, 1000000, "RS485 baud rate (9600 or 115200 for Pylontech) or CAN bit rate."),
        "addresses": ("ints", [2, 3, 4], 1, 16, "Bus addresses of the modules, in the approved order."),
        "scan_from": ("int", 2, 0, 255, "First address probed by discovery."),
        "scan_to": ("int", 17, 0, 255, "Last address probed by discovery."),
        "approved_models": ("strs", [], 0, 16, "Model names allowed to join (empty: any model the family reports)."),
        "firmware_min": ("int", 0, 0, 0xFFFF, "Lowest BMS software version allowed, (major << 8) | minor."),
        "firmware_same": ("bool", True, None, None, "All modules must run the same BMS software version."),
        "chemistry": ("enum", "lfp", ("lfp", "nmc"), None, "Cell chemistry every module must have."),
        "nominal_mv": ("int", 48000, 12000, 60000, "Nominal module voltage."),
        "cells": ("int", 15, 4, 24, "Cells in series per module."),
        "max_parallel": ("int", 16, 1, 16, "Largest parallel count the module model allows."),
    },
    "gating": {
        "topology": ("enum", "branch", ("branch", "main"), None,
                     "One contactor per module branch, or one main contactor with precharge."),
        "max_dv_mv": ("int", 500, 10, 5000, "Largest |V_module - V_bus| at which a module may join."),
        "hysteresis_mv": ("int", 100, 0, 2000, "A pending module must come this far below max_dv_mv."),
        "dwell_ms": ("int", 3000, 0, 600000, "Conditions must hold this long before a close."),
        "max_inrush_ma": ("int", 50000, 1000, 1000000, "Largest predicted circulating current at join (dV / loop R)."),
        "loop_resistance_mohm": ("int", 25, 1, 10000, "Module internal + branch resistance when not estimated."),
        "module_mv_min": ("int", 44000, 0, 65000, "Lowest module voltage allowed to join."),
        "module_mv_max": ("int", 57600, 0, 65000, "Highest module voltage allowed to join."),
        "soc_min_pm": ("int", 50, 0, 1000, "Lowest SOC allowed to join (permille)."),
        "soc_max_pm": ("int", 1000, 0, 1000, "Highest SOC allowed to join (permille)."),
        "soc_spread_pm": ("int", 150, 0, 1000, "Largest SOC spread across the joining bank (permille)."),
        "max_age_ms": ("int", 5000, 200, 600000, "Data older than this counts as lost."),
        "pending_event_ms": ("int", 900000, 1000, 86400000, "Pending longer than this raises an event."),
        "precharge_timeout_ms": ("int", 5000, 100, 60000, "Main topology: DC link must reach the bank in this time."),
        "precharge_min_ms": ("int", 300, 0, 60000, "Main topology: precharge at least this long."),
        "open_current_ma": ("int", 2000, 0, 100000, "Opening under load waits for |I| below this..."),
        "open_wait_ms": ("int", 7000, 0, 60000, "...or at most this long (critical faults open at once)."),
        "critical_alarms": ("int", 0x07FF, 0, 0xFFFF, "Alarm bits (bankgate.model ALM_*) that block and open."),
        "min_limit_ma": ("int", 1000, 0, 1000000, "A module reporting a smaller charge/discharge limit is implausible."),
        "max_limit_ma": ("int", 500000, 0, 2000000, "A module reporting a larger limit is implausible."),
        "share_min_ma": ("int", 5000, 0, 1000000, "Bank current below which shares are not measurable."),
    },
    "contactors": {
        "outputs": ("strs", ["k1", "k2", "k3"], 1, 16,
                    "Board output names: one per module (branch, in address order) or [main, precharge]."),
        "feedback": ("strs", [], 0, 16, "Board input names of auxiliary contacts, same order (empty: none)."),
        "feedback_ms": ("int", 200, 10, 5000, "Auxiliary contact must follow the coil within this time."),
        "weld_mv": ("int", 2000, 100, 20000, "Open branch still at bus voltage with current: welded."),
    },
    "control": {
        "period_ms": ("int", 50, 10, 1000, "Control-loop period: the bound on reaction time."),
        "watchdog_ms": ("int", 2000, 500, 30000, "Hardware watchdog timeout (fed only by a healthy loop)."),
        "boot_hold_ms": ("int", 2000, 0, 60000, "No close during this time after boot."),
        "poll_timeout_ms": ("int", 200, 20, 5000, "Whole-frame timeout of one RS485 request."),
        "poll_gap_ms": ("int", 0, 0, 5000, "Pause between two requests on the module bus."),
    },
    "inverter": {
        "enabled": ("bool", True, None, None, "Send the Pylontech CAN frames to an inverter."),
        "period_ms": ("int", 1000, 100, 10000, "Frame period."),
        "heartbeat_timeout_ms": ("int", 3000, 500, 60000, "0x305 absent this long: inverter lost."),
        "require_heartbeat": ("bool", False, None, None, "Closing requires the inverter heartbeat."),
        "manufacturer": ("str", "PYLON", 1, 8, "Name sent in 0x35E."),
    },
    "mqtt": {
        "enabled": ("bool", False, None, None, "Publish telemetry over MQTT."),
        "host": ("str", "127.0.0.1", 1, 64, "Broker host name or address."),
        "port": ("int", 1883, 1, 65535, "Broker port."),
        "tls": ("bool", False, None, None, "Connect with TLS."),
        "prefix": ("str", "bankgate", 1, 32, "Topic prefix."),
        "keepalive_s": ("int", 30, 5, 3600, "MQTT keepalive."),
        "bank_period_ms": ("int", 1000, 200, 600000, "Bank state publish period."),
        "module_period_ms": ("int", 5000, 200, 600000, "Per-module state publish period."),
        "metrics_period_ms": ("int", 10000, 200, 600000, "Metrics and diagnoses publish period."),
        "discovery": ("bool", True, None, None, "Publish Home Assistant discovery."),
        "discovery_prefix": ("str", "homeassistant", 1, 32, "Home Assistant discovery prefix."),
    },
    "diagnosis": ("dict", {}, None, None, "Diagnosis thresholds (see docs/diagnoses.md)."),
}


class ConfigError(Exception):
    """Invalid configuration: args[0] is the field path, str() the whole message."""

    def __init__(self, path, expected, found):
        super().__init__("%s: expected %s, found %s" % (path, expected, found))
        self.path = path
        self.expected = expected
        self.found = found


def _default(entry):
    if isinstance(entry, dict):
        return {k: _default(v) for k, v in entry.items()}
    d = entry[1]
    if isinstance(d, list):
        return list(d)
    if isinstance(d, dict):
        return dict(d)
    return d


def defaults():
    """A complete configuration with every default."""
    return _default(SCHEMA)


def _check(path, entry, value):
    kind, _, lo, hi, _ = entry
    if kind == "int":
        if type(value) is not int:
            raise ConfigError(path, "an integer", repr(value))
        if value < lo or value > hi:
            raise ConfigError(path, "an integer from %d to %d" % (lo, hi), value)
    elif kind == "bool":
        if type(value) is not bool:
            raise ConfigError(path, "true or false", repr(value))
    elif kind == "str":
        if type(value) is not str:
            raise ConfigError(path, "a string", repr(value))
        if not lo <= len(value) <= hi:
            raise ConfigError(path, "a string of %d to %d characters" % (lo, hi), repr(value))
    elif kind == "enum":
        if value not in lo:
            raise ConfigError(path, "one of %s" % ", ".join(lo), repr(value))
    elif kind in ("ints", "strs"):
        want = int if kind == "ints" else str
        if type(value) is not list or any(type(v) is not want for v in value):
            raise ConfigError(path, "a list of %s" % ("integers" if want is int else "strings"), repr(value))
        if not lo <= len(value) <= hi:
            raise ConfigError(path, "a list of %d to %d items" % (lo, hi), len(value))
    elif kind == "dict":
        if type(value) is not dict:
            raise ConfigError(path, "an object", repr(value))
    return value


def _merge(path, schema, given):
    if type(given) is not dict:
        raise ConfigError(path or "(top level)", "an object", repr(given))
    for key in given:
        if key not in schema:
            raise ConfigError((path + "." if path else "") + key, "no such setting (known: %s)"
                              % ", ".join(sorted(schema)), "unknown key")
    out = {}
    for key, entry in schema.items():
        p = (path + "." if path else "") + key
        if isinstance(entry, dict):
            out[key] = _merge(p, entry, given.get(key, {}))
        elif key in given:
            out[key] = _check(p, entry, given[key])
        else:
            out[key] = _default(entry)
    return out


def validate(given):
    """Return the complete configuration or raise ConfigError (changes nothing)."""
    cfg = _merge("", SCHEMA, given)
    bank = cfg["bank"]
    if len(bank["addresses"]) != bank["expected_modules"]:
        raise ConfigError("bank.addresses", "%d addresses (bank.expected_modules)"
                          % bank["expected_modules"], len(bank["addresses"]))
    if len(set(bank["addresses"])) != len(bank["addresses"]):
        raise ConfigError("bank.addresses", "unique addresses", bank["addresses"])
    if bank["expected_modules"] > bank["max_parallel"]:
        raise ConfigError("bank.expected_modules", "at most bank.max_parallel (%d)"
                          % bank["max_parallel"], bank["expected_modules"])
    g = cfg["gating"]
    if g["module_mv_min"] >= g["module_mv_max"]:
        raise ConfigError("gating.module_mv_min", "below gating.module_mv_max", g["module_mv_min"])
    if g["hysteresis_mv"] >= g["max_dv_mv"]:
        raise ConfigError("gating.hysteresis_mv", "below gating.max_dv_mv", g["hysteresis_mv"])
    outs = cfg["contactors"]["outputs"]
    need = bank["expected_modules"] if g["topology"] == "branch" else 2
    if len(outs) != need:
        raise ConfigError("contactors.outputs", "%d output names for topology %s"
                          % (need, g["topology"]), len(outs))
    fb = cfg["contactors"]["feedback"]
    if fb and len(fb) != len(outs):
        raise ConfigError("contactors.feedback", "none or one per output (%d)" % len(outs), len(fb))
    return cfg
