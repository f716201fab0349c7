"""The fault matrix (docs/faults.md) is backed by these results: every probe in
tools/rigs/faultprobe.py runs once (two MicroPython processes, simulated time), each
fault must show its expected reaction, and the generated table must equal the
committed docs/faults.md."""
import os

import pytest

from bankgate_host import faults


@pytest.fixture(scope="module")
def rows():
    return faults.run_probes()


def test_at_least_twenty_faults(rows):
    assert len(rows) >= 20
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("fid", faults.probe_ids())
def test_fault_reaction(rows, fid):
    r = [x for x in rows if x["id"] == fid][0]
    assert r["ok"], "%s: expected %r, measured %r (%s)\n%s" % (
        fid, r["expected"], r["measured"], r["time"], r.get("traceback", ""))


def test_docs_match_results(rows):
    text = faults.render(rows)
    old = open(faults.DOC).read() if os.path.exists(faults.DOC) else ""
    assert old == text, "docs/faults.md does not match the probe results: " + faults.REGEN
