# What telemetry publishes beyond Gateway.bank_fields() / module_snapshot() for Home Assistant
# (docs/mqtt.md): energy counters (persisted, bankgate.energy), module freshness, names of the
# alarm/protection bits, the limit behind a module's reason, cell delta, the module's current
# share and branch resistance, optionally every cell voltage (mqtt.ha_cells), and names for the
# numbers an event carries.  Kept out of Telemetry (telemetry/__init__.py) so that class does
# not grow; Telemetry calls bank(), module() and service() on the live-record path.
from bankgate import clock
from bankgate.model import alarm_names

# reason -> (config section, key) of the limit its value is compared with
_LIMITS = (
    ("dv", "gating", "max_dv_mv"), ("inrush", "gating", "max_inrush_ma"),
    ("soc_spread", "gating", "soc_spread_pm"), ("stale", "gating", "max_age_ms"),
    ("no_limits", "gating", "limits_max_age_ms"), ("spread", "gating", "max_dv_mv"),
)
_STABLE = 3      # identity unchanged this many bank messages before discovery is republished


def reason_limit(cfg, reason):
    """The configured limit a module's reason compares its value with, or None."""
    for r, sec, key in _LIMITS:
        if r == reason:
            return cfg[sec][key]
    return None


class HaData:
    def __init__(self, cfg, gw, tel=None):
        self.cfg = cfg
        self.gw = gw
        self.tel = tel
        self.max_age = cfg["gating"]["max_age_ms"]
        self.cells = bool(cfg["mqtt"].get("ha_cells"))
        self.energy = None              # bankgate.energy.Energy, loaded at the first service()
        hw = getattr(gw, "hw", None)
        self._fs = getattr(hw, "fs", None) if hw is not None else None   # None: no counters
        self._id_key = 0
        self._id_same = -1              # >= 0: identity changed, bank messages it stayed so

    def service(self, now):
        """Once per bank message: fold the energy counters (writes when due) and republish
        discovery once the module identities have settled after a change."""
        gw = self.gw
        e = self.energy
        if e is None and self._fs is not None and getattr(gw, "metrics", None) is not None:
            from bankgate.energy import Energy     # (the Gateway builds telemetry before metrics)
            e = self.energy = Energy(self._fs)
            e.load()
        if e is not None:
            e.fold(now, gw.metrics, gw.bank)
        tel = self.tel
        disc = getattr(tel, "disc", None) if tel is not None else None
        if disc is None:
            return
        k = disc.identity_key()
        if k != self._id_key:
            self._id_key = k
            self._id_same = 0
        elif self._id_same >= 0:
            self._id_same += 1
            if self._id_same >= _STABLE:
                self._id_same = -1
                tel.republish_discovery()

    def bank(self, d, now):
        self.service(now)
        e = self.energy
        d["e_chg_wh"] = e.pb_chg if e is not None else None
        d["e_dsg_wh"] = e.pb_dsg if e is not None else None
        if e is not None:
            d["energy"] = e.snapshot()

    def module(self, d, m, now):
        """Add the HA fields to module_snapshot() dict d of module record m."""
        fresh = m.seen and m.analog_valid and clock.diff(now, m.t_analog) <= self.max_age
        d["avail"] = 1 if fresh else 0
        lo, hi = d.get("cell_min_mv"), d.get("cell_max_mv")
        d["cell_delta_mv"] = hi - lo if lo is not None and hi is not None else None
        d["limit"] = reason_limit(self.cfg, d.get("reason"))
        d["alarm_names"] = alarm_names(m.alarms)
        d["protection_names"] = alarm_names(m.protections)
        s = m.slot
        mt = getattr(self.gw, "metrics", None)
        measured = mt is not None and (mt.mask >> s) & 1
        d["share_pm"] = mt.share_pm[s] if measured and mt.shares_valid else None
        d["r_mohm"] = mt.r_mohm[s] if measured and mt.r_conf[s] > 0 else None
        e = self.energy
        got = e.module(m.addr) if e is not None else None
        if e is not None and got is None:
            got = (0, 0)
        d["e_chg_wh"] = got[0] if got is not None else None
        d["e_dsg_wh"] = got[1] if got is not None else None
        if self.cells:
            d["cells"] = [m.cell_mv[i] for i in range(m.n_cells)] if m.seen and m.analog_valid else []
        return d


def event_what(code, a, b):
    """Names for the numbers of an event (code, a, b): the bank/module state, check,
    diagnosis or alarm it is about; "" when the numbers are plain values."""
    from bankgate import events as ev
    if code == ev.EV_BANK_STATE or code == ev.EV_MODULE_STATE or code == ev.EV_CHECK_FAIL \
            or code == ev.EV_CHECK_CLEAR:
        from bankgate.admission import CHECK_NAMES, MOD_STATE_NAMES, STATE_NAMES
        if code == ev.EV_BANK_STATE:
            return "%s<-%s" % (_name(STATE_NAMES, a), _name(STATE_NAMES, b))
        if code == ev.EV_MODULE_STATE:
            return "%s:%s" % (_name(MOD_STATE_NAMES, a), _name(CHECK_NAMES, b))
        return _name(CHECK_NAMES, a)
    if code == ev.EV_DIAG_RAISED or code == ev.EV_DIAG_CLEARED:
        from bankgate.diagnose import DIAG_INFO
        return DIAG_INFO[a - 1][0] if 0 < a <= len(DIAG_INFO) else str(a)
    if code == ev.EV_ALARM:
        return ",".join(alarm_names(a) + ["protect_" + n for n in alarm_names(b)])
    return ""


def _name(names, i):
    return names[i] if 0 <= i < len(names) else str(i)
