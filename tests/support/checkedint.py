# CheckedInt: an int stand-in for range proofs under MicroPython.
#
# The unix port is 64-bit, so an intermediate beyond the ESP32's small-int range
# (+-2**30) would pass silently.  Feeding CheckedInt values into device code makes
# every arithmetic result go through _c(), which raises RangeError the moment a
# value leaves [-2**30, 2**30 - 1] (the ESP32 small-int range).  Comparisons
# work with the CheckedInt on the left (MicroPython does not reflect `3 < x`).
LO = -(1 << 30)
HI = (1 << 30) - 1

largest = [0]   # largest |value| seen since reset(), for reporting


class RangeError(Exception):
    def __init__(self, v):
        super().__init__("intermediate %d outside +-2**30" % v)
        self.value = v


def reset():
    largest[0] = 0


def _v(o):
    return o.v if isinstance(o, CheckedInt) else o


def _c(v):
    if type(v) is not int:
        raise TypeError("CheckedInt arithmetic produced %r" % (v,))
    if v < LO or v > HI:
        raise RangeError(v)
    a = -v if v < 0 else v
    if a > largest[0]:
        largest[0] = a
    return CheckedInt(v)


class CheckedInt:
    def __init__(self, v):
        v = _v(v)
        if v < LO or v > HI:
            raise RangeError(v)
        self.v = v

    def __repr__(self):
        return "CheckedInt(%d)" % self.v

    def __int__(self):
        return self.v

    def __index__(self):
        return self.v

    def __hash__(self):
        return hash(self.v)

    def __bool__(self):
        return self.v != 0

    # arithmetic
    def __add__(self, o):
        return _c(self.v + _v(o))

    def __radd__(self, o):
        return _c(_v(o) + self.v)

    def __sub__(self, o):
        return _c(self.v - _v(o))

    def __rsub__(self, o):
        return _c(_v(o) - self.v)

    def __mul__(self, o):
        return _c(self.v * _v(o))

    def __rmul__(self, o):
        return _c(_v(o) * self.v)

    def __floordiv__(self, o):
        return _c(self.v // _v(o))

    def __rfloordiv__(self, o):
        return _c(_v(o) // self.v)

    def __mod__(self, o):
        return _c(self.v % _v(o))

    def __rmod__(self, o):
        return _c(_v(o) % self.v)

    def __neg__(self):
        return _c(-self.v)

    def __pos__(self):
        return self

    def __abs__(self):
        return _c(-self.v if self.v < 0 else self.v)

    def __lshift__(self, o):
        return _c(self.v << _v(o))

    def __rshift__(self, o):
        return _c(self.v >> _v(o))

    def __and__(self, o):
        return _c(self.v & _v(o))

    def __rand__(self, o):
        return _c(_v(o) & self.v)

    def __or__(self, o):
        return _c(self.v | _v(o))

    def __ror__(self, o):
        return _c(_v(o) | self.v)

    # comparisons (CheckedInt on the left, or both)
    def __eq__(self, o):
        return self.v == _v(o)

    def __ne__(self, o):
        return self.v != _v(o)

    def __lt__(self, o):
        return self.v < _v(o)

    def __le__(self, o):
        return self.v <= _v(o)

    def __gt__(self, o):
        return self.v > _v(o)

    def __ge__(self, o):
        return self.v >= _v(o)


def plain(x):
    """CheckedInt or container of them -> plain ints (for comparing results)."""
    if isinstance(x, CheckedInt):
        return x.v
    if isinstance(x, list):
        return [plain(e) for e in x]
    return x
