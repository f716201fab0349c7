"""`bankgate decode` for people and for long frames (issue 18, part 5): frames from stdin
or a file (never argv into MicroPython), spaced CAN hex, "not hex at position N", a text
view, every frame quoted in tests/ and whole-group answers of 1..16 packs from the
simulator's BMS emulation (tests/support/groupframes.py)."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from bankgate_host import decode_cmd

BANKGATE = os.path.join(os.path.dirname(sys.executable), "bankgate")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

UP2500_42 = ("~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73"
             "FFFA680EFFFF04FFFF00000174E401B198E906")


def run(*args, stdin=None):
    proc = subprocess.run([BANKGATE, "decode"] + list(args), input=stdin, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def jsons(out):
    return [json.loads(line) for line in out.strip().splitlines()]


def test_frame_on_stdin_and_in_a_file(tmp_path):
    rc, out, err = run("pylontech", stdin=UP2500_42 + "\n")
    assert rc == 0, err
    (obj,) = jsons(out)
    assert obj["ok"] and obj["modules"][0]["voltage_mv"] == 26638
    f = tmp_path / "frames.txt"
    f.write_text("# a capture\n%s\n\n%s\r\n" % (UP2500_42, UP2500_42[:-1] + "7"))
    rc, out, err = run("pylontech", "--file", str(f))
    a, b = jsons(out)
    assert rc == 1 and a["ok"] and not b["ok"] and b["error"].startswith("chksum: ")


def test_no_frame_anywhere_is_a_usage_error(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n# nothing\n")
    rc, out, err = run("pylontech", "--file", str(f))
    assert rc == 2 and jsons(out)[0]["error"].startswith("usage: no frame")
    rc, out, err = run("pylontech", "--file", str(tmp_path / "missing.txt"))
    assert rc == 2 and "cannot read" in out and "Traceback" not in out + err


def test_non_hex_character_is_named_with_its_position():
    rc, out, err = run("pylontech", "~2G02")              # was "truncated"
    (obj,) = jsons(out)
    assert rc == 1 and obj["error"].startswith("hex: ") and "'G' is not hex at position 3" in obj["error"]
    rc, out, err = run("pylontech", UP2500_42[:30] + "x" + UP2500_42[31:])
    assert "'x' is not hex at position 31" in jsons(out)[0]["error"]
    rc, out, err = run("pylontech-can", "0x351", "14 0Z")
    assert rc == 2 and "'Z' is not hex at position 5" in jsons(out)[0]["error"]


def test_can_bytes_may_be_spaced_and_candump_style():
    want = {"chg_v_mv": 53200, "chg_limit_ma": 120000, "dsg_limit_ma": 160000, "dsg_v_mv": 45000}
    for args in (["0x351", "14", "02", "B0", "04", "40", "06", "C2", "01"],
                 ["0x351", "14 02 B0 04 40 06 C2 01"], ["351#1402B0044006C201"]):
        rc, out, err = run("pylontech-can", *args)
        (obj,) = jsons(out)
        assert rc == 0 and {k: obj[k] for k in want} == want, (args, obj)
    rc, out, err = run("pylontech-can", stdin="0x351 14 02 B0 04 40 06 C2 01\n0x355 3F 00 63 00\n")
    a, b = jsons(out)
    assert rc == 0 and a["chg_v_mv"] == 53200 and b["soc_pm"] == 630 and b["soh_pm"] == 990


def test_text_view_has_units_and_names():
    rc, out, err = run("pylontech", "--text", UP2500_42)
    assert rc == 0, err
    assert "26.64 V" in out and "-0.60 A" in out and "SOC 86.0 %" in out and "21.0 degC" in out
    assert "8 cells: min 3.328 V, max 3.331 V (spread 3 mV)" in out
    assert "{" not in out
    rc, out, err = run("pylontech", "--text", UP2500_42[:-1] + "7")
    assert rc == 1 and out.startswith("REJECTED chksum: ") and "Traceback" not in out + err
    rc, out, err = run("pylontech-can", "--text", "0x351", "1402B0044006C201")
    assert "charge voltage: 53.20 V" in out and "discharge current limit: 160.0 A" in out


def test_json_is_the_default_when_piped_and_text_on_a_terminal():
    import pty
    rc, out, err = run("pylontech", UP2500_42)
    assert json.loads(out)["ok"]
    # a terminal on stdout: the text view without any flag
    master, slave = pty.openpty()
    proc = subprocess.Popen([BANKGATE, "decode", "pylontech", UP2500_42], stdout=slave,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0
    text = b"".join(chunks).decode()
    assert "pack 1: 26.64 V" in text and '"ok"' not in text


@pytest.mark.parametrize("n", [1, 2, 8, 16])
def test_whole_group_answers_of_up_to_16_packs_decode(mp, tmp_path, n):
    frame, want = mp.call("groupframes", "group_answer", n)
    assert n < 3 or len(frame) > 255          # past what an interned argv string can hold
    f = tmp_path / "group.txt"
    f.write_text(frame + "\n")
    rc, out, err = run("pylontech", "--group", "--file", str(f))
    assert rc == 0, out + err
    (obj,) = jsons(out)
    assert obj["group"] is True and len(obj["modules"]) == n
    for got, w in zip(obj["modules"], want):
        assert got["voltage_mv"] == w["voltage_mv"] and got["current_ma"] == w["current_ma"]
        assert got["cells_mv"] == w["cells_mv"] and got["remaining_mah"] == w["remaining_mah"]
    # the text view of it (0x44 group answers: tests/host/test_decode_group44.py)
    rc, out, err = run("pylontech", "--group", "--text", "--file", str(f))
    assert "whole group, %d pack%s" % (n, "" if n == 1 else "s") in out and ("pack %d: " % n) in out


FRAME_RE = re.compile(r"~[0-9A-Fa-f]{12,}")


def _frames_in_tests():
    found = set()
    for path in glob.glob(os.path.join(REPO, "tests", "**", "*.*"), recursive=True):
        if not path.endswith((".py", ".json", ".txt", ".md")):
            continue
        with open(path, errors="replace") as f:
            text = f.read()
        # frames written as adjacent string literals ("~2002..." "FFFA...") are joined first
        text = re.sub(r'"\s*\n\s*"', "", text)
        found.update(FRAME_RE.findall(text))
    return sorted(found)


def test_every_frame_quoted_in_tests_decodes_without_a_crash(tmp_path):
    frames = _frames_in_tests()
    assert len(frames) >= 15
    for family, ver in (("pylontech", "20"), ("pace", "25")):
        mine = [fr for fr in frames if fr[1:3] == ver] if family == "pace" else \
            [fr for fr in frames if fr[1:3] != "25"]
        f = tmp_path / ("%s.txt" % family)
        f.write_text("\n".join(mine) + "\n")
        rc, out, err = run(family, "--file", str(f))
        objs = jsons(out)
        assert len(objs) == len(mine) and rc in (0, 1), err[-2000:]
        for fr, obj in zip(mine, objs):
            # accepted, or rejected with the decoder's named reason: never an internal error
            assert obj["ok"] or re.match(r"^[a-z_0-9]+: ", obj["error"]), (fr, obj)
            assert not obj.get("error", "").startswith("internal"), (fr, obj)


def test_requests_never_put_frames_in_argv(monkeypatch):
    seen = []

    def fake_run(argv, **kw):
        seen.append(argv)

        class P:
            returncode = 0
            stdout = '{"ok": true}\n'
            stderr = ""
        return P()
    monkeypatch.setattr(decode_cmd.mpy, "run", fake_run)
    long_frame = "~" + "0" * 3000
    objs, rc = decode_cmd.decode([["pylontech", 0x42, "auto", -1, long_frame]])
    assert rc == 0 and objs == [{"ok": True}]
    assert all(len(a) < 300 for a in seen[0]) and long_frame not in seen[0]


def test_oversized_and_binary_input_is_refused_in_words(tmp_path):
    f = tmp_path / "junk.txt"
    f.write_bytes(b"~" + b"2" * 200000 + b"\n\xff\xfe~20\n~200246000000FDB2\n")
    rc, out, err = run("pylontech", "--command", "0x4F", "--file", str(f))
    a, b, c = jsons(out)
    assert rc == 1 and "Traceback" not in out + err
    assert a["error"] == "length: 200001 characters: no frame of the protocol is longer than 4113"
    assert b["error"].startswith("soi: ") and c["ok"] and c["proto_version"] == 0x20
