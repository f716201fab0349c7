# The configuration validator (bankgate.config) under MicroPython: bad
# configurations of every kind give a precise "path: expected ..., found ..."
# message, and validation never changes its input.  The schema is walked
# programmatically, so settings added later are covered too.
import json
import os
import time

import mptest

from bankgate import boards as B
from bankgate import config as C
from bankgate import config_check as CC
from bankgate import console



def _root():
    # the harness runs this file compiled from build/host-mpy/files/tests/mp/
    for marker in ("/build/host-mpy", "/tests/mp/"):   # host-mpy[-<arch>]/
        if marker in __file__:
            return __file__.rsplit(marker, 1)[0]
    return "."


ROOT = _root()


def _board(name):
    return B.load(ROOT + "/boards/%s.json" % name, name)


def _example():
    with open(ROOT + "/examples/config.json") as f:
        return json.load(f)


def good():
    """A complete, strictly valid configuration for the sim board."""
    c = _example()
    c["board"] = "sim"
    return c


def _copy(obj):
    return json.loads(json.dumps(obj))


def expect_error(given, path, expected=None, found=None, strict=False, board=None):
    """Validate, require a ConfigError at `path` whose parts contain the given text."""
    before = json.dumps(given)
    try:
        C.validate(given, strict, board)
    except C.ConfigError as e:
        assert e.path == path, "path %r, wanted %r (%s)" % (e.path, path, e)
        assert str(e) == "%s: expected %s, found %s" % (e.path, e.expected, e.found), str(e)
        if expected is not None:
            assert expected in str(e.expected), "%r not in %r" % (expected, str(e))
        if found is not None:
            assert found in str(e.found), "%r not in %r" % (found, str(e))
        assert json.dumps(given) == before, "validation changed its input"
        return e
    raise AssertionError("no error for %s (wanted %s)" % (json.dumps(given)[:200], path))


def _leaves(schema, prefix=""):
    for key in sorted(schema):
        entry = schema[key]
        if isinstance(entry, dict):
            for leaf in _leaves(entry, prefix + key + "."):
                yield leaf
        else:
            yield prefix + key, entry


def _with(path, value, base=None):
    c = _copy(base if base is not None else good())
    d = c
    parts = path.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value
    return c


def _without(path, base=None):
    c = _copy(base if base is not None else good())
    d = c
    parts = path.split(".")
    for p in parts[:-1]:
        d = d[p]
    del d[parts[-1]]
    return c


# ------------------------------------------------------------------ good files
def test_example_config_is_valid_against_its_board():
    ex = _example()
    cfg = C.validate(ex, True, _board(ex["board"]))
    assert cfg["bank"]["addresses"] == [2, 3, 4]
    assert cfg["gating"]["max_dv_mv"] == 500
    # every setting the file leaves out has its default
    assert cfg["mqtt"]["keepalive_s"] == C.SCHEMA["mqtt"]["keepalive_s"][1]


def test_defaults_are_valid_and_every_default_is_in_range():
    cfg = C.validate({})
    assert cfg == C.defaults()
    for path, entry in _leaves(C.SCHEMA):
        C._check(path, entry, entry[1])   # a default outside its own range would raise


# ------------------------------------------------------------------ wrong types
_WRONG = {
    "int": ("12", 1.5, True, None, [1]),
    "bool": (1, "true", None),
    "str": (5, None, ["a"], True),
    "enum": (5, None, "no-such-value"),
    "ints": ("2", [2, "3"], [1.5], {}),
    "strs": ("k1", ["k1", 2], [""], None),
    "dict": ([], "x", 3),
}


def _bad_path(path, kind, bad):
    """Where the error must point: the setting, or the first bad list element."""
    if kind in ("ints", "strs") and type(bad) is list:
        want = int if kind == "ints" else str
        for i, v in enumerate(bad):
            if type(v) is not want or (want is str and not v):
                return "%s[%d]" % (path, i)
    return path


def test_wrong_type_for_every_setting():
    n = 0
    for path, entry in _leaves(C.SCHEMA):
        for bad in _WRONG[entry[0]]:
            e = expect_error(_with(path, bad), _bad_path(path, entry[0], bad))
            assert e.found, e
            n += 1
    assert n > 100, n


def test_section_that_is_not_an_object():
    for sec in C.SCHEMA:
        if isinstance(C.SCHEMA[sec], dict):
            expect_error(_with(sec, [1, 2]), sec, "an object", "[1, 2]")
    expect_error([1], "(top level)", "an object")
    expect_error("bank", "(top level)", "an object")


# ---------------------------------------------------------------- out of range
def test_out_of_range_for_every_setting():
    n = 0
    for path, entry in _leaves(C.SCHEMA):
        kind, _, lo, hi, _ = entry
        if kind == "int":
            expect_error(_with(path, lo - 1), path, "from %d to %d" % (lo, hi), str(lo - 1))
            expect_error(_with(path, hi + 1), path, "from %d to %d" % (lo, hi), str(hi + 1))
            n += 2
        elif kind == "str":
            expect_error(_with(path, "x" * (hi + 1)), path, "%d to %d characters" % (lo, hi))
            if lo > 0:
                expect_error(_with(path, ""), path, "%d to %d characters" % (lo, hi))
            n += 1
        elif kind in ("ints", "strs"):
            item = 2 if kind == "ints" else "k1"
            expect_error(_with(path, [item] * (hi + 1)), path, "%d to %d" % (lo, hi),
                         "%d items" % (hi + 1))
            n += 1
    assert n > 100


def test_control_characters_in_strings_are_rejected():
    expect_error(_with("gateway_id", "gw\n1"), "gateway_id", "printable text")


# ---------------------------------------------------------------- unknown keys
def test_unknown_key_at_every_level_is_rejected():
    expect_error(_with("colour", "red"), "colour", "top level", "unknown key")
    for sec in C.SCHEMA:
        if isinstance(C.SCHEMA[sec], dict):
            e = expect_error(_with(sec + ".bogus_setting", 1), sec + ".bogus_setting",
                             "section " + sec, "an unknown key")
            assert "docs/configuration.md" in e.expected or "known:" in e.expected


def test_unknown_key_suggests_the_close_one():
    e = expect_error(_with("gating.max_dv", 400), "gating.max_dv")
    assert "did you mean max_dv_mv?" in e.expected, e
    e = expect_error(_with("bank.Adresses", [2, 3, 4]), "bank.Adresses")
    assert "did you mean addresses?" in e.expected, e


# ------------------------------------------------------------ missing required
def test_missing_required_settings_in_a_file():
    for path in C.REQUIRED:
        e = expect_error(_without(path), path, "required", "nothing", strict=True)
        assert "no default" in e.expected
    # the same dict is fine for the simulator (defaults filled in)
    C.validate(_without("bank.addresses", _without("bank.expected_modules")))


# ----------------------------------------------------------- cross-field rules
def _mut(**sections):
    c = good()
    for sec, vals in sections.items():
        for k, v in vals.items():
            if sec == "top":
                c[k] = v
            else:
                c.setdefault(sec, {})[k] = v
    return c


CROSS = (
    (dict(bank={"addresses": [2, 3]}), "bank.addresses", "3 addresses", "2"),
    (dict(bank={"addresses": [2, 3, 3]}), "bank.addresses[2]", "unique", "3 twice"),
    (dict(bank={"addresses": [2, 3, 40]}), "bank.addresses[2]", "bank.scan_from (2) to bank.scan_to (17)", "40"),
    (dict(bank={"scan_from": 10, "scan_to": 5}), "bank.scan_from", "at most bank.scan_to", "10"),
    (dict(bank={"max_parallel": 2}), "bank.expected_modules", "bank.max_parallel (2)", "3"),
    (dict(bank={"bus": "can", "baud": 500000}), "bank.bus", "rs485 for family pylontech", '"can"'),
    (dict(bank={"baud": 12345}), "bank.baud", "RS485 baud rate", "12345"),
    (dict(bank={"family": "pylontech-can", "bus": "can", "baud": 115200}), "bank.baud", "CAN bit rate", "115200"),
    (dict(bank={"cells": 4}), "bank.nominal_mv", "4 cells", "48000"),
    (dict(gating={"module_mv_min": 58000}), "gating.module_mv_min", "below gating.module_mv_max", "58000"),
    (dict(gating={"hysteresis_mv": 500}), "gating.hysteresis_mv", "below gating.max_dv_mv (500)", "500"),
    (dict(gating={"soc_min_pm": 900, "soc_max_pm": 800}), "gating.soc_min_pm", "below gating.soc_max_pm", "900"),
    (dict(gating={"precharge_min_ms": 6000}), "gating.precharge_min_ms", "below gating.precharge_timeout_ms", "6000"),
    (dict(gating={"min_limit_ma": 600000}), "gating.min_limit_ma", "below gating.max_limit_ma", "600000"),
    (dict(gating={"topology": "main"}), "contactors.outputs", "2 output names for topology main", "3"),
    (dict(contactors={"outputs": ["k1", "k2", "k1"]}), "contactors.outputs[2]", "not used before", '"k1"'),
    (dict(contactors={"feedback": ["fb1"]}), "contactors.feedback", "one per output (3)", "1"),
    (dict(contactors={"feedback": ["fb1", "fb1", "fb2"]}), "contactors.feedback[1]", "not used before", '"fb1"'),
    (dict(contactors={"reset_input": "fb2"}), "contactors.reset_input", "not used as feedback", '"fb2"'),
    (dict(contactors={"feedback": [], "reset_input": "reset", "link_isolated_input": "reset"}),
     "contactors.link_isolated_input", "another input", '"reset"'),
    (dict(control={"period_ms": 1000, "watchdog_ms": 1500}), "control.watchdog_ms", "2 x control.period_ms (2000)", "1500"),
    (dict(gating={"max_age_ms": 500}), "gating.max_age_ms", "poll_timeout_ms (600)", "500"),
    (dict(control={"period_ms": 1000, "poll_timeout_ms": 20}, gating={"max_age_ms": 900}),
     "gating.max_age_ms", "above control.period_ms", "900"),
    (dict(inverter={"enabled": False, "require_heartbeat": True}), "inverter.require_heartbeat", "inverter.enabled", "true"),
    (dict(top={"gateway_id": "garage bank"}), "gateway_id", "MQTT topic level", '"garage bank"'),
    (dict(mqtt={"prefix": "a/b"}), "mqtt.prefix", "MQTT topic level", '"a/b"'),
    (dict(mqtt={"discovery_prefix": "ha#"}), "mqtt.discovery_prefix", "MQTT topic level", '"ha#"'),
)


def test_every_cross_field_rule_has_a_precise_message():
    for mutation, path, expected, found in CROSS:
        expect_error(_mut(**mutation), path, expected, found)


def test_diagnosis_raise_must_exceed_clear():
    pairs = [k for k in C.SCHEMA["diagnosis"] if "_raise_" in k and not k.endswith("_ms")]
    assert pairs, "no raise/clear thresholds in the schema"
    for k in pairs:
        other = k.replace("_raise_", "_clear_")
        clear = C.SCHEMA["diagnosis"][other][1]
        expect_error(_with("diagnosis." + k, clear), "diagnosis." + k, "above diagnosis." + other)


# ------------------------------------------------------- against the board file
def _tiny_board():
    return B.validate({"name": "tiny", "chip": "sim", "source": [],
                       "outputs": {"main": 1, "pre": 2, "k3": 7}, "inputs": {"a": 3},
                       "rs485": {"uart": 1, "tx": 4, "rx": 5, "de": 6}, "topologies": ["main"],
                       "link_adc": {"pin": 8, "mul": 1, "div": 1}})


def test_configuration_against_the_board():
    sim = _board("sim")
    C.validate(good(), True, sim)
    expect_error(good(), "board", '"devkitc-sn65hvd230-max3485"', '"sim"', True,
                 _board("devkitc-sn65hvd230-max3485"))
    expect_error(_mut(contactors={"outputs": ["k1", "k2", "k99"]}), "contactors.outputs[2]",
                 "an output of board sim", '"k99"', True, sim)
    expect_error(_mut(contactors={"feedback": ["fb1", "fb2", "nope"]}), "contactors.feedback[2]",
                 "an input of board sim", '"nope"', True, sim)
    expect_error(_mut(contactors={"feedback": [], "reset_input": "nope"}), "contactors.reset_input",
                 "an input of board sim", '"nope"', True, sim)
    tiny = _tiny_board()
    branch = _mut(top={"board": "tiny"}, contactors={"outputs": ["main", "pre", "k3"], "feedback": []},
                  inverter={"enabled": False})
    expect_error(branch, "gating.topology", "board tiny supports (main)", '"branch"', True, tiny)
    main = _mut(top={"board": "tiny"}, contactors={"outputs": ["main", "pre"], "feedback": []},
                inverter={"enabled": False}, gating={"topology": "main"})
    C.validate(main, True, tiny)
    on_can = _with("bank", {"expected_modules": 3, "addresses": [2, 3, 4], "family": "pylontech-can",
                            "bus": "can", "baud": 500000}, main)
    expect_error(on_can, "bank.bus", "a module bus board tiny has (rs485)", '"can"', True, tiny)
    expect_error(_with("inverter.enabled", True, main), "inverter.enabled",
                 "no CAN controller for the inverter", "true", True, tiny)


# ------------------------------------------------ no dead configurations (issue 16)
def _bare_board(inputs, link_adc=False):
    d = {"name": "bare", "chip": "sim", "source": [], "outputs": {"k1": 1, "k2": 2, "k3": 3},
         "inputs": inputs, "rs485": {"uart": 1, "tx": 4, "rx": 5, "de": 6},
         "topologies": ["branch", "main"] if link_adc else ["branch"]}
    if link_adc:
        d["link_adc"] = {"pin": 9, "mul": 1, "div": 1}
    return B.validate(d)


def test_a_board_file_without_link_sensor_cannot_offer_main():
    d = {"name": "bare", "chip": "sim", "source": [], "outputs": {"k1": 1, "k2": 2},
         "inputs": {}, "rs485": {"uart": 1, "tx": 4, "rx": 5, "de": 6}, "topologies": ["branch", "main"]}
    try:
        B.validate(d)
        raise AssertionError("accepted")
    except C.ConfigError as e:
        assert e.path == "bare.topologies" and "link_adc" in str(e), str(e)


def test_a_board_without_link_sensor_needs_the_isolation_input():
    bare = _bare_board({"in1": 10, "in2": 11})
    cfg = _mut(top={"board": "bare"}, contactors={"feedback": [], "link_isolated_input": ""},
               inverter={"enabled": False})
    # branch, no DC-link ADC, no link_isolated_input: the first module can never close
    e = expect_error(cfg, "contactors.link_isolated_input", "never closes", '""', True, bare)
    assert "in1, in2" in e.expected            # says which inputs are free
    C.validate(_with("contactors.link_isolated_input", "in1", cfg), True, bare)
    # every input used as feedback: it says so
    fb = _mut(top={"board": "bare"}, contactors={"outputs": ["k1", "k2"], "feedback": ["in1", "in2"]},
              bank={"expected_modules": 2, "addresses": [2, 3]}, inverter={"enabled": False})
    e = expect_error(fb, "contactors.link_isolated_input", "free one from contactors.feedback",
                     None, True, bare)
    # the main topology needs a measured link: refused, not "OK"
    main = _mut(top={"board": "bare"}, contactors={"outputs": ["k1", "k2"], "feedback": []},
                gating={"topology": "main"}, inverter={"enabled": False})
    expect_error(main, "gating.topology", "no DC-link voltage sensor", '"main"', True, bare)
    # with a link sensor both are alive
    C.validate(main, True, _bare_board({}, True))
    C.validate(_with("contactors.link_isolated_input", "", cfg), True, _bare_board({}, True))


def test_alarm_masks_narrow_only_within_the_documented_set():
    for bad in (0, 0x00FF, 0x0400, 0x07FE, 0xFFFF, 0x1FFF):
        expect_error(_with("gating.critical_alarms", bad), "gating.critical_alarms", "0x04FF",
                     "0x%04X" % bad)
    for ok in (0x04FF, 0x05FF, 0x07FF, 0x0FFF):
        C.validate(_with("gating.critical_alarms", ok))
    for bad in (0xFFFF, 0x0001, 0x0400, 0x0700):
        expect_error(_with("gating.derate_alarms", bad), "gating.derate_alarms", "0x0300",
                     "0x%04X" % bad)
    for ok in (0, 0x0100, 0x0200, 0x0300):
        C.validate(_with("gating.derate_alarms", ok))


def test_all_errors_at_once_with_their_paths():
    bad = _mut(gating={"critical_alarms": 0, "derate_alarms": 65535, "max_dv_mv": 5000,
                       "loop_resistance_mohm": 10000, "max_inrush_ma": 1000000, "max_age_ms": 600000,
                       "dwell_ms": 0, "min_limit_ma": 0},
               contactors={"weld_ma": 100000, "weld_confirm_ms": 60000, "outputs": ["k1", "k1", "k3"]},
               control={"boot_hold_ms": 0}, bank={"adresses": [1]})
    before = json.dumps(bad)
    cfg, errs = CC.validate_all(bad, True, _board("sim"))
    assert cfg is None and json.dumps(bad) == before
    paths = [e.path for e in errs]
    for p in ("gating.critical_alarms", "gating.derate_alarms", "gating.max_dv_mv",
              "gating.loop_resistance_mohm", "gating.max_inrush_ma", "gating.max_age_ms",
              "gating.dwell_ms", "gating.min_limit_ma", "contactors.weld_ma",
              "contactors.weld_confirm_ms", "control.boot_hold_ms", "bank.adresses",
              "contactors.outputs[1]"):
        assert p in paths, (p, paths)
    assert len(paths) == len(set(paths)), paths
    # the first one is what validate() (the device) raises
    try:
        C.validate(bad, True, _board("sim"))
        raise AssertionError("accepted")
    except C.ConfigError as e:
        assert str(e) == str(errs[0])
    # a rule naming a refused setting is not reported against the default put in its place
    cfg, errs = CC.validate_all(_mut(bank={"expected_modules": 99}), True)
    assert [e.path for e in errs] == ["bank.expected_modules"], [str(e) for e in errs]
    cfg, errs = CC.validate_all(good(), True, _board("sim"))
    assert errs == [] and cfg["bank"]["addresses"] == [2, 3, 4]


def test_warnings_for_legal_but_unusual_set_ups():
    cfg = C.validate(good(), True, _board("sim"))
    assert CC.warnings(cfg, _board("sim")) == []
    w = CC.warnings(C.validate(_with("contactors.feedback", [])), _board("sim"))
    assert len(w) == 1 and w[0].startswith("contactors.feedback:"), w
    w = CC.warnings(C.validate(_with("gating.critical_alarms", 0x04FF)))
    assert len(w) == 1 and w[0].startswith("gating.critical_alarms:"), w


# ----------------------------------------------------------------- file errors
def test_text_that_is_not_a_configuration():
    for text, expected, found in (
            ("", "a JSON object", "an empty file"),
            ("  \n\t ", "a JSON object", "an empty file"),
            ("{\"bank\": ", "valid JSON", "a syntax error"),
            ("hello", "valid JSON", "a syntax error"),
            (b"\xff\xfe{}", "UTF-8 text", "not UTF-8")):
        e = mptest.raises(C.ConfigError, C.parse, text)
        assert e.path == "config.json", e
        assert expected in e.expected and found in e.found, str(e)
    e = mptest.raises(C.ConfigError, C.parse, " " * (C.MAX_CONFIG_BYTES + 1))
    assert "at most %d bytes" % C.MAX_CONFIG_BYTES in str(e), e
    # parsed, but not an object
    expect_error(C.parse("[1, 2]"), "(top level)", "an object", "[1, 2]")
    expect_error(C.parse("42"), "(top level)", "an object", "42")


def _tmp(name, data):
    d = "/tmp/bankgate-test-%d" % time.ticks_us()
    os.mkdir(d)
    p = d + "/" + name
    with open(p, "wb") as f:
        f.write(data)
    return d, p


def _rm(d):
    for e in os.ilistdir(d):
        os.remove(d + "/" + e[0])
    os.rmdir(d)


def test_files_huge_missing_and_good():
    d, p = _tmp("config.json", b" " * 20000)
    try:
        e = mptest.raises(C.ConfigError, C.load_files, p)
        assert e.path == p and "at most 16384 bytes" in e.expected and "20000 bytes" in e.found, e
        e = mptest.raises(C.ConfigError, C.load_files, d + "/absent.json")
        assert e.expected == "a file" and "none" in e.found, e
        with open(p, "w") as f:
            f.write(json.dumps(good()))
        cfg, secrets = C.load_files(p, d + "/no-secrets.json", _board("sim"))
        assert cfg["board"] == "sim" and secrets["mqtt"]["user"] == ""
        with open(p, "w") as f:
            f.write(json.dumps(_without("board")))
        e = mptest.raises(C.ConfigError, C.load_files, p)
        assert e.path == "board" and "required" in e.expected, e
    finally:
        _rm(d)


def test_validation_returns_new_objects():
    given = good()
    before = json.dumps(given)
    cfg = C.validate(given, True)
    cfg["bank"]["addresses"].append(9)
    cfg["contactors"]["outputs"][0] = "zz"
    assert json.dumps(given) == before
    assert cfg["bank"] is not given["bank"]


def test_long_values_are_cut_in_messages():
    e = expect_error(_with("bank.family", "x" * 500), "bank.family")
    assert len(e.found) <= 40 and e.found.endswith("..."), e


# --------------------------------------------------------------------- secrets
SECRET = "Hunter2-very-secret"


def _secret_error(given, path, expected=None):
    e = mptest.raises(C.ConfigError, C.validate_secrets, given)
    assert e.path == path, "%s (wanted %s)" % (e, path)
    if expected:
        assert expected in e.expected, e
    assert SECRET not in str(e) and SECRET[:8] not in str(e), "secret echoed: %s" % e
    return e


def test_secrets_validation_never_echoes_values():
    ok = C.validate_secrets({"wifi": {"ssid": "net", "password": SECRET},
                             "mqtt": {"user": "u", "password": SECRET}})
    assert ok["wifi"]["password"] == SECRET and ok["mqtt"]["cert_reqs"] == "required"
    _secret_error({"wifi": {"ssid": "net", "password": SECRET[:5]}}, "secrets.wifi.password", "8 to 63")
    _secret_error({"wifi": {"password": SECRET}}, "secrets.wifi.ssid", "a password is set")
    _secret_error({"mqtt": {"password": SECRET}}, "secrets.mqtt.user", "a password is set")
    _secret_error({"mqtt": {"user": SECRET, "passwrd": SECRET}}, "secrets.mqtt.passwrd", "did you mean password")
    _secret_error({"wifi": {"ssid": SECRET * 3}}, "secrets.wifi.ssid", "0 to 32 characters")
    e = _secret_error({"mqtt": {"password": 12345678}}, "secrets.mqtt.password", "a string")
    assert e.found == "a number"
    _secret_error({"wifi": SECRET}, "secrets.wifi", "an object")
    _secret_error([SECRET], "secrets", "an object")
    e = mptest.raises(C.ConfigError, C.parse, SECRET + "{", "secrets.json")
    assert SECRET not in str(e)


def test_mqtt_on_the_esp32_needs_wifi():
    cfg = C.validate(_with("mqtt.enabled", True))
    s = C.validate_secrets({})
    C.check_secrets(cfg, s, False)            # unix port: host network
    e = mptest.raises(C.ConfigError, C.check_secrets, cfg, s, True)
    assert e.path == "secrets.wifi.ssid" and "mqtt.enabled needs Wi-Fi" in e.expected


def test_mask_hides_every_secret_value_and_keeps_structure():
    s = C.validate_secrets({"wifi": {"ssid": "homenet", "password": SECRET},
                            "mqtt": {"user": "bguser", "password": "pw-" + SECRET}})
    values = C.secret_values(s)
    assert values[0] == "pw-" + SECRET        # longest first: a secret inside another is hidden whole
    assert "required" not in values           # cert_reqs is not a secret
    obj = {"gateway_id": "pw-" + SECRET, "msg": "joined homenet as bguser", "n": 5,
           "list": [SECRET, 7, {"k": "x" + SECRET}], SECRET: True}
    out = console.mask(obj, values)
    text = json.dumps(out)
    for v in values:
        assert v not in text, text
    assert out["n"] == 5 and out["list"][1] == 7 and out["gateway_id"] == "***"
    assert out["msg"] == "joined *** as ***"
    assert console.mask_text("x %s y" % SECRET, values) == "x *** y"
    assert obj["gateway_id"] == "pw-" + SECRET   # the original is untouched


def test_salvage_mqtt_from_a_broken_configuration():
    broken = _mut(bank={"addresses": [1]}, mqtt={"enabled": True, "host": "10.0.0.2"})
    expect_error(broken, "bank.addresses")
    s = C.salvage_mqtt(broken)
    assert s["mqtt"]["host"] == "10.0.0.2" and s["mqtt"]["enabled"] is True
    assert s["gateway_id"] == "garage-bank"
    assert C.salvage_mqtt(_mut(mqtt={"port": 0})) is None
    assert C.salvage_mqtt("nonsense") is None
