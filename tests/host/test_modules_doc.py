"""docs/modules.md (issue 18, part 2): every configuration it shows is valid for its board
(`bankgate config check`), and every fact section names a public source."""
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "modules.md")
BANKGATE = os.path.join(os.path.dirname(sys.executable), "bankgate")


def _text():
    with open(DOC) as f:
        return f.read()


def _configs():
    return re.findall(r"```json\n(.*?)```", _text(), re.S)


def test_the_guide_shows_a_configuration_per_family():
    fams = {json.loads(c)["bank"]["family"] for c in _configs()}
    assert {"pylontech", "pace"} <= fams


@pytest.mark.parametrize("i", range(3))
def test_each_configuration_in_the_guide_is_valid(tmp_path, i):
    cfgs = _configs()
    assert len(cfgs) == 3
    f = tmp_path / "cfg.json"
    f.write_text(cfgs[i])
    proc = subprocess.run([BANKGATE, "config", "check", str(f)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_section_cites_a_public_source():
    sections = re.split(r"\n## ", _text())[1:]
    for sec in sections:
        title = sec.splitlines()[0]
        if title.startswith("Check what you wired"):
            continue
        assert "http" in sec or "PROTOCOLS.md" in sec, title
    # the facts the installer needs are there
    text = _text()
    for fact in ("7 = RS485 A", "8 = RS485 B", "4 = CAN H", "5 = CAN L", "DIP 1", "9600", "115200", "120 Ω",
                 "`n + 0x10 * m`"):
        assert fact in text, fact
