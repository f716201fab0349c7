"""The fault matrix: run one probe per fault, write docs/faults.md from the results.

    python -m bankgate_host.faults            run every probe, rewrite docs/faults.md
    python -m bankgate_host.faults --check    run every probe, compare with docs/faults.md
                                              (exit 1 on drift or a failed probe)
    python -m bankgate_host.faults --json     print the rows as JSON

The probes are MicroPython (tools/rigs/faultprobe.py): the real firmware on the
simulated bank, the real configuration validator, the real telemetry against a
recording broker stand-in.  Every time in the table is SIMULATED time, so the
table is the same on every run of the same code; it changes when the firmware's
behaviour changes, and tests/host/test_fault_matrix.py then asks for a
regeneration.  The probes run in two MicroPython processes in parallel.
"""
import argparse
import json
import os
import subprocess
import sys

from . import REPO, mpy

DOC = os.path.join(REPO, "docs", "faults.md")
PROBE_HEAPSIZE = "4m"
_MARK = "\x1ePROBE "
REGEN = "run `python -m bankgate_host.faults` to regenerate docs/faults.md"

HEADER = """# Fault matrix

Every fault the product knows, the reaction the firmware is designed to have, and
the reaction measured by a probe.  **Generated** by `python -m bankgate_host.faults`
from the probes in `tools/rigs/faultprobe.py` (run by `tests/host/test_fault_matrix.py`,
which fails when this file no longer matches what the firmware does): do not edit
by hand.

How the probes work: each runs one short deterministic scenario under the unix
MicroPython port -- the real firmware main loop (`bankgate.app.Gateway`) on the
simulated bank (`tools/sim/bgsim`), or the real component for the non-physical rows
(configuration validator and device start-up, MQTT telemetry against a recording
broker stand-in, `tools/fakes/fakemqtt.py`).  Unless a row says otherwise: 3 modules,
Pylontech RS485 at 9600 baud, branch topology with auxiliary feedback contacts, the
main disconnect open (the "link isolated" input), no load, default configuration
(`max_age_ms` 5 s, `period_ms` 50 ms, `watchdog_ms` 2 s), fault at 20 s after boot
when every module is admitted.  **Times are simulated time** from the fault to the
reaction named in the "time" column (the CPU time of the reacting loop iteration is
not included: see docs/performance.md for it).  "ok" means the measured reaction is
the expected one.

Rows `rejoin_*` and `can_bus_off_*` (issue #21) hold the fault from 20 s to 30 s and
their "time" is from the END of the fault until every branch is closed again (what
bounds it: docs/bus_health.md "Rejoin bounds", docs/bus.md for CAN bus-off).  On the
CAN module bus no module is admitted yet on this code base (issue #15), so those rows
give fault end -> data flowing and the bus verdict healthy.  MQTT rows state the bound
a time met: telemetry works within a real-time budget per loop iteration, so its
simulated times vary by a few ms with the host's load.

"""


def run_probes(ids=None, workers=2, timeout=600):
    """Rows in PROBES order (ids: subset).  Probes are split across `workers` processes."""
    order = probe_ids()
    want = [i for i in order if not ids or i in ids]
    groups = [want[k::workers] for k in range(workers)]
    env = mpy.environ()
    env["BANKGATE_REPO"] = REPO
    procs = []
    for g in groups:
        if not g:
            continue
        procs.append(subprocess.Popen(
            mpy.command([os.path.join(mpy.RIGS, "faultprobe.py")] + g, PROBE_HEAPSIZE),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    rows = {}
    errors = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        for line in out.split("\n"):
            i = line.find(_MARK)
            if i >= 0:
                r = json.loads(line[i + len(_MARK):])
                rows[r["id"]] = r
        if p.returncode != 0:
            errors.append(err[-2000:])
    result = []
    for i in want:
        if i in rows:
            result.append(rows[i])
        else:
            result.append({"id": i, "fault": i, "injected": "-", "expected": "-",
                           "measured": "not measured: the probe process ended early (%s)"
                           % (" | ".join(errors)[-300:].replace("\n", " ") or "?"),
                           "time": "-", "ok": False})
    return result


def probe_ids():
    """Probe ids in table order, read from faultprobe.py's PROBES list (no import)."""
    import re
    src = open(os.path.join(mpy.RIGS, "faultprobe.py")).read()
    block = src[src.index("PROBES = ["):]
    block = block[:block.index("]\n")]
    return re.findall(r'\("([a-z_0-9]+)",', block)


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(rows):
    L = [HEADER.rstrip("\n"), ""]
    n_ok = sum(1 for r in rows if r["ok"])
    L.append("%d faults, %d measured as expected." % (len(rows), n_ok))
    L.append("")
    L.append("| # | fault | injected | expected reaction | measured reaction | time | ok |")
    L.append("|---|---|---|---|---|---|---|")
    for k, r in enumerate(rows, 1):
        L.append("| %d | %s | %s | %s | %s | %s | %s |" % (
            k, _cell(r["fault"]), _cell(r["injected"]), _cell(r["expected"]), _cell(r["measured"]),
            _cell(r["time"]), "yes" if r["ok"] else "**NO**"))
    L.append("")
    L.append("Probe ids (for `python -m bankgate_host.faults --only ID`): %s."
             % ", ".join("`%s`" % r["id"] for r in rows))
    L.append("")
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bankgate_host.faults", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with docs/faults.md instead of writing it")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--only", nargs="*", default=None, help="run only these probe ids (implies --json)")
    a = ap.parse_args(argv)
    rows = run_probes(a.only)
    if a.json or a.only:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return 0 if all(r["ok"] for r in rows) else 1
    text = render(rows)
    if a.check:
        old = open(DOC).read() if os.path.exists(DOC) else ""
        if old != text:
            sys.stderr.write("docs/faults.md is out of date: %s\n" % REGEN)
            return 1
        return 0 if all(r["ok"] for r in rows) else 1
    with open(DOC, "w") as f:
        f.write(text)
    bad = [r["id"] for r in rows if not r["ok"]]
    sys.stdout.write("wrote %s: %d rows, %d not as expected%s\n" % (
        os.path.relpath(DOC, REPO), len(rows), len(bad), (": " + ", ".join(bad)) if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
