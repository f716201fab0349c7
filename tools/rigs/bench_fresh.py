# `bankgate bench` section "freshness" (issue 15): per baud and module count, the
# worst-case age of every module's alarm/analog data the poll scheduler achieves on
# the simulated RS485 wire (BMS stubs answering, every contactor commanded closed so
# the slow-data budget applies, a window crossing the identity re-read period), against
# the plan's bound (bankgate.pollplan) and gating.max_age_ms.
#   micropython bench_fresh.py [--quick]   -> one line "\x1eBENCH {json}"
import json
import sys

from bankgate import clock, config, pollplan
from bankgate import poller as pl


def one(n, baud, family="pylontech"):
    from bms_stub import Rig
    addrs = list(range(2, 2 + n))
    raw = {"bank": {"addresses": addrs, "expected_modules": n, "baud": baud, "family": family},
           "contactors": {"outputs": ["k%d" % i for i in range(n)]},
           "gating": {"max_age_ms": 30000}}       # the ceiling: the plan says what it needs
    need = pollplan.min_max_age_ms(config.validate(raw))
    max_age = need if need > 5000 else 5000
    r = Rig(addresses=addrs, baud=baud, family=family, health=False, scan=(2, 1 + n),
            over={"gating": {"max_age_ms": max_age}})
    r.run_sweeps(2)
    mods = r.bank.modules
    worst = 0
    end = r.clock.ms() + pl.IDENT_PERIOD_MS + 15000
    nxt = 0
    while r.clock.ms() < end:
        r.step()
        if r.clock.ms() >= nxt:
            nxt = r.clock.ms() + 5
            now = r.clock.ticks_ms()
            for s in range(n):
                m = mods[s]
                if m.alarm_valid and m.analog_valid:
                    for t in (m.t_alarm, m.t_analog):
                        a = clock.diff(now, t)
                        if a > worst:
                            worst = a
    p = r.poller.plan
    return {"modules": n, "baud": baud, "family": family, "max_age_ms": max_age,
            "min_max_age_ms": need, "sweep_ms": p["sweep_ms"], "plan_worst_age_ms": p["worst_age_ms"],
            "measured_worst_age_ms": worst, "slow_per_sweep": p["slow_per_sweep"],
            "ok": worst <= p["worst_age_ms"] <= max_age}


def main(argv):
    quick = "--quick" in argv
    rows = []
    for baud in ((115200,) if quick else (9600, 115200)):
        for n in ((4, 16) if quick else (2, 4, 8, 16)):
            rows.append(one(n, baud))
    sys.stdout.write("\x1eBENCH " + json.dumps({"freshness": rows}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
