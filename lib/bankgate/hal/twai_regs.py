# CAN back end for the ESP32 / ESP32-S3 on-chip TWAI controller, driven through its
# memory-mapped registers: works on the official MicroPython images, which have no
# machine.CAN.  The board layer (hal/esp32.py) passes in `machine.mem32` (any object
# with mem32-style integer subscripting), so this module imports nothing from
# `machine` and runs against tools/fakes/faketwai.FakeTwai in host tests.
#
# STATUS: written from Espressif's manuals and ESP-IDF's register headers and
# verified against a register-level model of the controller (tests/mp/
# test_twai_regs.py), NOT yet on silicon.  docs/deployment.md says how to check it
# on a board (console command `can-selftest`).
#
# Sources (every number below is cited with one of these):
#   [TRM32]  ESP32 Technical Reference Manual, chapter "Two-wire Automotive
#            Interface (TWAI)" (register summary and register descriptions; sections
#            "Bus-Off Recovery", "Error Management", "Receive FIFO and Data Overruns",
#            "Self Test Mode", "Listen Only Mode", "Bit Timing"), chapter "IO_MUX and
#            GPIO Matrix" and chapter "DPORT Register" (peripheral clock gating/reset).
#   [TRMS3]  ESP32-S3 Technical Reference Manual, chapters "Two-wire Automotive
#            Interface (TWAI)", "IO MUX and GPIO Matrix", "System Registers".
#   [IDF]    ESP-IDF soc headers: components/soc/esp32/include/soc/{reg_base.h,
#            twai_struct.h (SJA1000-style layout, one 8-bit register per 32-bit word),
#            dport_reg.h, gpio_sig_map.h, gpio_reg.h} and
#            components/soc/esp32s3/include/soc/{reg_base.h, twai_reg.h,
#            system_reg.h, gpio_sig_map.h, gpio_reg.h}.
#
# What this driver does (all polled from the main loop, nothing allocates after
# __init__ -- register addresses are kept as preallocated ints because the ESP32-S3
# ones are above 2**30 and would be heap ints on the 32-bit port):
#   init     peripheral clock on + reset pulse (DPORT / SYSTEM), GPIO-matrix routing
#            of TWAI_TX to the TX pin and of the RX pin to TWAI_RX (the board layer
#            first makes both pins GPIOs through machine.Pin, which does the IO_MUX
#            function select and the input enable), reset mode, PeliCAN layout,
#            bus timing, acceptance filter open (single filter, mask all ones),
#            interrupts off (polled), then operating mode (normal / listen-only /
#            self-test).
#   send     one TX buffer (SJA1000 has one): False while it is busy (inverter.py
#            retries on the next loop pass), when bus-off or in listen-only mode.
#   recv     the 64-byte RX FIFO, one frame per call, Release Receive Buffer after
#            reading; remote / extended frames are skipped and counted.  A data
#            overrun drops everything in the FIFO (the ESP32 errata say the FIFO
#            contents may be corrupt after an overrun), counts it and clears it
#            (Clear Data Overrun).
#   state    BUS_OFF from the status register's bus status bit (or when the
#            controller sits in reset mode), else from TEC/REC (bankgate.bus.can).
#   restart  bus-off recovery as the TRM describes it: the controller entered reset
#            mode by itself at bus-off; clearing the reset mode bit starts recovery,
#            which completes after 128 occurrences of 11 consecutive recessive bits
#            (2.8 ms at 500 kbit/s; state() says BUS_OFF until then).  A controller
#            found in reset mode without bus-off (e.g. reset underneath us) is
#            re-initialised.
from micropython import const

from bankgate.bus import can as _can

MODE_NORMAL = const(0)
MODE_LISTEN = const(1)       # listen-only: receives, never ACKs or sends
_MODE_SELFTEST = const(2)     # self-test: a transmission needs no ACK (loop-back check)

# ---- TWAI registers: offsets from the controller base [TRM32 TWAI register summary;
# IDF esp32 twai_struct.h "Address n" = n * 4; TRMS3 / IDF esp32s3 twai_reg.h]
_MODE = const(0x00)          # TWAI_MODE_REG
_CMD = const(0x04)           # TWAI_CMD_REG (write only)
_STATUS = const(0x08)        # TWAI_STATUS_REG
_INT = const(0x0C)           # TWAI_INT_RAW_REG (read clears)
_INT_ENA = const(0x10)       # TWAI_INT_ENA_REG
_BTR0 = const(0x18)          # TWAI_BUS_TIMING_0_REG
_BTR1 = const(0x1C)          # TWAI_BUS_TIMING_1_REG
_EWL = const(0x34)           # TWAI_ERR_WARNING_LIMIT_REG
_REC = const(0x38)           # TWAI_RX_ERR_CNT_REG
_TEC = const(0x3C)           # TWAI_TX_ERR_CNT_REG
_DATA0 = const(0x40)         # TWAI_DATA_0_REG .. DATA_12 at 0x70: TX buffer (write) /
                             # RX buffer window (read) in operating mode; ACR0-3 at
                             # 0x40-0x4C and AMR0-3 at 0x50-0x5C in reset mode
_RMC = const(0x74)           # TWAI_RX_MESSAGE_CNT_REG
_CDR = const(0x7C)           # TWAI_CLOCK_DIVIDER_REG

# MODE bits [TRM32 TWAI_MODE_REG; IDF twai_struct.h mode_reg]
_RM = const(0x01)            # reset mode
_LOM = const(0x02)           # listen-only mode
_STM = const(0x04)           # self-test mode
_AFM = const(0x08)           # acceptance filter mode: 1 = single filter
# CMD bits [TRM32 TWAI_CMD_REG; IDF command_reg]
_TR = const(0x01)            # transmission request
_AT = const(0x02)            # abort transmission
_RRB = const(0x04)           # release receive buffer
_CDO = const(0x08)           # clear data overrun
_SRR = const(0x10)           # self reception request
# STATUS bits [TRM32 TWAI_STATUS_REG; IDF status_reg]
_RBS = const(0x01)           # receive buffer status: a frame is in the RX FIFO
_DOS = const(0x02)           # data overrun status
_TBS = const(0x04)           # transmit buffer status: 1 = free
_TCS = const(0x08)           # transmission complete status
_ES = const(0x40)            # error status: TEC or REC >= error warning limit
_BS = const(0x80)            # bus-off status
# frame information byte (DATA_0) [TRM32 "Frame Information" table]
_FF_EXT = const(0x80)        # frame format: 1 = extended (29-bit) ID
_FF_RTR = const(0x40)        # remote frame
_CDR_CM = const(0x80)        # ESP32 only: TWAI_CLOCK_DIVIDER_REG bit 7 "CM", extended
                             # (PeliCAN) register layout [IDF esp32 twai_struct.h cd/cm];
                             # on the ESP32-S3 bits [7:0] are the CLKOUT divider instead
_MAX_SKIP = const(4)

# GPIO matrix register fields [TRM32 / TRMS3 "IO MUX and GPIO Matrix", registers
# GPIO_FUNCy_IN_SEL_CFG_REG (IN_SEL [5:0], IN_INV_SEL bit 6, SIG_IN_SEL bit 7) and
# GPIO_FUNCx_OUT_SEL_CFG_REG (OUT_SEL [8:0], INV_SEL bit 9, OEN_SEL bit 10, OEN_INV_SEL
# bit 11); IDF esp32s3 gpio_struct.h func_in_sel_cfg / func_out_sel_cfg]
_IN_SIG_SEL = const(0x80)    # GPIO_SIGy_IN_SEL: route the input through the matrix
_OUT_OEN_SEL = const(0x400)  # GPIO_FUNCx_OEN_SEL: output enable from GPIO_ENABLE_REG

# Bus timing (APB clock 80 MHz is the TWAI clock on both chips; one time quantum is
# 2 * (BRP + 1) APB periods [TRM32 / TRMS3 "Bit Timing", TWAI_BUS_TIMING_0_REG]).
# bit -> (prescaler register value, TSEG1, TSEG2, SJW) as ESP-IDF's
# TWAI_TIMING_CONFIG_xxxKBITS (brp 32/16/8/4, tseg_1 15, tseg_2 4, sjw 3): 20 TQ per
# bit, sample point at 80 %.
APB_HZ = 80000000
_TQ_PER_BIT = const(20)
TSEG1 = 15
TSEG2 = 4
SJW = 3
BITRATES = (125000, 250000, 500000, 1000000)

# Per-chip addresses.  Each entry names its source.
CHIPS = {
    "esp32": {
        "twai": 0x3FF6B000,        # DR_REG_CAN_BASE [IDF esp32 reg_base.h]
        "clk_reg": 0x3FF000C0,     # DPORT_PERIP_CLK_EN_REG = DR_REG_DPORT_BASE + 0x0C0 [IDF dport_reg.h]
        "rst_reg": 0x3FF000C4,     # DPORT_PERIP_RST_EN_REG = DR_REG_DPORT_BASE + 0x0C4
        "clk_bit": 1 << 19,        # DPORT_CAN_CLK_EN, DPORT_CAN_RST: bit 19 [IDF dport_reg.h]
        "gpio": 0x3FF44000,        # DR_REG_GPIO_BASE [IDF esp32 reg_base.h]
        "in_sel": 0x130,           # GPIO_FUNC0_IN_SEL_CFG_REG = DR_REG_GPIO_BASE + 0x0130 [IDF esp32 gpio_reg.h]
        "out_sel": 0x530,          # GPIO_FUNC0_OUT_SEL_CFG_REG = DR_REG_GPIO_BASE + 0x0530
        "tx_sig": 123,             # TWAI_TX_IDX [IDF esp32 gpio_sig_map.h; TRM32 GPIO matrix signal table]
        "rx_sig": 94,              # TWAI_RX_IDX
        "brp_max": 63,             # BTR0 BRP bits [5:0], SJW bits [7:6] [IDF esp32 twai_struct.h]
        "sjw_shift": 6,
        "cdr": _CDR_CM,
        "pins": 40,
    },
    "esp32s3": {
        "twai": 0x6002B000,        # DR_REG_TWAI_BASE [IDF esp32s3 reg_base.h]
        "clk_reg": 0x600C0018,     # SYSTEM_PERIP_CLK_EN0_REG = DR_REG_SYSTEM_BASE + 0x18 [IDF esp32s3 system_reg.h]
        "rst_reg": 0x600C0020,     # SYSTEM_PERIP_RST_EN0_REG = DR_REG_SYSTEM_BASE + 0x20
        "clk_bit": 1 << 19,        # SYSTEM_TWAI_CLK_EN, SYSTEM_TWAI_RST: bit 19 [IDF esp32s3 system_reg.h]
        "gpio": 0x60004000,        # DR_REG_GPIO_BASE [IDF esp32s3 reg_base.h]
        "in_sel": 0x154,           # func_in_sel_cfg[0]: after pin[54] at 0x74 and status_next/1
                                   # [IDF esp32s3 gpio_struct.h; TRMS3 GPIO register summary]
        "out_sel": 0x554,          # func_out_sel_cfg[0] = 0x154 + 256 * 4
        "tx_sig": 116,             # TWAI_TX_IDX [IDF esp32s3 gpio_sig_map.h]
        "rx_sig": 116,             # TWAI_RX_IDX
        "brp_max": 16383,          # TWAI_BAUD_PRESC bits [13:0], SJW bits [15:14] [IDF esp32s3 twai_reg.h]
        "sjw_shift": 14,
        "cdr": 0,
        "pins": 49,
    },
}
_GPIO_ENABLE_W1TS = const(0x24)   # GPIO_ENABLE_W1TS_REG, pins 0-31 [IDF esp32 gpio_reg.h;
                                  # esp32s3 gpio_struct.h enable_w1ts, same offset]
_GPIO_ENABLE1_W1TS = const(0x30)  # GPIO_ENABLE1_W1TS_REG, pins 32+ (enable1_w1ts)


class TwaiError(Exception):
    pass


def timing(chip, bitrate):
    """(BTR0, BTR1) register values for this chip and bit rate; ValueError else."""
    c = CHIPS.get(chip)
    if c is None:
        raise ValueError("TWAI register driver: chip must be esp32 or esp32s3, not %r" % (chip,))
    if bitrate not in BITRATES:
        raise ValueError("TWAI bit rate must be one of %s" % ", ".join([str(b) for b in BITRATES]))
    presc = APB_HZ // (bitrate * _TQ_PER_BIT)      # APB cycles per TQ: 8 at 500 kbit/s
    brp = presc // 2 - 1                            # TQ = 2 * (BRP + 1) APB cycles
    if brp < 0 or brp > c["brp_max"]:
        raise ValueError("bit rate %d out of the prescaler's range" % bitrate)
    btr0 = ((SJW - 1) << c["sjw_shift"]) | brp
    btr1 = ((TSEG2 - 1) << 4) | (TSEG1 - 1)         # TSEG1 [3:0], TSEG2 [6:4], SAM 0
    return btr0, btr1


class TwaiRegs:
    """bankgate.bus.can back end on the TWAI registers.  mem32: machine.mem32 (or a
    model).  tx, rx: GPIO numbers (already made GPIOs by the board layer)."""

    def __init__(self, mem32, chip="esp32", tx=None, rx=None, bitrate=500000,
                 mode=MODE_NORMAL):
        c = CHIPS.get(chip)
        if c is None:
            raise ValueError("TWAI register driver: chip must be esp32 or esp32s3, not %r" % (chip,))
        for name, p in (("tx", tx), ("rx", rx)):
            if type(p) is not int or p < 0 or p >= c["pins"]:
                raise ValueError("TWAI %s pin must be a GPIO number below %d, not %r" % (name, c["pins"], p))
        if mode not in (MODE_NORMAL, MODE_LISTEN, _MODE_SELFTEST):
            raise ValueError("mode must be MODE_NORMAL, MODE_LISTEN or MODE_SELFTEST")
        self.chip = chip
        self.bitrate = bitrate
        self.btr = timing(chip, bitrate)
        self.mode = mode
        self.tx_pin = tx
        self.rx_pin = rx
        self._m = mem32
        self._c = c
        b = c["twai"]
        self._a_mode = b + _MODE
        self._a_cmd = b + _CMD
        self._a_status = b + _STATUS
        self._a_int = b + _INT
        self._a_rec = b + _REC
        self._a_tec = b + _TEC
        self._a_rmc = b + _RMC
        self._a_data = [b + _DATA0 + 4 * i for i in range(13)]
        self._base = b
        self.rx_overruns = 0     # data overruns seen (frames in the FIFO dropped)
        self.skipped = 0         # remote / extended frames dropped
        self.tx_full = 0         # send() found the TX buffer busy
        self.restarts = 0        # restart() calls
        self.recoveries = 0      # bus-off recoveries started
        self.inits = 0
        self._init()

    # ------------------------------------------------------------------ setup
    def _modebits(self, mode):
        if mode == MODE_LISTEN:
            return _AFM | _LOM
        if mode == _MODE_SELFTEST:
            return _AFM | _STM
        return _AFM

    def _init(self):
        m = self._m
        c = self._c
        bit = c["clk_bit"]
        # clock on, reset pulse [TRM32 DPORT_PERIP_CLK_EN_REG / DPORT_PERIP_RST_EN_REG;
        # TRMS3 SYSTEM_PERIP_CLK_EN0_REG / SYSTEM_PERIP_RST_EN0_REG]
        m[c["clk_reg"]] = m[c["clk_reg"]] | bit
        m[c["rst_reg"]] = m[c["rst_reg"]] | bit
        m[c["rst_reg"]] = m[c["rst_reg"]] & ~bit
        # GPIO matrix: TWAI_TX -> TX pin (output enable from GPIO_ENABLE_REG, which
        # machine.Pin(tx, Pin.OUT) set; set again here), RX pin -> TWAI_RX
        g = c["gpio"]
        tx = self.tx_pin
        m[g + c["out_sel"] + 4 * tx] = c["tx_sig"] | _OUT_OEN_SEL
        if tx < 32:
            m[g + _GPIO_ENABLE_W1TS] = 1 << tx
        else:
            m[g + _GPIO_ENABLE1_W1TS] = 1 << (tx - 32)
        m[g + c["in_sel"] + 4 * c["rx_sig"]] = self.rx_pin | _IN_SIG_SEL
        # reset mode, then configure [TRM32 "Reset Mode": BTR, ACR/AMR, CDR writable only here]
        b = self._base
        m[self._a_mode] = _RM
        if m[self._a_mode] & _RM == 0:
            raise TwaiError("TWAI controller does not enter reset mode (clock off?)")
        if c["cdr"]:
            m[b + _CDR] = c["cdr"]
        m[b + _INT_ENA] = 0                       # polled: no interrupts
        btr0, btr1 = self.btr
        m[b + _BTR0] = btr0
        m[b + _BTR1] = btr1
        if m[b + _BTR0] & 0xFFFF != btr0 or m[b + _BTR1] & 0xFF != btr1:
            raise TwaiError("TWAI bus timing registers did not take the values")
        m[b + _EWL] = _can.WARNING_LIMIT          # error warning limit 96 (the default)
        # acceptance filter open: single filter, code 0, mask all ones [TRM32
        # "Acceptance Filter": a mask bit 1 = don't care]
        for i in range(4):
            m[self._a_data[i]] = 0                # ACR0-3
            m[self._a_data[4 + i]] = 0xFF         # AMR0-3
        m[self._a_mode] = self._modebits(self.mode) | _RM
        m[self._a_mode] = self._modebits(self.mode)   # leave reset mode: operating
        if m[self._a_mode] & _RM:
            raise TwaiError("TWAI controller does not leave reset mode")
        m[self._a_int]                             # clear pending interrupt flags
        self.inits += 1

    # ------------------------------------------------------------------ interface
    def send(self, can_id, buf, n):
        """Queue a standard data frame in the TX buffer; False if it is busy, the
        controller is bus-off / in reset / listen-only, or the arguments are bad."""
        if not (0 <= can_id <= 0x7FF and 0 <= n <= 8 and n <= len(buf)):
            return False
        if self.mode == MODE_LISTEN:
            return False
        m = self._m
        st = m[self._a_status]
        if st & _BS or m[self._a_mode] & _RM:
            return False
        if not st & _TBS:
            self.tx_full += 1
            return False
        d = self._a_data
        m[d[0]] = n                               # SFF, data frame, DLC
        m[d[1]] = can_id >> 3                     # ID[10:3]
        m[d[2]] = (can_id & 7) << 5               # ID[2:0]
        for i in range(n):
            m[d[3 + i]] = buf[i]
        m[self._a_cmd] = _SRR if self.mode == _MODE_SELFTEST else _TR
        return True

    def _overrun(self):
        """Data overrun: drop every frame in the FIFO, clear the overrun."""
        m = self._m
        self.rx_overruns += 1
        k = m[self._a_rmc] & 0x7F
        for _ in range(k):
            m[self._a_cmd] = _RRB
        m[self._a_cmd] = _CDO

    def recv(self, buf):
        """Next received standard data frame: (can_id << 4) | dlc, data in buf; -1."""
        m = self._m
        d = self._a_data
        for _ in range(_MAX_SKIP):
            st = m[self._a_status]
            if st & _DOS:
                self._overrun()
                return -1
            if not st & _RBS:
                return -1
            info = m[d[0]] & 0xFF
            if info & (_FF_EXT | _FF_RTR):
                self.skipped += 1
                m[self._a_cmd] = _RRB
                continue
            dlc = info & 0x0F
            if dlc > 8:
                dlc = 8
            cid = ((m[d[1]] & 0xFF) << 3) | ((m[d[2]] & 0xFF) >> 5)
            for i in range(dlc):
                buf[i] = m[d[3 + i]] & 0xFF
            m[self._a_cmd] = _RRB
            return (cid << 4) | dlc
        return -1

    def state(self):
        m = self._m
        st = m[self._a_status]
        if st & _DOS:
            self._overrun()
        if st & _BS or m[self._a_mode] & _RM:
            return _can.BUS_OFF
        return _can.state_from_counters(m[self._a_tec] & 0xFF, m[self._a_rec] & 0xFF)

    def tec(self):
        return self._m[self._a_tec] & 0xFF

    def rec(self):
        return self._m[self._a_rec] & 0xFF

    def restart(self):
        """Bus-off: start the TRM's recovery (clear reset mode; the controller waits
        for 128 x 11 recessive bits, then is error active with TEC = REC = 0).
        Recovery already running: nothing.  In reset mode without bus-off:
        re-initialise.  Otherwise (error active/passive): nothing to leave."""
        self.restarts += 1
        m = self._m
        st = m[self._a_status]
        rm = m[self._a_mode] & _RM
        if st & _BS:
            if rm:
                m[self._a_mode] = self._modebits(self.mode)
                self.recoveries += 1
            return
        if rm:
            self._init()

    # ------------------------------------------------------------------ installer check
    def self_test(self, sleep_ms, can_id=0x7E5, max_ms=20):
        """Loop-back check through the transceiver: self-test mode (a frame needs no
        ACK), one frame with self reception, wait for it in the RX FIFO, then back to
        the configured mode.  Disturbs the bus for one frame.  Returns a dict (for
        the console).  Allocates: not for the hot path."""
        mode = self.mode
        m = self._m
        res = {"chip": self.chip, "tx": self.tx_pin, "rx": self.rx_pin, "bitrate": self.bitrate}
        try:
            self.mode = _MODE_SELFTEST
            self._init()
            buf = bytearray(8)
            while self.recv(buf) >= 0:            # empty the FIFO
                pass
            pattern = b"\x42\x47\xA5\x5A\x01\x02\x03\x04"
            if not self.send(can_id, pattern, 8):
                res["ok"] = False
                res["error"] = "TX buffer not free in self-test mode"
                return res
            waited = 0
            r = -1
            while waited < max_ms:
                r = self.recv(buf)
                if r >= 0:
                    break
                sleep_ms(1)
                waited += 1
            res["waited_ms"] = waited
            res["tec"] = self.tec()
            res["rec"] = self.rec()
            res["status"] = m[self._a_status] & 0xFF
            if r < 0:
                res["ok"] = False
                res["error"] = ("no frame came back within %d ms: check the TX/RX pins, the "
                                "transceiver's power and its Rs/standby pin" % max_ms)
            elif (r >> 4) != can_id or bytes(buf) != pattern:
                res["ok"] = False
                res["error"] = "frame came back changed: id 0x%03x data %s" % (r >> 4, bytes(buf))
            else:
                res["ok"] = True
        finally:
            self.mode = mode
            self._init()
        return res

    def listen(self, sleep_ms, ms=500):
        """Listen-only check: the controller neither sends nor acknowledges for `ms`
        milliseconds and counts the frames it hears (receive path, pins and bit rate
        against the live bus, without touching it).  Back to the configured mode
        afterwards.  Returns a dict (for the console); allocates."""
        mode = self.mode
        res = {"chip": self.chip, "rx": self.rx_pin, "bitrate": self.bitrate, "ms": ms}
        ids = []
        n = 0
        over = self.rx_overruns
        try:
            self.mode = MODE_LISTEN
            self._init()
            buf = bytearray(8)
            for _ in range(ms):
                while True:
                    r = self.recv(buf)
                    if r < 0:
                        break
                    n += 1
                    if len(ids) < 8 and (r >> 4) not in ids:
                        ids.append(r >> 4)
                sleep_ms(1)
            res["frames"] = n
            res["ids"] = sorted(ids)
            res["rec"] = self.rec()
            res["overruns"] = self.rx_overruns - over
            res["ok"] = n > 0
            if not n:
                res["error"] = ("no frame heard in %d ms: is the other node sending, the bit rate "
                                "right, the RX pin right, the transceiver powered?" % ms)
        finally:
            self.mode = mode
            self._init()
        return res
