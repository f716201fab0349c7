# Fake CAN bus and controllers (see fakebus.py for the overview, docs/bus.md for
# the rules).  Lazy: the bus computes what happened up to clock.now_us whenever a
# node is accessed, so sending and receiving never schedule events and never
# allocate (FakeCan.send/recv are safe inside mptest.no_alloc).
try:
    import micropython       # @micropython.native: hot paths compiled to machine code
except ImportError:          # CPython: the decorator does nothing
    class micropython:
        @staticmethod
        def native(f):
            return f
from bankgate.bus import can as _can
from fakebus import ElectricalModel, Prng


# ---------------------------------------------------------------------- CAN
class _CanNode:
    """Fault confinement shared by the fake CAN controllers (ISO 11898-1, simplified:
    TEC +8 per transmit error, -1 per frame sent; an error-passive transmitter's ACK
    error leaves TEC unchanged; REC +1 per receive error, -1 per frame received,
    back to 120 when above 127; bus-off at TEC > 255)."""

    def _node_init(self, bus):
        self.bus = bus
        self.tec_n = 0
        self.rec_n = 0
        self.bus_off = False
        self.t_recover = 0          # auto-recovery time (us) when auto_recover / recovering
        self.auto_recover = False
        self.recovering = False     # restart() called: rejoin at t_recover
        self.hold_bus_off = False   # host: a persistent fault (shorted transceiver, ...):
                                    # every recovery ends in bus-off again at once
        self.restarts = 0
        self.bus_off_count = 0
        self.tx_errors = 0
        self.rx_errors = 0
        self.cn_win = False
        if bus is not None:
            bus.attach(self)

    def cn_state(self):
        if self.bus_off:
            return _can.BUS_OFF
        return _can.state_from_counters(self.tec_n, self.rec_n)

    def cn_tx_err(self, ack):
        self.tx_errors += 1
        if ack and self.cn_state() == _can.ERROR_PASSIVE:
            return
        self.tec_n += 8
        if self.tec_n >= _can.BUS_OFF_LIMIT:
            self.tec_n = _can.BUS_OFF_LIMIT
            self.bus_off = True
            self.bus_off_count += 1
            if self.bus is not None:
                self.t_recover = self.bus.now_us() + 128 * 11 * self.bus.bit_ns // 1000
            self.cn_on_bus_off()

    def cn_tx_ok_counters(self):
        if self.tec_n > 0:
            self.tec_n -= 1

    def cn_rx_err(self):
        self.rx_errors += 1
        if self.rec_n < 255:
            self.rec_n += 1

    def cn_rx_ok_counters(self):
        if self.rec_n > 127:
            self.rec_n = 120
        elif self.rec_n > 0:
            self.rec_n -= 1

    def cn_recover(self):
        self.recovering = False
        if self.hold_bus_off:
            self.bus_off_count += 1
            if self.bus is not None:       # an auto-recovering chip tries again later
                self.t_recover = self.bus.now_us() + 128 * 11 * self.bus.bit_ns // 1000
            return
        self.tec_n = 0
        self.rec_n = 0
        self.bus_off = False

    def force_bus_off(self, hold=False):
        """Host: the controller goes bus-off now (TEC 256); hold=True keeps the fault
        (every recovery fails) until hold_bus_off is cleared."""
        self.tec_n = _can.BUS_OFF_LIMIT
        self.bus_off = True
        self.bus_off_count += 1
        self.hold_bus_off = hold
        if self.bus is not None:
            self.t_recover = self.bus.now_us() + 128 * 11 * self.bus.bit_ns // 1000
        self.cn_on_bus_off()

    def cn_on_bus_off(self):
        pass


class FakeCanBus:
    """CAN bus between attached controllers: arbitration by ID, wire time at the bit
    rate (bankgate.bus.can.frame_bits), ACK, errors from the electrical model,
    injected errors, same-ID collisions.  Evaluated lazily up to clock.now_us."""

    def __init__(self, clock, bitrate=500000, model=None, seed=1):
        self.clock = clock
        self.bitrate = bitrate
        self.bit_ns = 1000000000 // bitrate
        self.model = model if model is not None else ElectricalModel(
            terminators=2, length_m=5, bitrate=bitrate, nodes=2)
        self.err_ppm = [self.model.can_frame_error_ppm(_can.frame_bits(d)) for d in range(9)]
        self.frame_us = [(_can.frame_bits(d) * 1000000 + bitrate - 1) // bitrate for d in range(9)]
        self.rng = Prng(seed)
        self.nodes = []
        self.inject = 0             # the next `inject` frame attempts fail (bit error)
        self._free = 0              # bus idle from this time (us)
        self._busy = False
        self._end = 0
        self._id = 0
        self._dlc = 0
        self._data = bytearray(8)
        self._cmp = bytearray(8)
        self._updating = False
        self.frames_ok = 0
        self.frames_err = 0
        self.ack_errors = 0
        self.collisions = 0
        self.log = None             # set to a list to record (t_us, id, data) of good frames

    def attach(self, node):
        self.nodes.append(node)

    def now_us(self):
        return self.clock.now_us

    def set_error_ppm(self, ppm):
        """Override the model: every frame attempt fails with this probability."""
        for d in range(9):
            self.err_ppm[d] = ppm

    @micropython.native
    def update(self):
        if self._updating:
            return
        self._updating = True
        now = self.clock.now_us
        nodes = self.nodes
        while True:
            for nd in nodes:
                if nd.bus_off and (nd.auto_recover or nd.recovering) and nd.t_recover <= now:
                    nd.cn_recover()
            if self._busy:
                if self._end > now:
                    break
                self._resolve()
                continue
            t0 = -1
            for nd in nodes:
                if nd.bus_off or not nd.cn_can_tx():
                    continue
                t = nd.cn_earliest()
                if t >= 0 and (t0 < 0 or t < t0):
                    t0 = t
            if t0 < 0:
                break
            if t0 < self._free:
                t0 = self._free
            if t0 >= now:
                # not before time has passed: frames queued at this same instant
                # by other nodes still join this arbitration (start time stays t0)
                break
            best = -1
            for nd in nodes:
                nd.cn_win = False
                if nd.bus_off or not nd.cn_can_tx():
                    continue
                i = nd.cn_select(t0)
                if i >= 0 and (best < 0 or i < best):
                    best = i
            if best < 0:
                break
            first = None
            for nd in nodes:
                if (not nd.bus_off) and nd.cn_can_tx() and nd.cn_select(t0) == best:
                    nd.cn_win = True
                    if first is None:
                        first = nd
            self._id = best
            self._dlc = first.cn_frame(self._data)
            self._busy = True
            self._end = t0 + self.frame_us[self._dlc]
        self._updating = False

    @micropython.native
    def _resolve(self):
        self._busy = False
        self._free = self._end
        nodes = self.nodes
        err = False
        ack_err = False
        # same ID from two transmitters: identical frames merge, different ones collide
        for nd in nodes:
            if nd.cn_win:
                d = nd.cn_frame(self._cmp)
                if d != self._dlc:
                    err = True
                else:
                    for k in range(d):
                        if self._cmp[k] != self._data[k]:
                            err = True
        if err:
            self.collisions += 1
        elif self.inject > 0:
            self.inject -= 1
            err = True
        elif self.rng.chance_ppm(self.err_ppm[self._dlc]):
            err = True
        if not err:
            acked = False
            for nd in nodes:
                if nd.cn_win:
                    if nd.cn_self_ack():
                        acked = True
                elif not nd.bus_off and nd.cn_can_ack():
                    acked = True
            if not acked:
                ack_err = True
        if err or ack_err:
            self.frames_err += 1
            if ack_err:
                self.ack_errors += 1
            for nd in nodes:
                if nd.cn_win:
                    nd.cn_win = False
                    nd.cn_tx_err(ack_err)
                elif err and not nd.bus_off and nd.cn_can_rx():
                    nd.cn_rx_err()
            return
        self.frames_ok += 1
        if self.log is not None:
            self.log.append((self._end, self._id, bytes(self._data[:self._dlc])))
        for nd in nodes:
            if nd.cn_win:
                nd.cn_win = False
                nd.cn_tx_ok()
            elif not nd.bus_off and nd.cn_can_rx():
                nd.cn_rx_ok(self._id, self._dlc, self._data)

    def next_event_us(self):
        """End of the frame in flight (or None): for a simulator that wants hw.idle to
        wake on CAN traffic, schedule a clock event there."""
        self.update()
        return self._end if self._busy else None


class FakeCan(_CanNode):
    """A CAN controller with the bankgate.bus.can interface (machine.CAN-like
    behaviour: TX priority queue by ID, RX FIFO, bus-off until restart() unless
    auto_restart).  mode: "normal", "listen" (receives, never ACKs or sends),
    "loopback" (also receives its own frames)."""

    def __init__(self, bus, tx_queue_len=3, rx_queue_len=32, mode="normal",
                 auto_restart=False, name=""):
        self.name = name
        self.mode = mode
        self._q = tx_queue_len
        self._tx_id = [-1] * tx_queue_len
        self._tx_dlc = [0] * tx_queue_len
        self._tx_t = [0] * tx_queue_len
        self._tx_data = bytearray(8 * tx_queue_len)
        self._sel = -1
        self._rq = rx_queue_len
        self._rx_id = [0] * rx_queue_len
        self._rx_dlc = [0] * rx_queue_len
        self._rx_data = bytearray(8 * rx_queue_len)
        self._rx_head = 0
        self._rx_n = 0
        self.rx_overruns = 0
        self.sent = 0
        self.received = 0
        self.rejected = 0
        self._node_init(bus)
        self.auto_recover = auto_restart

    # -- node side
    def cn_can_tx(self):
        return self.mode != "listen"

    def cn_can_ack(self):
        return self.mode == "normal"

    def cn_can_rx(self):
        return True

    def cn_self_ack(self):
        return self.mode == "loopback"

    @micropython.native
    def cn_earliest(self):
        t0 = -1
        for i in range(self._q):
            if self._tx_id[i] >= 0 and (t0 < 0 or self._tx_t[i] < t0):
                t0 = self._tx_t[i]
        return t0

    @micropython.native
    def cn_select(self, t0):
        best = -1
        self._sel = -1
        for i in range(self._q):
            cid = self._tx_id[i]
            if cid >= 0 and self._tx_t[i] <= t0 and (best < 0 or cid < best):
                best = cid
                self._sel = i
        return best

    @micropython.native
    def cn_frame(self, dst):
        i = self._sel
        d = self._tx_dlc[i]
        o = 8 * i
        for k in range(d):
            dst[k] = self._tx_data[o + k]
        return d

    def cn_tx_ok(self):
        self.cn_tx_ok_counters()
        i = self._sel
        if self.mode == "loopback":
            self._store(self._tx_id[i], self._tx_dlc[i], self._tx_data, 8 * i)
        self._tx_id[i] = -1
        self.sent += 1

    def cn_rx_ok(self, cid, dlc, data):
        self.cn_rx_ok_counters()
        self._store(cid, dlc, data, 0)

    def cn_on_bus_off(self):
        pass

    @micropython.native
    def _store(self, cid, dlc, data, off):
        if self._rx_n >= self._rq:
            self.rx_overruns += 1
            return
        j = (self._rx_head + self._rx_n) % self._rq
        self._rx_id[j] = cid
        self._rx_dlc[j] = dlc
        o = 8 * j
        for k in range(dlc):
            self._rx_data[o + k] = data[off + k]
        self._rx_n += 1
        self.received += 1

    # -- the bankgate.bus.can interface
    @micropython.native
    def send(self, can_id, buf, n):
        if self.bus is not None:
            self.bus.update()
        if self.bus_off or self.mode == "listen" or not _can.valid_args(can_id, buf, n):
            self.rejected += 1
            return False
        for i in range(self._q):
            if self._tx_id[i] < 0:
                o = 8 * i
                for k in range(n):
                    self._tx_data[o + k] = buf[k]
                self._tx_dlc[i] = n
                self._tx_t[i] = self.bus.now_us() if self.bus is not None else 0
                self._tx_id[i] = can_id
                return True
        self.rejected += 1
        return False

    @micropython.native
    def recv(self, buf):
        if self.bus is not None:
            self.bus.update()
        if self._rx_n == 0:
            return -1
        j = self._rx_head
        d = self._rx_dlc[j]
        o = 8 * j
        for k in range(d):
            buf[k] = self._rx_data[o + k]
        self._rx_head = (j + 1) % self._rq
        self._rx_n -= 1
        return (self._rx_id[j] << 4) | d

    @micropython.native
    def any(self):
        if self.bus is not None:
            self.bus.update()
        return self._rx_n

    def pending(self):
        """Frames waiting in the TX queue."""
        if self.bus is not None:
            self.bus.update()
        k = 0
        for i in range(self._q):
            if self._tx_id[i] >= 0:
                k += 1
        return k

    def state(self):
        if self.bus is not None:
            self.bus.update()
        return self.cn_state()

    def tec(self):
        if self.bus is not None:
            self.bus.update()
        return self.tec_n

    def rec(self):
        if self.bus is not None:
            self.bus.update()
        return self.rec_n

    def restart(self):
        """machine.CAN.restart(): the TX queue is dropped; a bus-off controller rejoins
        after 128 x 11 recessive bits (ISO 11898-1), one that is not bus-off is
        re-initialised at once (counters 0)."""
        if self.bus is not None:
            self.bus.update()
        self.restarts += 1
        for i in range(self._q):
            self._tx_id[i] = -1
        if self.bus_off and self.bus is not None:
            self.recovering = True
            self.t_recover = self.bus.now_us() + 128 * 11 * self.bus.bit_ns // 1000
            return
        self.cn_recover()


class FakeMachineCan:
    """MicroPython's generic machine.CAN API (docs.micropython.org library/
    machine.CAN) on top of a FakeCan, for testing bankgate.hal.twai without an
    ESP32.  Implements send/recv/get_state/get_counters/restart/set_filters/init as
    that page documents: send() returns the TX buffer index or -1 when full, raises
    OSError when bus-off / stopped; set_filters([]) receives everything and
    set_filters(None) nothing; restart() begins the bus-off recovery (the node
    rejoins after 128 x 11 recessive bits)."""

    STATE_STOPPED = 0
    STATE_ACTIVE = 1
    STATE_WARNING = 2
    STATE_PASSIVE = 3
    STATE_BUS_OFF = 4
    MODE_NORMAL = 0
    MODE_SLEEP = 1
    MODE_LOOPBACK = 2
    MODE_SILENT = 3
    MODE_SILENT_LOOPBACK = 4
    FLAG_RTR = 1
    FLAG_EXT_ID = 2
    FLAG_UNORDERED = 4
    RECV_ERR_FULL = 1
    RECV_ERR_OVERRUN = 2
    TX_QUEUE_LEN = 3
    FILTERS_MAX = 8

    def __init__(self, node, stopped=False):
        self.node = node
        self.stopped = stopped
        self.filters_set = False
        self.rx_enabled = False
        self._full = None           # the caller's full-length data view
        self._views = None
        self._overruns_seen = node.rx_overruns
        self.injected = []          # host helper: (id, flags, data) delivered first

    def init(self, bitrate, mode=0, **kw):
        self.stopped = False

    def deinit(self):
        self.stopped = True

    def set_filters(self, filters):
        self.filters_set = True
        self.rx_enabled = filters is not None

    def send(self, cid, data, flags=0):
        if self.stopped or self.node.state() == _can.BUS_OFF:
            raise OSError(5)
        if flags & (self.FLAG_EXT_ID | self.FLAG_RTR):
            return -1
        n = self.node
        for i in range(n._q):
            if n._tx_id[i] < 0:
                return i if n.send(cid, data, len(data)) else -1
        return -1

    def recv(self, arg=None):
        if self.stopped or not self.rx_enabled:
            return None
        if arg is None:
            arg = [0, memoryview(bytearray(8)), 0, 0]
        full = arg[1]
        if full is not self._full and len(full) == 8:
            self._full = full
            self._views = self._make_views(full)
        if self.injected:
            cid, flags, data = self.injected.pop(0)
            arg[0] = cid
            arg[2] = flags
            arg[3] = 0
            for k in range(len(data)):
                self._full[k] = data[k]
            arg[1] = self._views[len(data)]
            return arg
        r = self.node.recv(self._full)
        if r < 0:
            return None
        arg[0] = r >> 4
        arg[1] = self._views[r & 15]
        arg[2] = 0
        errs = 0
        if self.node.rx_overruns != self._overruns_seen:
            self._overruns_seen = self.node.rx_overruns
            errs = self.RECV_ERR_OVERRUN
        arg[3] = errs
        return arg

    @staticmethod
    def _make_views(full):
        # not a comprehension inside recv(): that would turn `full` into a closure
        # cell allocated on every call
        return [full[:k] for k in range(9)]

    def get_state(self):
        if self.stopped:
            return self.STATE_STOPPED
        s = self.node.state()
        if s == _can.ERROR_ACTIVE:
            return self.STATE_ACTIVE
        if s == _can.ERROR_WARNING:
            return self.STATE_WARNING
        if s == _can.ERROR_PASSIVE:
            return self.STATE_PASSIVE
        return self.STATE_BUS_OFF

    def get_counters(self, lst=None):
        if lst is None:
            lst = [None] * 8
        lst[0] = self.node.tec()
        lst[1] = self.node.rec()
        lst[5] = self.node.pending()
        lst[6] = self.node._rx_n
        lst[7] = self.node.rx_overruns
        return lst

    def restart(self):
        if self.stopped:
            raise OSError(22)       # not initialised
        self.node.restart()
