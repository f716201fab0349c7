"""`bankgate config check FILE`: the device validator under the unix port, exit
0 (valid) / 1 (invalid) with the message; secrets are never echoed."""
import json
import os
import subprocess
import sys

import pytest

from bankgate_host import REPO

EXAMPLE = os.path.join(REPO, "examples", "config.json")


def check(*args):
    proc = subprocess.run([sys.executable, "-m", "bankgate_host", "config", "check"] + list(args),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return str(p)


def example(**changes):
    with open(EXAMPLE) as f:
        c = json.load(f)
    for path, v in changes.items():
        d = c
        parts = path.split("__")
        for k in parts[:-1]:
            d = d.setdefault(k, {})
        d[parts[-1]] = v
    return c


def test_examples_are_valid():
    rc, out = check(EXAMPLE, "--secrets", os.path.join(REPO, "examples", "secrets.example.json"))
    assert rc == 0 and out.startswith("OK ") and "devkitc-sn65hvd230-max3485" in out, out
    rc, out = check(write_sim(), "--board", "sim")
    assert rc == 0, out


def write_sim():
    import tempfile
    fd, p = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(example(board="sim"), f)
    return p


@pytest.mark.parametrize("text,message", [
    ("", "expected a JSON object, found an empty file"),
    ("{\n  \"board\": \"sim\",\n  \"bank\": {\"addresses\": [2 3]}\n}",
     "expected valid JSON (check quotes, commas and brackets), found a syntax error at line 3, column 28"),
    ("{\"board\": \"sim\", \"board\": \"x\"}", "expected every key once per object, found 'board' twice"),
    ("[1, 2, 3]", "(top level): expected an object, found [1, 2, 3]"),
    ("{\"board\": \"sim\"}", "bank.expected_modules: expected a value (required"),
])
def test_not_a_configuration(tmp_path, text, message):
    rc, out = check(write(tmp_path, "c.json", text))
    assert rc == 1 and out.startswith("INVALID ") and message in out, out


@pytest.mark.parametrize("changes,message", [
    (dict(bank__addresses=[2, 3, "4"]), "bank.addresses[2]: expected an integer, found \"4\""),
    (dict(gating__max_dv_mv=9000), "gating.max_dv_mv: expected an integer from 10 to 2000 (Ceiling 2000 mV"),
    (dict(mqtt__colour="red"), "mqtt.colour: expected a setting of section mqtt"),
    (dict(gating__max_dv=400), "did you mean max_dv_mv?"),
    (dict(contactors__outputs=["k1", "k2", "k9"]),
     "contactors.outputs[2]: expected an output of board devkitc-sn65hvd230-max3485"),
    (dict(board="esp32-mystery"), "board: expected one of devkitc-mcp2515-max3485"),
    (dict(gating__soc_min_pm=900, gating__soc_max_pm=800), "gating.soc_min_pm: expected below gating.soc_max_pm"),
])
def test_invalid_configurations_exit_1_with_the_path(tmp_path, changes, message):
    rc, out = check(write(tmp_path, "c.json", json.dumps(example(**changes))))
    assert rc == 1 and message in out, out


def test_huge_and_binary_files(tmp_path):
    rc, out = check(write(tmp_path, "big.json", "{" + " " * 20000 + "}"))
    assert rc == 1 and "expected at most 16384 bytes, found 20002 bytes" in out, out
    rc, out = check(write(tmp_path, "bin.json", b"\xff\xfe\x00{"))
    assert rc == 1 and "expected UTF-8 text" in out, out
    rc, out = check(str(tmp_path / "absent.json"))
    assert rc == 1 and "expected a file, found none" in out, out


def test_unknown_board_option():
    rc, out = check(EXAMPLE, "--board", "no-such-board")
    assert rc == 1 and "board: expected one of" in out and "no-such-board" in out, out


def test_secrets_are_never_echoed(tmp_path):
    secret = "Zebra-Secret-9931"
    cases = [
        ({"wifi": {"ssid": "home", "password": secret[:6]}}, "secrets.wifi.password: expected 8 to 63"),
        ({"mqtt": {"password": secret}}, "secrets.mqtt.user: expected a user name"),
        ({"mqtt": {"user": "u", "pasword": secret}}, "did you mean password?"),
        ({"wifi": {"ssid": secret * 3}}, "secrets.wifi.ssid: expected a string of 0 to 32 characters, found 51 characters"),
    ]
    for given, message in cases:
        rc, out = check(EXAMPLE, "--secrets", write(tmp_path, "s.json", json.dumps(given)))
        assert rc == 1 and message in out, out
        assert secret[:6] not in out, out
    # MQTT on the ESP32 needs Wi-Fi credentials
    cfg = write(tmp_path, "m.json", json.dumps(example(mqtt__enabled=True)))
    rc, out = check(cfg, "--secrets", write(tmp_path, "s.json", "{}"))
    assert rc == 1 and "secrets.wifi.ssid: expected a network name (mqtt.enabled needs Wi-Fi)" in out, out


def test_push_and_deploy_without_a_port_say_how_to_set_it():
    for args in (["config", "push", EXAMPLE],
                 ["deploy", "--board", "devkitc-sn65hvd230-max3485", "--config", EXAMPLE]):
        proc = subprocess.run([sys.executable, "-m", "bankgate_host"] + args, cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "PORT=/dev/ttyUSB0" in proc.stderr and "--port /dev/ttyUSB0" in proc.stderr, proc.stderr
    proc = subprocess.run(["make", "deploy"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "make deploy PORT=/dev/ttyUSB0" in proc.stdout, proc.stdout


def test_every_error_of_a_file_in_one_run(tmp_path):
    rc, out = check(write(tmp_path, "c.json", json.dumps(example(
        bank__addresses=[2, 3, "4"], gating__max_dv_mv=9000, mqtt__colour="red",
        contactors__outputs=["k1", "k2", "k9"]))))
    lines = out.splitlines()
    assert rc == 1 and lines[-1] == "4 errors", out
    for path in ("bank.addresses[2]", "gating.max_dv_mv", "mqtt.colour", "contactors.outputs[2]"):
        assert [x for x in lines if x.startswith("INVALID %s: expected" % path)], (path, out)
