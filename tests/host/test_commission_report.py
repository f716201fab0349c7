"""The commissioning report in a REAL headless Chromium (Debian `chromium`, .ci/run installs it).

A commissioning run of the troubleshooting scenario 'One module current is much higher' on
the simulated bank (real firmware) is recorded, `bankgate commission --from` writes the report,
Chromium loads it from disk: the page renders (the load event fires, a screenshot is not
blank), the five plots are images Chromium decoded at a non-trivial size, and the numbers in
the DOM equal the assessment of the same recording.  Skipped only when Chromium is absent
outside CI; in CI (CI=true) an absent Chromium is a failure.
"""
import html.parser
import json
import os
import shutil
import subprocess
import sys

import pytest

from bankgate_host import REPO
from bankgate_host import commission_cmd as cmd
from bankgate_host import commission_judge as judge
from bankgate_host import commission_run as crun
from bankgate_host import commission_report as report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# collects every image's natural and laid-out size once the page (and its images) loaded
PROBE = ('<script>window.addEventListener("load",function(){document.querySelectorAll("img")'
         '.forEach(function(i){var r=i.getBoundingClientRect();i.setAttribute("data-natural",'
         'i.naturalWidth+"x"+i.naturalHeight);i.setAttribute("data-box",Math.round(r.width)+"x"+'
         'Math.round(r.height));});document.body.setAttribute("data-loaded","1");});</script>')


def chromium():
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    pytest.skip("chromium not installed (Debian package chromium; .ci/run installs it)")


def run_chromium(*args):
    p = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--virtual-time-budget=10000"] + list(args),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


class Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.k = {}            # data-k -> text
        self.plots = {}        # data-plot -> attrs
        self.body = {}
        self._open = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if "data-plot" in a:
            self.plots[a["data-plot"]] = a
        if "data-k" in a:
            self.k[a["data-k"]] = ""
            self._open.append((tag, a["data-k"]))

    def handle_endtag(self, tag):
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data):
        for _, k in self._open:
            self.k[k] += data


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    chromium()
    d = tmp_path_factory.mktemp("report")
    rec = d / "run.jsonl"
    cmd.run_sim(os.path.join(REPO, "tests", "scenarios", "ts_one_module_current_much_higher.json"), 60,
                str(rec))
    out = d / "report.html"
    p = subprocess.run([sys.executable, "-m", "bankgate_host", "commission", "--from", str(rec), "--yes",
                        "--report", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stderr          # the sharing check fails: not complete
    run = crun.load(str(rec))
    run.answers.update({n: True for n in judge.MANUAL})
    a = judge.assess(run)
    probe = d / "probe.html"
    probe.write_text(out.read_text().replace("</body>", PROBE + "</body>"))
    dom = Dom()
    dom.feed(run_chromium("--dump-dom", probe.as_uri()))
    shot = d / "shot.png"
    run_chromium("--window-size=1100,3000", "--screenshot=%s" % shot, out.as_uri())
    return {"run": run, "a": a, "dom": dom, "shot": shot, "html": out.read_text()}


def test_report_is_self_contained(made):
    h = made["html"]
    assert "http://" not in h and "https://" not in h and "<link" not in h
    assert h.count('src="data:image/png;base64,') == len(report.PLOTS)


def test_page_renders_with_its_plots(made):
    dom = made["dom"]
    assert dom.body.get("data-loaded") == "1"
    assert sorted(dom.plots) == sorted(report.PLOTS)
    for name, attrs in dom.plots.items():
        nw, nh = (int(x) for x in attrs["data-natural"].split("x"))
        bw, bh = (int(x) for x in attrs["data-box"].split("x"))
        assert nw >= 600 and nh >= 200, (name, attrs["data-natural"])     # decoded by the browser
        assert bw >= 600 and bh >= 200, (name, attrs["data-box"])         # and laid out


def test_screenshot_is_not_blank(made):
    from PIL import Image
    im = Image.open(made["shot"]).convert("RGB")
    assert im.size == (1100, 3000)
    small = im.resize((275, 750))
    colors = small.getcolors(275 * 750)         # [(count, (r, g, b))]
    non_white = sum(n for n, c in colors if min(c) < 230)
    assert non_white > 0.05 * 275 * 750
    assert len(colors) > 200          # text, tables and coloured plot lines, not a flat page


def test_numbers_in_the_page_match_the_run(made):
    k, a, run = made["dom"].k, made["a"], made["run"]
    assert k["verdict"] == "INCOMPLETE"
    assert int(k["at-step"]) == a["at_step"] == 14      # the sharing check of step 14 failed
    for i, c in enumerate(a["checks"]):
        assert k["check-%d" % i] == c["verdict"], c
    assert "FAIL" in [k["check-%d" % i] for i in range(len(a["checks"]))]
    for j in a["joins"]:
        assert int(k["join-order-%s" % j["addr"]]) == j["order"]
        assert k["dv-%s" % j["addr"]] == str(j["dv_mv"])
    (share,) = [c for c in a["checks"] if c["name"].startswith("current sharing")]
    (drift,) = [c for c in a["checks"] if c["name"].startswith("SOC drift")]
    (temp,) = [c for c in a["checks"] if c["name"] == "temperature"]
    ids = run.identities()
    for addr in (2, 3, 4):
        assert int(k["share-0-%d" % addr]) == share["numbers"]["deviation_pm"][addr]
        assert float(k["drift-0-%d" % addr]) == pytest.approx(drift["numbers"]["drift_pm"][addr])
        assert float(k["tmax-%d" % addr]) == pytest.approx(temp["numbers"]["max_dc"][addr] / 10.0)
        assert k["serial-%d" % addr] == ids[addr]["serial"]
    assert int(k["share-0-2"]) > 250          # the short branch: what the run is about
    assert "diag-current_high-2" in k
    assert json.loads(k["config"])["gating"]["max_dv_mv"] == run.config["gating"]["max_dv_mv"]
