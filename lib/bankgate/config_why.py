# Reasons for the safety bounds of bankgate.config.SCHEMA (issue 16): every setting
# that can weaken a protection has a floor or ceiling derived from the physics and
# the chemistry; the first sentence names the bound.  docs/configuration.md shows each
# next to its setting; tests/host/test_config_safety.py walks every bound and just
# outside it.  Kept apart from config.py so the device loads it only for a message.
WHY = {
    "gating.max_dv_mv": "Ceiling 2000 mV = 133 mV per cell on 15 LFP cells: the whole flat part of the LFP "
                        "open-circuit curve (about 10 to 90 % SOC). A larger difference puts one module on a steep "
                        "end of its curve, where the join current drives its cells towards over- or under-voltage, "
                        "and the current is dV over a loop of only tens of milliohm (5 V / 25 mOhm = 200 A).",
    "gating.dwell_ms": "Floor 200 ms: at least two charge-transfer time constants of an LFP cell "
                       "(tens of ms): after a current change the terminal voltage has to settle before dV says "
                       "anything about the open-circuit difference that drives the join current.",
    "gating.max_inrush_ma": "Ceiling 100 A: the join current passes the branch fuse (125 A on common 48 V module "
                            "branches) and the closing contactor's contacts (make rating of 100 to 150 A class DC "
                            "contactors); above it the join itself blows the fuse or welds the contactor.",
    "gating.loop_resistance_mohm": "Ceiling 100 mOhm: a 48 V LFP module measures 5 to 50 mOhm internal, its branch "
                                   "(cable, fuse, contactor, lugs) adds a few. A larger value makes dV / R predict a "
                                   "fraction of the real join current (5 V / 10 Ohm 'predicts' 0.5 A; a real 25 mOhm "
                                   "loop carries 200 A). A measured loop below this setting replaces it in "
                                   "the join limit (diagnosis loop_r_below_config below 2/3 of it); small values only "
                                   "make joins stricter.",
    "gating.max_age_ms": "Ceiling 30 s: data that old no longer describe the module (at 1 C an LFP module moves "
                         "0.8 % SOC and its cells tens of mV in 30 s; BMS warnings last seconds before the trip). "
                         "A whole poll cycle of 16 modules at 9600 baud fits well inside it.",
    "gating.limits_max_age_ms": "Ceiling 120 s: BMS charge/discharge limits follow temperature and the SOC taper "
                                "near full and empty; older limits can be far above what the BMS allows now.",
    "gating.min_limit_ma": "Floor 100 mA: a BMS that wants no current in a direction reports 0 (accepted); a "
                           "limit between 0 and 100 mA is a mis-scaled or mis-decoded field (A vs 0.1 A vs 10 mA), "
                           "whose other fields cannot be trusted either.",
    "gating.max_limit_ma": "Ceiling 1000 A: above the rating of any 48 V module's BMS and busbar; a larger reported "
                           "limit is a mis-scaled field (x10) and would raise the bank limit beyond the cells.",
    "gating.critical_alarms": "Protections (BMS trips) always open, whatever this mask. Warning bits: cell and module "
                              "over/under-voltage, over/under-temperature and internal fault (0x04FF) must stay in: a "
                              "join current charges one side, which must not happen to a cell near its voltage limit "
                              "or below 0 degC (lithium plating). Only the over-current warnings (0x0300, carried by "
                              "the share-aware limits) may be left out, and cell imbalance (0x0800) may be added.",
    "gating.derate_alarms": "Only the over-current warnings (0x0300): current is what the share-aware bank limits "
                            "can bring back under the module's own limit. Voltage or temperature warnings cannot be "
                            "carried by limits and always open a closed module.",
    "contactors.weld_mv": "Floor 500 mV: the BMS voltage and the gateway's DC-link divider disagree by up to about "
                          "1 % (0.5 V at 50 V); a smaller window never sees a welded branch 'at bus voltage'.",
    "contactors.weld_ma": "Ceiling 10 A: a welded open branch carries its share of the load or the circulating "
                          "current; at rest that is a few amperes, so a larger threshold sees a weld only under "
                          "heavy load (or never).",
    "contactors.weld_confirm_ms": "Ceiling 10 s: a welded branch carries current unmonitored while the weld is being "
                                  "confirmed; a few poll cycles are enough to rule out one noisy reading.",
    "control.boot_hold_ms": "Floor 500 ms: after every start the outputs stay released at least this long, so a "
                            "crash/reset loop cannot chatter a contactor (coil drop-out and arc extinction take 20 to "
                            "100 ms) and the first decision rests on data read after the start.",
    "control.watchdog_ms": "Ceiling 10 s: during a hang the coils keep their state and nothing reacts to an alarm; "
                           "the BMS's own trip is then the only guard, for this long.",
}
