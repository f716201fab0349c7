"""examples/ holds one complete configuration per board in boards/ (issue 16):
each passes `bankgate config check` for its board, and each drives the simulated
bank to `closed` (the firmware's real main loop under the unix port, with the
board's way of knowing the DC-link state: a measured link where the board has a
link ADC, the `link_isolated_input` where it has none).  The README and
docs/deployment.md use these files."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from bankgate_host import REPO

BOARDS = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(REPO, "boards", "*.json")))


def _example(board):
    return os.path.join(REPO, "examples", board + ".json")


def _check(*args):
    proc = subprocess.run([sys.executable, "-m", "bankgate_host", "config", "check"] + list(args),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


@pytest.mark.parametrize("board", BOARDS)
def test_every_board_has_an_example_that_config_check_accepts(board):
    path = _example(board)
    assert os.path.exists(path), "examples/%s.json is missing" % board
    with open(path) as f:
        assert json.load(f)["board"] == board
    rc, out = _check(path)
    assert rc == 0 and out.startswith("OK ") and ("board %s:" % board) in out, out
    rc, out = _check(path, "--board", board)
    assert rc == 0, out


def test_the_generic_example_is_the_devkitc_one():
    with open(os.path.join(REPO, "examples", "config.json")) as f:
        generic = json.load(f)
    with open(_example("devkitc-sn65hvd230-max3485")) as f:
        assert json.load(f) == generic


def _scenario(board, cfg):
    with open(os.path.join(REPO, "boards", board + ".json")) as f:
        b = json.load(f)
    n = cfg["bank"]["expected_modules"]
    if b.get("link_adc"):
        # a measured DC link, held up by the inverter's input (the branch topology's
        # normal pre-condition, docs/admission.md)
        terminal = {"disconnect": True, "link_v": 49.5, "link_sensor": "link", "bleed_ohm": 1000000}
    else:
        # no link ADC: the main disconnect is open at the start and its auxiliary
        # contact (link_isolated_input) proves the DC link isolated
        assert cfg["contactors"]["link_isolated_input"]
        terminal = {"disconnect": False}
    return {
        "name": "example_" + board,
        "description": "examples/%s.json on the simulated bank: it must close" % board,
        "duration_s": 40,
        "report_s": 10,
        "defaults": {"model": "US5000", "sw_version": "1.4", "chemistry": "lfp", "cells": 15,
                     "capacity_mah": 100000, "r_int_mohm": 20, "cable_m": 1.5, "cable_mm2": 35},
        "modules": [{} for _ in range(n)],
        "terminal": terminal,
        "config": cfg,
        "expect": [{"by": 35, "bank_state": "closed", "path": "gw.admitted", "eq": n}],
    }


@pytest.mark.parametrize("board", BOARDS)
def test_every_example_reaches_closed_in_simulation(board, tmp_path):
    with open(_example(board)) as f:
        cfg = json.load(f)
    path = tmp_path / ("example_%s.json" % board)
    path.write_text(json.dumps(_scenario(board, cfg)))
    p = subprocess.run([sys.executable, "-m", "bankgate_host", "simulate", "--scenario", str(path)],
                       capture_output=True, text=True, timeout=900)
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert p.returncode == 0, (p.stderr[-2000:], lines[-5:])
    res = [x for x in lines if x.get("type") == "expect"]
    assert res and all(x.get("ok") for x in res), res


def test_readme_and_deployment_use_the_examples():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO, "docs", "deployment.md")) as f:
        deploy = f.read()
    # every deploy example names a board and that board's own example file
    found = re.findall(r"BOARD=([\w-]+) CONFIG=(\S+)", readme + deploy)
    assert found
    for board, cfg in found:
        assert cfg == "examples/%s.json" % board, (board, cfg)
        assert board in BOARDS
    assert "link_isolated_input" in deploy
    for board in BOARDS:
        if board != "sim":
            assert "examples/%s.json" % board in deploy, board
