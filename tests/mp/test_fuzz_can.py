# Fuzzing the Pylontech CAN decoder (bankgate.proto.pylon_can.decode) under the unix port.
# Generator, checks and oracle: tests/fuzz/fuzzrun_can.py; docs/fuzzing.md.  `make test`
# count here; tests/mp/test_fuzz_long.py runs 100 000 inputs.
# mpy-timeout: 600
import fuzzrun_can as R


def test_fuzz_pylon_can_decode():
    R.run_can()
