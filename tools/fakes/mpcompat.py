# The `micropython` module for code that also runs under CPython (the fakes are
# importable from CPython scripts and tests): under MicroPython the real module,
# under CPython a stand-in whose decorators (@micropython.native, .viper) do nothing.
#
#   from mpcompat import micropython
try:
    import micropython
except ImportError:
    class micropython:
        @staticmethod
        def native(f):
            return f

        @staticmethod
        def viper(f):
            return f
