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

# ConfigError, parse() and read_file() live in bankgate.jsonfile (shared with bankgate.boards
# without an import cycle); they are re-exported here for the validator's callers.
from bankgate.jsonfile import MAX_CONFIG_BYTES, MAX_JSON_DEPTH, ConfigError, parse, read_file  # noqa: F401 (re-exported)

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
        "max_dv_mv": ("int", 500, 10, 2000, "Largest |V_module - V_bus| at which a module may join."),
        "hysteresis_mv": ("int", 100, 0, 2000, "A pending module must come this far below max_dv_mv."),
        "dwell_ms": ("int", 3000, 200, 600000, "Conditions must hold this long before a close."),
        "max_inrush_ma": ("int", 50000, 1000, 100000, "Largest predicted circulating current at join (dV / loop R)."),
        "loop_resistance_mohm": ("int", 25, 1, 100, "Module internal + branch resistance when not estimated."),
        "module_mv_min": ("int", 44000, 0, 65000, "Lowest module voltage allowed to join."),
        "module_mv_max": ("int", 57600, 0, 65000, "Highest module voltage allowed to join."),
        "soc_min_pm": ("int", 50, 0, 1000, "Lowest SOC allowed to join (permille)."),
        "soc_max_pm": ("int", 1000, 0, 1000, "Highest SOC allowed to join (permille)."),
        "soc_spread_pm": ("int", 150, 0, 1000, "Largest SOC spread across the joining bank (permille)."),
        "max_age_ms": ("int", 5000, 200, 30000, "Data older than this counts as lost."),
        "pending_event_ms": ("int", 900000, 1000, 86400000, "Pending longer than this raises an event."),
        "precharge_timeout_ms": ("int", 5000, 100, 60000, "Main topology: DC link must reach the bank in this time."),
        "precharge_min_ms": ("int", 300, 0, 60000, "Main topology: precharge at least this long."),
        "open_current_ma": ("int", 2000, 0, 100000, "Opening under load waits for |I| below this..."),
        "open_wait_ms": ("int", 7000, 0, 60000, "...or at most this long (critical faults open at once)."),
        "critical_alarms": ("int", 0x07FF, 0, 0xFFFF, "Warning bits (bankgate.model ALM_*) that block and open (a protection always opens)."),
        "derate_alarms": ("int", 0x0300, 0, 0xFFFF,
                          "Warning bits that do not open a CLOSED module (default: charge and discharge "
                          "over-current): the share-aware bank limits carry it instead. Protections with "
                          "these bits still open at once; joins follow critical_alarms."),
        "min_limit_ma": ("int", 1000, 100, 1000000, "A charge/discharge limit below this counts as stopped for joining in that direction (a BMS tapering to 0 passes through it: plausible, the module stays closed)."),
        "max_limit_ma": ("int", 500000, 0, 1000000, "Module rating: a module reporting a larger limit (or a negative one) is implausible."),
        "share_min_ma": ("int", 5000, 0, 1000000, "Bank current below which shares are not measurable."),
        "limits_max_age_ms": ("int", 60000, 200, 120000,
                              "Charge/discharge limits (0x92) older than this count as missing."),
        "frozen_mah": ("int", 5000, 500, 200000,
                       "Frozen data: analog content (cells, V, I, temperatures, SOC, capacity) unchanged while this "
                       "much charge flowed through the module. 5 Ah moves the SOC of any module up to 500 Ah past "
                       "its coarsest step (1 %, CAN); at least 0.5 Ah (0.1 A resolution noise), at most 200 Ah."),
        "frozen_min_ma": ("int", 2000, 100, 1000000,
                          "...counted only while the module's current (a closed module: at least its share of the "
                          "bank current) is at least this: float at full SOC may leave a BMS's numbers still."),
        "cell_sum_tol_mv": ("int", 1500, 50, 20000,
                            "Implausible data: |sum of cell voltages - module voltage| above this (terminal drop "
                            "under load stays well below; a dead cell sense line is ~3 V)."),
    },
    "contactors": {
        "outputs": ("strs", ["k1", "k2", "k3"], 1, 16,
                    "Board output names: one per module (branch, in address order) or [main, precharge]."),
        "feedback": ("strs", [], 0, 16, "Board input names of auxiliary contacts, same order (empty: none)."),
        "feedback_ms": ("int", 200, 10, 5000, "Auxiliary contact must follow the coil within this time."),
        "weld_mv": ("int", 2000, 500, 20000, "Open branch still at bus voltage with current: welded."),
        "weld_ma": ("int", 1500, 100, 10000, "Current through an opened branch (or the open main) beyond this: welded."),
        "weld_confirm_ms": ("int", 2000, 0, 10000, "A measured weld must persist this long before it latches."),
        "weld_link_ms": ("int", 30000, 0, 600000,
                         "Main topology: DC link still at bank voltage this long with everything open: welded (0: off)."),
        "feedback_active": ("int", 1, 0, 1, "Feedback input level meaning 'contact closed' (0: pulled-up input to ground)."),
        "reset_input": ("str", "", 0, 16, "Board input whose rising edge clears latched faults (local only; empty: none)."),
        "link_isolated_input": ("str", "", 0, 16,
                                "Branch topology without a DC-link sensor: input reading 1 while the DC link is isolated;"
                                " the first module may close only then (empty: without a sensor nothing closes)."),
    },
    "control": {
        "period_ms": ("int", 50, 10, 1000, "Control-loop period: the bound on reaction time."),
        "watchdog_ms": ("int", 2000, 500, 10000, "Hardware watchdog timeout (fed only by a healthy loop)."),
        "boot_hold_ms": ("int", 2000, 500, 60000, "No close during this time after boot."),
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
        "ha_cells": ("bool", False, None, None,
                     "Home Assistant: one sensor per cell voltage of every module (memory, HA clutter)."),
        "ring_bytes": ("int", 8192, 1024, 65536,
                       "Store-and-forward ring (RAM, preallocated): events and telemetry kept while offline."),
        "connect_timeout_ms": ("int", 10000, 500, 60000,
                               "Name lookup + TCP + TLS + CONNACK must complete within this time."),
        "reconnect_max_ms": ("int", 30000, 1000, 600000,
                             "Cap of the exponential reconnect backoff (starts at 0.5 s, +-25 % jitter)."),
        "control_ttl_s": ("int", 600, 10, 86400,
                          "Derate controls (cmd/chg_cap_a ...) return to off this long after their last command."),
    },
    # Diagnosis and metrics thresholds (docs/diagnoses.md, docs/metrics.md).  Every
    # *_raise_* must be above its *_clear_* (bankgate.diagnose.check_config).
    "diagnosis": {
        "hold_raise_ms": ("int", 10000, 0, 3600000, "A condition must hold this long before it is raised."),
        "hold_clear_ms": ("int", 30000, 0, 3600000, "A clear condition must hold this long before it clears."),
        "load_min_ma": ("int", 10000, 100, 1000000, "Bank current above which current-sharing rules judge."),
        "rest_ma": ("int", 1000, 0, 100000, "|Bank current| below which the bank is at rest."),
        "share_raise_pm": ("int", 250, 10, 10000, "current_high: share above the capacity share by this (relative)."),
        "share_clear_pm": ("int", 150, 0, 10000, "current_high clears below this."),
        "share_excess_ma": ("int", 5000, 0, 1000000,
                            "current_high: and at least this far above the capacity share (clears below half)."),
        "soc_fall_raise_pm": ("int", 30, 1, 1000, "soc_falling_fast: SOC lost against the mean during one discharge."),
        "soc_fall_clear_pm": ("int", 15, 0, 1000, "soc_falling_fast clears below this."),
        "temp_raise_dc": ("int", 50, 1, 1000, "running_warm: module hotter than the bank mean by this (0.1 degC)."),
        "temp_clear_dc": ("int", 30, 0, 1000, "running_warm clears below this."),
        "spot_raise_dc": ("int", 100, 1, 2000,
                          "resistance_rising: hottest sensor above the module's median sensor by this (0.1 degC)."),
        "spot_clear_dc": ("int", 50, 0, 2000, "...its hot spot clears below this."),
        "r_min_di_ma": ("int", 5000, 500, 1000000, "Current step that makes a new operating point for dV/dI."),
        "r_conf_min": ("int", 50, 1, 100, "Resistance estimates below this confidence are not judged."),
        "r_rise_raise_pm": ("int", 500, 10, 100000, "resistance_rising: above the module's first estimate by this."),
        "r_rise_clear_pm": ("int", 250, 0, 100000, "resistance_rising clears below this."),
        "alarm_count": ("int", 3, 1, 8, "bms_alarms_repeated: this many new BMS alarms..."),
        "alarm_window_ms": ("int", 3600000, 1000, 86400000, "...within this time."),
        "circ_raise_ma": ("int", 2000, 100, 1000000, "circulating_current: exchanged current at rest."),
        "circ_clear_ma": ("int", 1000, 0, 1000000, "circulating_current clears below this."),
        "offline_ms": ("int", 30000, 1000, 3600000, "module_offline: an expected module silent this long."),
        "drift_raise_pm": ("int", 20, 1, 1000, "soc_drift_cycle: SOC spread growth per full cycle."),
        "drift_clear_pm": ("int", 10, 0, 1000, "soc_drift_cycle clears after a cycle below this."),
        "drift_cycles": ("int", 2, 1, 100, "soc_drift_cycle: consecutive drifting cycles to raise."),
        "cycle_low_pm": ("int", 200, 0, 1000, "Bank SOC at or below this arms a full cycle."),
        "cycle_high_pm": ("int", 950, 0, 1000, "Bank SOC reaching this afterwards completes the cycle."),
        "reduced_hold_ms": ("int", 60000, 0, 3600000, "reduced_capacity: a module left out this long."),
        "fuse_zero_ma": ("int", 500, 0, 100000, "branch_fuse_trip: |module current| at or below this..."),
        "fuse_load_ma": ("int", 10000, 100, 1000000, "...while the other modules carry at least this each."),
        "fuse_clear_ma": ("int", 2000, 1, 1000000, "branch_fuse_trip clears when the module carries this."),
        "cap_raise_pm": ("int", 50, 1, 1000, "capacity_mismatch: full capacity off the mean by this (seed: 5 %)."),
        "cap_clear_pm": ("int", 40, 0, 1000, "capacity_mismatch clears below this."),
        "vimb_raise_mv": ("int", 500, 10, 65000, "voltage_imbalance: |V - mean| at rest (seed: > 0.5 V)."),
        "vimb_clear_mv": ("int", 200, 0, 65000, "voltage_imbalance clears below this (seed: +-0.2 V)."),
        "fluct_raise_mv": ("int", 1000, 10, 65000, "voltage_fluctuation: swing of V - mean in a window (seed: >= 1 V)."),
        "fluct_clear_mv": ("int", 500, 0, 65000, "voltage_fluctuation clears below this."),
        "fluct_window_ms": ("int", 60000, 1000, 3600000, "Window of the voltage swing."),
    },
}


# Why the bounds of the settings that can weaken a protection are where they are:
# bankgate.config_why.WHY, path -> reason (physics and chemistry), next to this schema;
# docs/configuration.md shows each reason next to its setting, a range error its first
# sentence.  A separate module, imported only for a message or the docs: the device
# keeps its heap for the bank (tests/mp/test_fuzz_proto.py runs in 256 KiB).
# Alarm (warning) bits, bankgate.model ALM_*: those that must stay critical, the ones
# that may be left out of critical_alarms, and the only ones derate_alarms may hold.
ALARMS_REQUIRED = 0x04FF
ALARMS_KNOWN = 0x0FFF
DERATE_ALLOWED = 0x0300


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


# ------------------------------------------------------------------ validator
# Every error names the field path (e.g. "bank.addresses[1]"), what was expected and
# what was found.  Values are echoed as JSON cut to 40 characters; secrets never are
# (only their kind and length).  Validation builds a new dict and touches nothing
# else, so a rejected configuration changes no state.

MAX_SECRETS_BYTES = 2048

# Settings without a safe default: they describe the installation, so a strict
# (file) validation insists on them.  validate(dict) without strict=True fills
# them from the schema (simulator, tests).
REQUIRED = ("board", "bank.expected_modules", "bank.addresses", "contactors.outputs")

# Values that become MQTT topic levels: no '/', '+', '#', spaces.
_TOPIC_SAFE = ("gateway_id", "mqtt.prefix", "mqtt.discovery_prefix")

# /secrets.json: never echoed back (status, errors and MQTT mask these values).
SECRETS_SCHEMA = {
    "wifi": {
        "ssid": ("str", "", 0, 32, "Wi-Fi network name (needed when mqtt.enabled on the ESP32)."),
        "password": ("str", "", 0, 63, "Wi-Fi password: 8 to 63 characters, or empty for an open network."),
    },
    "mqtt": {
        "user": ("str", "", 0, 64, "Broker user name (empty: anonymous)."),
        "password": ("str", "", 0, 128, "Broker password (needs mqtt.user)."),
        "ca_file": ("str", "", 0, 64, "TLS: CA certificate file on the device (empty: none)."),
        "cert_reqs": ("enum", "required", ("required", "none"), None,
                      "TLS: verify the broker certificate (none: encrypt only)."),
    },
}
# The values console.mask() hides (the others in secrets.json are not secret).
_SECRET_KEYS = (("wifi", "ssid"), ("wifi", "password"), ("mqtt", "user"), ("mqtt", "password"))

# Nominal cell voltage bounds per chemistry (mV): catches a nominal_mv / cells
# pair that cannot be right (e.g. a 48 V bank declared with 4 cells).
_CELL_NOMINAL_MV = {"lfp": (2800, 3500), "nmc": (3000, 4000)}
_RS485_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_CAN_BITRATES = (125000, 250000, 500000, 1000000)
_FAMILY_BUS = {"pylontech": "rs485", "pace": "rs485", "pylontech-can": "can"}


def _kind(value):
    if value is None:
        return "null"
    t = type(value)
    if t is bool:
        return "true/false"
    if t is int or t is float:
        return "a number"
    if t is str:
        return "a string"
    if t is list:
        return "a list"
    if t is dict:
        return "an object"
    return t.__name__


def _show(value, secret=False):
    """How a found value appears in a message: JSON, at most 40 characters."""
    if secret:
        if type(value) is str:
            return "a string of %d characters" % len(value)
        return _kind(value)
    import json
    try:
        s = json.dumps(value)
    except Exception:
        s = repr(value)
    if len(s) > 40:
        s = s[:37] + "..."
    return s


def _check(path, entry, value, secret=False):
    kind, _, lo, hi, _ = entry
    if kind == "int":
        if type(value) is not int:
            raise ConfigError(path, "an integer", _show(value, secret))
        if value < lo or value > hi:
            from bankgate.config_why import WHY
            why = WHY.get(path)          # a safety bound: its reason's first sentence
            raise ConfigError(path, "an integer from %d to %d%s" % (
                lo, hi, " (" + why.split(". ")[0].rstrip(".") + ")" if why else ""), _show(value, secret))
    elif kind == "bool":
        if type(value) is not bool:
            raise ConfigError(path, "true or false", _show(value, secret))
    elif kind == "str":
        if type(value) is not str:
            raise ConfigError(path, "a string", _show(value, secret))
        if not lo <= len(value) <= hi:
            raise ConfigError(path, "a string of %d to %d characters" % (lo, hi),
                              "%d characters" % len(value) if secret else _show(value))
        for ch in value:
            if ord(ch) < 32 or ord(ch) == 127:
                raise ConfigError(path, "printable text", "a control character")
    elif kind == "enum":
        if type(value) is not str or value not in lo:
            raise ConfigError(path, "one of %s" % ", ".join(lo), _show(value, secret))
    elif kind in ("ints", "strs"):
        what = "integers" if kind == "ints" else "names"
        if type(value) is not list:
            raise ConfigError(path, "a list of %s" % what, _show(value, secret))
        if not lo <= len(value) <= hi:
            raise ConfigError(path, "a list of %d to %d %s" % (lo, hi, what), "%d items" % len(value))
        for i, v in enumerate(value):
            p = "%s[%d]" % (path, i)
            if kind == "ints":
                if type(v) is not int:
                    raise ConfigError(p, "an integer", _show(v, secret))
            elif type(v) is not str or not 1 <= len(v) <= 16:
                raise ConfigError(p, "a name of 1 to 16 characters", _show(v, secret))
    elif kind == "dict":
        if type(value) is not dict:
            raise ConfigError(path, "an object", _show(value, secret))
    return value


def _distance(a, b):
    """Edit distance of two short strings (for 'did you mean')."""
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        prev = cur
    return prev[len(b)]


def _unknown(path, key, schema):
    known = sorted(schema)
    best, best_d = None, 3
    if len(key) <= 40:
        low = key.lower()
        for k in known:
            d = _distance(low, k)
            if d < best_d:
                best, best_d = k, d
        if best is None:
            # a setting without its unit suffix ("max_dv" for "max_dv_mv")
            for k in known:
                if k.startswith(low + "_"):
                    best = k
                    break
    where = "section %s" % path if path else "the top level"
    if best is not None:
        expected = "a setting of %s (did you mean %s?)" % (where, best)
    elif len(known) <= 12:
        expected = "a setting of %s (known: %s)" % (where, ", ".join(known))
    else:
        expected = "a setting of %s (see docs/configuration.md)" % where
    return ConfigError((path + "." if path else "") + key, expected, "an unknown key")


def _merge(path, schema, given, secret=False):
    if type(given) is not dict:
        _fail(path or "(top level)", "an object", _show(given, secret))
        given = {}
    for key in given:
        if type(key) is not str:
            # MicroPython's json.loads accepts unquoted names ({0: 1}, {true: 1}); found by
            # tests/mp/test_fuzz_config.py (it raised TypeError in _unknown)
            _fail(path or "(top level)", "quoted names (JSON object keys are strings)",
                              _show(key))
        elif key not in schema:
            _keep(_unknown(path, key, schema))
    out = {}
    for key, entry in schema.items():
        p = (path + "." if path else "") + key
        if isinstance(entry, dict):
            out[key] = _merge(p, entry, given.get(key, {}), secret)
        elif key in given:
            try:
                v = _check(p, entry, given[key], secret)
            except ConfigError as e:
                _keep(e)                 # collecting: go on with the default
                _bad.append(p)
                v = _default(entry)
            out[key] = list(v) if type(v) is list else (dict(v) if type(v) is dict else v)
        else:
            out[key] = _default(entry)
    return out


# All errors at once (the host's `config check`, validate_all): while _sink is a
# list, _fail() records an error instead of raising and validation goes on (a refused
# value is replaced by its default).  validate() and the device keep the first error.
_sink = None
_bad = []


def _keep(e):
    if _sink is None:
        raise e
    _sink.append(e)


def _fail(path, expected, found):
    _keep(ConfigError(path, expected, found))


def _require(given):
    for path in REQUIRED:
        d = given
        for part in path.split("."):
            if type(d) is not dict or part not in d:
                _fail(path, "a value (required: no default fits every installation)",
                                  "nothing")
                break
            d = d[part]


def _cross(cfg):
    """Rules that relate two or more settings (docs/configuration.md lists them)."""
    _cross_bank(cfg)
    _cross_gating(cfg)
    _cross_contactors(cfg)
    _cross_timing(cfg)
    _cross_names(cfg)


def _cross_bank(cfg):
    bank = cfg["bank"]
    n = bank["expected_modules"]
    addrs = bank["addresses"]
    if len(addrs) != n:
        _fail("bank.addresses", "%d addresses (bank.expected_modules)" % n,
                          "%d" % len(addrs))
    if bank["scan_from"] > bank["scan_to"]:
        _fail("bank.scan_from", "at most bank.scan_to (%d)" % bank["scan_to"],
                          bank["scan_from"])
    for i, a in enumerate(addrs):
        if a < bank["scan_from"] or a > bank["scan_to"]:
            _fail("bank.addresses[%d]" % i, "an address from bank.scan_from (%d) to "
                              "bank.scan_to (%d)" % (bank["scan_from"], bank["scan_to"]), a)
        if a in addrs[:i]:
            _fail("bank.addresses[%d]" % i, "unique addresses", "%d twice" % a)
    if n > bank["max_parallel"]:
        _fail("bank.expected_modules", "at most bank.max_parallel (%d)"
                          % bank["max_parallel"], n)
    want_bus = _FAMILY_BUS.get(bank["family"])
    if want_bus is not None and bank["bus"] != want_bus:
        _fail("bank.bus", "%s for family %s" % (want_bus, bank["family"]),
                          _show(bank["bus"]))
    if bank["bus"] == "rs485" and bank["baud"] not in _RS485_BAUDS:
        _fail("bank.baud", "an RS485 baud rate (%s)"
                          % ", ".join([str(b) for b in _RS485_BAUDS]), bank["baud"])
    if bank["bus"] == "can" and bank["baud"] not in _CAN_BITRATES:
        _fail("bank.baud", "a CAN bit rate (%s)"
                          % ", ".join([str(b) for b in _CAN_BITRATES]), bank["baud"])
    lo, hi = _CELL_NOMINAL_MV[bank["chemistry"]]
    per_cell = bank["nominal_mv"] // bank["cells"]
    if per_cell < lo or per_cell > hi:
        _fail("bank.nominal_mv", "%d cells x %d..%d mV (%s) = %d..%d"
                          % (bank["cells"], lo, hi, bank["chemistry"], bank["cells"] * lo,
                             bank["cells"] * hi), bank["nominal_mv"])


def _cross_gating(cfg):
    g = cfg["gating"]
    if g["module_mv_min"] >= g["module_mv_max"]:
        _fail("gating.module_mv_min", "below gating.module_mv_max (%d)"
                          % g["module_mv_max"], g["module_mv_min"])
    if g["hysteresis_mv"] >= g["max_dv_mv"]:
        _fail("gating.hysteresis_mv", "below gating.max_dv_mv (%d)" % g["max_dv_mv"],
                          g["hysteresis_mv"])
    if g["soc_min_pm"] >= g["soc_max_pm"]:
        _fail("gating.soc_min_pm", "below gating.soc_max_pm (%d)" % g["soc_max_pm"],
                          g["soc_min_pm"])
    if g["precharge_min_ms"] >= g["precharge_timeout_ms"]:
        _fail("gating.precharge_min_ms", "below gating.precharge_timeout_ms (%d)"
                          % g["precharge_timeout_ms"], g["precharge_min_ms"])
    if g["min_limit_ma"] >= g["max_limit_ma"]:
        _fail("gating.min_limit_ma", "below gating.max_limit_ma (%d)" % g["max_limit_ma"],
                          g["min_limit_ma"])

    crit = g["critical_alarms"]
    if crit & ALARMS_REQUIRED != ALARMS_REQUIRED or crit & ~ALARMS_KNOWN:
        _fail("gating.critical_alarms", "every bit of 0x%04X (voltage, temperature, internal: a "
              "join must not charge a cell near its limits) plus any of 0x%04X (over-current, cell "
              "imbalance)" % (ALARMS_REQUIRED, ALARMS_KNOWN & ~ALARMS_REQUIRED), "0x%04X" % crit)
    if g["derate_alarms"] & ~DERATE_ALLOWED:
        _fail("gating.derate_alarms", "bits of 0x%04X only (over-current warnings: only current can "
              "be carried by the bank limits)" % DERATE_ALLOWED, "0x%04X" % g["derate_alarms"])


def _cross_contactors(cfg):
    n = cfg["bank"]["expected_modules"]
    g = cfg["gating"]
    c = cfg["contactors"]
    outs = c["outputs"]
    need = n if g["topology"] == "branch" else 2
    if len(outs) != need:
        _fail("contactors.outputs", "%d output names for topology %s%s"
                          % (need, g["topology"], " (one per module)" if need == n else
                             " (main, precharge)"), "%d" % len(outs))
    for i, name in enumerate(outs):
        if name in outs[:i]:
            _fail("contactors.outputs[%d]" % i, "a name not used before", _show(name))
    fb = c["feedback"]
    if fb and len(fb) != len(outs):
        _fail("contactors.feedback", "none or one per output (%d)" % len(outs),
                          "%d" % len(fb))
    for i, name in enumerate(fb):
        if name in fb[:i]:
            _fail("contactors.feedback[%d]" % i, "a name not used before", _show(name))
    for key in ("reset_input", "link_isolated_input"):
        name = c.get(key, "")
        if name and name in fb:
            _fail("contactors." + key, "an input not used as feedback", _show(name))
    if c.get("reset_input") and c.get("reset_input") == c.get("link_isolated_input"):
        _fail("contactors.link_isolated_input", "another input than reset_input",
                          _show(c["reset_input"]))


def _cross_timing(cfg):
    n = cfg["bank"]["expected_modules"]
    g = cfg["gating"]
    ctl = cfg["control"]
    if ctl["watchdog_ms"] < 2 * ctl["period_ms"]:
        _fail("control.watchdog_ms", "at least 2 x control.period_ms (%d)"
                          % (2 * ctl["period_ms"]), ctl["watchdog_ms"])
    if g["max_age_ms"] < n * ctl["poll_timeout_ms"]:
        _fail("gating.max_age_ms", "at least bank.expected_modules x "
                          "control.poll_timeout_ms (%d): one slow poll cycle must not drop "
                          "every module" % (n * ctl["poll_timeout_ms"]), g["max_age_ms"])
    if g["max_age_ms"] <= ctl["period_ms"]:
        _fail("gating.max_age_ms", "above control.period_ms (%d)" % ctl["period_ms"],
                          g["max_age_ms"])
    _bus_timing(cfg)


def _cross_names(cfg):
    inv = cfg["inverter"]
    if inv["require_heartbeat"] and not inv["enabled"]:
        _fail("inverter.require_heartbeat", "false while inverter.enabled is false",
                          "true")

    for path in _TOPIC_SAFE:
        sec, _, key = path.rpartition(".")
        v = (cfg[sec] if sec else cfg)[key]
        for ch in v:
            if not (ch.isalpha() or ch.isdigit() or ch in "-_"):
                _fail(path, "letters, digits, '-' or '_' (it is an MQTT topic level)",
                                  _show(v))
                break

    # Diagnosis thresholds come in raise/clear pairs: raising must be the stricter
    # (hold times, *_ms, are not thresholds and may be in any order).
    diag = cfg.get("diagnosis")
    if type(diag) is dict:
        for key in sorted(diag):
            if "_raise_" in key and not key.endswith("_ms"):
                other = key.replace("_raise_", "_clear_")
                if other in diag and diag[key] <= diag[other]:
                    _fail("diagnosis." + key, "above diagnosis.%s (%d)"
                                      % (other, diag[other]), diag[key])


def check_board(cfg, board):
    """The configuration against the board it runs on (a validated board dict,
    see bankgate.boards): every named output/input exists, the board supports
    the topology and the buses the configuration uses."""
    name = board.get("name", "?")
    if cfg["board"] != name:
        _fail("board", "%s (the board this configuration is for)" % _show(name),
                          _show(cfg["board"]))
    outs = board.get("outputs", {})
    ins = board.get("inputs", {})
    c = cfg["contactors"]
    for i, o in enumerate(c["outputs"]):
        if o not in outs:
            _fail("contactors.outputs[%d]" % i, "an output of board %s (%s)"
                              % (name, ", ".join(sorted(outs))), _show(o))
    for i, o in enumerate(c["feedback"]):
        if o not in ins:
            _fail("contactors.feedback[%d]" % i, "an input of board %s (%s)"
                              % (name, ", ".join(sorted(ins)) or "none"), _show(o))
    for key in ("reset_input", "link_isolated_input"):
        o = c.get(key, "")
        if o and o not in ins:
            _fail("contactors." + key, "an input of board %s (%s)"
                              % (name, ", ".join(sorted(ins)) or "none"), _show(o))
    topo = cfg["gating"]["topology"]
    if not _can_close(cfg, board, name, ins):
        pass                             # dead: said what to add (docs/deployment.md)
    elif topo not in board.get("topologies", ()):
        _fail("gating.topology", "a topology board %s supports (%s)"
                          % (name, ", ".join(board.get("topologies", ()))), _show(topo))
    from bankgate.boards import can_roles
    can_mods, can_inv = can_roles(board)
    bus = cfg["bank"]["bus"]
    if (bus == "rs485" and board.get("rs485") is None) or (bus == "can" and not can_mods):
        _fail("bank.bus", "a module bus board %s has (%s)" % (name, ", ".join(
            [b for b, ok in (("rs485", board.get("rs485") is not None), ("can", can_mods)) if ok])
            or "none"), _show(bus))
    if cfg["inverter"]["enabled"] and not can_inv:
        _fail("inverter.enabled", "false (board %s has no CAN controller for the "
                          "inverter)" % name, "true")
    return cfg


def _can_close(cfg, board, name, ins):
    """No dead configurations: with this board, can the first contactor ever close?
    The first join needs the DC-link state: a measured link (board link_adc), or in
    the branch topology an input proving the link isolated (docs/admission.md).
    False after reporting what to add."""
    if board.get("link_adc"):
        return True
    c = cfg["contactors"]
    if cfg["gating"]["topology"] == "main":
        _fail("gating.topology", "branch (board %s has no DC-link voltage sensor, link_adc: the main "
              "topology closes only on a measured DC link, so nothing would ever close; use branch "
              "with contactors.link_isolated_input, or a board with link_adc)" % name, '"main"')
        return False
    if not c["link_isolated_input"]:
        used = list(c["feedback"]) + [c["reset_input"]]
        free = [k for k in sorted(ins) if k not in used]
        _fail("contactors.link_isolated_input", "an input of board %s reading 1 while the DC link is "
              "isolated (%s): the board has no DC-link voltage sensor, so without it the first module "
              "never closes (docs/deployment.md)" % (name, ", ".join(free) if free else
              "no free input: free one from contactors.feedback"), '""')
        return False
    return True


def validate(given, strict=False, board=None):
    """Return the complete configuration (defaults filled in) or raise ConfigError.

    strict=True (configuration files): the REQUIRED settings must be present.
    board: a validated board dict; names and buses are checked against it.
    Changes nothing: the result is a new dict."""
    cfg = _merge("", SCHEMA, given)
    if strict:
        _require(given)
    _cross(cfg)
    if board is not None:
        check_board(cfg, board)
        board_defaults(cfg, given, board)
    return cfg


RING_BYTES_NO_PSRAM = 4096


def board_defaults(cfg, given, board):
    """Defaults that depend on the board (in place): without PSRAM ("psram" "none" or
    absent) mqtt.ring_bytes defaults to 4 KiB, so that the firmware fits the ~100 KiB heap
    of a plain ESP32 (docs/performance.md); a value the configuration gives is kept."""
    m = given.get("mqtt") if type(given) is dict else None
    if type(m) is dict and "ring_bytes" in m:
        return
    if board.get("psram", "none") in ("none", False, None):
        cfg["mqtt"]["ring_bytes"] = RING_BYTES_NO_PSRAM


# ------------------------------------------------------------------- secrets

def validate_secrets(given):
    """Return the complete secrets dict or raise ConfigError (values never shown)."""
    s = _merge("secrets", SECRETS_SCHEMA, given, True)
    pw = s["wifi"]["password"]
    if pw and not 8 <= len(pw) <= 63:
        raise ConfigError("secrets.wifi.password", "8 to 63 characters (WPA2), or empty",
                          "%d characters" % len(pw))
    if pw and not s["wifi"]["ssid"]:
        raise ConfigError("secrets.wifi.ssid", "a network name (a password is set)", "nothing")
    if s["mqtt"]["password"] and not s["mqtt"]["user"]:
        raise ConfigError("secrets.mqtt.user", "a user name (a password is set)", "nothing")
    return s


def check_secrets(cfg, secrets, need_wifi):
    """Cross rules between configuration and secrets.  need_wifi: the target
    reaches the broker over Wi-Fi (the ESP32; not the unix port)."""
    if need_wifi and cfg["mqtt"]["enabled"] and not secrets["wifi"]["ssid"]:
        raise ConfigError("secrets.wifi.ssid", "a network name (mqtt.enabled needs Wi-Fi)",
                          "nothing")


def secret_values(secrets):
    """Every non-empty secret string (what mask() hides)."""
    out = []
    for sec, key in _SECRET_KEYS:
        v = secrets.get(sec, {}).get(key) if type(secrets.get(sec)) is dict else None
        if type(v) is str and v:
            out.append(v)
    # longest first, so a secret containing another is hidden whole
    out.sort(key=len, reverse=True)
    return out


# ------------------------------------------------------------- files on disk

def load_files(config_path, secrets_path=None, board=None, need_wifi=False):
    """What the device does at start: read, parse and strictly validate the
    configuration (against the board), then the secrets (optional file).
    Returns (cfg, secrets) or raises ConfigError."""
    cfg = validate(parse(read_file(config_path, MAX_CONFIG_BYTES), config_path), True, board)
    given = {}
    if secrets_path is not None:
        try:
            import os
            os.stat(secrets_path)
            present = True
        except OSError:
            present = False
        if present:
            given = parse(read_file(secrets_path, MAX_SECRETS_BYTES), secrets_path,
                          MAX_SECRETS_BYTES)
    secrets = validate_secrets(given)
    check_secrets(cfg, secrets, need_wifi)
    return cfg, secrets


def salvage_mqtt(given):
    """From a configuration that failed validation: the gateway_id and mqtt
    section if they alone are valid, so the error can still be published.
    Returns {"gateway_id": ..., "mqtt": {...}} or None."""
    if type(given) is not dict:
        return None
    try:
        gid = given.get("gateway_id", SCHEMA["gateway_id"][1])
        _check("gateway_id", SCHEMA["gateway_id"], gid)
        m = _merge("mqtt", SCHEMA["mqtt"], given.get("mqtt", {}))
        return {"gateway_id": gid, "mqtt": m}
    except ConfigError:
        return None


def _bus_timing(cfg):
    # issue 15 / 16 part 3: the worst-case poll cycle must meet max_age_ms (bankgate.pollplan)
    from bankgate import pollplan
    e = pollplan.check(cfg)
    if e is not None:
        _fail(e[0], e[1], e[2])
