# The long configuration fuzz runs (`make fuzz`): the run_* functions of
# tests/fuzz/fuzzrun_config.py with LONG inputs each.  A file (and so a process) of its own: validate() and the JSON texts
# allocate freely (12 KB nesting texts), so these runs get a heap that only they have used.
# Figures: docs/fuzzing.md.
# mpy-mark: slow
# mpy-timeout: 3600
# mpy-heapsize: 1024k
import fuzzrun_config as CFG

LONG = 100000
SEED = 0x10C60000      # the same base as test_fuzz_long.py; offsets 5..7 are the config runs


def test_fuzz_config_structured_long():
    CFG.run_config_struct(LONG, SEED + 5)


def test_fuzz_config_json_text_long():
    CFG.run_config_text(LONG, SEED + 6)


def test_fuzz_secrets_never_echoed_long():
    CFG.run_secrets(LONG, SEED + 7)
