# MCP2515 stand-alone CAN controller on SPI (works on every ESP32 build), with the
# bankgate.bus.can interface.  Standard 11-bit data frames; every buffer is
# preallocated, send()/recv()/state()/tec()/rec() allocate nothing.
#
#   can = Mcp2515(spi, cs_pin, crystal_hz=8000000, bitrate=500000,
#                 mode=MODE_NORMAL, int_pin=None)
#
# spi: a machine.SPI-like object (write, readinto) in SPI mode 0,0 up to 10 MHz;
# cs:  output pin (value()); int_pin: optional input pin wired to the chip's INT
#      (active low); without it recv() asks the chip (one RX STATUS per call).
#
# Bit timing (datasheet section 5): TQ = 2 * (BRP + 1) / Fosc, bit = SyncSeg(1) +
# PropSeg + PS1 + PS2 TQ.  cnf_for() picks the largest TQ count <= 16 that divides
# the crystal exactly, PS2 = max(2, ntq // 8) and the rest split into PS1 (<= 8) and
# PropSeg, SJW = 1, BTLMODE = 1, single sampling:
#   16 MHz, 500 kbit/s: BRP 0, 16 TQ (1+5+8+2), sample point 87.5 %
#                       CNF1 0x00  CNF2 0xBC  CNF3 0x01
#    8 MHz, 500 kbit/s: BRP 0,  8 TQ (1+1+4+2), sample point 75 %
#                       CNF1 0x00  CNF2 0x98  CNF3 0x01
#   (250 kbit/s: 16 MHz 0x01 0xBC 0x01, 8 MHz 0x00 0xBC 0x01.)
#
# Receive: both RX buffers, RXB0 rolling over into RXB1 (BUKT), filters off (RXM=11);
# recv() drains RXB0 first (older), then RXB1; READ RX BUFFER clears the flag.  An
# overflow (EFLG RX0OVR/RX1OVR) is counted in rx_overflows and cleared by state().
# Transmit: the first of the three TX buffers whose TXREQ is clear (READ STATUS),
# LOAD TX BUFFER + RTS; all at the same priority, so the chip sends the highest
# buffer number first when several wait: order among queued frames is not kept.
# Error state from EFLG: TXBO -> BUS_OFF, TXEP/RXEP -> ERROR_PASSIVE, EWARN ->
# ERROR_WARNING.  The chip leaves bus-off by itself after 128 x 11 recessive bits;
# restart() re-initialises it (reset, counters 0, TX buffers cleared).
from micropython import const

from bankgate.bus import can as _can

MODE_NORMAL = const(0)
MODE_SLEEP = const(1)
MODE_LOOPBACK = const(2)
MODE_LISTEN = const(3)
MODE_CONFIG = const(4)

# instructions
_RESET = const(0xC0)
_READ = const(0x03)
_WRITE = const(0x02)
_BITMOD = const(0x05)
_READ_STATUS = const(0xA0)
_RX_STATUS = const(0xB0)
_READ_RXB0 = const(0x90)    # starting at RXB0SIDH
_READ_RXB1 = const(0x94)    # starting at RXB1SIDH
_LOAD_TXB = const(0x40)     # | 0, 2, 4: TXB0/1/2 starting at SIDH
_RTS = const(0x80)          # | 1, 2, 4

# registers
_CANSTAT = const(0x0E)
_CANCTRL = const(0x0F)
_TEC = const(0x1C)
_REC = const(0x1D)
_CNF3 = const(0x28)
_CANINTE = const(0x2B)
_CANINTF = const(0x2C)
_EFLG = const(0x2D)
_RXB0CTRL = const(0x60)
_RXB1CTRL = const(0x70)

_MAX_SKIP = const(4)         # remote/extended frames skipped per recv() call


class Mcp2515Error(Exception):
    def __init__(self, msg):
        super().__init__(msg)


def cnf_for(crystal_hz, bitrate):
    """(CNF1, CNF2, CNF3) for this crystal and bit rate; ValueError if no exact
    timing with 8..16 TQ per bit exists."""
    if crystal_hz <= 0 or bitrate <= 0:
        raise ValueError("bad crystal/bitrate")
    for ntq in range(16, 7, -1):
        div = 2 * bitrate * ntq
        if crystal_hz % div:
            continue
        brp = crystal_hz // div - 1
        if brp > 63:
            continue
        ps2 = ntq // 8
        if ps2 < 2:
            ps2 = 2
        rest = ntq - 1 - ps2
        ps1 = rest - 1 if rest - 1 < 8 else 8
        prop = rest - ps1
        if prop < 1 or prop > 8:
            continue
        return (brp, 0x80 | ((ps1 - 1) << 3) | (prop - 1), ps2 - 1)
    raise ValueError("no exact MCP2515 timing for %d Hz crystal at %d bit/s" % (crystal_hz, bitrate))


class Mcp2515:
    def __init__(self, spi, cs, crystal_hz=8000000, bitrate=500000, mode=MODE_NORMAL,
                 int_pin=None):
        if mode not in (MODE_NORMAL, MODE_LOOPBACK, MODE_LISTEN):
            raise ValueError("mode must be MODE_NORMAL, MODE_LOOPBACK or MODE_LISTEN")
        self._spi = spi
        self._cs = cs
        self._int = int_pin
        self.crystal_hz = crystal_hz
        self.bitrate = bitrate
        self.mode = mode
        self.cnf = cnf_for(crystal_hz, bitrate)
        self._c1 = bytearray(1)
        self._c2 = bytearray(2)
        self._c3 = bytearray(3)
        self._c4 = bytearray(4)
        self._r1 = bytearray(1)
        self._rxb = bytearray(13)    # SIDH SIDL EID8 EID0 DLC D0..D7
        self._txb = bytearray(14)    # LOAD TX BUFFER + the same 13 bytes
        self.rx_overflows = 0
        self.skipped = 0             # remote / extended frames dropped
        self.tx_full = 0             # send() found no free TX buffer
        self.restarts = 0
        cs.value(1)
        self._init()

    # ------------------------------------------------------------------ SPI
    def _cmd(self, b):
        c = self._c1
        c[0] = b
        self._cs.value(0)
        self._spi.write(c)
        self._cs.value(1)

    def _read(self, addr):
        c = self._c2
        c[0] = _READ
        c[1] = addr
        self._cs.value(0)
        self._spi.write(c)
        self._spi.readinto(self._r1)
        self._cs.value(1)
        return self._r1[0]

    def _write(self, addr, v):
        c = self._c3
        c[0] = _WRITE
        c[1] = addr
        c[2] = v
        self._cs.value(0)
        self._spi.write(c)
        self._cs.value(1)

    def _bitmod(self, addr, mask, v):
        c = self._c4
        c[0] = _BITMOD
        c[1] = addr
        c[2] = mask
        c[3] = v
        self._cs.value(0)
        self._spi.write(c)
        self._cs.value(1)

    def _query(self, instr):
        c = self._c1
        c[0] = instr
        self._cs.value(0)
        self._spi.write(c)
        self._spi.readinto(self._r1)
        self._cs.value(1)
        return self._r1[0]

    # ------------------------------------------------------------------ setup
    def _set_mode(self, m):
        self._bitmod(_CANCTRL, 0xE0, m << 5)
        for _ in range(10):
            if self._read(_CANSTAT) >> 5 == m:
                return
        raise Mcp2515Error("MCP2515 did not enter mode %d (CANSTAT 0x%02x)" % (m, self._read(_CANSTAT)))

    def _init(self):
        self._cmd(_RESET)
        # after RESET the chip is in configuration mode with CANCTRL = 0x87
        for _ in range(10):
            if self._read(_CANSTAT) >> 5 == MODE_CONFIG:
                break
        else:
            raise Mcp2515Error("no MCP2515 answering on SPI (CANSTAT 0x%02x)" % self._read(_CANSTAT))
        c1, c2, c3 = self.cnf
        self._write(_CNF3, c3)
        self._write(_CNF3 + 1, c2)
        self._write(_CNF3 + 2, c1)
        if (self._read(_CNF3) != c3 or self._read(_CNF3 + 1) != c2
                or self._read(_CNF3 + 2) != c1):
            raise Mcp2515Error("MCP2515 CNF registers did not take the timing")
        self._write(_RXB0CTRL, 0x64)      # RXM=11 (any frame), BUKT rollover to RXB1
        self._write(_RXB1CTRL, 0x60)
        self._write(_CANINTE, 0x03)       # RX0IE | RX1IE drive the INT pin
        self._write(_CANINTF, 0x00)
        self._write(_EFLG, 0x00)
        self._set_mode(self.mode)

    # ------------------------------------------------------------------ interface
    def send(self, can_id, buf, n):
        """Queue a standard data frame in a free TX buffer; False if none is free,
        the controller is bus-off / listen-only, or the arguments are invalid."""
        if not (0 <= can_id <= 0x7FF and 0 <= n <= 8 and n <= len(buf)):
            return False
        if self.mode == MODE_LISTEN:
            return False
        if self._read(_EFLG) & 0x20:
            return False
        st = self._query(_READ_STATUS)
        if not st & 0x04:
            b = 0
        elif not st & 0x10:
            b = 1
        elif not st & 0x40:
            b = 2
        else:
            self.tx_full += 1
            return False
        t = self._txb
        t[0] = _LOAD_TXB | (b << 1)
        t[1] = can_id >> 3
        t[2] = (can_id & 7) << 5
        t[3] = 0
        t[4] = 0
        t[5] = n
        for i in range(8):
            t[6 + i] = buf[i] if i < n else 0
        self._cs.value(0)
        self._spi.write(t)
        self._cs.value(1)
        self._cmd(_RTS | (1 << b))
        return True

    def recv(self, buf):
        """Next received frame: (can_id << 4) | dlc with data in buf, or -1."""
        for _ in range(_MAX_SKIP):
            if self._int is not None and self._int.value():
                return -1                   # INT high: nothing pending
            rs = self._query(_RX_STATUS)
            if rs & 0x40:
                instr = _READ_RXB0
            elif rs & 0x80:
                instr = _READ_RXB1
            else:
                return -1
            c = self._c1
            c[0] = instr
            r = self._rxb
            self._cs.value(0)
            self._spi.write(c)
            self._spi.readinto(r)
            self._cs.value(1)               # CS rising clears RXnIF
            sidl = r[1]
            dlc = r[4]
            if sidl & 0x08 or sidl & 0x10 or dlc & 0x40:
                self.skipped += 1           # extended (IDE) or remote (SRR / RTR)
                continue
            dlc &= 0x0F
            if dlc > 8:
                dlc = 8
            for i in range(dlc):
                buf[i] = r[5 + i]
            return (((r[0] << 3) | (sidl >> 5)) << 4) | dlc
        return -1

    def state(self):
        e = self._read(_EFLG)
        if e & 0xC0:
            self.rx_overflows += 1
            self._bitmod(_EFLG, 0xC0, 0)
            self._bitmod(_CANINTF, 0x20, 0)
        if e & 0x20:
            return _can.BUS_OFF
        if e & 0x18:
            return _can.ERROR_PASSIVE
        if e & 0x01:
            return _can.ERROR_WARNING
        return _can.ERROR_ACTIVE

    def tec(self):
        return self._read(_TEC)

    def rec(self):
        return self._read(_REC)

    def restart(self):
        self.restarts += 1
        self._init()
