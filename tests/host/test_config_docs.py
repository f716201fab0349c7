"""docs/configuration.md is generated from the schema (bankgate.config.SCHEMA)
and must match it: a changed setting without regenerated docs fails here.
Fix: `bankgate config docs`."""
import os
import subprocess
import sys

from bankgate_host import REPO


def _bankgate(*args):
    return subprocess.run([sys.executable, "-m", "bankgate_host"] + list(args), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_configuration_reference_is_up_to_date():
    proc = _bankgate("config", "docs", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_reference_names_every_setting_and_rule(tmp_path):
    out = tmp_path / "configuration.md"
    proc = _bankgate("config", "docs", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    # every leaf of the schema appears with its path (checked from the source, not the generator)
    with open(os.path.join(REPO, "lib", "bankgate", "config.py")) as f:
        src = f.read()
    import re
    section = None
    n = 0
    for line in src[:src.index("def _default(")].splitlines():
        m = re.match(r'    "(\w+)": \{', line)
        if m:
            section = m.group(1)
            continue
        if re.match(r"    \},?$", line):
            section = None
            continue
        m = re.match(r'\s+"(\w+)": \("(int|bool|str|enum|ints|strs|dict)"', line)
        if m:
            path = ("%s.%s" % (section, m.group(1))) if section and line.startswith("        ") else m.group(1)
            assert "`%s`" % path in text, path
            n += 1
    assert n > 50
    assert "## Rules between settings" in text and "## Secrets" in text
    assert "**(required)**" in text
