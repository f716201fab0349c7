"""Every frame the inverter link sends, decoded by cantools with our DBC, equals
the bank values after the documented rounding (half away from zero) and
clamping (docs/inverter.md).  The frames come from the real device code under
the unix port; cantools is the field's standard decoder."""
import os
from decimal import ROUND_HALF_UP, Decimal

import cantools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bankgate_host import REPO

DB = cantools.database.load_file(os.path.join(REPO, "tools", "dbc", "bankgate_pylontech_lv.dbc"))


def rnd(v, d):
    """Round v/d half away from zero (the firmware's rule)."""
    q = (Decimal(abs(v)) / Decimal(d)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(q) if v >= 0 else -int(q)


def clamp(v, lo, hi):
    return max(lo, min(hi, v))


def decode(frames, frame_id):
    return DB.decode_message(frame_id, bytes.fromhex(frames["%x" % frame_id]), scaling=False)


def check(state, out):
    frames, bank = out["frames"], out["bank"]
    assert sorted(frames) == ["351", "355", "356", "359", "35c", "35e"]
    on = bool(state["modules"]) and not state.get("faults") and not state.get("ramp_down")
    chg_ma, dsg_ma, chg_v, dsg_v = state["limits"]
    lim = decode(frames, 0x351)
    assert lim["ChargeVoltageLimit"] == clamp(rnd(chg_v, 100), 0, 65535)
    assert lim["DischargeVoltageLimit"] == clamp(rnd(dsg_v, 100), 0, 65535)
    assert lim["ChargeCurrentLimit"] == (clamp(rnd(chg_ma, 100), 0, 32767) if on else 0)
    assert lim["DischargeCurrentLimit"] == (clamp(rnd(dsg_ma, 100), 0, 32767) if on else 0)
    soc = decode(frames, 0x355)
    assert soc["SOC"] == clamp(rnd(bank["soc_pm"], 10), 0, 100)
    assert soc["SOH"] == clamp(rnd(bank["soh_pm"], 10), 0, 100)
    meas = decode(frames, 0x356)
    assert meas["Voltage"] == clamp(rnd(bank["mv"], 10), -32768, 32767)
    assert meas["Current"] == clamp(rnd(bank["ma"], 100), -32768, 32767)
    assert meas["Temperature"] == bank["temp_dc"]
    flags = decode(frames, 0x359)
    assert flags["ModuleCount"] == len(state["modules"])
    assert (flags["MagicP"], flags["MagicN"]) == (ord("P"), ord("N"))
    assert flags["ProtectionSystemError"] == (1 if state.get("faults") else 0)
    req = decode(frames, 0x35C)
    # enable bits follow the limits as sent
    assert req["ChargeEnable"] == (1 if on and clamp(rnd(chg_ma, 100), 0, 32767) > 0 else 0)
    assert req["DischargeEnable"] == (1 if on and clamp(rnd(dsg_ma, 100), 0, 32767) > 0 else 0)
    name = bytes.fromhex(frames["35e"])
    assert name.rstrip(b" \x00") == b"PYLON"


def test_known_bank(mp):
    state = {"modules": [[52310, 15050, 615, 990, 251, 0, 0, 0], [52290, 14950, 605, 980, 263, 0, 0, 0]],
             "limits": [100000, 150000, 53200, 45000]}
    out = mp.call("invsupport", "frames_for", state)
    check(state, out)
    meas = decode(out["frames"], 0x356)
    assert meas["Voltage"] == 5230 and meas["Current"] == 300 and meas["Temperature"] == 263
    assert decode(out["frames"], 0x355)["SOC"] == 61




@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    modules=st.lists(st.tuples(st.integers(0, 65000), st.integers(-1000000, 1000000), st.integers(0, 1000),
                               st.integers(0, 1000), st.integers(-400, 1250)), min_size=1, max_size=16),
    limits=st.tuples(st.integers(-50000, 5000000), st.integers(-50000, 5000000), st.integers(0, 7000000),
                     st.integers(0, 7000000)),
    faults=st.sampled_from([0, 0, 0, 1]), ramp=st.sampled_from([False, False, True]))
@example(modules=[(0, 0, 0, 0, 0)], limits=(1, 49, 0, 0), faults=0, ramp=False)  # found: 1 mA -> 0.0 A, no enable
def test_frames_match_bank_values_under_cantools(mp, modules, limits, faults, ramp):
    state = {"modules": [[mv, ma, soc, soh, t, 0, 0, 0] for mv, ma, soc, soh, t in modules],
             "limits": list(limits), "faults": faults, "ramp_down": ramp}
    check(state, mp.call("invsupport", "frames_for", state))
