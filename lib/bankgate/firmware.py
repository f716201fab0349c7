# Device start-up: board file -> hardware layer -> configuration -> gateway.
# Kept apart from firmware/main.py so it is compiled, tested and frozen with the
# package.  Whatever goes wrong, the outputs end released.
import sys


def _load_json(path):
    import json
    with open(path) as f:
        return json.load(f)


def device_main(board_path="/board.json", config_path="/config.json",
                secrets_path="/secrets.json"):
    hw = None
    try:
        from bankgate.hal import esp32
        hw = esp32.open_board(_load_json(board_path))
        from bankgate import app
        app.run_device(hw, config_path, secrets_path)
    except Exception as e:
        sys.print_exception(e)
        if hw is not None:
            hw.release_all()
            print("bankgate: fatal error, outputs released, resetting")
            hw.clock.sleep_ms(2000)
            hw.reset()
        raise
