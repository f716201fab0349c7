# mqtt.ring_bytes defaults by the board's PSRAM (issue 17): a board without PSRAM gets the
# 4 KiB store-and-forward ring so the firmware fits a plain ESP32's heap; PSRAM boards and a
# value the configuration gives keep theirs.
import json

from bankgate import boards as B
from bankgate import config as C


def _root():
    for marker in ("/build/host-mpy", "/tests/mp/"):
        if marker in __file__:
            return __file__.rsplit(marker, 1)[0]
    return "."


ROOT = _root()


def _load(name):
    board = B.load(ROOT + "/boards/%s.json" % name, name)
    with open(ROOT + "/examples/%s.json" % name) as f:
        given = json.load(f)
    return board, given


def test_board_without_psram_gets_the_small_ring():
    for name in ("devkitc-sn65hvd230-max3485", "devkitc-mcp2515-max3485", "lilygo-t-can485"):
        board, given = _load(name)
        assert board.get("psram", "none") == "none", name
        assert "ring_bytes" not in given.get("mqtt", {}), name
        before = json.dumps(given)
        cfg = C.validate(given, True, board)
        assert cfg["mqtt"]["ring_bytes"] == C.RING_BYTES_NO_PSRAM == 4096, name
        assert json.dumps(given) == before          # the input is not changed


def test_psram_boards_and_no_board_keep_the_schema_default():
    default = C.SCHEMA["mqtt"]["ring_bytes"][1]
    assert default == 8192
    for name in ("devkitc-wrover-sn65hvd230-max3485", "waveshare-esp32-s3-rs485-can"):
        board, given = _load(name)
        assert board["psram"] in ("quad", "octal"), name
        assert C.validate(given, True, board)["mqtt"]["ring_bytes"] == default, name
    _, given = _load("devkitc-sn65hvd230-max3485")
    assert C.validate(given, True)["mqtt"]["ring_bytes"] == default


def test_a_ring_size_the_configuration_gives_is_kept():
    board, given = _load("devkitc-sn65hvd230-max3485")
    for n in (8192, 2048):
        g = json.loads(json.dumps(given))
        g.setdefault("mqtt", {})["ring_bytes"] = n
        assert C.validate(g, True, board)["mqtt"]["ring_bytes"] == n
