"""Generate the ordinary-day scenarios of issue 15 into tests/scenarios/day/.

    python3 tools/sim/gen_days.py          # (re)writes the files; tests/host/test_day_scenarios.py
                                           # checks the committed files equal the generator output

An ordinary day (per module, + = charging, for a 100 Ah module; scaled by capacity):
night load, morning peak, PV charge to full with the BMS tapering its charge limit to
0 (the inverter obeys 0x351), rest, evening discharge.  Every scenario requires: the
bank closes and stays closed (every module admitted all day: no stale module, no
implausible-limit drop-out), no diagnosis at all, the charge limit sent to the inverter
follows the BMSes down to (nearly) 0 at full and is back up in the evening.

Matrix (CPU budget: a simulated day costs minutes of CPU per module count):
- full 24 h days (slow mark): Pylontech RS485 9600 x {2, 4, 8, 16}, 115200 x {2, 4, 8, 16} and
  main topology x {4}; Pylontech CAN x {2, 4, 8, 16} and main topology x {4}; PACE RS485 x {4};
  plus shortened 16-module days (RS485 9600, CAN), quicker stress cases.
- shortened days (make test): the same day compressed 48 times in time with the capacity
  divided by 48 (same SOC trajectory, same taper, same limits): one per bus / family /
  topology with 3 modules, RS485 at 9600 baud (at 115200 a simulated second costs ~10x more
  CPU: the request rate; the 115200 days are in the slow set).
- multi-cycle SOC drift (slow: 3 days compressed 24x, modules of 97/100/103 Ah) and an
  end-of-charge case (make test: three modules charged into the taper and held at full).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "scenarios", "day")

DIAGNOSES = ["current_high", "soc_falling_fast", "running_warm", "resistance_rising",
             "bms_alarms_repeated", "circulating_current", "module_offline", "soc_drift_cycle",
             "reduced_capacity", "branch_fuse_trip", "startup_voltage_diff", "pending_long",
             "capacity_mismatch", "voltage_imbalance", "voltage_fluctuation"]

# (hour, amps per 100 Ah module): night, morning peak, PV to full, rest, evening, night
# (the day is balanced: the bank ends it near where it began, so days can repeat)
DAY = [(0, -4), (6, -15), (7, -5), (8, 15), (15, 0), (16, -10), (17, -4), (22, -2), (24, 0)]
START_SOC = 70.0
FULL_H = 14.5          # the charge has reached the taper and the BMSes report ~0 by then
EVENING_H = 18.0


def _profile(n, k, cap_ah):
    out = []
    for h, a in DAY:
        # time / k and capacity / k: the same current gives the same SOC trajectory
        out.append([round(h * 3600 / k, 3), float(a * n)])
    return out


def scenario(name, n, bus="rs485", family="pylontech", baud=115200, topology="branch", k=1,
             cycles=1, caps=None, desc="", slow=False):
    cap_ah = 100.0 / k
    day_s = 86400.0 / k
    dur = day_s * cycles
    mods = []
    for i in range(n):
        c = caps[i % len(caps)] if caps else 100.0
        mods.append({"addr": 2 + i, "soc_pct": START_SOC + 0.2 * (i % 3),
                     "capacity_mah": int(round(c * 1000 / k))})
    cfg = {"bank": {"expected_modules": n, "addresses": [2 + i for i in range(n)],
                    "bus": bus, "family": family if bus == "rs485" else "pylontech-can",
                    "baud": baud},
           "gating": {"topology": topology}}
    if family == "pace":
        cfg["gating"]["max_limit_ma"] = 50000       # the module rating (PACE sends no limits)
    else:
        cfg["bank"]["approved_models"] = ["US5000"] if bus == "rs485" else []
    if bus == "rs485" and baud == 9600 and n > 8:
        cfg["gating"]["max_age_ms"] = 7500          # pollplan: 16 modules at 9600 need >= 7040
    term = {}
    timeline = []
    join_s = 30 + 4 * n
    if topology == "branch":
        cfg["contactors"] = {"outputs": ["k%d" % (i + 1) for i in range(n)],
                             "feedback": ["f%d" % (i + 1) for i in range(n)],
                             "link_isolated_input": "iso"}
        term = {"disconnect": False}
        timeline.append({"at": join_s, "do": "disconnect", "value": True,
                         "note": "close the main battery disconnect"})
        join_s += 5
    else:
        cfg["gating"]["precharge_timeout_ms"] = 30000
        cfg["contactors"] = {"outputs": ["main", "precharge"], "feedback": ["fbm", "fbp"]}
        term = {"link_uf": 30000, "precharge_ohm": 100, "link_v": 0}
    board = "lilygo-t-can485" if False else None
    prof = _profile(n, k, cap_ah)
    # the inverter load starts once the bank is closed
    prof = [[0, 0]] + [[max(p[0], join_s + 5), p[1]] for p in prof]
    inv = {"profile": prof, "repeat_s": day_s if cycles > 1 else 0}
    closed_from = join_s + 5
    ex = [{"by": join_s, "bank_state": "closed"},
          {"during": [closed_from, dur], "bank_state": "closed",
           "note": "every module admitted all day: no stale module, no limits drop-out"}]
    for d in DIAGNOSES:
        ex.append({"during": [0, dur], "diagnosis": d, "present": False})
    for c in range(cycles):
        base = c * day_s
        ex.append({"at": round(base + FULL_H * 3600 / k, 3), "sim": "chg_limit_a", "module": 0,
                   "max": 2.0, "note": "cycle %d: the BMS has tapered its charge limit" % (c + 1)})
        ex.append({"at": round(base + FULL_H * 3600 / k + 1, 3), "can": "0x351", "u16": 2,
                   "max": 20 * n, "note": "cycle %d: the charge limit to the inverter follows" % (c + 1)})
        ex.append({"at": round(base + FULL_H * 3600 / k, 3), "bank_state": "closed",
                   "note": "cycle %d: closed through the end of charge" % (c + 1)})
        ex.append({"at": round(base + EVENING_H * 3600 / k, 3), "can": "0x351", "u16": 2,
                   "min": 100 * n, "note": "cycle %d: charge limit back up once discharged" % (c + 1)})
        ex.append({"at": round(base + 12 * 3600 / k, 3), "sim": "soc_pct", "module": 0,
                   "min": 60.0, "note": "cycle %d: PV charging" % (c + 1)})
    s = {"name": name,
         "description": desc or ("Ordinary day (issue 15): %d modules, %s%s, %s topology%s. "
                                 "Night load, morning peak, PV charge to full with the BMS taper, "
                                 "rest, evening discharge. Generated by tools/sim/gen_days.py."
                                 % (n, "CAN" if bus == "can" else "RS485 %s" % family,
                                    "" if bus == "can" else " %d baud" % baud, topology,
                                    "" if k == 1 else ", day compressed %dx (capacity / %d)" % (k, k))),
         "duration_s": dur, "report_s": max(60, int(dur / 48)), "check_ms": 1000 if k == 1 else 500,
         "defaults": {"model": "US5000", "sw_version": "1.4", "chemistry": "lfp", "cells": 15,
                      "r_int_mohm": 20, "cable_m": 1.5, "cable_mm2": 35, "fuse_a": 125,
                      "lug_mohm": 0.1, "chg_limit_a": 50, "dsg_limit_a": 50},
         "modules": mods, "terminal": term, "inverter": inv, "config": cfg,
         "timeline": timeline, "expect": ex}
    if bus == "rs485" and family == "pace":
        s["bus"] = {"family": "pace"}
    if k == 1 and slow:
        # full days: the physics steps once a simulated second (the load changes by the
        # hour; coil changes and link-voltage reads are still exact), the BMS values
        # change once a second as a real BMS's do (docs/scenarios.md, "Speed")
        s["step_ms"] = 1000
    return s, slow


def matrix():
    out = []
    for baud in (9600, 115200):
        for n in (2, 4, 8, 16):
            out.append(scenario("day_py%d_%d" % (baud, n), n, baud=baud, slow=True))
    out.append(scenario("day_py115200_4_main", 4, topology="main", slow=True))
    for n in (2, 4, 8, 16):
        out.append(scenario("day_can_%d" % n, n, bus="can", baud=500000, slow=True))
    out.append(scenario("day_can_4_main", 4, bus="can", baud=500000, topology="main", slow=True))
    out.append(scenario("day_pace_4", 4, family="pace", baud=9600, slow=True))
    # shortened 16-module days (slow): the stress cases, quicker than their full days
    out.append(scenario("short_day_py9600_16", 16, baud=9600, k=48, slow=True))
    out.append(scenario("short_day_can_16", 16, bus="can", baud=500000, k=48, slow=True))
    # shortened days for make test
    out.append(scenario("short_day_py9600_3", 3, baud=9600, k=48))
    out.append(scenario("short_day_py9600_3_main", 3, baud=9600, topology="main", k=48))
    out.append(scenario("short_day_can_3", 3, bus="can", baud=500000, k=48))
    out.append(scenario("short_day_pace_3", 3, family="pace", baud=9600, k=48))
    out.append(scenario(
        "soc_drift_3_cycles", 3, baud=9600, k=24, cycles=3, caps=[97.0, 100.0, 103.0], slow=True,
        desc="Multi-cycle SOC drift (issue 15): three compressed ordinary days with modules of "
             "97/100/103 Ah; at the top of every charge the BMSes taper to 0 and the bank stays "
             "closed (a second-cycle taper once disconnected the whole bank). Generated by "
             "tools/sim/gen_days.py."))
    out.append(end_of_charge())
    return out


def end_of_charge():
    n = 3
    s, _ = scenario("end_of_charge_3", n, baud=9600, k=1)
    s["description"] = ("End of charge (issue 15): three modules at 88 % charged at 30 A each "
                        "into the BMS taper; each charge limit passes 0 < limit < 1 A (min_limit_ma) "
                        "on its way to 0 - normal, not implausible: the bank stays closed and the "
                        "charge limit to the inverter follows to 0, then discharge works. Generated "
                        "by tools/sim/gen_days.py.")
    for m in s["modules"]:
        m["soc_pct"] = 88.0 + 0.3 * (m["addr"] - 2)
        m["capacity_mah"] = 20000
    s["duration_s"] = 3600
    s["report_s"] = 120
    s["check_ms"] = 200
    s["inverter"] = {"profile": [[0, 0], [45, 90], [3000, -30], [3600, 0]]}
    ex = [e for e in s["expect"] if "diagnosis" in e or e.get("by") is not None]
    ex = [dict(e, during=[0, 3600]) if "diagnosis" in e else e for e in ex]
    ex += [{"during": [45, 3600], "bank_state": "closed",
            "note": "closed through the end of charge"},
           {"by": 2400, "sim": "chg_limit_a", "module": 0, "max": 0.9,
            "note": "the BMS passed below min_limit_ma"},
           {"at": 2990, "sim": "soc_pct", "module": 1, "min": 97.0},
           {"at": 2990, "can": "0x351", "u16": 2, "max": 30,
            "note": "the charge limit to the inverter followed the BMSes down"},
           {"at": 3500, "can": "0x351", "u16": 2, "min": 100},
           {"at": 3500, "sim": "bank_a", "max": -20.0, "note": "discharge after the full charge"}]
    s["expect"] = ex
    return s, False


def main(argv):
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(os.path.join(OUT, "slow"), exist_ok=True)
    for s, slow in matrix():
        d = os.path.join(OUT, "slow") if slow else OUT
        with open(os.path.join(d, s["name"] + ".json"), "w") as f:
            json.dump(s, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
