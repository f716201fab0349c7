"""The commissioning report: ONE self-contained HTML file (docs/commissioning.md).

Plots are made with matplotlib (Agg backend) and embedded as PNG in data: URIs, so the file
opens anywhere without network or other files.  Every number the page shows comes from the
assessment (`commission_judge.assess`) and the run (`commission_run.Run`); the numbers a
reader (or tests/host/test_commission_report.py, through headless Chromium) may want to
find carry `data-k` attributes: `verdict`, `at-step`, `check-<i>` (PASS/FAIL/WAIT),
`dv-<addr>`, `join-order-<addr>`, `share-<phase index>-<addr>` (permille), `drift-<phase
index>-<addr>` (permille), `tmax-<addr>` (0.1 degC), `serial-<addr>`, `diag-<name>-<addr>`;
plots are `<img data-plot="current|share|joins|soc|temp">`.
"""
import base64
import html
import io
import json
import time

from . import commission_judge as judge

PLOTS = ("current", "share", "joins", "soc", "temp")
LINES = ("-", "--", "-.", ":")     # per module, so equal curves stay distinguishable


def _fig_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_sw = judge.sw_text


def plots(run, a):
    """name -> base64 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    addrs = judge._expected(run)
    th = a["thresholds"]
    out = {}

    def axes(title, ylabel):
        fig, ax = plt.subplots(figsize=(9, 3.4))
        ax.set_title(title)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        for p in a["test"]["phases"]:
            ax.axvspan(p["t0"], p["t1"], color="tab:green" if p["kind"] == "charge" else "tab:orange",
                       alpha=0.08)
        return fig, ax

    # per-module current
    fig, ax = axes("Module current (+ = charging)", "A")
    for i, addr in enumerate(addrs):
        s = run.series(addr, "ma")
        ax.plot([t for t, _ in s], [v / 1000.0 for _, v in s], LINES[i % 4], label="module %s" % addr)
    s = run.bank_series("ma")
    ax.plot([t for t, _ in s], [v / 1000.0 for _, v in s], "k--", lw=1, label="bank")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out["current"] = _fig_png(fig)

    # share of the bank current while loaded
    fig, ax = axes("Share of the bank current (while |I| >= %.0f A per module)" % (
        judge.TEST_MIN_MA_PER_MODULE / 1000.0), "% of bank current")
    n = max(1, len(addrs))
    for addr in addrs:
        ts, vs = [], []
        for smp in run.samples:
            mods = smp["modules"]
            # the samples the judging uses: bank closed, every module admitted
            if smp["bank"].get("state") != "closed" or \
                    not all(mods.get(x, {}).get("state") == "admitted" for x in addrs):
                continue
            tot = sum(mods[x].get("ma") or 0 for x in addrs)
            if abs(tot) < judge.TEST_MIN_MA_PER_MODULE * n:
                continue
            ts.append(smp["t"])
            vs.append(100.0 * (mods[addr].get("ma") or 0) / tot)
        ax.plot(ts, vs, ".", ms=3, label="module %s" % addr)
    fair = 100.0 / n
    lim = th["share_pm"]["value"] / 1000.0
    ax.axhline(fair, color="k", lw=1)
    ax.axhline(fair * (1 + lim), color="r", lw=1, ls=":", label="limit")
    ax.axhline(fair * (1 - lim), color="r", lw=1, ls=":")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out["share"] = _fig_png(fig)

    # dV and order at each join
    fig, ax = plt.subplots(figsize=(9, 3.4))
    js = a["joins"]
    labels = ["#%d: module %s\n%.0f s" % (j["order"], j["addr"], j["t"]) for j in js]
    vals = [j["dv_mv"] or 0 for j in js]
    ax.bar(range(len(js)), vals, color="tab:blue")
    ax.axhline(th["max_dv_mv"]["value"], color="r", ls=":", label="limit %d mV" % th["max_dv_mv"]["value"])
    ax.set_xticks(range(len(js)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("|dV| at join (mV)")
    ax.set_title("Voltage difference and order at each join")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out["joins"] = _fig_png(fig)

    # SOC and its drift against the bank mean
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ser = {addr: dict(run.series(addr, "soc_pm")) for addr in addrs}
    ts = sorted(set(t for d in ser.values() for t in d))
    for i, addr in enumerate(addrs):
        ax1.plot([t for t in ts if t in ser[addr]], [ser[addr][t] / 10.0 for t in ts if t in ser[addr]],
                 LINES[i % 4], label="module %s" % addr)
    tcommon = [t for t in ts if all(t in ser[x] for x in addrs)]
    for addr in addrs:
        if not tcommon:
            break
        t0 = tcommon[0]
        d0 = ser[addr][t0] - sum(ser[x][t0] for x in addrs) / float(len(addrs))
        ax2.plot(tcommon, [(ser[addr][t] - sum(ser[x][t] for x in addrs) / float(len(addrs)) - d0) / 10.0
                           for t in tcommon], label="module %s" % addr)
    ax1.set_title("SOC")
    ax1.set_ylabel("%")
    ax1.set_xlabel("time (s)")
    ax2.set_title("SOC drift against the bank mean")
    ax2.set_ylabel("percentage points")
    ax2.set_xlabel("time (s)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out["soc"] = _fig_png(fig)

    # temperatures
    fig, ax = axes("Module temperature (hottest sensor)", "degC")
    for i, addr in enumerate(addrs):
        s = run.series(addr, "temp_dc")
        ax.plot([t for t, _ in s], [v / 10.0 for _, v in s], LINES[i % 4], label="module %s" % addr)
    ax.axhline(th["temp_max_dc"]["value"] / 10.0, color="r", ls=":", label="limit")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out["temp"] = _fig_png(fig)
    return out


CSS = """
body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}
th{background:#eee}.PASS,.done{color:#060;font-weight:bold}.FAIL,.fail{color:#b00;font-weight:bold}
.WAIT,.open{color:#a60;font-weight:bold}pre{background:#f6f6f6;padding:.5em;font-size:80%;overflow:auto}
img{display:block;margin:.5em 0;border:1px solid #ddd}
"""


def render(run, a, png=None):
    """The report as one HTML string."""
    e = html.escape
    png = png if png is not None else plots(run, a)
    addrs = judge._expected(run)
    h = []
    w = h.append
    w("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">")
    w("<title>bankgate commissioning report</title><style>%s</style></head><body>" % CSS)
    w("<h1>Commissioning report</h1>")
    verdict = "COMPLETE" if a["complete"] else "INCOMPLETE"
    w("<p>Result: <b data-k=\"verdict\" class=\"%s\">%s</b>" % ("done" if a["complete"] else "fail", verdict))
    if not a["complete"]:
        w(" &mdash; the bank is at step <b data-k=\"at-step\">%d</b>: %s" % (
            a["at_step"], e(judge.STEP_TITLES[a["at_step"]])))
    w("</p><p>Source: %s%s; %d samples over %.0f s; made %s.</p>" % (
        e(run.source), (", scenario %s" % e(str(run.meta.get("scenario") or
                                                 (run.meta.get("start") or {}).get("scenario") or "")))
        if run.meta.get("scenario") or run.meta.get("start") else "",
        len(run.samples), run.samples[-1]["t"] - run.samples[0]["t"] if run.samples else 0,
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))

    w("<h2>Steps</h2><table><tr><th>step</th><th>what</th><th>status</th><th>installer</th><th>gateway checks</th></tr>")
    for st in a["steps"]:
        ans = "" if not st["manual"] else ("confirmed" if st["answer"] else
                                           ("DECLINED" if st["answer"] is False else "not asked"))
        cs = "<br>".join("<span class=\"%s\">%s</span> %s: %s" % (c["verdict"], c["verdict"], e(c["name"]), e(c["text"]))
                         for c in st["checks"])
        w("<tr><td>%d</td><td>%s</td><td class=\"%s\" data-k=\"step-%d\">%s</td><td>%s</td><td>%s</td></tr>" % (
            st["step"], e(st["title"]), st["status"], st["step"], st["status"], e(ans), cs))
    w("</table>")

    w("<h2>Checks</h2><table><tr><th>#</th><th>step</th><th>check</th><th>verdict</th><th>numbers</th></tr>")
    for i, c in enumerate(a["checks"]):
        w("<tr><td>%d</td><td>%d</td><td>%s</td><td class=\"%s\" data-k=\"check-%d\">%s</td><td>%s</td></tr>" % (
            i, c["step"], e(c["name"]), c["verdict"], i, c["verdict"], e(c["text"])))
    w("</table>")

    w("<h2>Joins</h2><table><tr><th>order</th><th>module</th><th>time (s)</th><th>|dV| (mV)</th>"
      "<th>limit (mV)</th></tr>")
    for j in a["joins"]:
        w("<tr><td data-k=\"join-order-%s\">%d</td><td>%s</td><td>%.0f</td><td data-k=\"dv-%s\">%s</td><td>%d</td></tr>" % (
            j["addr"], j["order"], j["addr"], j["t"], j["addr"],
            j["dv_mv"] if j["dv_mv"] is not None else "n/a", a["thresholds"]["max_dv_mv"]["value"]))
    w("</table><img data-plot=\"joins\" alt=\"dV at each join\" src=\"data:image/png;base64,%s\">" % png["joins"])

    w("<h2>Charge and discharge test</h2>")
    w("<table><tr><th>phase</th><th>from (s)</th><th>to (s)</th><th>bank (A)</th>%s</tr>" % "".join(
        "<th>module %s share dev. (&permil;)</th><th>module %s SOC drift (&permil;)</th>" % (x, x) for x in addrs))
    pi = 0
    shares = [c for c in a["test"]["checks"] if c["name"].startswith("current sharing")]
    drifts = [c for c in a["test"]["checks"] if c["name"].startswith("SOC drift")]
    for p, sc, dc in zip(a["test"]["phases"], shares, drifts):
        cells = "".join("<td data-k=\"share-%d-%s\">%d</td><td data-k=\"drift-%d-%s\">%s</td>" % (
            pi, x, sc["numbers"]["deviation_pm"][x], pi, x, dc["numbers"]["drift_pm"][x]) for x in addrs)
        w("<tr><td>%s</td><td>%.0f</td><td>%.0f</td><td>%.1f</td>%s</tr>" % (
            ("light " if p.get("light") else "") + p["kind"], p["t0"], p["t1"], p["bank_a"], cells))
        pi += 1
    w("</table>")
    w("<p>Limits: share within &plusmn;%.0f %% of the capacity share (%s), SOC drift within &plusmn;%.1f %% per "
      "phase (%s), temperature at most %.1f &deg;C and at most %.1f K above the bank mean (%s).</p>" % (
          a["thresholds"]["share_pm"]["value"] / 10.0, e(a["thresholds"]["share_pm"]["source"]),
          a["thresholds"]["drift_pm"]["value"] / 10.0, e(a["thresholds"]["drift_pm"]["source"]),
          a["thresholds"]["temp_max_dc"]["value"] / 10.0,
          a["thresholds"]["temp_above_mean_dc"]["value"] / 10.0,
          e(a["thresholds"]["temp_above_mean_dc"]["source"])))
    for name, alt in (("current", "module current"), ("share", "current share"), ("soc", "SOC and drift"),
                      ("temp", "temperatures")):
        w("<img data-plot=\"%s\" alt=\"%s\" src=\"data:image/png;base64,%s\">" % (name, alt, png[name]))
    temp = [c for c in a["test"]["checks"] if c["name"] == "temperature"]
    if temp:
        w("<table><tr><th>module</th><th>hottest (&deg;C)</th></tr>")
        for x in addrs:
            v = temp[0]["numbers"]["max_dc"][x]
            w("<tr><td>%s</td><td data-k=\"tmax-%s\">%.1f</td></tr>" % (x, x, v / 10.0))
        w("</table>")

    w("<h2>Diagnoses</h2>")
    if a["diagnoses"]:
        w("<table><tr><th>diagnosis</th><th>module</th><th>raised (s)</th><th>evidence</th><th>first check</th>"
          "<th>stop?</th></tr>")
        for d in a["diagnoses"]:
            w("<tr><td data-k=\"diag-%s-%s\">%s</td><td>%s</td><td>%.0f</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
                e(str(d.get("name"))), d.get("addr"), e(str(d.get("name"))), d.get("addr"), d.get("t", 0),
                e(json.dumps(d.get("evidence"))), e(str(d.get("first_check"))), e(str(d.get("stop")))))
        w("</table>")
    else:
        w("<p data-k=\"no-diagnoses\">No diagnosis was raised.</p>")

    w("<h2>Modules</h2><table><tr><th>address</th><th>serial</th><th>model</th><th>BMS firmware</th>"
      "<th>SOH (%)</th><th>cycles</th></tr>")
    ids = run.identities()
    for x in addrs:
        d = ids.get(x, {})
        w("<tr><td>%s</td><td data-k=\"serial-%s\">%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            x, x, e(str(d.get("serial"))), e(str(d.get("model"))), e(_sw(d.get("sw_version"))),
            "%.1f" % (d["soh_pm"] / 10.0) if d.get("soh_pm") is not None else "?", d.get("cycles", "?")))
    w("</table>")
    w("<h2>Configuration</h2>")
    if run.config:
        w("<pre data-k=\"config\">%s</pre>" % e(json.dumps(run.config, indent=1, sort_keys=True)))
    else:
        w("<p>The recording carries no configuration; the limits above are the firmware defaults.</p>")
    w("</body></html>\n")
    return "".join(h)


def write(run, path, a=None):
    a = a or judge.assess(run)
    text = render(run, a)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
