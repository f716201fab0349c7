# Register-level model of the ESP32 / ESP32-S3 TWAI controller (SJA1000-compatible,
# PeliCAN layout) behind a machine.mem32-like object, attached to a
# fakecan.FakeCanBus.  Tests bankgate.hal.twai_regs.TwaiRegs.
#
#   tw = FakeTwai(bus, chip="esp32", tx=21, rx=22)   # the transceiver's wiring
#   drv = TwaiRegs(tw, "esp32", tx=21, rx=22)         # tw is the mem32 object
#
# Modelled (ESP32 TRM "Two-wire Automotive Interface", SJA1000 rules):
#   - peripheral clock gate and reset (DPORT / SYSTEM register bit 19): registers
#     read 0 and ignore writes while the clock is off; a reset pulse restores the
#     defaults (reset mode, EWL 96, counters 0, FIFO empty)
#   - GPIO-matrix routing: the controller reaches the wire only when TWAI_TX is
#     routed to the TX pin and the RX pin to TWAI_RX (GPIO_FUNCx_OUT_SEL_CFG /
#     GPIO_FUNCy_IN_SEL_CFG)
#   - reset / operating mode: BTR0/1, ACR/AMR, CDR, EWL, LOM/STM/AFM writable only
#     in reset mode; the ESP32 needs CDR.CM (extended layout) set
#   - bus timing: the bit rate BTR0/BTR1 give must equal the bus's, else the node
#     sees nothing and sends nothing
#   - one TX buffer (TBS/TCS, TR, AT, SRR with self reception), automatic
#     retransmission after an error
#   - a 64-byte RX FIFO (3 + dlc bytes per standard frame, 5 + dlc extended), the
#     RX window at DATA_0.., RMC, RRB; a frame that does not fit sets DOS (data
#     overrun) and is lost; CDO clears it
#   - acceptance filter in single-filter mode (standard frames)
#   - TEC/REC through fakecan._CanNode, ES at the error warning limit, error
#     passive from the counters, bus-off: the controller enters reset mode by
#     itself, TEC = 127; clearing reset mode starts recovery, which ends after
#     128 x 11 recessive bits (TEC = REC = 0, error active, operating mode)
#   - listen-only (no ACK, no TX), self-test (own ACK), the interrupt register
#     (read clears)
# Not modelled: dual filter mode, arbitration-lost / error-code capture, CLKOUT,
# the ESP32 errata.
from fakecan import _CanNode
from bankgate.hal.twai_regs import CHIPS

_RM, _LOM, _STM, _AFM = 0x01, 0x02, 0x04, 0x08
_TR, _AT, _RRB, _CDO, _SRR = 0x01, 0x02, 0x04, 0x08, 0x10
_FIFO = 64

# register index = offset // 4
I_MODE, I_CMD, I_STATUS, I_INT, I_INT_ENA = 0, 1, 2, 3, 4
I_BTR0, I_BTR1 = 6, 7
I_EWL, I_REC, I_TEC = 13, 14, 15
I_DATA0 = 16
I_RMC = 29
I_CDR = 31


class FakeTwai(_CanNode):
    def __init__(self, bus=None, chip="esp32", tx=21, rx=22):
        c = CHIPS[chip]
        self.chip = chip
        self.c = c
        self.tx = tx
        self.rx = rx
        self.other = {}                 # DPORT/SYSTEM and GPIO registers
        self.writes = {}                # every non-TWAI address written (last value)
        base = c["twai"]
        self._ti = {}
        for i in range(32):
            self._ti[base + 4 * i] = i
        self._clk = c["clk_reg"]
        self._rst = c["rst_reg"]
        self._bit = c["clk_bit"]
        self._brp_mask = c["brp_max"]
        self._a_out = c["gpio"] + c["out_sel"] + 4 * tx
        self._a_in = c["gpio"] + c["in_sel"] + 4 * c["rx_sig"]
        self._tx_sig = c["tx_sig"]
        self.regs = [0] * 32
        self.acr = bytearray(8)         # ACR0-3, AMR0-3
        self.txb = bytearray(13)
        self.fifo = bytearray(_FIFO)
        self._head = 0
        self._used = 0
        self.count = 0                  # frames in the FIFO
        self.overruns = 0               # frames lost to a full FIFO
        self.hw_resets = 0
        self.reads = 0
        self.writes_n = 0
        self._tx_t = 0
        self._node_init(bus)
        self._reset()

    # ---------------------------------------------------------------- state
    def _reset(self):
        r = self.regs
        for i in range(32):
            r[i] = 0
        r[I_MODE] = _RM
        r[I_EWL] = 96
        for i in range(8):
            self.acr[i] = 0
        self._head = 0
        self._used = 0
        self.count = 0
        self.dos = False
        self.tx_pending = False
        self.self_rx = False
        self.tcs = True
        self.ints = 0
        self.tec_n = 0
        self.rec_n = 0
        self.bus_off = False
        self.auto_recover = False
        self.hw_resets += 1

    def clock_on(self):
        return bool(self.other.get(self._clk, 0) & self._bit) and \
            not (self.other.get(self._rst, 0) & self._bit)

    def in_reset_mode(self):
        return bool(self.regs[I_MODE] & _RM)

    def bitrate(self):
        """(bit/s, exact) from BTR0/BTR1 at the 80 MHz APB clock."""
        brp = self.regs[I_BTR0] & self._brp_mask
        b1 = self.regs[I_BTR1]
        ntq = 1 + (b1 & 0x0F) + 1 + ((b1 >> 4) & 0x07) + 1
        div = 2 * (brp + 1) * ntq
        return 80000000 // div, 80000000 % div == 0

    def routed(self):
        # addresses precomputed: the ESP32-S3's are heap ints on a 32-bit port
        o = self.other.get(self._a_out, 0)
        i = self.other.get(self._a_in, 0)
        return (o & 0x1FF) == self._tx_sig and (i & 0xFF) == (self.rx | 0x80)

    def _layout_ok(self):
        return self.c["cdr"] == 0 or bool(self.regs[I_CDR] & 0x80)

    def _rate_ok(self):
        # inline (no tuple): runs inside the bus update under heap_lock
        if self.bus is None:
            return True
        brp = self.regs[I_BTR0] & self._brp_mask
        b1 = self.regs[I_BTR1]
        div = 2 * (brp + 1) * (3 + (b1 & 0x0F) + ((b1 >> 4) & 0x07))
        return 80000000 % div == 0 and 80000000 // div == self.bus.bitrate

    def _active(self):
        return (self.clock_on() and not self.regs[I_MODE] & _RM and self._layout_ok()
                and self.routed() and self._rate_ok())

    # ---------------------------------------------------------------- FIFO
    def _receive(self, cid, dlc, data, ext=False, rtr=False):
        size = (5 if ext else 3) + dlc
        if self._used + size > _FIFO:
            self.dos = True
            self.overruns += 1
            self.ints |= 0x08                          # DOI
            return
        f = self.fifo
        p = (self._head + self._used) % _FIFO
        info = dlc | (0x80 if ext else 0) | (0x40 if rtr else 0)
        f[p] = info
        if ext:
            v = cid << 3
            for k in range(4):
                f[(p + 1 + k) % _FIFO] = (v >> (24 - 8 * k)) & 0xFF
            off = 5
        else:
            f[(p + 1) % _FIFO] = (cid >> 3) & 0xFF
            f[(p + 2) % _FIFO] = (cid & 7) << 5
            off = 3
        for k in range(dlc):
            f[(p + off + k) % _FIFO] = data[k] if not rtr else 0
        self._used += size
        self.count += 1
        self.ints |= 0x01                              # RI

    def _release(self):
        if self.count == 0:
            return
        info = self.fifo[self._head]
        size = (5 if info & 0x80 else 3) + (info & 0x0F if (info & 0x0F) <= 8 else 8)
        self._head = (self._head + size) % _FIFO
        self._used -= size
        self.count -= 1

    def inject_rx(self, cid, data, ext=False, rtr=False):
        """Host helper: a frame arrives from the wire (no bus needed).  Goes through
        the acceptance filter only for standard frames."""
        buf = bytearray(8)
        for k in range(len(data)):
            buf[k] = data[k]
        if not ext and not self._accept(cid):
            return
        self._receive(cid, len(data), buf, ext, rtr)

    def _accept(self, cid):
        a = self.acr
        if not self.regs[I_MODE] & _AFM:
            return a[4] == a[5] == a[6] == a[7] == 0xFF    # dual filter: only "open"
        b0 = (cid >> 3) & 0xFF
        b1 = (cid & 7) << 5
        return ((b0 ^ a[0]) & ~a[4] & 0xFF) == 0 and ((b1 ^ a[1]) & ~a[5] & 0xE0) == 0

    # ---------------------------------------------------------------- node side
    def cn_can_tx(self):
        return self._active() and not self.regs[I_MODE] & _LOM

    def cn_can_ack(self):
        return self._active() and not self.regs[I_MODE] & _LOM

    def cn_can_rx(self):
        return self._active()

    def cn_self_ack(self):
        return bool(self.regs[I_MODE] & _STM)

    def cn_earliest(self):
        return self._tx_t if self.tx_pending else -1

    def _tx_id(self):
        return (self.txb[1] << 3) | (self.txb[2] >> 5)

    def cn_select(self, t0):
        if self.tx_pending and self._tx_t <= t0:
            return self._tx_id()
        return -1

    def cn_frame(self, dst):
        d = self.txb[0] & 0x0F
        if d > 8:
            d = 8
        for k in range(d):
            dst[k] = self.txb[3 + k]
        return d

    def cn_tx_ok(self):
        self.cn_tx_ok_counters()
        self.tx_pending = False
        self.tcs = True
        self.ints |= 0x02                              # TI
        if self.self_rx:
            self._loop_back()

    def _loop_back(self):
        d = self.txb[0] & 0x0F
        if d > 8:
            d = 8
        self._receive(self._tx_id(), d, memoryview(self.txb)[3:])

    def cn_tx_err(self, ack):
        _CanNode.cn_tx_err(self, ack)
        self.ints |= 0x80                              # BEI

    def cn_on_bus_off(self):
        # [TRM] bus-off: reset mode set by the controller, TEC = 127, REC = 0; the
        # pending transmission is dropped
        self.regs[I_MODE] |= _RM
        self.tec_n = 127
        self.rec_n = 0
        self.tx_pending = False
        self.auto_recover = False
        self.ints |= 0x04                              # EI

    def cn_recover(self):
        _CanNode.cn_recover(self)
        self.auto_recover = False
        self.ints |= 0x04

    def cn_rx_ok(self, cid, dlc, data):
        self.cn_rx_ok_counters()
        if self._accept(cid):
            self._receive(cid, dlc, data)

    def cn_rx_err(self):
        _CanNode.cn_rx_err(self)
        self.ints |= 0x80

    # ---------------------------------------------------------------- mem32
    def _now(self):
        return self.bus.now_us() if self.bus is not None else 0

    def __getitem__(self, addr):
        self.reads += 1
        i = self._ti.get(addr, -1)
        if i < 0:
            return self.other.get(addr, 0)
        if not self.clock_on():
            return 0
        if self.bus is not None:
            self.bus.update()
        return self._read(i)

    def __setitem__(self, addr, v):
        self.writes_n += 1
        i = self._ti.get(addr, -1)
        if i < 0:
            v &= 0xFFFFFFFF
            self.other[addr] = v
            self.writes[addr] = v
            if addr == self._rst and v & self._bit:
                self._reset()
            return
        if not self.clock_on():
            return
        if self.bus is not None:
            self.bus.update()
        self._write(i, v & 0xFFFF)               # TWAI registers are <= 16 bits wide
        if self.bus is not None:
            self.bus.update()

    def _status(self):
        s = 0
        if self.count:
            s |= 0x01
        if self.dos:
            s |= 0x02
        if not self.tx_pending:
            s |= 0x04
        if self.tcs:
            s |= 0x08
        if self.tec_n >= self.regs[I_EWL] or self.rec_n >= self.regs[I_EWL]:
            s |= 0x40
        if self.bus_off:
            s |= 0x80
        return s

    def _read(self, i):
        r = self.regs
        if i == I_STATUS:
            return self._status()
        if i == I_CMD:
            return 0
        if i == I_INT:
            v = self.ints
            self.ints = 0
            return v
        if i == I_TEC:
            return self.tec_n if self.tec_n < 256 else 255
        if i == I_REC:
            return self.rec_n if self.rec_n < 256 else 255
        if i == I_RMC:
            return self.count
        if I_DATA0 <= i <= I_DATA0 + 12:
            k = i - I_DATA0
            if r[I_MODE] & _RM:
                return self.acr[k] if k < 8 else 0
            if self.count == 0:
                return 0
            return self.fifo[(self._head + k) % _FIFO]
        return r[i]

    def _write(self, i, v):
        r = self.regs
        rm = r[I_MODE] & _RM
        if i == I_MODE:
            if rm:
                r[I_MODE] = v & 0x0F
            else:
                r[I_MODE] = (r[I_MODE] & 0x0E) | (v & _RM)
            if not rm and v & _RM:
                self.tx_pending = False            # entering reset mode aborts TX
            if rm and not v & _RM and self.bus_off and not self.auto_recover:
                # [TRM] clearing reset mode in bus-off starts the recovery:
                # 128 occurrences of 11 consecutive recessive bits
                self.auto_recover = True
                self.t_recover = self._now() + (128 * 11 * self.bus.bit_ns // 1000
                                                if self.bus is not None else 0)
                if self.bus is None:
                    self.cn_recover()
            return
        if i == I_CMD:
            if rm:
                return
            if v & _CDO:
                self.dos = False
            if v & _RRB:
                self._release()
            if v & _AT and self.tx_pending:
                self.tx_pending = False
                self.tcs = False
            if v & (_TR | _SRR) and not self.tx_pending:
                self.tx_pending = True
                self.tcs = False
                self.self_rx = bool(v & _SRR)
                self._tx_t = self._now()
                if self.bus is None and self.self_rx and r[I_MODE] & _STM and self.clock_on() \
                        and self.routed() and self._layout_ok():
                    self.tx_pending = False
                    self.tcs = True
                    self._loop_back()
            return
        if i == I_BTR0 or i == I_BTR1 or i == I_CDR or i == I_EWL:
            if rm:
                r[i] = v & (0xFFFF if i == I_BTR0 else 0xFF)
            return
        if i == I_TEC or i == I_REC:
            if rm:
                if i == I_TEC:
                    self.tec_n = v & 0xFF
                else:
                    self.rec_n = v & 0xFF
            return
        if I_DATA0 <= i <= I_DATA0 + 12:
            k = i - I_DATA0
            if rm:
                if k < 8:
                    self.acr[k] = v & 0xFF
            elif not self.tx_pending:
                self.txb[k] = v & 0xFF
            return
        if i == I_INT_ENA:
            r[i] = v & 0xFF
            return
        # STATUS, INT, RMC and the reserved words are read-only
