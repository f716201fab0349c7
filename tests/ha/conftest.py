# tests/ha runs in its own venv with Home Assistant (`make test-ha`, .venv-ha); the main
# test run (.venv, no homeassistant package) does not collect it.
try:
    import homeassistant  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]
