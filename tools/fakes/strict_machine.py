# A strict model of the official MicroPython ESP32 / ESP32-S3 port's `machine`
# module, for opening board files through bankgate.hal.esp32 on the unix port:
#
#   import strict_machine, sys
#   strict_machine.configure("esp32", psram="none", mem32=FakeTwai(...))
#   sys.modules["machine"] = strict_machine
#   from bankgate.hal import esp32
#
# What it models (ports/esp32 machine_pin.c, machine_uart.c, machine_adc.c,
# machine_hw_spi.c, machine_wdt.c and extmod/machine_mem.c of the official port):
#   - only what the official image has: Pin, UART, ADC, SPI, WDT, mem8/16/32,
#     reset; NO machine.CAN (the esp32 TWAI port is not merged)
#   - unknown keyword arguments raise TypeError ("unexpected keyword argument")
#   - Pin: a pin the chip/module does not have raises ValueError("invalid pin");
#     that includes GPIO16/17 on SPIRAM firmware (ESP32 WROVER: PSRAM) and
#     GPIO35-37 on octal-SPIRAM firmware (ESP32-S3R8).  Flash pins (ESP32 6-11,
#     ESP32-S3 26-32) are refused too (stricter than the port, which lists some
#     of them: driving them crashes the flash anyway).  An output on ESP32 GPIO
#     34-39 raises ValueError("pin can only be input").  A pull on 34-39 is
#     silently ignored, as on the chip (no pull resistors there): recorded in
#     `ignored_pulls` so a test can see it.
#   - UART: ids 0-2; tx/rx pins checked like Pin; no `ioctl` method reachable from
#     bankgate (the real UART has none; this class needs one only because the unix
#     port's select.poll asks Python objects through io.IOBase.ioctl)
#   - ADC(Pin): only ADC-capable pins (ESP32 GPIO 32-39 ADC1, 0/2/4/12-15/25-27
#     ADC2; ESP32-S3 GPIO 1-20)
#   - SPI: ids 1 and 2 (ESP32 HSPI/VSPI, ESP32-S3 SPI2/SPI3); a device model can be
#     attached per id (spi_devices) and a chip-select hook per pin (pin_hooks)
import io

chip = "esp32"
psram = "none"
mem32 = None
mem16 = None
mem8 = None
ignored_pulls = []
pins = {}              # gpio -> the last Pin object made for it
spi_devices = {}       # SPI id -> object with write(buf) / readinto(buf)
pin_hooks = {}         # gpio -> callable(v) on value changes (e.g. a fake chip's CS)
wdt = None
resets = 0

_ESP32_EXIST = set(range(0, 20)) | {21, 22, 23, 25, 26, 27} | set(range(32, 40))
_ESP32_FLASH = set(range(6, 12))
_ESP32_INPUT_ONLY = set(range(34, 40))
_ESP32_ADC = set(range(32, 40)) | {0, 2, 4, 12, 13, 14, 15, 25, 26, 27}
_S3_EXIST = set(range(0, 22)) | set(range(26, 49))
_S3_FLASH = set(range(26, 33))
_S3_ADC = set(range(1, 21))


def configure(chip_name="esp32", psram_kind="none", mem=None):
    """Select the firmware image being modelled: chip esp32 / esp32s3, psram
    none / quad (ESP32 SPIRAM image) / octal (ESP32-S3 SPIRAM_OCT image)."""
    global chip, psram, mem32, wdt, resets
    if chip_name not in ("esp32", "esp32s3"):
        raise ValueError(chip_name)
    chip = chip_name
    psram = psram_kind
    mem32 = mem if mem is not None else _Mem()
    wdt = None
    resets = 0
    del ignored_pulls[:]
    pins.clear()
    spi_devices.clear()
    pin_hooks.clear()


def _kw(name, kw, allowed):
    for k in kw:
        if k not in allowed:
            raise TypeError("unexpected keyword argument '%s'" % k)


def _valid(gpio):
    if type(gpio) is not int:
        raise TypeError("can't convert %s to int" % type(gpio).__name__)
    if chip == "esp32":
        ok = gpio in _ESP32_EXIST and gpio not in _ESP32_FLASH
        if psram == "quad" and gpio in (16, 17):
            ok = False
    else:
        ok = gpio in _S3_EXIST and gpio not in _S3_FLASH
        if psram == "octal" and gpio in (35, 36, 37):
            ok = False
    if not ok:
        raise ValueError("invalid pin")
    return gpio


class _Mem:
    def __init__(self):
        self.regs = {}

    def __getitem__(self, a):
        return self.regs.get(a, 0)

    def __setitem__(self, a, v):
        self.regs[a] = v & 0xFFFFFFFF


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, **kw):
        _kw("Pin", kw, ("value", "drive", "hold"))
        self.id = _valid(id)
        self.mode = None
        self.pull = None
        self._v = 0
        pins[self.id] = self
        self.init(mode, pull, **kw)

    def init(self, mode=-1, pull=-1, **kw):
        _kw("Pin.init", kw, ("value", "drive", "hold"))
        if "value" in kw and kw["value"] is not None:
            self._set(kw["value"])
        if mode != -1 and mode is not None:
            if mode not in (Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            if mode != Pin.IN and chip == "esp32" and self.id in _ESP32_INPUT_ONLY:
                raise ValueError("pin can only be input")
            self.mode = mode
        if pull != -1 and pull is not None:
            if pull not in (Pin.PULL_UP, Pin.PULL_DOWN):
                raise ValueError("invalid pull")
            if chip == "esp32" and self.id in _ESP32_INPUT_ONLY:
                ignored_pulls.append(self.id)        # the pad has no pull resistors
            else:
                self.pull = pull

    def _set(self, v):
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            h = pin_hooks.get(self.id)
            if h is not None:
                h(v)

    def value(self, v=None):
        if v is None:
            return self._v
        self._set(v)

    def on(self):
        self._set(1)

    def off(self):
        self._set(0)

    def __call__(self, v=None):
        return self.value(v)


def _pin_arg(p):
    if isinstance(p, Pin):
        return p.id
    return _valid(p)


class UART(io.IOBase):
    def __init__(self, id, baudrate=115200, **kw):
        _kw("UART", kw, ("bits", "parity", "stop", "tx", "rx", "rts", "cts", "txbuf", "rxbuf",
                         "timeout", "timeout_char", "invert", "flow"))
        if type(id) is not int or not 0 <= id <= 2:
            raise ValueError("UART(%s) does not exist" % (id,))
        self.id = id
        self.baudrate = baudrate
        self.kw = kw
        for k in ("tx", "rx", "rts", "cts"):
            if k in kw:
                _pin_arg(kw[k])
        self.written = bytearray()

    def write(self, b):
        self.written.extend(b)
        return len(b)

    def any(self):
        return 0

    def read(self, n=-1):
        return None

    def readinto(self, b, n=-1):
        return None

    def flush(self):
        pass

    def txdone(self):
        return True

    def ioctl(self, req, arg):      # for the unix port's select.poll only (see above)
        return 0


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, **kw):
        _kw("ADC", kw, ("atten",))
        if not isinstance(pin, Pin):
            raise TypeError("expecting a Pin")
        ok = _ESP32_ADC if chip == "esp32" else _S3_ADC
        if pin.id not in ok:
            raise ValueError("invalid pin")
        self.pin = pin
        self._atten = kw.get("atten", 0)

    def atten(self, a):
        self._atten = a

    def read_uv(self):
        return 0

    def read_u16(self):
        return 0


class SPI:
    def __init__(self, id, baudrate=500000, **kw):
        _kw("SPI", kw, ("polarity", "phase", "bits", "firstbit", "sck", "mosi", "miso"))
        if id not in (1, 2):
            raise ValueError("SPI(%s) doesn't exist" % (id,))
        for k in ("sck", "mosi", "miso"):
            if k in kw:
                _pin_arg(kw[k])
        self.id = id
        self.baudrate = baudrate

    def write(self, buf):
        d = spi_devices.get(self.id)
        if d is not None:
            d.write(buf)

    def readinto(self, buf, write=0):
        d = spi_devices.get(self.id)
        if d is not None:
            d.readinto(buf, write)
        else:
            for i in range(len(buf)):
                buf[i] = 0xFF


class WDT:
    def __init__(self, id=0, timeout=5000, **kw):
        global wdt
        _kw("WDT", kw, ())
        self.timeout = timeout
        self.fed = 0
        wdt = self

    def feed(self):
        self.fed += 1


def reset():
    global resets
    resets += 1
