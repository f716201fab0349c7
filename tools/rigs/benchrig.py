# The bench rig: a bank of modules answering instantly on a fake RS485 port, so the
# firmware's own CPU time and memory can be measured without the simulator.  Used by
# tools/rigs/bench.py and tools/rigs/bench_alone.py (host-only, unix port).
#
#   frames = build_frames(n)            reply frames for n modules at addresses 2..n+1
#   gw, clock, uart = make_gateway(n, frames, net=None)   warmed up: every module admitted
import micropython

from fakehw import FakeHardware, SimClock

# ------------------------------------------------------------------ bank data
def module_data(i):
    """Plausible, slightly different readings for module i (integers, model units).  The
    currents stay below contactors.weld_ma (1.5 A): a module reports its current before its
    branch is closed too, and more would (rightly) read as a welded contactor."""
    cells = [3300 + ((i * 7 + k * 3) % 11) for k in range(15)]
    mv = sum(cells)
    return {
        "pack": {"cells_mv": cells, "temps_dc": [250 + i, 240, 241, 242, 243, 244],
                 "current_ma": 300 + 40 * i, "voltage_mv": mv, "remaining_mah": 60000 + 200 * i,
                 "total_mah": 100000, "cycles": 10 + i},
        "alarm": {"cell_flags": [0] * 15, "temp_flags": [0] * 6, "status": [0, 0, 0, 0, 0]},
        "mgmt": {"chg_v_mv": 53200, "dsg_v_mv": 45000, "chg_limit_ma": 50000,
                 "dsg_limit_ma": 50000, "mgmt_flags": 0xC0},
        "mfr": {"model": "US5000", "sw_version": 0x0104, "manufacturer": "PYLON"},
        "serial": {"serial": "BENCH%011d" % i},
        "params": {"cell_hi_mv": 3650, "cell_lo_mv": 3000, "cell_uv_mv": 2800, "chg_ma": 50000,
                   "mod_hi_mv": 54000, "mod_lo_mv": 45000, "mod_uv_mv": 42000, "dsg_ma": 50000},
    }


def build_frames(n, alarm_slot=-1):
    """{addr << 8 | cmd: reply bytes} for n modules at addresses 2..n+1 (Pylontech RS485);
    key UNSUPPORTED: the error reply used for group queries.  Integer keys: looking one
    up allocates nothing (a tuple key would)."""
    import bmsproto
    out = {}
    for i in range(n):
        a = 2 + i
        d = module_data(i)
        if i == alarm_slot:
            d["alarm"]["status"] = [0x04, 0, 0, 0, 0]     # a protection bit
        out[a << 8 | 0x42] = bmsproto.response("pylontech", 0x42, a, d["pack"])
        out[a << 8 | 0x44] = bmsproto.response("pylontech", 0x44, a, d["alarm"])
        out[a << 8 | 0x92] = bmsproto.response("pylontech", 0x92, a, d["mgmt"])
        out[a << 8 | 0x4F] = bmsproto.response("pylontech", 0x4F, a)
        out[a << 8 | 0x51] = bmsproto.response("pylontech", 0x51, a, d["mfr"])
        out[a << 8 | 0x93] = bmsproto.response("pylontech", 0x93, a, d["serial"])
        out[a << 8 | 0x47] = bmsproto.response("pylontech", 0x47, a, d["params"])
    out[UNSUPPORTED] = bmsproto.error_response("pylontech", 2, 0x04)
    return out


UNSUPPORTED = -1


@micropython.viper
def _copy(dst: ptr8, src: ptr8, off: int, k: int):
    # dst[0:k] = src[off:off+k] at C speed, allocating nothing: a real UART's readinto()
    # is C code, so the bench must not charge the firmware a bytecode copy loop
    i = 0
    while i < k:
        dst[i] = src[off + i]
        i += 1


def _hexval(c):
    return c - 48 if c < 58 else c - 55


class InstantUart:
    """RS485 port whose modules answer instantly: write() selects the reply to the request,
    readinto() hands it over.  Allocates nothing (the firmware's decode path is measured
    with the heap locked through it)."""

    def __init__(self, frames, baud=115200):
        self.frames = frames
        self.baudrate = baud
        self._rx = b""
        self._pos = 0
        self._len = 0
        self.req_chars = 0
        self.rep_chars = 0
        self.transactions = 0

    def write(self, buf):
        n = len(buf)
        adr = (_hexval(buf[3]) << 4) | _hexval(buf[4])
        cmd = (_hexval(buf[7]) << 4) | _hexval(buf[8])
        if n > 14 and buf[13] == 0x46 and buf[14] == 0x46 and (cmd == 0x42 or cmd == 0x44):
            key = UNSUPPORTED                   # group query: "not supported" reply
        else:
            key = adr << 8 | cmd
        rep = self.frames.get(key)
        self.transactions += 1
        self.req_chars += n
        if rep is not None:
            self.rep_chars += len(rep)
            self._rx = rep
            self._pos = 0
            self._len = len(rep)
        return n

    def txdone(self):
        return True

    def any(self):
        return self._len - self._pos

    def readinto(self, buf, nbytes=-1):
        k = self._len - self._pos
        if k <= 0:
            return None
        if k > len(buf):
            k = len(buf)
        _copy(buf, self._rx, self._pos, k)
        self._pos += k
        return k


class ConstSensor:
    def __init__(self, mv):
        self.mv = mv

    def read_mv(self):
        return self.mv


def bench_config(n, mqtt=False, bus="rs485"):
    addrs = list(range(2, 2 + n))
    # dwell and boot hold shortened: they only delay reaching the steady state measured here
    cfg = {
        "bank": {"expected_modules": n, "addresses": addrs, "scan_from": 2, "scan_to": 1 + n},
        "gating": {"dwell_ms": 200},
        "control": {"boot_hold_ms": 500},
        "contactors": {"outputs": ["k%d" % i for i in range(n)]},
        "inverter": {"enabled": False},
        "mqtt": {"enabled": mqtt},
    }
    if bus == "can":
        cfg["bank"].update({"family": "pylontech-can", "bus": "can", "baud": 500000})
    from bankgate import config as bgconfig
    return bgconfig.validate(cfg)


_CACHE = {}


def gateway(n, frames=None):
    """make_gateway() for n modules without MQTT, built once and shared by the sections."""
    g = _CACHE.get(n)
    if g is None:
        g = make_gateway(n, frames or build_frames(n))
        _CACHE.clear()
        _CACHE[n] = g
    return g


def make_gateway(n, frames, net=None, cfg=None, fs=None):
    """A Gateway on fake hardware with the instant UART; warmed up until every module is
    admitted (discovery, identity, boot hold and dwell done).  Returns (gw, clock, uart).
    cfg: an already validated bench_config() (default: validated here).  fs: the device
    filesystem (hw.fs; e.g. simfs.SimFS()): as on the device, the latched faults and the
    energy counters then persist (bankgate.latchstore, bankgate.energy are loaded)."""
    clock = SimClock()
    hw = FakeHardware(clock, outputs=["k%d" % i for i in range(n)])
    if fs is not None:
        hw.fs = fs
    uart = InstantUart(frames)
    hw.uart = uart
    pack_mv = sum(module_data(0)["pack"]["cells_mv"])
    hw.link_sensor = ConstSensor(pack_mv)
    cfg = cfg if cfg is not None else bench_config(n, net is not None)
    from bankgate.firmware import build_gateway
    gw = build_gateway(hw, cfg, net)     # as the device builds it
    for _ in range(40000):
        gw.step()
        clock.advance_us(1000)
        if gw.admission.admitted_mask == (1 << n) - 1 and gw.poller.sweep_count > 2:
            break
    return gw, clock, uart


