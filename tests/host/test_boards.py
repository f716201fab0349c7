"""Board files (boards/*.json): each validates with the device validator
(bankgate.boards under the unix port), its pins are legal for its chip (checked
again here by an independent CPython oracle written from the ESP32 datasheets),
broken variants are refused with a precise message, and boards/README.md
documents every board and every key."""
import copy
import glob
import json
import os
import re

import pytest

from bankgate_host import REPO
from bankgate_host.mpy import MpError

BOARDS = sorted(glob.glob(os.path.join(REPO, "boards", "*.json")))
NAMES = [os.path.basename(p)[:-5] for p in BOARDS]
REAL = [n for n in NAMES if n != "sim"]


def load(name):
    with open(os.path.join(REPO, "boards", name + ".json")) as f:
        return json.load(f)


def refused(mp, board, *fragments):
    with pytest.raises(MpError) as ei:
        mp.call("bankgate.boards", "validate", board)
    text = str(ei.value)
    assert "ConfigError" in text, text
    msg = text.strip().splitlines()[-1]
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return msg


def test_the_required_boards_exist():
    for name in ("lilygo-t-can485", "waveshare-esp32-s3-rs485-can", "devkitc-sn65hvd230-max3485",
                 "devkitc-wrover-sn65hvd230-max3485", "devkitc-mcp2515-max3485", "sim"):
        assert name in NAMES
    backends = {load(n)["can"]["backend"] for n in REAL}
    assert backends == {"twai", "mcp2515"}


@pytest.mark.parametrize("name", NAMES)
def test_board_file_validates_on_the_device_validator(mp, name):
    board = load(name)
    assert mp.call("bankgate.boards", "validate", board, name) == board
    assert board["name"] == name


# ---- independent oracle: ESP32 / ESP32-S3 pin facts (Espressif datasheets)
ESP32_EXISTS = set(range(0, 20)) | {21, 22, 23, 25, 26, 27} | set(range(32, 40))
ESP32_FLASH = set(range(6, 12))
ESP32_INPUT_ONLY = set(range(34, 40))
ESP32_ADC1 = set(range(32, 40))
S3_EXISTS = set(range(0, 22)) | set(range(26, 49))
S3_FLASH = set(range(26, 33))
S3_ADC1 = set(range(1, 11))


def pins_of(board):
    """[(role, pin, drives)] for every pin a board file uses."""
    out = []
    for n, p in board["outputs"].items():
        out.append(("output " + n, p, True))
    for n, p in board.get("inputs", {}).items():
        out.append(("input " + n, p, False))
    rs = board.get("rs485")
    if rs:
        out += [("rs485.tx", rs["tx"], True), ("rs485.rx", rs["rx"], False)]
        if rs.get("de") is not None:
            out.append(("rs485.de", rs["de"], True))
        out += [("rs485.enable_high", p, True) for p in rs.get("enable_high", [])]
    for key in ("can", "can_modules"):
        c = board.get(key)
        if not c:
            continue
        out += [(key + ".enable_low", p, True) for p in c.get("enable_low", [])]
        if c["backend"] == "twai":
            out += [(key + ".tx", c["tx"], True), (key + ".rx", c["rx"], False)]
        elif c["backend"] == "mcp2515":
            s = c["spi"]
            out += [(key + ".sck", s["sck"], True), (key + ".mosi", s["mosi"], True),
                    (key + ".miso", s["miso"], False), (key + ".cs", c["cs"], True),
                    (key + ".int", c["int"], False)]
    for key in ("terminator", "led"):
        if board.get(key) is not None:
            out.append((key, board[key], True))
    if board.get("idle_adc") is not None:
        out.append(("idle_adc", board["idle_adc"], False))
    if board.get("link_adc"):
        out.append(("link_adc", board["link_adc"]["pin"], False))
    return out


@pytest.mark.parametrize("name", REAL)
def test_pins_are_unique_and_legal_for_the_chip(name):
    board = load(name)
    pins = pins_of(board)
    used = [p for _, p, _ in pins]
    assert len(used) == len(set(used)), "pin used twice in %s: %s" % (name, pins)
    chip = board["chip"]
    exists, flash = (ESP32_EXISTS, ESP32_FLASH) if chip == "esp32" else (S3_EXISTS, S3_FLASH)
    adc1 = ESP32_ADC1 if chip == "esp32" else S3_ADC1
    for role, p, drives in pins:
        assert p in exists, "%s: %s GPIO%d does not exist" % (name, role, p)
        assert p not in flash, "%s: %s on flash pin %d" % (name, role, p)
        if chip == "esp32":
            assert p not in (1, 3), "%s: %s on the USB console UART" % (name, role)
            if drives:
                assert p not in ESP32_INPUT_ONLY, "%s: %s drives input-only GPIO%d" % (name, role, p)
        else:
            assert p not in (19, 20, 43, 44), "%s: %s on the USB console" % (name, role)
        if role in ("idle_adc", "link_adc"):
            assert p in adc1, "%s: %s on GPIO%d, not ADC1 (ADC2 is Wi-Fi's)" % (name, role, p)
    assert board["source"], "cite the board's documentation"
    # module variant: PSRAM pins (ESP32 WROVER 16/17, ESP32-S3 R8 35-37) stay free
    psram_pins = {("esp32", "quad"): {16, 17}, ("esp32s3", "octal"): {35, 36, 37}}
    taken = psram_pins.get((chip, board["psram"]), set())
    assert not taken & set(used), "%s: PSRAM pins used: %s" % (name, taken & set(used))
    image = {("esp32", "none"): "ESP32_GENERIC", ("esp32", "quad"): "ESP32_GENERIC-SPIRAM",
             ("esp32s3", "none"): "ESP32_GENERIC_S3",
             ("esp32s3", "octal"): "ESP32_GENERIC_S3-SPIRAM_OCT"}[(chip, board["psram"])]
    assert board["firmware"] == image
    if chip == "esp32":                            # no internal pulls on 34-39
        for n, p in board.get("inputs", {}).items():
            if p in ESP32_INPUT_ONLY:
                assert p in board.get("external_pullups", []), "%s: input %s needs a pull-up" % (name, n)
        for key in ("can", "can_modules"):
            c = board.get(key)
            if c and c["backend"] == "twai":
                assert c.get("id", 1) >= 1           # machine.CAN ids are 1-based


def first_real(chip="esp32"):
    return next(load(n) for n in REAL if load(n)["chip"] == chip and load(n)["outputs"])


def test_broken_boards_are_refused_with_a_precise_message(mp):
    b = load("devkitc-sn65hvd230-max3485")
    cases = [
        (("outputs", "k1"), 34, ["outputs.k1", "can drive an output", "34 (input-only)"]),
        (("outputs", "k1"), 7, ["outputs.k1", "free GPIO", "7 (SPI flash)"]),
        (("outputs", "k1"), 1, ["outputs.k1", "USB console"]),
        (("outputs", "k1"), 12, ["outputs.k1", "strapping"]),
        (("outputs", "k1"), 24, ["outputs.k1", "exists on this chip", "24"]),
        (("outputs", "k2"), 25, ["not used elsewhere", "25 (also"]),
        (("rs485", "de"), 35, ["rs485.de", "input-only"]),
        (("idle_adc",), 4, ["idle_adc", "ADC1"]),
        (("can", "tx"), 39, ["can.tx", "input-only"]),
        (("chip",), "esp8266", ["chip", "esp32"]),
        (("colour",), "red", ["colour", "unknown key"]),
        (("topologies",), ["ring"], ["topologies"]),
        (("outputs",), {}, ["outputs", "at least one"]),
        (("link_adc", "mul"), 1000000, ["link_adc.mul"]),
    ]
    for path, value, frags in cases:
        bad = copy.deepcopy(b)
        d = bad
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        refused(mp, bad, *frags)
    mcp = load("devkitc-mcp2515-max3485")
    variant_cases = [
        (("can", "id"), 0, ["can.id", "from 1 to 2", "0"]),            # generic API: 1-based
        (("external_pullups",), [35], ["inputs.fb1", "external_pullups", "34 (no internal pull"]),
        (("external_pullups",), [34, 35, 2], ["external_pullups", "inputs", "2"]),
        (("psram",), "quad", ["firmware", "ESP32_GENERIC-SPIRAM"]),      # image must follow
        (("psram",), "octal", ["psram", "none, quad"]),
        (("firmware",), "ESP32_GENERIC_S3", ["firmware", "'ESP32_GENERIC'"]),
        (("module",), "", ["module", "variant"]),
    ]
    for path, value, frags in variant_cases:
        bad = copy.deepcopy(b)
        bad[path[0]] = value if len(path) == 1 else bad[path[0]]
        if len(path) == 2:
            bad[path[0]][path[1]] = value
        refused(mp, bad, *frags)
    # WROVER (SPIRAM firmware): GPIO16/17 belong to the PSRAM
    bad = copy.deepcopy(b)
    bad["psram"], bad["firmware"] = "quad", "ESP32_GENERIC-SPIRAM"
    refused(mp, bad, "rs485.tx", "module variant leaves free", "17 (PSRAM")
    # generic machine.CAN board: no pins, id 1 -- accepted; tx without rx refused
    ok = copy.deepcopy(b)
    del ok["can"]["tx"], ok["can"]["rx"]
    assert mp.call("bankgate.boards", "validate", ok) == ok
    bad = copy.deepcopy(ok)
    bad["can"]["tx"] = 21
    refused(mp, bad, "can.rx", "tx and rx come together")
    bad = copy.deepcopy(mcp)                       # MCP2515 INT on a pad without pull-up
    bad["can"]["int"] = 39
    bad["link_adc"] = None
    bad["topologies"] = ["branch"]                 # main needs the DC-link ADC this frees
    refused(mp, bad, "can.int", "external_pullups", "39 (no internal pull")
    bad["external_pullups"] = [34, 35, 39]
    assert mp.call("bankgate.boards", "validate", bad) == bad
    bad = copy.deepcopy(mcp)
    del bad["can"]["int"]
    refused(mp, bad, "can.int", "GPIO number")
    bad = copy.deepcopy(mcp)
    bad["can"]["crystal_hz"] = 12000000
    refused(mp, bad, "crystal_hz", "8000000")
    s3 = load("waveshare-esp32-s3-rs485-can")
    bad = copy.deepcopy(s3)
    bad["outputs"]["k1"] = 27
    refused(mp, bad, "outputs.k1", "SPI flash")
    bad = copy.deepcopy(s3)
    bad["outputs"]["k1"] = 19
    refused(mp, bad, "outputs.k1", "USB")
    bad = copy.deepcopy(s3)                        # octal PSRAM takes GPIO35-37
    bad["outputs"]["k1"] = 36
    refused(mp, bad, "outputs.k1", "octal PSRAM")
    ok = copy.deepcopy(s3)                         # ... which a no-PSRAM S3 leaves free
    ok["psram"], ok["firmware"], ok["outputs"]["k1"] = "none", "ESP32_GENERIC_S3", 36
    assert mp.call("bankgate.boards", "validate", ok) == ok


def test_unknown_board_is_a_clear_error(mp):
    with pytest.raises(MpError) as ei:
        mp.call("bankgate.boards", "find", "esp32-mystery", os.path.join(REPO, "boards"))
    msg = str(ei.value).strip().splitlines()[-1]
    assert "board: expected one of" in msg and "esp32-mystery" in msg
    for n in NAMES:
        assert n in msg


def test_readme_documents_every_board_and_key():
    with open(os.path.join(REPO, "boards", "README.md")) as f:
        text = f.read()
    for n in NAMES:
        assert "`%s`" % n in text, n
    keys = set()
    for n in NAMES:
        b = load(n)
        keys |= set(b)
        for sub in ("rs485", "can", "link_adc"):
            if isinstance(b.get(sub), dict):
                keys |= {"%s.%s" % (sub, k) for k in b[sub]}
    for k in sorted(keys):
        assert "`%s`" % k in text, "boards/README.md does not document %s" % k
    for n in REAL:
        for src in load(n)["source"]:
            url = src.split()[0]
            assert url in text, "README does not cite %s" % url


def test_hardware_layer_reads_only_documented_keys():
    with open(os.path.join(REPO, "lib", "bankgate", "hal", "esp32.py")) as f:
        src = f.read()
    with open(os.path.join(REPO, "lib", "bankgate", "boards.py")) as f:
        validator = f.read()
    top = re.search(r"_TOP_KEYS = \(([^)]*)\)", validator).group(1)
    for key in set(re.findall(r'board(?:\.get\(|\[)"(\w+)"', src)):
        assert '"%s"' % key in top, "hal/esp32.py reads board key %r the validator does not know" % key
