# mpy-heapsize: 512k   (these tests run the whole firmware plus its fakes on this 64-bit port)
# The USB console (bankgate.console) and the device start-up (bankgate.firmware)
# under MicroPython.  stdin is a fake stream that select.poll can poll (an
# io.IOBase with ioctl, as MicroPython's own tests do), stdout collects lines.
import io
import json
import os
import time

import mptest
from fakehw import FakeHardware

from bankgate import console as K
from bankgate import firmware
from bankgate.events import EV_COMMAND, EventLog

_MP_STREAM_POLL = 3
_POLLIN = 1


class FakeStdin(io.IOBase):
    def __init__(self, data=b""):
        self.data = bytearray(data)
        self.pos = 0
        self.reads = 0

    def feed(self, data):
        self.data.extend(data)

    def readinto(self, buf):
        n = min(len(buf), len(self.data) - self.pos)
        for i in range(n):
            buf[i] = self.data[self.pos + i]
        self.pos += n
        self.reads += 1
        return n

    def ioctl(self, req, arg):
        if req == _MP_STREAM_POLL:
            return arg & _POLLIN if self.pos < len(self.data) else 0
        return -22        # EINVAL for the rest: 0 to MP_STREAM_GET_FILENO would make poll() watch fd 0

    def left(self):
        return len(self.data) - self.pos


class FakeOut:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s
        return len(s)

    def lines(self):
        return [l for l in self.text.split("\n") if l]

    def replies(self):
        return [json.loads(l[len(K.PREFIX):]) for l in self.lines() if l.startswith(K.PREFIX)]


class FakeAdmission:
    def __init__(self):
        self.faults = ["weld_k2"]
        self.resets = []

    def reset_faults(self, now):
        self.resets.append(now)
        had = bool(self.faults)
        self.faults = []
        return had


class FakeGateway:
    """The part of bankgate.app.Gateway the console uses."""

    def __init__(self, secret=None):
        self.hw = FakeHardware(outputs=("k1", "k2"), board_name="sim")
        self.cfg = {"gateway_id": "gw1", "bank": {"expected_modules": 2}}
        self.events = EventLog(16)
        self.admission = FakeAdmission()
        self.secret = secret
        self.fail = False

    def snapshot(self):
        if self.fail:
            raise ValueError("snapshot broke")
        d = {"state": "running", "faults": list(self.admission.faults),
             "outputs": {n: p.value() for n, p in self.hw.outputs.items()},
             "modules": [{"addr": 2, "state": "admitted", "reason": "ok"}]}
        if self.secret:
            d["note"] = "leak %s here" % self.secret
        return d


def _console(gw=None, data=b""):
    stdin = FakeStdin(data)
    out = FakeOut()
    return K.Console(gw, stdin, out), stdin, out


def test_status_is_one_json_reply_line():
    gw = FakeGateway()
    con, stdin, out = _console(gw, b"status\r\n")
    con.service(100)
    replies = out.replies()
    assert len(out.lines()) == 1 and len(replies) == 1, out.text
    r = replies[0]
    assert r["cmd"] == "status" and r["ok"] is True
    assert r["state"] == "running" and r["faults"] == ["weld_k2"]
    assert r["gateway_id"] == "gw1" and r["board"] == "sim"
    assert r["outputs"] == {"k1": 0, "k2": 0} and r["error"] is None


def test_reset_faults_is_the_local_reset():
    gw = FakeGateway()
    con, stdin, out = _console(gw, b"reset-faults\n")
    con.service(1234)
    assert gw.admission.resets == [1234]
    r = out.replies()[0]
    assert r == {"cmd": "reset-faults", "ok": True, "cleared": True, "faults": [],
                 "latch_store": None}, r
    rec = [0] * 5
    assert gw.events.get(gw.events.seq, rec)
    assert rec[1] == EV_COMMAND and rec[3] == K.CMD_RESET_FAULTS and rec[4] == 1
    stdin.feed(b"reset-faults\n")     # nothing latched any more
    con.service(1300)
    assert out.replies()[1]["cleared"] is False


def test_status_and_reset_show_the_persisted_latches():
    from simfs import SimFS
    from bankgate import latchstore
    gw = FakeGateway()
    st = gw.admission.store = latchstore.LatchStore(SimFS())
    st.load()
    st.save(0x04, 1, -10000)
    con, stdin, out = _console(gw, b"status\nreset-faults\n")
    con.service(5)
    r = out.replies()
    assert r[0]["latch_store"] == {"file": "latches.bin", "verdict": "ok", "faults": 4, "writes": 1,
                                   "errors": 0, "last_error": None}, r[0]
    assert r[1]["cmd"] == "reset-faults" and r[1]["latch_store"]["faults"] == 4


def test_lines_split_across_calls_and_terminal_noise():
    gw = FakeGateway()
    con, stdin, out = _console(gw, b"sta")
    con.service(1)
    assert out.text == ""
    stdin.feed(b"tus\r")
    con.service(2)
    # mpremote's raw-REPL bytes and other control characters are ignored
    stdin.feed(b"\x01\x02he\x04lp\r\n\r\n   \n")
    con.service(3)
    cmds = [r["cmd"] for r in out.replies()]
    assert cmds == ["status", "help"], cmds
    assert set(out.replies()[1]["commands"]) == set(K.COMMANDS)


def test_unknown_command_and_overlong_line_are_refused():
    gw = FakeGateway()
    con, stdin, out = _console(gw, b"reboot\n" + b"x" * 200 + b"\nstatus\n")
    for i in range(10):
        con.service(i)
    r = out.replies()
    assert r[0]["ok"] is False and "unknown command" in r[0]["error"] and r[0]["cmd"] == "reboot"
    assert r[1]["ok"] is False and "longer than 64" in r[1]["error"]
    assert r[2]["cmd"] == "status" and r[2]["ok"] is True
    assert con.rejected == 2 and gw.admission.resets == []


def test_service_is_bounded_and_never_blocks():
    gw = FakeGateway()
    con, stdin, out = _console(gw, b"y" * 1000)
    assert con.service(0) == 64          # at most 64 bytes per call
    assert stdin.left() == 1000 - 64
    n = 0
    for i in range(100):
        if con.service(i) == 0:
            break
        n += 1
    assert stdin.left() == 0 and n == (1000 - 64 + 63) // 64
    reads = stdin.reads
    assert con.service(0) == 0           # nothing waiting: returns at once, without reading
    assert stdin.reads == reads          # (a read with nothing waiting is what would block)


def test_idle_service_allocates_nothing():
    con, stdin, out = _console(FakeGateway())
    con.service(0)
    assert mptest.no_alloc(con.service, 5) == 0


def test_ctrl_c_raises_keyboard_interrupt():
    con, stdin, out = _console(FakeGateway(), b"sta\x03tus\n")
    mptest.raises(KeyboardInterrupt, con.service, 0)
    # the bytes after Ctrl-C stay for the REPL (mpremote's Ctrl-A follows it)
    assert stdin.left() == 4


def test_secrets_never_leave_the_console():
    secret = "p4ss-Word-xyz"
    gw = FakeGateway(secret=secret)
    con, stdin, out = _console(gw, b"status\n")
    con.mask_values = [secret]
    gw.cfg["gateway_id"] = secret
    con.service(0)
    con.say("connecting with %s" % secret)
    assert secret not in out.text, out.text
    r = out.replies()[0]
    assert r["note"] == "leak *** here" and r["gateway_id"] == "***"
    assert out.lines()[-1] == "connecting with ***"


def test_a_failing_command_does_not_stop_the_loop():
    gw = FakeGateway()
    gw.fail = True
    con, stdin, out = _console(gw, b"status\n")
    con.service(0)                       # must not raise
    r = out.replies()[0]
    assert r["ok"] is False and "snapshot broke" in r["error"]


def test_without_a_gateway_status_says_why():
    hw = FakeHardware(outputs=("k1", "k2"), board_name="sim")
    stdin = FakeStdin(b"status\nreset-faults\nconfig\n")
    out = FakeOut()
    con = K.Console(None, stdin, out, hw=hw)
    con.error = "invalid configuration: bank.addresses: expected 3 addresses"
    con.service(0)
    st, rf, cf = out.replies()
    assert st["state"] == "config_error" and st["error"] == con.error and st["ok"] is True
    assert st["outputs"] == {"k1": 0, "k2": 0}
    assert rf["ok"] is False and "not running" in rf["error"]
    assert cf["ok"] is False


# ------------------------------------------------------------ device start-up
def _root():
    for marker in ("/build/host-mpy", "/tests/mp/"):   # host-mpy[-<arch>]/
        if marker in __file__:
            return __file__.rsplit(marker, 1)[0]
    return "."


ROOT = _root()


def _device_dir(config):
    d = "/tmp/bankgate-dev-%d" % time.ticks_us()
    os.mkdir(d)
    with open(ROOT + "/boards/sim.json") as f:
        board = f.read()
    with open(d + "/board.json", "w") as f:
        f.write(board)
    if config is not None:
        with open(d + "/config.json", "w") as f:
            f.write(config)
    return d


def _rm(d):
    for e in os.ilistdir(d):
        os.remove(d + "/" + e[0])
    os.rmdir(d)


def _sim_config(**bank):
    with open(ROOT + "/examples/config.json") as f:
        c = json.load(f)
    c["board"] = "sim"
    c["bank"].update(bank)
    return json.dumps(c)


class Stopper:
    """stop() for the device loops: true after n calls; hooks run on given calls."""

    def __init__(self, n, hooks=None):
        self.n = n
        self.calls = 0
        self.hooks = hooks or {}

    def __call__(self):
        self.calls += 1
        h = self.hooks.get(self.calls)
        if h is not None:
            h()
        return self.calls > self.n


def test_invalid_configuration_holds_every_output_open_and_says_why():
    d = _device_dir(_sim_config(addresses=[2, 3]))
    try:
        stdin = FakeStdin(b"status\n")
        out = FakeOut()
        firmware.device_main(d + "/board.json", d + "/config.json", d + "/secrets.json",
                             stdin, out, Stopper(5))
        assert firmware.config_error.startswith("invalid configuration: bank.addresses: expected 3")
        text = out.text
        assert "bank.addresses: expected 3 addresses" in text and "all contactors open" in text
        st = out.replies()[0]
        assert st["state"] == "config_error" and "bank.addresses" in st["error"]
        assert set(st["outputs"].values()) == {0} and len(st["outputs"]) == 18
    finally:
        _rm(d)


def test_missing_or_broken_files_are_held_too():
    for cfg_text, want in ((None, "config.json: expected a file"),
                           ("{not json", "expected valid JSON"),
                           ("", "found an empty file"),
                           (" " * 17000, "at most 16384 bytes")):
        d = _device_dir(cfg_text)
        try:
            out = FakeOut()
            firmware.device_main(d + "/board.json", d + "/config.json", d + "/secrets.json",
                                 FakeStdin(), out, Stopper(1))
            assert want in firmware.config_error, (want, firmware.config_error)
        finally:
            _rm(d)
    d = _device_dir(_sim_config())
    try:
        with open(d + "/board.json", "w") as f:
            f.write('{"name": "sim", "chip": "sim", "outputs": {}}')
        out = FakeOut()
        firmware.device_main(d + "/board.json", d + "/config.json", d + "/secrets.json",
                             FakeStdin(b"status\n"), out, Stopper(3))
        assert firmware.config_error.startswith("invalid board file: "), firmware.config_error
        assert out.replies()[0]["state"] == "config_error"
    finally:
        _rm(d)


def test_ctrl_c_while_held_releases_and_interrupts():
    d = _device_dir(_sim_config(addresses=[2]))
    try:
        stdin = FakeStdin()
        mptest.raises(KeyboardInterrupt, firmware.device_main, d + "/board.json",
                      d + "/config.json", d + "/secrets.json", stdin, FakeOut(),
                      Stopper(50, {3: lambda: stdin.feed(b"\x03")}))
    finally:
        _rm(d)


def test_validator_is_freed_after_start_up():
    import sys
    d = _device_dir(_sim_config())
    try:
        board, cfg, values, error = firmware.load(d + "/board.json", d + "/config.json",
                                                  d + "/secrets.json")
        assert error is None and cfg["board"] == "sim" and board["name"] == "sim"
        assert "bankgate.config" not in sys.modules and "bankgate.boards" not in sys.modules
    finally:
        _rm(d)


def test_running_firmware_answers_and_releases_on_ctrl_c():
    d = _device_dir(_sim_config())
    try:
        stdin = FakeStdin()
        out = FakeOut()
        closed = []

        def close_all():
            # a contactor closed by the firmware (simulated), then Ctrl-C arrives
            hw = firmware_hw()
            for p in hw.outputs.values():
                p.value(1)
            closed.append(1)
            stdin.feed(b"\x03")

        holder = {}
        orig = firmware.open_hardware

        def spy(board):
            holder["hw"] = orig(board)
            return holder["hw"]

        def firmware_hw():
            return holder["hw"]

        firmware.open_hardware = spy
        try:
            stop = Stopper(400, {2: lambda: stdin.feed(b"status\n"), 40: close_all})
            mptest.raises(KeyboardInterrupt, firmware.device_main, d + "/board.json",
                          d + "/config.json", d + "/secrets.json", stdin, out, stop)
        finally:
            firmware.open_hardware = orig
        st = out.replies()[0]
        assert st["cmd"] == "status" and st["ok"] is True and st["error"] is None, st
        assert st["gateway_id"] == "garage-bank" and st["board"] == "sim"
        assert closed and set(p.value() for p in holder["hw"].outputs.values()) == {0}
        assert firmware.config_error is None
    finally:
        _rm(d)


def test_hardware_that_cannot_be_opened_is_held_not_reset():
    d = _device_dir(_sim_config())
    orig = firmware.open_hardware

    def broken(board):
        raise OSError("this firmware has no machine.CAN (build with TWAI support or use an MCP2515)")

    firmware.open_hardware = broken
    try:
        out = FakeOut()
        firmware.device_main(d + "/board.json", d + "/config.json", d + "/secrets.json",
                             FakeStdin(b"status\n"), out, Stopper(3))
        assert firmware.config_error.startswith("cannot open the hardware of board sim: this "
                                                "firmware has no machine.CAN"), firmware.config_error
        st = out.replies()[0]
        assert st["state"] == "config_error" and "machine.CAN" in st["error"]
    finally:
        firmware.open_hardware = orig
        _rm(d)
