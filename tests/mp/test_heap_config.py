# Nothing re-imports the configuration validator after bankgate.firmware.load() freed it
# (issue 17: diagnose.py did, ~25 KB of heap on the 32-bit port with the firmware as .py).
import sys

from bankgate import firmware


def test_diagnose_does_not_import_the_config_validator():
    firmware.forget("bankgate.config", "bankgate.boards", "bankgate.diagnose")
    assert "bankgate.config" not in sys.modules
    import bankgate.diagnose  # noqa: F401
    assert "bankgate.config" not in sys.modules, "bankgate.diagnose imported bankgate.config"


def test_a_bad_diagnosis_section_still_raises_config_error():
    from bankgate import config
    from bankgate import diagnose
    cfg = config.validate({})
    firmware.forget("bankgate.config", "bankgate.boards")
    d = cfg["diagnosis"]
    hi, lo = diagnose._PAIRS[0]
    d[lo] = d[hi]
    try:
        diagnose.check_config(cfg)
    except Exception as e:  # noqa: BLE001
        assert type(e).__name__ == "ConfigError" and ("diagnosis." + lo) in str(e), e
    else:
        raise AssertionError("check_config accepted %s == %s" % (lo, hi))
