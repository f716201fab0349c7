# bankgate boot.py -- runs first after every reset.  Its one job is the fail-safe
# state: every output named by the board file is driven released (contactors
# open) before anything else happens.  Hardware setup proper is main.py's.
try:
    import json

    import machine

    with open("/board.json") as f:
        _board = json.load(f)
    for _pin in _board.get("outputs", {}).values():
        machine.Pin(_pin, machine.Pin.OUT, value=0)
except Exception as e:  # no board file yet: nothing is wired to drive
    print("boot: outputs not driven:", e)
