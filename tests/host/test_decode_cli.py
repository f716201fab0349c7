"""`bankgate decode` as a user runs it: a subprocess, one JSON object, exit codes."""
import json
import os
import subprocess
import sys

import pytest

BANKGATE = os.path.join(os.path.dirname(sys.executable), "bankgate")

UP2500_42 = ("~20024600D05E1002080D020D020D020D030D000D010D010D03050B7D0B690B690B690B73"
             "FFFA680EFFFF04FFFF00000174E401B198E906")
PACE_42 = ("~25014600F07A0001100CC70CC80CC70CC70CC70CC50CC60CC70CC70CC60CC70CC60CC60CC70CC6"
           "0CC7060B9B0B990B990B990BB30BBCFF1FCCCD12D303286A008C2710E1E4")
PACE_44 = ("~25014600004C00011000000000000000000000000000000000060000000000000000000000"
           "0E000000000000EF3A")


def run(*args):
    proc = subprocess.run([BANKGATE, "decode"] + list(args), capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


def test_pylontech_analog_default_command():
    rc, out = run("pylontech", UP2500_42)
    assert rc == 0 and out["ok"] is True
    assert out["adr"] == 2 and out["rtn"] == 0 and out["group"] is False
    (m,) = out["modules"]
    assert m["cells_mv"] == [3330, 3330, 3330, 3331, 3328, 3329, 3329, 3331]
    assert m["temps_dc"] == [210, 190, 190, 190, 200]
    assert (m["current_ma"], m["voltage_mv"], m["remaining_mah"], m["total_mah"], m["cycles"]) == \
        (-600, 26638, 95460, 111000, 0)


def test_trailing_cr_accepted():
    rc, out = run("pylontech", UP2500_42 + "\r")
    assert rc == 0 and out["ok"]


def test_pace_analog_and_status():
    rc, out = run("pace", PACE_42)
    assert rc == 0 and out["modules"][0]["current_ma"] == -2250 and out["modules"][0]["soh_pm"] == 1000
    rc, out = run("pace", "--command", "0x44", PACE_44)
    assert rc == 0 and out["modules"][0]["status"] == [0, 0, 14, 0, 0]
    assert out["modules"][0]["alarm_names"] == []


def test_version_command():
    rc, out = run("pylontech", "--command", "0x4F", "~200246000000FDB2")
    assert rc == 0 and out["proto_version"] == 0x20


def test_can_frame():
    rc, out = run("pylontech-can", "0x351", "1402B0044006C201")
    assert rc == 0 and out["ok"]
    assert (out["chg_v_mv"], out["chg_limit_ma"], out["dsg_limit_ma"], out["dsg_v_mv"]) == \
        (53200, 120000, 160000, 45000)
    rc, out = run("pylontech-can", "0x359", "0A0104090350 4E".replace(" ", ""))
    assert rc == 0 and "charge_oc" in out["protection_names"] and out["n_modules"] == 3


@pytest.mark.parametrize("frame,name", [
    (UP2500_42[:-1] + "7", "chksum"),
    ("X" + UP2500_42[1:], "soi"),
    (UP2500_42[:30] + "G" + UP2500_42[31:], "hex"),
    ("~2002", "truncated"),
    ("~200246040000FDAE", "rtn_invalid_cid2"),
])
def test_rejected_frames_exit_1_with_reason(frame, name):
    rc, out = run("pylontech", frame)
    assert rc == 1 and out["ok"] is False
    assert out["error"].startswith(name + ": "), out


def test_checksum_error_names_both_values():
    rc, out = run("pylontech", UP2500_42[:-1] + "7")
    assert "E906" in out["error"] and "E907" in out["error"]


def test_wrong_address_and_unsupported():
    rc, out = run("pylontech", "--addr", "3", UP2500_42)
    assert rc == 1 and out["error"].startswith("addr: ")
    rc, out = run("pace", "--command", "0x92", PACE_42)
    assert rc == 1 and out["error"].startswith("unsupported: ")
    rc, out = run("pylontech-can", "0x123", "00")
    assert rc == 1 and out["error"].startswith("unsupported: ")


def test_usage_errors_exit_2():
    rc, out = run("nosuchfamily", "~00")
    assert rc == 2 and "pylontech" in out["error"]
    rc, out = run("pylontech-can", "0x351")
    assert rc == 2 and not out["ok"]
    rc, out = run("pylontech-can", "0x351", "ZZ")
    assert rc == 2
    rc, out = run("pace", "--group", PACE_42)
    assert rc == 2
