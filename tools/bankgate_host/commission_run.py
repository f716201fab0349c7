"""The data of one commissioning run, from any of its sources (docs/commissioning.md).

A `Run` is what the assistant judges and the report draws: the gateway's own view of the
bank over time (samples of `Gateway.snapshot()` fields: bank state, current, limits, and per
module state, reason, dV, voltage, current, SOC, temperature, identity), its events, its
diagnoses, and the configuration.  Every source is reduced to it:

- a simulated run (`bankgate commission --sim`, tools/cli/cli_commission.py) or a recorded
  `bankgate simulate` output: JSON lines, `state` lines carry `gw` (the snapshot), `event`
  lines the events, the optional `config` line the resolved configuration;
- a recorded MQTT log: the telemetry topics (docs/mqtt.md) as `mosquitto_sub -v` writes them
  (`<topic> <payload>` per line), or JSON lines `{"t": seconds, "topic": ..., "payload": ...}`;
- a live gateway over the USB console (`status` replies), via `Run.add_status()`.

Units stay the firmware's integers (mV, mA, permille, 0.1 degC); time `t` is seconds from the
start of the recording.
"""
import json

TICKS_PERIOD_MS = 1 << 30     # the gateway's ticks_ms wraps here (docs/architecture.md)

MODULE_KEYS = ("slot", "addr", "state", "reason", "value", "dv_mv", "online", "mv", "ma", "soc_pm",
               "soh_pm", "temp_dc", "cell_min_mv", "cell_max_mv", "chg_limit_ma", "dsg_limit_ma",
               "alarms", "protections", "serial", "model", "sw_version", "cycles")
BANK_KEYS = ("state", "reason", "value", "mv", "ma", "soc_pm", "soh_pm", "temp_dc", "link_mv",
             "admitted", "expected", "limits", "faults", "outputs", "bus", "discovery", "inverter",
             "topology")


class RunError(ValueError):
    """A recording that cannot be read (says where and why)."""


class Run:
    def __init__(self, source):
        self.source = source          # "sim", "simulate-log", "mqtt-log", "live"
        self.config = None            # the resolved gateway configuration, when the source has it
        self.meta = {}                # scenario name, result line, ...
        self.samples = []             # [{"t", "bank": {...}, "modules": {addr: {...}}}]
        self.events = []              # [{"t", "name", "addr", "a", "b"}]
        self.diagnoses = {}           # (name, addr) -> newest diagnosis dict (with "t")
        self.answers = {}             # step number -> installer's answer (True / False)

    # -- building ----------------------------------------------------------------------
    def add_snapshot(self, t, snap):
        """One `Gateway.snapshot()` (or console status reply) at t seconds."""
        bank = {k: snap.get(k) for k in BANK_KEYS if k in snap}
        mods = {}
        for m in snap.get("modules") or ():
            if m.get("addr") is None:
                continue
            mods[m["addr"]] = {k: m.get(k) for k in MODULE_KEYS if k in m}
        self.samples.append({"t": float(t), "bank": bank, "modules": mods})
        for d in snap.get("diagnoses") or ():
            self._diagnosis(t, d)

    def _diagnosis(self, t, d):
        key = (d.get("name"), d.get("addr"))
        if key not in self.diagnoses:
            dd = dict(d)
            dd["t"] = float(t)
            self.diagnoses[key] = dd

    def add_event(self, t, name, addr=-1, a=0, b=0):
        self.events.append({"t": float(t), "name": name, "addr": addr, "a": a, "b": b})

    # -- reading -----------------------------------------------------------------------
    def addresses(self):
        """Module addresses seen, configured ones first in configuration order."""
        out = []
        if self.config:
            out.extend(self.config.get("bank", {}).get("addresses") or [])
        for s in self.samples:
            for a in sorted(s["modules"]):
                if a not in out:
                    out.append(a)
        return out

    def series(self, addr, key):
        """[(t, value)] of one module field (samples where the module is online and reports it)."""
        out = []
        for s in self.samples:
            m = s["modules"].get(addr)
            if m is not None and m.get(key) is not None and m.get("online", True):
                out.append((s["t"], m[key]))
        return out

    def bank_series(self, key):
        return [(s["t"], s["bank"][key]) for s in self.samples if s["bank"].get(key) is not None]

    def last(self):
        return self.samples[-1] if self.samples else None

    def identities(self):
        """addr -> {serial, model, sw_version}: the newest identity each module reported."""
        ids = {}
        for s in self.samples:
            for a, m in s["modules"].items():
                d = ids.setdefault(a, {})
                for k in ("serial", "model", "sw_version", "cycles", "soh_pm"):
                    if m.get(k) is not None:
                        d[k] = m[k]
        return ids

    def to_dict(self):
        return {"source": self.source, "config": self.config, "meta": self.meta,
                "samples": self.samples, "events": self.events,
                "diagnoses": list(self.diagnoses.values()),
                "answers": {str(k): v for k, v in self.answers.items()}}


# -- sources -------------------------------------------------------------------------------
def from_sim_lines(lines, source="simulate-log"):
    """JSON lines of `bankgate simulate` / cli_commission.py (str or dict each)."""
    run = Run(source)
    for n, line in enumerate(lines, 1):
        if isinstance(line, str):
            line = line.strip()
            if not line:
                continue
            try:
                line = json.loads(line)
            except ValueError as e:
                raise RunError("line %d is not JSON (%s): %.60s" % (n, e, line))
        if not isinstance(line, dict):
            raise RunError("line %d is not a JSON object" % n)
        typ = line.get("type")
        t = line.get("t") or 0.0
        if typ == "config":
            run.config = line.get("config")
        elif typ == "start":
            run.meta["start"] = line
        elif typ == "state" and isinstance(line.get("gw"), dict):
            run.add_snapshot(t, line["gw"])
        elif typ == "event":
            run.add_event(t, line.get("name") or line.get("ev") or str(line.get("code")),
                          line.get("addr", -1), line.get("a", 0), line.get("b", 0))
        elif typ == "result":
            run.meta["result"] = line
        elif typ == "error":
            raise RunError("the run failed before it started: %s" % line.get("error"))
    if not run.samples:
        raise RunError("no state lines in the recording: not a `bankgate simulate` output?")
    return run


class _Unwrap:
    """ticks_ms (wrapping at 2**30) -> seconds since the first value."""
    def __init__(self):
        self.first = None
        self.prev = None
        self.acc = 0

    def __call__(self, t_ms):
        if self.first is None:
            self.first = self.prev = t_ms
            return 0.0
        d = (t_ms - self.prev) % TICKS_PERIOD_MS
        if d >= TICKS_PERIOD_MS // 2:      # a step backwards (reordered message): keep it small
            d -= TICKS_PERIOD_MS
        self.acc += d
        self.prev = t_ms
        return self.acc / 1000.0


def _mqtt_records(lines):
    """(line number, topic, payload text, t or None) of a mosquitto_sub -v log or JSONL."""
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                d = json.loads(line)
            except ValueError as e:
                raise RunError("line %d: JSON line that does not parse (%s)" % (n, e))
            if "topic" not in d or "payload" not in d:
                raise RunError("line %d: a JSON line needs \"topic\" and \"payload\"" % n)
            p = d["payload"]
            yield n, d["topic"], p if isinstance(p, str) else json.dumps(p), d.get("t")
            continue
        if " " not in line:
            raise RunError("line %d: expected '<topic> <payload>' (mosquitto_sub -v): %.60s" % (n, line))
        topic, payload = line.split(" ", 1)
        yield n, topic, payload, None


def from_mqtt_log(lines, base=None):
    """A recorded MQTT log of the gateway's telemetry (docs/mqtt.md topics).  `base` is
    `<prefix>/<gateway_id>`; by default the first topic ending in /bank names it."""
    run = Run("mqtt-log")
    unwrap = _Unwrap()
    t_now = 0.0
    modules = {}
    bank = None
    seen_seq = set()
    for n, topic, payload, t_line in _mqtt_records(lines):
        if base is None and topic.endswith("/bank"):
            base = topic[:-len("/bank")]
        if base is None or not topic.startswith(base + "/"):
            continue
        sub = topic[len(base) + 1:]
        if sub == "status" or sub.startswith("cmd/"):
            continue
        try:
            d = json.loads(payload)
        except ValueError:
            raise RunError("line %d: payload of %s is not JSON: %.60s" % (n, topic, payload))
        if not isinstance(d, dict):
            continue
        if t_line is not None:
            t_now = float(t_line)
        elif isinstance(d.get("t_ms"), int):
            t_now = unwrap(d["t_ms"])
        if sub == "bank":
            bank = d
            snap = dict(d)
            snap["modules"] = list(modules.values())
            run.add_snapshot(t_now, snap)
        elif sub.startswith("module/"):
            if d.get("addr") is None:
                continue
            modules[d["addr"]] = d
            if run.samples and bank is not None:     # the newest sample sees it at once
                run.samples[-1]["modules"][d["addr"]] = {k: d.get(k) for k in MODULE_KEYS if k in d}
        elif sub == "diagnoses":
            for dg in d.get("active") or ():
                run._diagnosis(t_now, dg)
        elif sub == "event":
            seq = d.get("seq")
            if seq is not None:
                if seq in seen_seq:            # QoS 1: at least once; de-duplicate by seq
                    continue
                seen_seq.add(seq)
            run.add_event(t_now, d.get("ev") or str(d.get("code")), d.get("addr", -1),
                          d.get("a", 0), d.get("b", 0))
    if not run.samples:
        raise RunError("no %s messages in the log: is it the gateway's telemetry "
                       "(mosquitto_sub -v -t '<prefix>/#')?" % ((base or "<base>") + "/bank"))
    run.meta["mqtt_base"] = base
    return run


def load(path):
    """A recording file: simulate/commission JSON lines or an MQTT log (detected)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if s.startswith("{"):
            try:
                d = json.loads(s)
            except ValueError:
                break
            if "type" in d:
                return from_sim_lines(lines)
        break
    return from_mqtt_log(lines)
