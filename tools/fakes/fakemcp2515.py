# Fake MCP2515 (SPI register model) attached to a fakecan.FakeCanBus.
from fakecan import _CanNode


# ---------------------------------------------------------------------- MCP2515
# register addresses (datasheet DS20001801)
R_CANSTAT = 0x0E
R_CANCTRL = 0x0F
R_TEC = 0x1C
R_REC = 0x1D
R_CNF3 = 0x28
R_CNF2 = 0x29
R_CNF1 = 0x2A
R_CANINTE = 0x2B
R_CANINTF = 0x2C
R_EFLG = 0x2D
R_TXB0CTRL = 0x30
R_RXB0CTRL = 0x60
R_RXB1CTRL = 0x70

_OP_NORMAL, _OP_SLEEP, _OP_LOOPBACK, _OP_LISTEN, _OP_CONFIG = 0, 1, 2, 3, 4


class _FakeSpi:
    """machine.SPI-like: write, read, readinto, write_readinto.  Bytes reach the
    MCP2515 only while its CS is low."""

    def __init__(self, chip):
        self.chip = chip
        self.bytes = 0

    # (chip._xfer is called directly each time: a bound method kept in a local
    # would be allocated, and these run inside mptest.no_alloc)
    def write(self, buf):
        chip = self.chip
        for i in range(len(buf)):
            chip._xfer(buf[i])
        self.bytes += len(buf)

    def readinto(self, buf, write=0):
        chip = self.chip
        for i in range(len(buf)):
            buf[i] = chip._xfer(write)
        self.bytes += len(buf)

    def read(self, n, write=0):
        buf = bytearray(n)
        self.readinto(buf, write)
        return bytes(buf)

    def write_readinto(self, wbuf, rbuf):
        chip = self.chip
        for i in range(len(wbuf)):
            rbuf[i] = chip._xfer(wbuf[i])
        self.bytes += len(wbuf)


class _FakeCs:
    def __init__(self, chip):
        self.chip = chip
        self._v = 1

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            if v:
                self.chip._cs_high()
            else:
                self.chip._cs_low()
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class _FakeInt:
    """The MCP2515 INT output: low while any enabled interrupt flag is set."""

    def __init__(self, chip):
        self.chip = chip

    def value(self, v=None):
        c = self.chip
        if c.bus is not None:
            c.bus.update()
        return 0 if (c.regs[R_CANINTE] & c.regs[R_CANINTF]) else 1


class FakeMcp2515(_CanNode):
    """MCP2515 register model: RESET, READ, WRITE, BIT MODIFY, READ STATUS, RX STATUS,
    READ RX BUFFER, LOAD TX BUFFER, RTS; CANCTRL/CANSTAT modes, CNF1-3 (the bit rate
    they give must equal the bus bit rate, else the chip sees only errors), three TX
    buffers (priority TXP, then highest buffer number), two RX buffers with rollover
    (BUKT) and overflow flags, CANINTF/CANINTE and the INT pin, EFLG/TEC/REC.  Not
    modelled: acceptance filters (every standard frame is accepted), extended IDs,
    remote frames, sleep/wake, CLKOUT, RXnBF/TXnRTS pins."""

    def __init__(self, bus=None, crystal_hz=8000000):
        self.crystal_hz = crystal_hz
        self.regs = bytearray(128)
        self.spi = _FakeSpi(self)
        self.cs = _FakeCs(self)
        self.int_pin = _FakeInt(self)
        self._tx_t = [0, 0, 0]
        self._sel = -1
        self._cmd = -1
        self._ph = 0
        self._addr = 0
        self._mask = 0
        self._rxread = -1
        self._rts_pending = False
        self._lbuf = bytearray(8)
        self.resets = 0
        self.instructions = 0
        self._node_init(bus)
        self.auto_recover = True
        self._reset()

    # -- chip state
    def _reset(self):
        r = self.regs
        for i in range(128):
            r[i] = 0
        r[R_CANCTRL] = 0x87
        r[R_CANSTAT] = 0x80
        self.tec_n = 0
        self.rec_n = 0
        self.bus_off = False
        if self.hold_bus_off:               # host-held fault (force_bus_off(hold=True)):
            self.tec_n = 256                # the re-initialised chip fails again at once
            self.bus_off = True
            self.bus_off_count += 1
        self.resets += 1

    def opmode(self):
        return self.regs[R_CANSTAT] >> 5

    def bitrate(self):
        r = self.regs
        brp = r[R_CNF1] & 0x3F
        prseg = (r[R_CNF2] & 0x07) + 1
        ps1 = ((r[R_CNF2] >> 3) & 0x07) + 1
        if r[R_CNF2] & 0x80:
            ps2 = (r[R_CNF3] & 0x07) + 1
        else:
            ps2 = ps1 if ps1 > 2 else 2
        ntq = 1 + prseg + ps1 + ps2
        return self.crystal_hz // (2 * (brp + 1) * ntq), self.crystal_hz % (2 * (brp + 1) * ntq) == 0

    def _rate_ok(self):
        if self.bus is None:
            return True
        r = self.regs                     # as bitrate(), without its tuple (allocation-free)
        brp = r[R_CNF1] & 0x3F
        ps1 = ((r[R_CNF2] >> 3) & 0x07) + 1
        ps2 = ((r[R_CNF3] & 0x07) + 1) if r[R_CNF2] & 0x80 else (ps1 if ps1 > 2 else 2)
        div = 2 * (brp + 1) * (1 + (r[R_CNF2] & 0x07) + 1 + ps1 + ps2)
        return self.crystal_hz % div == 0 and self.crystal_hz // div == self.bus.bitrate

    def _sync_errors(self):
        r = self.regs
        tec = self.tec_n
        rec = self.rec_n
        r[R_TEC] = tec if tec < 256 else 255
        r[R_REC] = rec if rec < 256 else 255
        e = r[R_EFLG] & 0xC0
        if self.bus_off:
            e |= 0x20
        if tec >= 128:
            e |= 0x10
        if rec >= 128:
            e |= 0x08
        if tec >= 96:
            e |= 0x04
        if rec >= 96:
            e |= 0x02
        if tec >= 96 or rec >= 96:
            e |= 0x01
        if (e & 0x3F) != (r[R_EFLG] & 0x3F):
            r[R_CANINTF] |= 0x20            # ERRIF on an error-state change
        r[R_EFLG] = e

    # -- node side
    def cn_can_tx(self):
        return self.opmode() == _OP_NORMAL and self._rate_ok()

    def cn_can_ack(self):
        return self.opmode() == _OP_NORMAL and self._rate_ok()

    def cn_can_rx(self):
        m = self.opmode()
        return (m == _OP_NORMAL or m == _OP_LISTEN) and self._rate_ok()

    def cn_self_ack(self):
        return False

    def cn_earliest(self):
        t0 = -1
        for b in range(3):
            if self.regs[R_TXB0CTRL + 16 * b] & 0x08:
                t = self._tx_t[b]
                if t0 < 0 or t < t0:
                    t0 = t
        return t0

    def cn_select(self, t0):
        best = -1
        bp = -1
        for b in range(3):
            ctrl = self.regs[R_TXB0CTRL + 16 * b]
            if ctrl & 0x08 and self._tx_t[b] <= t0:
                p = ctrl & 0x03
                if p >= bp:             # equal priority: the higher buffer number wins
                    bp = p
                    best = b
        self._sel = best
        if best < 0:
            return -1
        o = R_TXB0CTRL + 16 * best
        return (self.regs[o + 1] << 3) | (self.regs[o + 2] >> 5)

    def cn_frame(self, dst):
        o = R_TXB0CTRL + 16 * self._sel
        d = self.regs[o + 5] & 0x0F
        if d > 8:
            d = 8
        for k in range(d):
            dst[k] = self.regs[o + 6 + k]
        return d

    def cn_tx_ok(self):
        self.cn_tx_ok_counters()
        b = self._sel
        o = R_TXB0CTRL + 16 * b
        self.regs[o] &= ~0x18 & 0xFF                  # TXREQ, TXERR clear
        self.regs[R_CANINTF] |= 0x04 << b            # TXnIF
        self._sync_errors()

    def cn_tx_err(self, ack):
        _CanNode.cn_tx_err(self, ack)
        b = self._sel
        o = R_TXB0CTRL + 16 * b
        self.regs[o] |= 0x10                          # TXERR
        self.regs[R_CANINTF] |= 0x80                  # MERRF
        if self.regs[R_CANCTRL] & 0x08:               # one-shot mode
            self.regs[o] &= ~0x08 & 0xFF
        self._sync_errors()

    def cn_on_bus_off(self):
        pass

    def cn_recover(self):
        _CanNode.cn_recover(self)
        self._sync_errors()

    def force_bus_off(self, hold=False):
        _CanNode.force_bus_off(self, hold)
        self._sync_errors()

    def cn_rx_err(self):
        _CanNode.cn_rx_err(self)
        self.regs[R_CANINTF] |= 0x80
        self._sync_errors()

    def cn_rx_ok(self, cid, dlc, data):
        self.cn_rx_ok_counters()
        self._receive(cid, dlc, data)
        self._sync_errors()

    def _receive(self, cid, dlc, data):
        r = self.regs
        f = r[R_CANINTF]
        if not f & 0x01:
            base = 0x61
            r[R_CANINTF] = f | 0x01
        elif r[R_RXB0CTRL] & 0x04 and not f & 0x02:
            base = 0x71
            r[R_CANINTF] = f | 0x02
        else:
            # RXB0 full without rollover: RX0OVR; both full: RX1OVR
            r[R_EFLG] |= 0x80 if (r[R_RXB0CTRL] & 0x04) else 0x40
            r[R_CANINTF] |= 0x20
            return
        r[base] = (cid >> 3) & 0xFF
        r[base + 1] = (cid & 7) << 5
        r[base + 2] = 0
        r[base + 3] = 0
        r[base + 4] = dlc
        for k in range(8):
            r[base + 5 + k] = data[k] if k < dlc else 0

    def inject_rx(self, cid, data):
        """Host helper: a frame arrives as if from the bus (no bus needed)."""
        buf = bytearray(8)
        for k in range(len(data)):
            buf[k] = data[k]
        self._receive(cid, len(data), buf)

    # -- register access with the datasheet's write rules
    def _read(self, a):
        a &= 0x7F
        lo = a & 0x0F
        if lo == 0x0E:
            return self.regs[R_CANSTAT]
        if lo == 0x0F:
            return self.regs[R_CANCTRL]
        return self.regs[a]

    def _write(self, a, v):
        a &= 0x7F
        r = self.regs
        lo = a & 0x0F
        if lo == 0x0F:
            r[R_CANCTRL] = v
            req = v >> 5
            if req <= 4:
                r[R_CANSTAT] = (r[R_CANSTAT] & 0x1F) | (req << 5)
            if v & 0x10:                              # ABAT: abort all pending
                for b in range(3):
                    o = R_TXB0CTRL + 16 * b
                    if r[o] & 0x08:
                        r[o] = (r[o] & ~0x08 & 0xFF) | 0x40
            self._rts_pending = True
            return
        if lo == 0x0E or a == R_TEC or a == R_REC:
            return                                    # read-only
        if a == R_CNF1 or a == R_CNF2 or a == R_CNF3:
            if self.opmode() == _OP_CONFIG:
                r[a] = v
            return
        if a == R_EFLG:
            r[a] = (r[a] & 0x3F) | (r[a] & v & 0xC0)  # only RXnOVR clearable, to 0
            return
        if a == 0x30 or a == 0x40 or a == 0x50:               # TXBnCTRL
            old = r[a]
            r[a] = (old & 0x70) | (v & 0x0B)
            if v & 0x08 and not old & 0x08:
                self._tx_t[(a - R_TXB0CTRL) >> 4] = self.clock_us()
                self._rts_pending = True
            return
        if a == R_RXB0CTRL:
            r[a] = (r[a] & 0x0B) | (v & 0x64)
            return
        if a == R_RXB1CTRL:
            r[a] = (r[a] & 0x0F) | (v & 0x60)
            return
        if 0x61 <= a <= 0x6D or 0x71 <= a <= 0x7D:
            return                                    # receive buffers: read-only
        r[a] = v

    def clock_us(self):
        return self.bus.now_us() if self.bus is not None else 0

    def _status(self):
        r = self.regs
        f = r[R_CANINTF]
        s = f & 0x03
        if f & 0x04:
            s |= 0x08
        if f & 0x08:
            s |= 0x20
        if f & 0x10:
            s |= 0x80
        if r[0x30] & 0x08:
            s |= 0x04
        if r[0x40] & 0x08:
            s |= 0x10
        if r[0x50] & 0x08:
            s |= 0x40
        return s

    def _rx_status(self):
        f = self.regs[R_CANINTF]
        s = (f & 0x03) << 6
        return s                                      # standard data frames, filter 0

    # -- SPI byte engine
    def _cs_low(self):
        if self.bus is not None:
            self.bus.update()
        self._ph = 0
        self._cmd = -1
        self._rxread = -1

    def _cs_high(self):
        if self._rxread >= 0:
            self.regs[R_CANINTF] &= ~(1 << self._rxread) & 0xFF
        self._rxread = -1
        self._cmd = -1
        if self._rts_pending:
            self._rts_pending = False
            if self.opmode() == _OP_LOOPBACK:
                self._loopback()
        if self.bus is not None:
            self.bus.update()

    def _loopback(self):
        buf = self._lbuf
        for b in (2, 1, 0):
            o = R_TXB0CTRL + 16 * b
            if self.regs[o] & 0x08:
                self._sel = b
                cid = (self.regs[o + 1] << 3) | (self.regs[o + 2] >> 5)
                d = self.cn_frame(buf)
                self.regs[o] &= ~0x18 & 0xFF
                self.regs[R_CANINTF] |= 0x04 << b
                self._receive(cid, d, buf)

    def _xfer(self, b):
        if self.cs._v:
            return 0xFF                               # not selected: MISO high-Z
        ph = self._ph
        self._ph = ph + 1
        if ph == 0:
            self.instructions += 1
            self._cmd = b
            if b == 0xC0:
                self._reset()
            elif b & 0xF8 == 0x80 and b != 0x80:       # RTS
                for k in range(3):
                    if b & (1 << k):
                        o = R_TXB0CTRL + 16 * k
                        if not self.regs[o] & 0x08:
                            self.regs[o] |= 0x08
                            self._tx_t[k] = self.clock_us()
                self._rts_pending = True
            elif b & 0xF9 == 0x90:                     # READ RX BUFFER
                n = (b >> 1) & 3
                self._addr = (0x61, 0x66, 0x71, 0x76)[n]
                self._rxread = n >> 1
            elif b & 0xF8 == 0x40:                     # LOAD TX BUFFER
                abc = b & 7
                if abc <= 5:
                    self._addr = (0x31, 0x36, 0x41, 0x46, 0x51, 0x56)[abc]
                else:
                    self._cmd = -1
            return 0xFF
        cmd = self._cmd
        if cmd == 0x03:                                # READ
            if ph == 1:
                self._addr = b & 0x7F
                return 0xFF
            v = self._read(self._addr)
            self._addr = (self._addr + 1) & 0x7F
            return v
        if cmd == 0x02:                                # WRITE
            if ph == 1:
                self._addr = b & 0x7F
            else:
                self._write(self._addr, b)
                self._addr = (self._addr + 1) & 0x7F
            return 0xFF
        if cmd == 0x05:                                # BIT MODIFY
            if ph == 1:
                self._addr = b & 0x7F
            elif ph == 2:
                self._mask = b
            elif ph == 3:
                old = self._read(self._addr)
                self._write(self._addr, (old & ~self._mask & 0xFF) | (b & self._mask))
            return 0xFF
        if cmd == 0xA0:
            return self._status()
        if cmd == 0xB0:
            return self._rx_status()
        if cmd & 0xF9 == 0x90:
            v = self.regs[self._addr]
            self._addr = (self._addr + 1) & 0x7F
            return v
        if cmd & 0xF8 == 0x40 and cmd >= 0:
            a = self._addr
            if (a & 0x0F) <= 0x0D:
                self.regs[a] = b
            self._addr = a + 1
            return 0xFF
        return 0xFF
