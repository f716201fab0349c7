# MicroPython side of `bankgate config ...` and `bankgate deploy`: runs the DEVICE
# validator (bankgate.config, bankgate.boards) under the unix port.
#
#   micropython cli_config.py check CONFIG [--board FILE | --boards-dir DIR] [--secrets FILE]
#   micropython cli_config.py board FILE            validate one board file
#   micropython cli_config.py docs                  print docs/configuration.md
#
# Output: "OK <text>" and exit 0, or "ERROR <path>: expected ..., found ..." and
# exit 1 (exit 2 for usage errors).  Secrets are never printed.
import json
import sys

from bankgate import boards, config, config_check
from bankgate.config_why import WHY

# The cross-field rules of config._cross / check_board / validate_secrets, for the
# reference.  tests/mp/test_config.py triggers each of them.
RULES = (
    "`bank.addresses` has exactly `bank.expected_modules` entries, all different, each within "
    "`bank.scan_from` .. `bank.scan_to` (and `scan_from` <= `scan_to`).",
    "`bank.expected_modules` <= `bank.max_parallel`.",
    "`bank.bus` matches the family: `pylontech` and `pace` talk RS485, `pylontech-can` CAN.",
    "`bank.baud` is a standard RS485 baud rate (1200 .. 115200) on RS485, a CAN bit rate "
    "(125000, 250000, 500000, 1000000) on CAN.",
    "`bank.nominal_mv` / `bank.cells` is a plausible nominal cell voltage for the chemistry "
    "(lfp 2800 .. 3500 mV, nmc 3000 .. 4000 mV).",
    "`gating.module_mv_min` < `gating.module_mv_max`; `gating.hysteresis_mv` < `gating.max_dv_mv`; "
    "`gating.soc_min_pm` < `gating.soc_max_pm`; `gating.precharge_min_ms` < "
    "`gating.precharge_timeout_ms`; `gating.min_limit_ma` < `gating.max_limit_ma`.",
    "`contactors.outputs` has one name per module (topology `branch`, in address order) or two "
    "(`main`: main contactor, precharge), all different.",
    "`contactors.feedback` is empty or has one input per output, all different; "
    "`contactors.reset_input` and `contactors.link_isolated_input` are not feedback inputs and "
    "not the same input.",
    "`control.watchdog_ms` >= 2 x `control.period_ms`.",
    "`gating.max_age_ms` >= `bank.expected_modules` x `control.poll_timeout_ms` (one slow poll "
    "cycle must not drop every module) and > `control.period_ms`.",
    "RS485 bus timing (`bankgate.pollplan`, issue 15): the worst-case poll cycle computed from "
    "`bank.baud`, `bank.expected_modules`, the family's frame lengths for `bank.cells` cells, "
    "turnaround, `control.poll_gap_ms` and one missed reply (`control.poll_timeout_ms`) keeps the "
    "worst-case age of alarm data within 9/10 of `gating.max_age_ms` with room for the limits and "
    "identity reads (limits re-read within 3/4 of `gating.limits_max_age_ms`); the longest reply "
    "fits in `control.poll_timeout_ms`. The error says by how much to raise `max_age_ms`, or how "
    "many modules the bus carries, or to raise the baud rate.",
    "`inverter.require_heartbeat` needs `inverter.enabled`.",
    "`gating.critical_alarms` holds every bit of 0x04FF (cell/module over- and under-voltage, over- and "
    "under-temperature, internal fault) and nothing outside 0x0FFF: only the over-current warnings "
    "(0x0300) may be left out, cell imbalance (0x0800) may be added. A BMS **protection** bit always opens, "
    "whatever the mask. `gating.derate_alarms` holds bits of 0x0300 (over-current warnings) only.",
    "No dead configurations (against the board): the first contactor needs the DC-link state. A board "
    "without `link_adc` cannot run the `main` topology (it closes only on a measured link), and its "
    "`branch` topology needs `contactors.link_isolated_input` (the message lists the free inputs).",
    "`gateway_id`, `mqtt.prefix` and `mqtt.discovery_prefix` are MQTT topic levels: letters, "
    "digits, `-`, `_` only.",
    "Every diagnosis threshold `*_raise_*` is above its `*_clear_*` partner (hold times `*_ms` "
    "excepted).",
    "Against the board (`bankgate config check`, `config push`, `deploy` and the device at start): "
    "`board` is the board's name; every name in `contactors.outputs` is one of its outputs, every "
    "name in `contactors.feedback`, `reset_input`, `link_isolated_input` one of its inputs; it "
    "supports `gating.topology`; it has the module bus `bank.bus` (RS485 port, or a CAN controller "
    "with role `modules`/`both`); `inverter.enabled` needs a CAN controller with role "
    "`inverter`/`both`.",
    "Secrets: `wifi.password` is empty or 8 .. 63 characters and needs `wifi.ssid`; "
    "`mqtt.password` needs `mqtt.user`; on the ESP32, `mqtt.enabled` needs `wifi.ssid`.",
)


# Sections in reading order (MicroPython dicts do not keep insertion order).
_ORDER = ("bank", "gating", "contactors", "control", "inverter", "mqtt", "diagnosis", "wifi")


def _sections(schema):
    secs = [k for k in schema if isinstance(schema[k], dict)]
    return [k for k in _ORDER if k in secs] + sorted([k for k in secs if k not in _ORDER])


def _fmt_default(v):
    return "`%s`" % json.dumps(v)


def _fmt_range(entry):
    kind, _, lo, hi, _ = entry
    if kind == "int":
        return "%d .. %d" % (lo, hi)
    if kind == "str":
        return "%d .. %d characters" % (lo, hi)
    if kind == "enum":
        return ", ".join(["`%s`" % v for v in lo])
    if kind in ("ints", "strs"):
        return "%d .. %d items" % (lo, hi)
    return ""


_TYPES = {"int": "integer", "bool": "true/false", "str": "string", "enum": "one of",
          "ints": "list of integers", "strs": "list of names", "dict": "object"}


def _table(out, prefix, schema):
    out.append("| setting | type | default | allowed | meaning |")
    out.append("|---|---|---|---|---|")
    for key in sorted(schema):
        entry = schema[key]
        if isinstance(entry, dict):
            continue
        path = prefix + key
        req = " **(required)**" if path in config.REQUIRED else ""
        why = WHY.get(path)
        meaning = entry[4] + (" **Safety bound:** " + why if why else "")
        out.append("| `%s`%s | %s | %s | %s | %s |" % (
            path, req, _TYPES[entry[0]], _fmt_default(entry[1]), _fmt_range(entry),
            meaning.replace("|", "\\|")))


def docs():
    out = []
    a = out.append
    a("# Configuration reference")
    a("")
    a("<!-- Generated from lib/bankgate/config.py by `bankgate config docs`; do not edit.")
    a("     tests/host/test_config_docs.py fails when this file and the schema disagree. -->")
    a("")
    a("The device reads three JSON files from its root directory:")
    a("")
    a("| file | what | written by |")
    a("|---|---|---|")
    a("| `/config.json` | this reference: the bank, gating limits, contactors, control, inverter, "
      "MQTT, diagnoses | `bankgate config push` / `bankgate deploy` |")
    a("| `/secrets.json` | Wi-Fi and MQTT credentials (below); never echoed back | "
      "`bankgate config push --secrets` / `bankgate deploy --secrets` |")
    a("| `/board.json` | the board's pins ([boards/README.md](../boards/README.md)) | "
      "`bankgate deploy --board` |")
    a("")
    a("Check a file on the host with the device's own validator: `bankgate config check "
      "FILE` (exit 0 valid, 1 invalid). It reports every error of the file in one run (the device "
      "stops at the first); each names the setting, what was expected and what was found, for example:")
    a("")
    a("```")
    for given in ({"board": "sim", "bank": {"adresses": [2, 3, 4]}},
                  {"board": "sim", "bank": {"expected_modules": 3, "addresses": [2, 3, 3]},
                   "contactors": {"outputs": ["k1", "k2", "k3"]}},
                  {"board": "sim", "bank": {"expected_modules": 2, "addresses": [2, 3]},
                   "contactors": {"outputs": ["k1", "k2", "k3"]}},
                  {"board": "sim", "gating": {"max_dv_mv": 50000}}):
        try:
            config.validate(given)
        except config.ConfigError as e:
            a(str(e))
    a("```")
    a("")
    a("Unknown keys are rejected at every level (a misspelt setting would otherwise be "
      "silently ignored). Every setting not given takes the default below, except the "
      "**required** ones, which describe the installation and have no safe default. A file is "
      "at most %d bytes." % config.MAX_CONFIG_BYTES)
    a("")
    a("With an invalid configuration the device keeps every contactor open, prints the error on "
      "the USB console every %d s and answers `bankgate status` with `\"state\": "
      "\"config_error\"` and the message (docs/deployment.md)." % (10))
    a("")
    a("Units are in the names: `_mv` millivolt, `_ma` milliampere (+ = charging), `_ms` "
      "milliseconds, `_pm` permille (0.1 %), `_dc` 0.1 degC, `_mohm` milliohm, `_s` seconds.")
    a("")
    a("## Top level")
    a("")
    _table(out, "", config.SCHEMA)
    for sec in _sections(config.SCHEMA):
        entry = config.SCHEMA[sec]
        a("")
        a("## `%s`" % sec)
        a("")
        _table(out, sec + ".", entry)
    a("")
    a("## Safety bounds")
    a("")
    a("Settings that can weaken a protection have floors and ceilings derived from the physics and the "
      "chemistry; the reason is next to each of them above (**Safety bound**), and an out-of-range value "
      "is refused with its first sentence. No accepted configuration can disable a BMS protection, the "
      "stale-data check (`gating.max_age_ms` <= 30 s), the weld check (`contactors.weld_ma` <= 10 A, "
      "`contactors.weld_confirm_ms` <= 10 s, `contactors.weld_mv` >= 500 mV) or the boot hold "
      "(`control.boot_hold_ms` >= 500 ms). A loop resistance measured below `gating.loop_resistance_mohm` "
      "replaces it in the join limit (docs/admission.md); below two thirds of it the diagnosis "
      "`loop_r_below_config` says so.")
    a("")
    a("`bankgate config check` reports every error of a file in one run, one line each (the device stops "
      "at the first), and prints a `WARNING` line for a legal but unusual set-up (no contactor feedback, "
      "the link-held weld check off, over-current warnings not critical, a `link_isolated_input` the "
      "board does not need, a loop resistance below 5 mOhm) and still exits 0.")
    a("")
    a("## Rules between settings")
    a("")
    for r in RULES:
        a("- " + r)
    a("")
    a("## Secrets (`/secrets.json`)")
    a("")
    a("Kept apart from the configuration so the configuration can be shared and "
      "published. The values of `wifi.ssid`, `wifi.password`, `mqtt.user` and `mqtt.password` "
      "are never echoed back: error messages give only their length, and the console, status "
      "output and MQTT replace them with `***` wherever they would appear. A missing file means "
      "no credentials (anonymous broker, no Wi-Fi). Unknown keys are rejected. See "
      "`examples/secrets.example.json`.")
    a("")
    for sec in _sections(config.SECRETS_SCHEMA):
        a("")
        a("### `%s`" % sec)
        a("")
        _table(out, sec + ".", config.SECRETS_SCHEMA[sec])
    a("")
    return "\n".join(out)


def _arg(args, name):
    if name in args:
        i = args.index(name)
        if i + 1 >= len(args):
            raise ValueError("%s needs a value" % name)
        v = args[i + 1]
        del args[i:i + 2]
        return v
    return None


def check(args):
    """Every error of the file at once (config.validate_all; the device stops at the
    first), each printed as an ERROR line; WARNING lines for legal but unusual set-ups."""
    board_file = _arg(args, "--board")
    boards_dir = _arg(args, "--boards-dir")
    secrets_file = _arg(args, "--secrets")
    if len(args) != 1:
        raise ValueError("check needs exactly one configuration file")
    path = args[0]
    raw = config.parse(config.read_file(path, config.MAX_CONFIG_BYTES), path)
    board = None
    board_err = None
    if board_file is not None:
        board = boards.load(board_file)
    else:
        name = raw.get("board") if type(raw) is dict else None
        if type(name) is str and name:
            try:
                board = boards.find(name, boards_dir or "boards")
            except config.ConfigError as e:
                board_err = e            # reported first, with every other error
    cfg, errs = config_check.validate_all(raw, True, board)
    if board_err is not None:
        errs = [board_err] + errs
    if errs:
        raise _Many(errs)
    for w in config_check.warnings(cfg, board):
        print("WARNING " + w)
    note = ""
    if secrets_file is not None:
        secrets = config.validate_secrets(config.parse(
            config.read_file(secrets_file, config.MAX_SECRETS_BYTES), secrets_file,
            config.MAX_SECRETS_BYTES))
        config.check_secrets(cfg, secrets, True)
        note = ", secrets valid"
    b = cfg["bank"]
    return "%s is valid for board %s: %d %s modules (%s) at %s, topology %s, outputs %s%s" % (
        path, board["name"], b["expected_modules"], b["family"], b["bus"],
        ",".join([str(x) for x in b["addresses"]]), cfg["gating"]["topology"],
        ",".join(cfg["contactors"]["outputs"]), note)


class _Many(Exception):
    """Several ConfigErrors (args[0]), printed one ERROR line each."""


def main(argv):
    if len(argv) < 2:
        print("usage: cli_config.py check|board|docs ...")
        sys.exit(2)
    cmd = argv[1]
    args = list(argv[2:])
    try:
        if cmd == "check":
            print("OK " + check(args))
        elif cmd == "board":
            b = boards.load(args[0])
            print("OK board %s (%s)" % (b["name"], b["chip"]))
        elif cmd == "docs":
            sys.stdout.write(docs())
            sys.stdout.write("\n")
        else:
            print("ERROR unknown command %s" % cmd)
            sys.exit(2)
    except _Many as m:
        for e in m.args[0]:
            print("ERROR %s" % e)
        sys.exit(1)
    except config.ConfigError as e:
        print("ERROR %s" % e)
        sys.exit(1)
    except ValueError as e:
        print("ERROR usage: %s" % e)
        sys.exit(2)


main(sys.argv)
