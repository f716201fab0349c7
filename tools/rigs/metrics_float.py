# A straightforward FLOAT implementation of the imbalance metrics of
# bankgate.metrics (docs/metrics.md), written the way one would without the
# device's constraints: lists of the admitted modules, sum()/min()/max(), float
# division, a dict of results.  HOST-ONLY reference (tools/rigs, never deployed):
# `bankgate bench` runs it under the unix port next to the fixed-point
# bankgate.metrics.Metrics on the same Bank, and reports
#   - the speed ratio (float time / fixed time) and
#   - the bytes each allocates per update (the fixed version: 0),
#   - the largest difference between the two results (the fixed version floors
#     every ratio; the float version floors its results the same way, so the
#     difference must stay within 1 LSB).
#
# Units and semantics are those of bankgate.metrics: _mv, _ma (+ = charging),
# _pm permille, _dc 0.1 degC, _mohm, Wh.  Results are floored to ints at the end
# (math.floor) so they compare with the fixed-point results directly.
import math


class MetricsFloat:
    def __init__(self, cfg, bank):
        self.bank = bank
        d = cfg["diagnosis"]
        self.rest_ma = d["rest_ma"]
        self.r_min_di_ma = d["r_min_di_ma"]
        self.share_min_ma = max(100, cfg["gating"]["share_min_ma"])
        n = len(bank.modules)
        self.r_mohm = [0.0] * n
        self.r_samples = [0] * n
        self.op = [None] * n           # (u_mv, i_ma, t_ms) operating point per slot
        self.e_chg_wh = [0.0] * n
        self.e_dsg_wh = [0.0] * n
        self.t_prev = None
        self.out = {}

    def update(self, now, admitted_mask):
        mods = [m for m in self.bank.modules
                if (admitted_mask >> m.slot) & 1 and m.analog_valid]
        out = {}
        n = len(mods)
        out["n"] = n
        if n == 0:
            self.out = out
            return out
        volts = [float(m.voltage_mv) for m in mods]
        currents = [float(m.current_ma) for m in mods]
        socs = [float(m.soc_pm) for m in mods]
        caps = [float(m.total_mah) for m in mods]
        v_mean = sum(volts) / n
        soc_mean = sum(socs) / n
        bank_ma = sum(currents)
        total = sum(caps)
        load = abs(bank_ma)
        out["bank_ma"] = int(bank_ma)
        out["abs_sum_ma"] = int(sum([abs(i) for i in currents]))
        out["total_mah"] = int(total)
        out["v_mean_mv"] = math.floor(v_mean)
        out["v_min_mv"] = int(min(volts))
        out["v_max_mv"] = int(max(volts))
        out["v_spread_mv"] = int(max(volts) - min(volts))
        out["soc_mean_pm"] = math.floor(soc_mean)
        out["soc_spread_pm"] = int(max(socs) - min(socs))
        out["bank_soc_pm"] = math.floor(1000.0 * sum([float(m.remaining_mah) for m in mods]) / total) \
            if total > 0 else math.floor(soc_mean)
        temps = {}
        for m in mods:
            if m.n_temps:
                temps[m.slot] = float(max([m.temp_dc[j] for j in range(m.n_temps)]))
        if temps:
            t_mean = sum(temps.values()) / len(temps)
            out["temp_mean_dc"] = math.floor(t_mean)
            out["temp_max_dc"] = int(max(temps.values()))
            out["temp_spread_dc"] = int(max(temps.values()) - min(temps.values()))
        cells = {}
        for m in mods:
            if m.n_cells:
                c = [m.cell_mv[j] for j in range(m.n_cells)]
                cells[m.slot] = (min(c), max(c))
        if cells:
            out["bank_cell_min_mv"] = min([lo for lo, hi in cells.values()])
            out["bank_cell_max_mv"] = max([hi for lo, hi in cells.values()])
        shares = load >= self.share_min_ma
        rest = n >= 2 and load < self.rest_ma
        out["shares_valid"] = 1 if shares else 0
        out["at_rest"] = 1 if rest else 0
        out["ideal_share_pm"] = math.floor(1000.0 / n)
        dt = None if self.t_prev is None else now - self.t_prev
        per = {}
        imb = 0.0
        circ = 0.0
        link = self.bank.link_mv
        for k, m in enumerate(mods):
            s = m.slot
            v = volts[k]
            i = currents[k]
            d = {}
            d["v_dev_mv"] = math.floor(v - v_mean)
            d["soc_dev_pm"] = math.floor(socs[k] - soc_mean)
            if s in temps:
                d["temp_dev_dc"] = math.floor(temps[s] - t_mean)
            if s in cells:
                d["cell_delta_mv"] = cells[s][1] - cells[s][0]
            if total > 0:
                d["cap_share_pm"] = math.floor(1000.0 * caps[k] / total)
                d["cap_dev_pm"] = math.floor(1000.0 * (n * caps[k] - total) / total)
            if shares:
                sh = 1000.0 * i / bank_ma
                d["share_pm"] = math.floor(sh)
                ex = 1000.0 * (n * i - bank_ma) / bank_ma
                d["share_ideal_dev_pm"] = math.floor(math.floor(ex) / n)
                imb = max(imb, abs(ex))
            if rest and i > 0:
                circ += i
            # dV/dI resistance between operating points (same rules as the fixed version)
            u = float(link) if link >= 0 else v
            op = self.op[s]
            if op is None or now - op[2] > 60000:
                self.op[s] = (u, i, now)
            else:
                di = i - op[1]
                du = u - op[0]
                if abs(di) >= self.r_min_di_ma:
                    self.op[s] = (u, i, now)
                    r = du / di * 1000.0 if di else 0.0
                    if 0.0 <= r <= 10000.0:
                        if self.r_samples[s] == 0:
                            self.r_mohm[s] = r
                        else:
                            self.r_mohm[s] = (3.0 * self.r_mohm[s] + r) / 4.0
                        self.r_samples[s] += 1
            d["r_mohm"] = math.floor(self.r_mohm[s])
            # energy throughput, Wh
            if dt is not None and 0 <= dt <= 10000:
                wh = v * abs(i) * dt / 3.6e12
                if i > 0:
                    self.e_chg_wh[s] += wh
                elif i < 0:
                    self.e_dsg_wh[s] += wh
            d["e_chg_wh"] = math.floor(self.e_chg_wh[s])
            d["e_dsg_wh"] = math.floor(self.e_dsg_wh[s])
            per[s] = d
        out["imbalance_pm"] = math.floor(imb)
        out["circ_ma"] = int(circ)
        out["modules"] = per
        self.t_prev = now
        self.out = out
        return out


def compare(fixed, flt):
    """Largest |fixed - float| over the metrics both compute, and where (name, slot)."""
    worst = 0
    where = None
    for name, v in flt.items():
        if name == "modules" or not hasattr(fixed, name):
            continue
        d = abs(getattr(fixed, name) - v)
        if d > worst:
            worst, where = d, name
    for s, d in flt.get("modules", {}).items():
        for name, v in d.items():
            arr = getattr(fixed, name, None)
            if arr is None:
                continue
            diff = abs(arr[s] - v)
            if diff > worst:
                worst, where = diff, "%s[%d]" % (name, s)
    return worst, where
