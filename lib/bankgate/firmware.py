# Device start-up: board file -> hardware layer -> configuration -> gateway.
# Kept apart from firmware/main.py so it is compiled, tested and frozen with the
# package.  Whatever goes wrong, the outputs end released.
#
# Files are named relative to the current directory: on the ESP32 that is "/"
# (so "board.json" is /board.json); on the unix port it is the directory that
# plays the device's "/" (docs/deployment.md, "The unix-port device").
#
# Hardware: on the ESP32 (sys.platform == "esp32") bankgate.hal.esp32 builds the
# pins from the board file.  Anywhere else (the unix port) there is no `machine`:
# sim_hardware() builds fake pins with the board's names (tools/fakes/fakehw.py,
# which must be on the module path) driven by the wall clock, so the same main.py
# runs end to end over a pty in the tests.
#
# Failure handling:
#   board or configuration invalid, or the hardware cannot be opened (e.g. a pin the
#       firmware image lacks, or a machine.CAN-only TWAI board on stock firmware) -> hold(): every output released, the console
#       answers `status` with the error, the error is printed every 10 s; nothing
#       can close a contactor until a valid configuration is pushed and the device
#       restarts.  `config_error` holds the text for telemetry.
#   Ctrl-C (mpremote taking over for deploy / config push) -> KeyboardInterrupt:
#       outputs released, then the REPL gets control.
#   any other exception -> outputs released, traceback printed, chip reset (ESP32).
import sys

BOARD = "board.json"
CONFIG = "config.json"
SECRETS = "secrets.json"
HOLD_REPORT_MS = 10000      # how often hold() repeats the error on the console

config_error = None         # why the gateway is not running (None: it is), for telemetry


class WallClock:
    """Real time for the unix-port device, with the SimClock surface the fakes use."""

    def __init__(self):
        import time
        self._t = time

    def ticks_ms(self):
        return self._t.ticks_ms()

    def ticks_us(self):
        return self._t.ticks_us()

    def sleep_ms(self, ms):
        self._t.sleep_ms(ms)

    def sleep_us(self, us):
        self._t.sleep_us(us)

    @property
    def now_us(self):
        return self._t.ticks_us()

    def advance_us(self, delta_us, stop=None):
        self._t.sleep_us(delta_us)


class NullUart:
    """RS485 port of the unix-port device when no bank is attached: sends into
    the void, never receives (every module times out, as with a cut cable)."""

    def __init__(self, baud):
        self.baudrate = baud

    def write(self, buf):
        return len(buf)

    def txdone(self):
        return True

    def any(self):
        return 0

    def readinto(self, buf, n=-1):
        return None


def sim_hardware(board):
    """Fake hardware named after the board's pins, in real time (unix port)."""
    import time

    from fakehw import FakeHardware

    class UnixHardware(FakeHardware):
        def idle(self, ms):
            time.sleep_ms(ms)

    hw = UnixHardware(WallClock(), outputs=sorted(board["outputs"]),
                      inputs=sorted(board.get("inputs", {})), board_name=board["name"])
    from bankgate.hal import Files
    hw.fs = Files()             # latched faults persist in the device directory
    rs = board.get("rs485")
    if rs:
        hw.uart = NullUart(rs.get("baud", 115200))
    return hw


def open_hardware(board):
    if sys.platform == "esp32":
        from bankgate.hal import esp32
        return esp32.open_board(board)
    return sim_hardware(board)


def _raw_config(path):
    """The configuration file as parsed JSON, or None (for salvage_mqtt)."""
    try:
        from bankgate import config
        return config.parse(config.read_file(path, config.MAX_CONFIG_BYTES), path)
    except Exception:
        return None


def _error_reporter(hw, config_path, secrets_path, text, secrets=None):
    """Publish the error over MQTT (bankgate.telemetry.errreport) if the mqtt section of
    the broken configuration is itself valid, with secret values masked.  Best effort:
    None when it cannot."""
    try:
        from bankgate import config
        salvaged = config.salvage_mqtt(_raw_config(config_path))
        config = None
        forget("bankgate.config")
        if salvaged is None or not salvaged["mqtt"]["enabled"]:
            return None
        from bankgate.console import mask_text
        from bankgate import net as netmod
        from bankgate.telemetry.errreport import ErrorReporter
        return ErrorReporter(hw, salvaged, netmod.open_net(hw, salvaged, secrets_path),
                             mask_text(text, secrets or []))
    except Exception as e:
        print("bankgate: cannot report the error over MQTT: %s" % (e,))
        return None


def hold(hw, console, text, reporter=None, stop=None):
    """Keep every output released and say why, until stop() (device: forever)."""
    global config_error
    config_error = text
    if console is not None:
        console.error = text
    msg = "bankgate: %s -- all contactors open" % text
    if console is not None:
        console.say(msg)
    else:
        print(msg)
    from bankgate import clock as tk
    clock = hw.clock if hw is not None else None
    next_report = tk.add(clock.ticks_ms(), HOLD_REPORT_MS) if clock is not None else 0
    while stop is None or not stop():
        if hw is not None:
            hw.release_all()
            if hw.wdt is not None:
                hw.wdt.feed()
        now = clock.ticks_ms() if clock is not None else 0
        if console is not None:
            console.service(now)
        if reporter is not None:
            reporter.service(now)
        if clock is not None and tk.due(now, next_report):
            next_report = tk.add(now, HOLD_REPORT_MS)
            if console is not None:
                console.say(msg)
        if hw is not None:
            hw.idle(20)
        else:
            import time
            time.sleep_ms(20)


def forget(*names):
    """Drop modules so the GC can free them (the configuration schema and the
    board rules are only needed while validating: tens of KiB of heap)."""
    for name in names:
        if name in sys.modules:
            del sys.modules[name]
        pkg, _, attr = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and attr in dir(parent):
            try:
                delattr(parent, attr)
            except (AttributeError, TypeError):
                pass
    import gc
    gc.collect()


def load(board_path, config_path, secrets_path):
    """Board, configuration and secrets, validated.  Returns (board, cfg, secret
    values to mask, error text or None); frees the validator afterwards."""
    from bankgate import boards, config
    board = cfg = None
    values = []
    try:
        board = boards.load(board_path)
        cfg, secrets = config.load_files(config_path, secrets_path, board,
                                         need_wifi=sys.platform == "esp32")
        values = config.secret_values(secrets)
        error = None
    except config.ConfigError as e:
        error = ("invalid configuration: %s" if board is not None else
                 "invalid board file: %s") % (e,)
        # the error text may quote a value that is also a secret: mask what the
        # secrets file holds even if it is not valid itself
        try:
            raw = config.parse(config.read_file(secrets_path, config.MAX_SECRETS_BYTES),
                               secrets_path, config.MAX_SECRETS_BYTES)
            if type(raw) is dict:
                values = config.secret_values(raw)
        except Exception:
            pass
    boards = config = None
    forget("bankgate.config", "bankgate.config_why", "bankgate.boards", "bankgate.jsonfile")
    return board, cfg, values, error


def device_main(board_path=BOARD, config_path=CONFIG, secrets_path=SECRETS,
                stdin=None, stdout=None, stop=None):
    """The device entry point (firmware/main.py).  stdin/stdout default to the
    USB console; stop() ends the loops (tests only; the device runs forever)."""
    global config_error
    from bankgate.console import Console
    hw = None
    try:
        stdin = stdin or sys.stdin
        stdout = stdout or sys.stdout
        board, cfg, values, error = load(board_path, config_path, secrets_path)
        if board is None:
            hold(None, Console(None, stdin, stdout), error, stop=stop)
            return
        try:
            hw = open_hardware(board)
        except Exception as e:
            # e.g. a pin the image does not have (WROOM wiring on SPIRAM firmware): say so
            # instead of resetting in a loop (the coils were created released)
            sys.print_exception(e)
            hold(None, Console(None, stdin, stdout, secrets=values),
                 "cannot open the hardware of board %s: %s" % (board.get("name"), e), stop=stop)
            return
        hw.release_all()
        con = Console(None, stdin, stdout, hw=hw, secrets=values)
        if error is not None:
            hold(hw, con, error, _error_reporter(hw, config_path, secrets_path, error, values), stop)
            return
        config_error = None
        board = None
        from bankgate import app
        net = None
        if cfg["mqtt"]["enabled"]:
            from bankgate import net as netmod
            net = netmod.open_net(hw, cfg, secrets_path)
        gw = build_gateway(hw, cfg, net, con)
        con.attach(gw)
        gw.run(stop)
    except KeyboardInterrupt:
        if hw is not None:
            hw.release_all()
        print("bankgate: interrupted, all outputs released")
        raise
    except Exception as e:
        sys.print_exception(e)
        if hw is not None:
            hw.release_all()
            if sys.platform == "esp32":
                print("bankgate: fatal error, outputs released, resetting")
                hw.clock.sleep_ms(2000)
                hw.reset()
        raise


BUILD_GC_BYTES = 1024


def build_gateway(hw, cfg, net=None, console=None):
    """The Gateway, built with a collection after every BUILD_GC_BYTES allocated: what its
    constructors leave behind is freed while the heap is still low, so the records it keeps
    pack together and the large buffers built last (the telemetry ring, 8 KiB, and the MQTT
    buffers) still find contiguous room.  Built without it, the 16-module firmware needed a
    104 KiB heap on the 32-bit port instead of 96 (docs/performance.md)."""
    import gc
    from bankgate import app
    gc.collect()
    old = gc.threshold()
    gc.threshold(BUILD_GC_BYTES)
    try:
        gw = app.Gateway(hw, cfg, net, console=console)
    finally:
        gc.threshold(old)
    if "bankgate.proto.pace" not in sys.modules:
        # only the admission's constructor read it (which checks the family lacks); PACE
        # keeps using it (its limits stand-in), so it stays loaded there
        forget("bankgate.familycaps")
    return gw
