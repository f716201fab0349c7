# Fuzzing the configuration path (bankgate.config: parse, validate, validate_secrets) under
# the unix port.  Generator, checks and the accepted-config oracle:
# tests/fuzz/fuzzrun_config.py; docs/fuzzing.md.  `make test` counts here;
# tests/mp/test_fuzz_long_config.py runs 100 000 inputs each.
# mpy-timeout: 900
# mpy-heapsize: 512k
import fuzzrun_config as R
import mptest

from bankgate import config
from bankgate.config import ConfigError


def test_fuzz_config_structured():
    R.run_config_struct()


def test_fuzz_config_json_text():
    R.run_config_text()


def test_fuzz_secrets_never_echoed():
    R.run_secrets()


def test_fuzz_findings_stay_fixed():
    # 1. 3000 nested '[' (6 KB, under MAX_CONFIG_BYTES) made parse() raise MemoryError
    for text in (b"[" * 3000 + b"]" * 3000, b'{"a":' * 17 + b"1" + b"}" * 17):
        e = mptest.raises(ConfigError, config.parse, text)
        assert "nested at most" in str(e)
    deep_ok = b'{"a":' * 16 + b"1" + b"}" * 16     # the limit itself still parses
    assert type(config.parse(deep_ok)) is dict
    assert config.parse(b'["[[[[", "{{{{{{{{{{{{{{{{{{{"]') == ["[[[[", "{" * 19]   # in strings
    # 2. MicroPython's json accepts unquoted names; validate raised TypeError on them
    for text in (b'{0: "x"}', b'{"bank": {true: 1}}', b'{"mqtt": {null: 1}}'):
        obj = config.parse(text)
        e = mptest.raises(ConfigError, config.validate, obj)
        assert "quoted names" in str(e)
    e = mptest.raises(ConfigError, config.validate_secrets, {"wifi": {1: "x"}})
    assert "secrets.wifi" in str(e)


def test_config_oracle_rejects_bad_results():
    # the accepted-config oracle can fail: a result missing a key, out of range, or
    # aliasing the input's list is reported
    cfg = config.validate(R.BASE)
    assert R.check_accepted(cfg, R.BASE) is None
    bad = R.deep_copy(cfg)
    del bad["gating"]["dwell_ms"]
    assert "missing" in R.check_accepted(bad, R.BASE)
    bad = R.deep_copy(cfg)
    bad["control"]["period_ms"] = 5
    assert "outside the schema" in R.check_accepted(bad, R.BASE)
    bad = R.deep_copy(cfg)
    given = R.deep_copy(R.BASE)
    bad["bank"]["addresses"] = given["bank"]["addresses"]
    assert "shares" in R.check_accepted(bad, given)
