# The long fuzz runs (`make fuzz` = pytest -m slow -k fuzz): the run_* functions of
# tests/fuzz/fuzzrun_*.py that test_fuzz_{proto,can,commands}.py run with small counts, here
# with LONG inputs per decoder and other seeds (so the long run explores new inputs).
# The configuration runs are in test_fuzz_long_config.py (a process of their own).
# Excluded from `make test` by the marker below.  Figures: docs/fuzzing.md.
# mpy-mark: slow
# mpy-timeout: 5400
# mpy-heapsize: 512k
import fuzzrun_can as CAN
import fuzzrun_commands as CMD
import fuzzrun_proto as PROTO

LONG = 100000          # inputs per decoder (the minimum)
SEED = 0x10C60000      # long-run seeds: SEED + n


def test_fuzz_pylontech_decode_long():
    PROTO.run_pylontech(LONG, SEED + 1)


def test_fuzz_pace_decode_long():
    PROTO.run_pace(LONG, SEED + 2)


def test_fuzz_pylontech_decode_group_long():
    PROTO.run_group(LONG, SEED + 3)


def test_fuzz_pylon_can_decode_long():
    CAN.run_can(LONG, SEED + 4)


def test_fuzz_command_parse_long():
    CMD.run_parse(LONG, SEED + 8)


def test_fuzz_command_messages_long():
    CMD.run_messages(LONG, SEED + 9)


def test_fuzz_mqtt_publish_packets_long():
    CMD.run_packets(LONG, SEED + 10)


def test_fuzzed_frames_never_close_a_contactor_long():
    # 17 000 control steps (850 s simulated) x 6 fuzzed frames = 102 000 frames offered
    fed = PROTO.run_no_close(17000, 6, SEED + 11)
    assert fed >= LONG * 8 // 10, fed
