"""`bankgate decode` of a whole-group 0x44 (alarm) answer: up to 16 packs from the simulator's
BMS emulation decode as a group, each pack with its own protections (tests/support/groupframes44.py)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BANKGATE = os.path.join(REPO, ".venv", "bin", "bankgate")


def run(*args):
    p = subprocess.run([BANKGATE, "decode"] + list(args), capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("n", [1, 3, 16])
def test_whole_group_0x44_answers_decode(mp, tmp_path, n):
    frame, prot = mp.call("groupframes44", "alarm_group_answer", n)
    f = tmp_path / "group44.txt"
    f.write_text(frame + "\n")
    for mode in ("--group", None):                 # explicit, and detected (auto)
        rc, out, err = run("pylontech", "--command", "0x44", "--json", "--file", str(f),
                           *([mode] if mode else []))
        assert rc == 0, out + err
        obj = json.loads(out.strip().splitlines()[-1])
        assert obj["group"] is True and len(obj["modules"]) == n, obj
        assert [m["protection_names"] for m in obj["modules"]] == prot
    rc, out, err = run("pylontech", "--command", "0x44", "--group", "--text", "--file", str(f))
    assert rc == 0 and ("whole group, %d pack%s" % (n, "" if n == 1 else "s")) in out, out + err
