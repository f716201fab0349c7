# Board definitions (boards/<name>.json, copied to the device as /board.json):
# which GPIO does what.  validate() checks a board dict against the rules of its
# chip before anything drives a pin: every pin exists, none is a flash pin, an
# output is never an input-only pin, contactor coils avoid boot-strapping pins,
# ADC inputs are on ADC1 (ADC2 is unusable while Wi-Fi runs), no pin is used twice.
# boards/README.md documents every key; bankgate.hal.esp32 consumes them.
#
# Errors are bankgate.config.ConfigError with the path "<board>.<key>", e.g.
#   devkitc.outputs.k1: expected a GPIO that can drive an output, found 34 (input-only)

from bankgate.jsonfile import MAX_CONFIG_BYTES, ConfigError, parse, read_file

CHIPS = ("esp32", "esp32s3", "sim")
TOPOLOGIES = ("branch", "main")
CAN_BACKENDS = ("twai", "mcp2515", "sim")
CAN_BITRATES = (125000, 250000, 500000, 1000000)
MCP2515_CRYSTALS = (8000000, 16000000, 20000000)
MAX_PIN_NAMES = 24

_TOP_KEYS = ("name", "title", "chip", "source", "notes", "outputs", "inputs", "rs485", "can",
             "can_modules",
             "terminator", "idle_adc", "link_adc", "led", "topologies",
             "module", "psram", "firmware", "external_pullups")
_RS485_KEYS = ("uart", "tx", "rx", "de", "baud", "enable_high", "transceiver", "auto_direction")
_CAN_KEYS = ("backend", "id", "tx", "rx", "bitrate", "role", "enable_low", "transceiver",
             "spi", "cs", "int", "crystal_hz")
_SPI_KEYS = ("id", "sck", "mosi", "miso", "baudrate")
CAN_ROLES = ("inverter", "modules", "both")

# Module variant -> the official MicroPython image (micropython.org/download, board
# ESP32_GENERIC / ESP32_GENERIC_S3 and their SPIRAM variants) and the pins that
# image's PSRAM takes:
#   esp32   none   ESP32_GENERIC                  (WROOM-32: no PSRAM)
#   esp32   quad   ESP32_GENERIC-SPIRAM           (WROVER: GPIO16/17 are the PSRAM's
#                                                  clock/CS, "invalid pin" on that image)
#   esp32s3 none   ESP32_GENERIC_S3               (N8 / N16: no PSRAM)
#   esp32s3 octal  ESP32_GENERIC_S3-SPIRAM_OCT    (R8 modules: GPIO35-37 belong to the
#                                                  octal PSRAM; 33/34 too on octal-flash
#                                                  N32R8 modules -- kept free here)
FIRMWARE = {("esp32", "none"): "ESP32_GENERIC", ("esp32", "quad"): "ESP32_GENERIC-SPIRAM",
            ("esp32s3", "none"): "ESP32_GENERIC_S3",
            ("esp32s3", "octal"): "ESP32_GENERIC_S3-SPIRAM_OCT"}
PSRAM_PINS = {("esp32", "quad"): {16: "PSRAM on WROVER modules (SPIRAM firmware)",
                                  17: "PSRAM on WROVER modules (SPIRAM firmware)"},
              ("esp32s3", "octal"): dict([(p, "octal PSRAM/flash bus (SPIRAM_OCT firmware)")
                                          for p in (33, 34, 35, 36, 37)])}
_LINK_ADC_KEYS = ("pin", "mul", "div")


def _range(a, b):
    return set(range(a, b + 1))


# Pin rules per chip (ESP32 and ESP32-S3 technical reference / datasheet):
#   valid       GPIO numbers that exist
#   forbidden   never usable: SPI flash/PSRAM, the USB console
#   input_only  cannot drive (ESP32 GPIO 34-39, no pull resistors either)
#   strapping   sampled at reset or toggled by the boot ROM: a contactor coil there
#               could pulse during boot, so coils may not use them
#   adc1        ADC1 channels (ADC2 is taken by the Wi-Fi driver)
_RULES = {
    "esp32": {
        "valid": _range(0, 19) | {21, 22, 23, 25, 26, 27} | _range(32, 39),
        "forbidden": {6: "SPI flash", 7: "SPI flash", 8: "SPI flash", 9: "SPI flash",
                      10: "SPI flash", 11: "SPI flash", 1: "UART0 TX, the USB console",
                      3: "UART0 RX, the USB console"},
        "input_only": _range(34, 39),
        "no_pull": _range(34, 39),      # no pull resistors on these pads
        "strapping": {0, 2, 5, 12, 14, 15},
        "adc1": _range(32, 39),
        "uarts": (1, 2),
        "spis": (1, 2),
    },
    "esp32s3": {
        "valid": _range(0, 21) | _range(26, 48),
        "forbidden": dict([(p, "SPI flash") for p in range(26, 33)]
                          + [(19, "USB D-, the USB console"), (20, "USB D+, the USB console"),
                             (43, "UART0 TX"), (44, "UART0 RX")]),
        "input_only": set(),
        "no_pull": set(),
        "strapping": {0, 3, 45, 46},
        "adc1": _range(1, 10),
        "uarts": (1, 2),
        "spis": (1, 2),
    },
}


def _err(path, expected, found):
    return ConfigError(path, expected, found)


def _obj(path, v):
    if type(v) is not dict:
        raise _err(path, "an object", repr(v))
    return v


def _only(path, d, keys):
    for k in d:
        if k not in keys:
            raise _err("%s.%s" % (path, k), "a board key (%s)" % ", ".join(keys), "an unknown key")


def _int(path, v, lo, hi):
    if type(v) is not int or v < lo or v > hi:
        raise _err(path, "an integer from %d to %d" % (lo, hi), repr(v))
    return v


class _Pins:
    """Collects every pin of a board and checks it against the chip's rules."""

    def __init__(self, name, chip, reserved=None):
        self.name = name
        self.rules = _RULES.get(chip)   # None: the simulator, any small int is fine
        self.reserved = reserved or {}  # pins the module variant's PSRAM takes
        self.used = {}

    def pin(self, path, v, use):
        """use: 'out' (drives), 'coil' (drives a contactor), 'in', 'adc'."""
        if v is None:
            return None
        r = self.rules
        if type(v) is not int or v < 0 or v > 255:
            raise _err(path, "a GPIO number", repr(v))
        if r is not None:
            if v not in r["valid"]:
                raise _err(path, "a GPIO that exists on this chip", "%d" % v)
            if v in r["forbidden"]:
                raise _err(path, "a free GPIO", "%d (%s)" % (v, r["forbidden"][v]))
            if v in self.reserved:
                raise _err(path, "a GPIO this module variant leaves free", "%d (%s)" % (v, self.reserved[v]))
            if use in ("out", "coil") and v in r["input_only"]:
                raise _err(path, "a GPIO that can drive an output", "%d (input-only)" % v)
            if use == "coil" and v in r["strapping"]:
                raise _err(path, "a GPIO that stays quiet during boot (not a strapping pin)",
                           "%d" % v)
            if use == "adc" and v not in r["adc1"]:
                raise _err(path, "an ADC1 GPIO (%s)" % ", ".join([str(p) for p in sorted(r["adc1"])]),
                           "%d" % v)
        if v in self.used:
            raise _err(path, "a GPIO not used elsewhere", "%d (also %s)" % (v, self.used[v]))
        self.used[v] = path
        return v


def _names(path, d, pins, use, required):
    _obj(path, d)
    if required and not d:
        raise _err(path, "at least one named pin", "none")
    if len(d) > MAX_PIN_NAMES:
        raise _err(path, "at most %d pins" % MAX_PIN_NAMES, "%d" % len(d))
    for k in sorted(d):
        if type(k) is not str or not 1 <= len(k) <= 16:
            raise _err(path, "names of 1 to 16 characters", repr(k))
        pins.pin("%s.%s" % (path, k), d[k], use)


def _can(q, can, pins, rules, chip, key):
    """A CAN controller entry (format of bankgate.hal.esp32.open_can)."""
    _obj(q, can)
    _only(q, can, _CAN_KEYS)
    be = can.get("backend")
    if be not in CAN_BACKENDS or (be == "sim") != (chip == "sim"):
        raise _err(q + ".backend", "twai (machine.CAN) or mcp2515 (SPI)", repr(be))
    if can.get("bitrate", 500000) not in CAN_BITRATES:
        raise _err(q + ".bitrate", "one of %s" % ", ".join([str(b) for b in CAN_BITRATES]),
                   repr(can.get("bitrate")))
    role = can.get("role", "inverter" if key == "can" else "modules")
    if role not in CAN_ROLES or (key == "can_modules" and role != "modules"):
        raise _err(q + ".role", "one of %s" % ", ".join(CAN_ROLES if key == "can" else ("modules",)),
                   repr(role))
    el = can.get("enable_low", [])
    if type(el) is not list:
        raise _err(q + ".enable_low", "a list of GPIO numbers", repr(el))
    for i, v in enumerate(el):
        pins.pin("%s.enable_low[%d]" % (q, i), v, "out")
    if be == "twai":
        # machine.CAN's generic API: 1-based controller id, no pins (they belong to
        # the firmware build); tx/rx are for the register driver on stock firmware
        # (bankgate.hal.twai_regs) and come as a pair or not at all
        if "id" in can:
            _int(q + ".id", can["id"], 1, 2)
        if (can.get("tx") is None) != (can.get("rx") is None):
            k = "tx" if can.get("tx") is None else "rx"
            raise _err("%s.%s" % (q, k), "a GPIO number (tx and rx come together)", "null")
        for k, use in (("tx", "out"), ("rx", "in")):
            pins.pin("%s.%s" % (q, k), can.get(k), use)
    elif be == "mcp2515":
        spi = can.get("spi")
        _obj(q + ".spi", spi)
        _only(q + ".spi", spi, _SPI_KEYS)
        spis = rules["spis"] if rules else (1, 2)
        if spi.get("id") not in spis:
            raise _err(q + ".spi.id", "one of %s" % ", ".join([str(x) for x in spis]),
                       repr(spi.get("id")))
        if "baudrate" in spi:
            _int(q + ".spi.baudrate", spi["baudrate"], 100000, 10000000)
        for k, use in (("sck", "out"), ("mosi", "out"), ("miso", "in")):
            if spi.get(k) is None:
                raise _err("%s.spi.%s" % (q, k), "a GPIO number", "null")
            pins.pin("%s.spi.%s" % (q, k), spi[k], use)
        for k, use in (("cs", "out"), ("int", "in")):
            if can.get(k) is None:
                raise _err("%s.%s" % (q, k), "a GPIO number", "null")
            pins.pin("%s.%s" % (q, k), can[k], use)
        if can.get("crystal_hz") not in MCP2515_CRYSTALS:
            raise _err(q + ".crystal_hz", "one of %s" % ", ".join(
                [str(c) for c in MCP2515_CRYSTALS]), repr(can.get("crystal_hz")))


def _variant(p, board, chip):
    """module / psram / firmware: required for a real chip, consistent with each
    other; returns the pins the PSRAM reserves."""
    if chip == "sim":
        for k in ("module", "psram", "firmware"):
            if k in board:
                raise _err("%s.%s" % (p, k), "no %s on the simulated board" % k, repr(board[k]))
        return {}
    mod = board.get("module")
    if type(mod) is not str or not mod:
        raise _err(p + ".module", "the module variant (e.g. ESP32-WROOM-32E, ESP32-WROVER-E)",
                   repr(mod))
    ps = board.get("psram")
    kinds = [k[1] for k in FIRMWARE if k[0] == chip]
    if ps not in kinds:
        raise _err(p + ".psram", "one of %s for %s" % (", ".join(kinds), chip), repr(ps))
    fw = FIRMWARE[(chip, ps)]
    if board.get("firmware") != fw:
        raise _err(p + ".firmware", "%r (the official image for %s with psram %s)" % (fw, chip, ps),
                   repr(board.get("firmware")))
    return PSRAM_PINS.get((chip, ps), {})


def _pullups(p, board, rules):
    """Inputs that want a pull-up (the "inputs" and an MCP2515's open-drain INT) on
    pads without pull resistors (ESP32 GPIO 34-39) need an external one, listed in
    "external_pullups"; the list names only such input GPIOs."""
    ext = board.get("external_pullups", [])
    if type(ext) is not list or any(type(v) is not int for v in ext):
        raise _err(p + ".external_pullups", "a list of GPIO numbers", repr(ext))
    ins = board.get("inputs", {})
    want = [("%s.inputs.%s" % (p, k), ins[k]) for k in sorted(ins)]
    for key in ("can", "can_modules"):
        c = board.get(key)
        if type(c) is dict and c.get("backend") == "mcp2515" and c.get("int") is not None:
            want.append(("%s.%s.int" % (p, key), c["int"]))
    gpios = [v for _, v in want]
    for v in ext:
        if v not in gpios:
            raise _err(p + ".external_pullups", "GPIOs of this board's inputs", "%d" % v)
    if rules is None:
        return
    for path, v in want:
        if v in rules["no_pull"] and v not in ext:
            raise _err(path,
                       "a GPIO with an internal pull-up, or this GPIO listed in external_pullups "
                       "(fit a resistor to 3.3 V)", "%d (no internal pull resistors)" % v)


def can_roles(board):
    """(modules, inverter): whether the board has a CAN controller for each role."""
    mods = inv = False
    c = board.get("can")
    if c:
        role = c.get("role", "inverter")
        inv = role in ("inverter", "both")
        mods = role in ("modules", "both")
    if board.get("can_modules"):
        mods = True
    return mods, inv


def validate(board, expect_name=None):
    """Return the board dict unchanged if it is valid, else raise ConfigError.
    expect_name: the file's name (boards/<name>.json) the 'name' must equal."""
    if type(board) is not dict:
        raise _err("board", "an object", repr(board))
    name = board.get("name")
    if type(name) is not str or not 1 <= len(name) <= 40:
        raise _err("board.name", "a name of 1 to 40 characters", repr(name))
    for ch in name:
        if not (ch.isdigit() or ch in "abcdefghijklmnopqrstuvwxyz-_"):
            raise _err("board.name", "lower-case letters, digits, '-' or '_'", repr(name))
    if expect_name is not None and name != expect_name:
        raise _err(name + ".name", "%r (the file name)" % expect_name, repr(name))
    p = name
    _only(p, board, _TOP_KEYS)
    chip = board.get("chip")
    if chip not in CHIPS:
        raise _err(p + ".chip", "one of %s" % ", ".join(CHIPS), repr(chip))
    for key in ("title", "notes"):
        if key in board and type(board[key]) is not str:
            raise _err("%s.%s" % (p, key), "a string", repr(board[key]))
    src = board.get("source", [])
    if type(src) is not list or any(type(s) is not str for s in src):
        raise _err(p + ".source", "a list of strings (where the pin map comes from)", repr(src))
    if chip != "sim" and not src:
        raise _err(p + ".source", "at least one reference to the board's documentation", "none")
    topo = board.get("topologies")
    if type(topo) is not list or not topo or any(t not in TOPOLOGIES for t in topo):
        raise _err(p + ".topologies", "a non-empty list of %s" % ", ".join(TOPOLOGIES), repr(topo))

    reserved = _variant(p, board, chip)
    pins = _Pins(name, chip, reserved)
    _names(p + ".outputs", board.get("outputs"), pins, "coil", True)
    _names(p + ".inputs", board.get("inputs", {}), pins, "in", False)
    rules = _RULES.get(chip)
    _pullups(p, board, rules)

    _rs485(p, board.get("rs485"), pins, rules)
    for key in ("can", "can_modules"):
        if board.get(key) is not None:
            _can(p + "." + key, board[key], pins, rules, chip, key)
    pins.pin(p + ".terminator", board.get("terminator"), "out")
    pins.pin(p + ".led", board.get("led"), "out")
    pins.pin(p + ".idle_adc", board.get("idle_adc"), "adc")
    _link_adc(p, board.get("link_adc"), pins, topo)
    return board


def _rs485(p, rs, pins, rules):
    if rs is not None:
        q = p + ".rs485"
        _obj(q, rs)
        _only(q, rs, _RS485_KEYS)
        uarts = rules["uarts"] if rules else (0, 1, 2, 3)
        if rs.get("uart") not in uarts:
            raise _err(q + ".uart", "one of %s (UART0 is the console)" % ", ".join(
                [str(u) for u in uarts]), repr(rs.get("uart")))
        pins.pin(q + ".tx", rs.get("tx"), "out")
        if rs.get("tx") is None:
            raise _err(q + ".tx", "a GPIO number", "null")
        if rs.get("rx") is None:
            raise _err(q + ".rx", "a GPIO number", "null")
        pins.pin(q + ".rx", rs.get("rx"), "in")
        pins.pin(q + ".de", rs.get("de"), "out")
        if "baud" in rs:
            _int(q + ".baud", rs["baud"], 1200, 1000000)
        eh = rs.get("enable_high", [])
        if type(eh) is not list:
            raise _err(q + ".enable_high", "a list of GPIO numbers", repr(eh))
        for i, v in enumerate(eh):
            pins.pin("%s.enable_high[%d]" % (q, i), v, "out")
        auto = rs.get("auto_direction", rs.get("de") is None)
        if type(auto) is not bool:
            raise _err(q + ".auto_direction", "true or false", repr(auto))
        if auto == (rs.get("de") is not None):
            raise _err(q + ".de", "null exactly when auto_direction is true",
                       repr(rs.get("de")))


def _link_adc(p, la, pins, topo):
    if la is not None:
        q = p + ".link_adc"
        _obj(q, la)
        _only(q, la, _LINK_ADC_KEYS)
        pins.pin(q + ".pin", la.get("pin"), "adc")
        mul = _int(q + ".mul", la.get("mul"), 1, 300000)
        div = _int(q + ".div", la.get("div"), 1, 100000)
        # link_mv = adc_mv * mul // div: 3300 mV full scale * mul stays below 2**30
        if 3300 * mul // div > 100000:
            raise _err(q + ".mul", "a divider giving at most 100000 mV at 3300 mV ADC",
                       "%d mV" % (3300 * mul // div))
    elif "main" in topo:
        # the main topology closes only on a measured DC link (docs/admission.md)
        raise _err(p + ".topologies", "no main without link_adc (the main topology closes only on a "
                   "measured DC link)", repr(topo))


def load(path, expect_name=None):
    """Read and validate a board file (device: /board.json)."""
    return validate(parse(read_file(path, MAX_CONFIG_BYTES), path), expect_name)


def find(name, boards_dir):
    """Host side: boards_dir/<name>.json, validated.  Unknown board: ConfigError
    listing the known ones."""
    import os
    known = sorted([f[:-5] for f in os.listdir(boards_dir) if f.endswith(".json")])
    if type(name) is not str or name not in known:
        raise ConfigError("board", "one of %s" % ", ".join(known), repr(name))
    return load(boards_dir + "/" + name + ".json", name)
