# Fuzzing the MQTT command path under the unix port: commands.parse, Telemetry._on_message
# and the MQTT client's packet parser feeding it.  Generator, checks and the command-spec
# oracle: tests/fuzz/fuzzrun_commands.py; docs/fuzzing.md.  `make test` counts here;
# tests/mp/test_fuzz_long.py runs 100 000 inputs each.
# mpy-timeout: 600
import fuzzrun_commands as R


def test_fuzz_command_parse():
    R.run_parse()


def test_fuzz_command_messages():
    R.run_messages()


def test_fuzz_mqtt_publish_packets():
    R.run_packets(R.FAST // 2)


def test_command_oracle_agrees_on_known_cases():
    # the oracle used by the runs, on hand-checked cases (a wrong oracle cannot hide a bug)
    ok = R.oracle_ok
    assert ok(b"rescan", b"") == (1, None)
    assert ok(b"rescan", b'{"x":1}') is None
    assert ok(b"discovery", b" {} ") == (2, None)
    assert ok(b"ack", b'{"code":"a","addr":-1}') == (3, ("a", -1))
    assert ok(b"ack", b'{"code":"a","addr":256}') is None
    assert ok(b"ack", b'{"code":"a","addr":true}') is None
    assert ok(b"ack", b'{"code":"a","addr":1,"x":0}') is None
    assert ok(b"reset_faults", b"") is None
    assert ok(b"rescan", b" " * 257) is None
