# Fuzzing the configuration path (bankgate.config) under the unix port.
#
#   text path:       JSON text -> config.parse() -> validate()   (only ConfigError may escape)
#                    JSON text -> json.loads()  -> validate()    (only ValueError from json,
#                                                                 ConfigError from validate)
#   structure path:  a valid configuration dict with 1..3 structured mutations (boundary
#                    values lo-1/lo/hi/hi+1, wrong types, over-long strings, control and
#                    topic characters, wrong list lengths and duplicates, unknown keys and
#                    near-miss typos, missing keys/sections, sections that are not objects,
#                    cross-rule breakers) -> validate(d, strict=random)
#   secrets:         validate_secrets() on mutated secrets: no escape, and no secret value
#                    ever appears in an error message.
#
# Checks per input: only the allowed exceptions escape; the input is not changed (repr
# before == repr after, accepted or not); an accepted configuration is complete and inside
# the schema (every key, type and range), validates to itself (idempotent) and shares no
# list/dict with the input.  Every run also asserts the fuzzer reached both outcomes and
# many different error paths (a shallow fuzzer would otherwise pass silently).
#
# make test: FAST inputs; make fuzz: tests/mp/test_fuzz_long_config.py with >= 100 000.
#
# This module holds the run_* functions (generator, checks, oracles); the pytest items are in
# tests/mp/test_fuzz_config.py (fast counts, `make test`) and tests/mp/test_fuzz_long*.py
# (>= 100 000 inputs, `make fuzz`).  They live in tests/fuzz because the harness recompiles
# tests/fuzz when a file changes, while a test module imported by another test module
# would run from a stale compiled copy.
import gc
import json

from fuzzlib import Rate, Rng, fail

from bankgate import config
from bankgate.config import SCHEMA, ConfigError

FAST = 1500
SEED = 0xC0F10001

BASE = {
    "gateway_id": "garage-bank", "board": "sim",
    "bank": {"expected_modules": 3, "family": "pylontech", "bus": "rs485", "baud": 115200,
             "addresses": [2, 3, 4], "chemistry": "lfp", "nominal_mv": 48000, "cells": 15,
             "approved_models": ["US3000C"], "firmware_same": True},
    "gating": {"topology": "branch", "max_dv_mv": 500, "hysteresis_mv": 100, "dwell_ms": 3000,
               "soc_spread_pm": 150, "max_age_ms": 5000},
    "contactors": {"outputs": ["k1", "k2", "k3"], "feedback": ["fb1", "fb2", "fb3"],
                   "reset_input": "rst"},
    "control": {"period_ms": 50, "watchdog_ms": 2000},
    "inverter": {"enabled": True, "require_heartbeat": False},
    "mqtt": {"enabled": False, "host": "192.168.1.10", "port": 1883, "prefix": "bankgate"},
    "diagnosis": {"share_raise_pm": 250, "share_clear_pm": 150},
}
MAIN = {"gateway_id": "g1", "board": "sim",
        "bank": {"expected_modules": 2, "addresses": [5, 6], "family": "pylontech-can",
                 "bus": "can", "baud": 500000, "scan_from": 5, "scan_to": 6},
        "gating": {"topology": "main"}, "contactors": {"outputs": ["main", "pre"]}}

LEAVES = []          # (section or None, key, entry) for every schema setting
for _k, _e in SCHEMA.items():
    if isinstance(_e, dict):
        for _k2, _e2 in _e.items():
            LEAVES.append((_k, _k2, _e2))
    else:
        LEAVES.append((None, _k, _e))
SECTIONS = [k for k, e in SCHEMA.items() if isinstance(e, dict)]

JUNK_VALUES = (None, True, False, 0, -1, 1, 65535, 65536, 2 ** 31, 2 ** 62, 2 ** 70, -2 ** 70,
               1.5, -0.0, 1e300, "", "x", "0", "true", "null", " ", "a/b", "a+b", "#", "\x01",
               "\u00e9t\u00e9", "x" * 70, [], [1], [None], ["a", "a"], [[]], {}, {"x": 1},
               {"": None})
TOKENS = (b"null", b"true", b"false", b"1e999", b"-1e999", b"-0", b"0.5", b"99999999999999999999",
          b'""', b'"\\u0000"', b'"\\ud800"', b"[]", b"{}", b'"k":1,', b",", b":", b"[", b"]",
          b"{", b"}", b'"', b"\\", b"\xff", b"\xc3\xa9", b"\x00", b" ", b"\n", b"NaN", b"Infinity")


def deep_copy(v):
    t = type(v)
    if t is dict:
        return {k: deep_copy(x) for k, x in v.items()}
    if t is list:
        return [deep_copy(x) for x in v]
    return v


# ------------------------------------------------------------------ oracle for accepted configs
def _check_value(path, entry, v):
    kind, _, lo, hi, _ = entry
    if kind == "int":
        return type(v) is int and lo <= v <= hi
    if kind == "bool":
        return type(v) is bool
    if kind == "str":
        if type(v) is not str or not lo <= len(v) <= hi:
            return False
        for ch in v:
            if ord(ch) < 32 or ord(ch) == 127:
                return False
        return True
    if kind == "enum":
        return type(v) is str and v in lo
    if kind == "ints":
        return type(v) is list and lo <= len(v) <= hi and all(type(x) is int for x in v)
    if kind == "strs":
        return type(v) is list and lo <= len(v) <= hi and \
            all(type(x) is str and 1 <= len(x) <= 16 for x in v)
    if kind == "dict":
        return type(v) is dict
    return False


def check_accepted(cfg, given):
    """None, or what is wrong with an accepted configuration."""
    if type(cfg) is not dict or cfg is given:
        return "result is not a new dict"
    if len(cfg) != len(SCHEMA):
        return "result has %d top-level keys, the schema %d" % (len(cfg), len(SCHEMA))
    for sec, key, entry in LEAVES:
        d = cfg.get(sec) if sec else cfg
        if type(d) is not dict or key not in d:
            return "missing %s.%s" % (sec, key)
        if not _check_value(key, entry, d[key]):
            return "%s.%s = %r outside the schema" % (sec, key, d[key])
        g = given.get(sec) if sec else given
        if type(g) is dict and key in g and type(d[key]) in (list, dict) and d[key] is g[key]:
            return "%s.%s shares its list with the input" % (sec, key)
    for sec in SECTIONS:
        if len(cfg[sec]) != len(SCHEMA[sec]):
            return "section %s has unknown keys" % sec
    # cross rules that must hold for anything accepted
    b = cfg["bank"]
    if len(b["addresses"]) != b["expected_modules"] or len(set(b["addresses"])) != len(b["addresses"]):
        return "addresses vs expected_modules"
    need = b["expected_modules"] if cfg["gating"]["topology"] == "branch" else 2
    if len(cfg["contactors"]["outputs"]) != need:
        return "outputs vs topology"
    if cfg["control"]["watchdog_ms"] < 2 * cfg["control"]["period_ms"]:
        return "watchdog vs period"
    again = config.validate(cfg)
    if again != cfg:
        return "validate(validate(x)) != validate(x)"
    return None


def _validate_checked(d, strict, seed, i, what, stats):
    """validate(d) with every per-input check; returns 1 accepted / 0 rejected."""
    before = repr(d)
    try:
        cfg = config.validate(d, strict)
    except ConfigError as e:
        msg = str(e)
        if type(e.path) is not str or not msg or len(msg) > 600:
            fail("%s: malformed ConfigError %r" % (what, msg[:200]), seed, i, before)
        p = e.path
        cut = p.find("[")
        p = p[:cut] if cut >= 0 else p
        if p in stats or len(stats) < 120:     # bounded: mutated keys make endless paths
            stats[p] = stats.get(p, 0) + 1
        if repr(d) != before:
            fail("%s: rejected (%s) and changed its input" % (what, msg[:120]), seed, i, before)
        return 0
    except Exception as e:
        fail("%s: validate raised %r" % (what, e), seed, i, before)
    if repr(d) != before:
        fail("%s: accepted and changed its input" % what, seed, i, before)
    e = check_accepted(cfg, d)
    if e is not None:
        fail("%s: accepted config wrong: %s" % (what, e), seed, i, before)
    return 1


# ------------------------------------------------------------------ structured mutations
def _interesting(rng, entry):
    kind, default, lo, hi, _ = entry
    r = rng
    if r.chance(1, 4):
        return r.pick(JUNK_VALUES)
    if kind == "int":
        return r.pick((lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, default, -default - 1, lo + r.below(hi - lo + 1),
                       True, str(default), default + 0.5))
    if kind == "bool":
        return r.pick((True, False, 0, 1, "true", None))
    if kind == "str":
        return r.pick(("", "a", "x" * hi, "x" * (hi + 1), "ok-name_1", "has space", "a/b", "a#",
                       "tab\t", "\x7f", "\u00e9", default + "\n", default.upper(), default))
    if kind == "enum":
        return r.pick(tuple(lo) + ("", lo[0].upper(), lo[0] + " ", 1))
    if kind == "ints":
        n = r.pick((0, lo, hi, hi + 1, 1 + r.below(4)))
        return [r.pick((0, 1, 2, 3, 4, 5, 255, 256, -1, r.below(300), "2", None)) for _ in range(n)]
    if kind == "strs":
        n = r.pick((0, lo, hi, hi + 1, 1 + r.below(4)))
        return [r.pick(("k1", "k2", "k3", "k1", "", "x" * 16, "x" * 17, "main", "pre", "fb1",
                        "rst", 7, None)) for _ in range(n)]
    return r.pick(JUNK_VALUES)


def _typo(rng, key):
    r = rng
    op = r.below(5)
    if op == 0 and len(key) > 1:
        k = r.below(len(key))
        return key[:k] + key[k + 1:]
    if op == 1:
        return key.upper()
    if op == 2 and "_" in key:
        return key[:key.rfind("_")]          # the unit suffix dropped
    if op == 3:
        return key + "s"
    return r.pick(("", " ", "x" * 50, "\u00e9", "bank.cells", "__proto__", key + key))


def mutate_config(rng, d):
    """Apply one structured mutation to the dict d (in place); returns the new root."""
    r = rng
    op = r.below(12)
    sec, key, entry = r.pick(LEAVES)
    target = d.get(sec) if sec else d
    if type(target) is not dict:
        target = d
    if op <= 4:                                   # a leaf gets a boundary / wrong value
        target[key] = _interesting(r, entry)
    elif op == 5:                                 # a key disappears
        target.pop(key, None)
    elif op == 6:                                 # unknown key / typo / unquoted name
        # MicroPython's json.loads turns {0: 1} / {true: 1} / {null: 1} into non-str keys
        k = _typo(r, key) if r.below(8) else r.pick((0, True, None, -1))
        target[k] = r.pick(JUNK_VALUES)
    elif op == 7:                                 # a section that is not an object / missing
        s = r.pick(SECTIONS)
        if r.chance(1, 2):
            d.pop(s, None)
        else:
            d[s] = r.pick((None, [], "x", 0, [{}], True))
    elif op == 8:                                 # cross-rule breakers
        b = d.get("bank")
        if type(b) is dict:
            c = r.below(6)
            if c == 0:
                b["expected_modules"] = r.pick((1, 2, 4, 16, 17))
            elif c == 1:
                b["addresses"] = [2, 2, 3][:r.below(4)]
            elif c == 2:
                b["scan_from"], b["scan_to"] = r.pick(((5, 4), (0, 0), (255, 255), (3, 3)))
            elif c == 3:
                b["family"], b["bus"] = r.pick((("pylontech", "can"), ("pylontech-can", "rs485"),
                                                ("pace", "rs485")))
            elif c == 4:
                b["baud"] = r.pick((9600, 500000, 115201, 1200))
            else:
                b["cells"], b["nominal_mv"] = r.pick(((4, 48000), (16, 51200), (24, 12000)))
    elif op == 9:                                 # the other topology / a whole other base
        g = d.get("gating")
        if type(g) is dict:
            g["topology"] = "main" if g.get("topology") != "main" else "branch"
    elif op == 10:                                # swap two settings of a section
        s = d.get(r.pick(SECTIONS))
        if type(s) is dict and len(s) >= 2:
            ks = list(s)
            a = r.pick(ks)
            b = r.pick(ks)
            s[a], s[b] = s[b], s[a]
    else:                                         # the root is not an object (rare) or junk
        if r.chance(1, 8):
            return r.pick((None, [], "config", 3, [BASE]))
        d[r.pick(("", "x", "bank ", "Bank"))] = r.pick(JUNK_VALUES)
    return d


def run_config_struct(count=FAST, seed=SEED):
    rng = Rng(seed)
    accepted = 0
    stats = {}
    rate = Rate("config.validate(struct)")
    for i in range(count):
        d = deep_copy(BASE if rng.below(4) else MAIN)
        for _ in range(1 + rng.below(3)):
            d = mutate_config(rng, d)
            if type(d) is not dict:
                break
        accepted += _validate_checked(d, rng.chance(1, 4), seed, i, "struct", stats)
        if i & 63 == 0:
            gc.collect()
    rate.done(count, "accepted=%d distinct_error_paths=%d" % (accepted, len(stats)))
    assert count // 50 < accepted < count - count // 4, "accepted %d of %d" % (accepted, count)
    assert len(stats) >= min(40, count // 15), sorted(stats)
    return accepted, stats


# ------------------------------------------------------------------ JSON text
def _texts():
    return [json.dumps(BASE).encode(), json.dumps(MAIN).encode(),
            json.dumps(config.defaults()).encode(),
            b'{\n  "board": "sim",\n  "bank": {"expected_modules": 1, "addresses": [2]},\n'
            b'  "contactors": {"outputs": ["k1"]}\n}\n']


def mutate_text(rng, seeds, out):
    """One mutated JSON text (bytes)."""
    r = rng
    src = r.pick(seeds)
    op = r.below(9)
    b = bytearray(src)
    n = len(b)
    if op == 0:
        for _ in range(1 + r.below(3)):
            b[r.below(n)] ^= 1 << r.below(8)
    elif op == 1:
        for _ in range(1 + r.below(3)):
            b[r.below(n)] = r.pick(b'{}[]":,.-+0123456789eEtfnul \\\x00\xff')
    elif op == 2:
        k = r.below(n + 1)
        b = b[:k] + r.pick(TOKENS) + b[k:]
    elif op == 3:
        k = r.below(n)
        b = b[:k] + b[k + 1 + r.below(20):]
    elif op == 4:
        b = b[:r.below(n + 1)]
    elif op == 5:
        other = r.pick(seeds)
        b = b[:r.below(n + 1)] + other[r.below(len(other) + 1):]
    elif op == 6:                                  # a value replaced by a token
        k = b.find(b":", r.below(n))
        if k >= 0:
            e = k + 1
            while e < len(b) and b[e] not in b",}":
                e += 1
            b = b[:k + 1] + r.pick(TOKENS) + b[e:]
    elif op == 7:                                  # nesting (deep only rarely: costly)
        sq = r.chance(1, 2)
        if r.below(64):
            d = r.pick((2, 8, 16, 17, 33, 200))
        else:                                      # just under MAX_CONFIG_BYTES
            d = r.pick((3000, 6000)) if sq else r.pick((1000, 2000))
        gc.collect()
        if sq:
            return b"[" * d + b"1" + b"]" * d
        return b'{"a":' * d + b"1" + b"}" * d
    else:
        b = bytearray(r.byte() for _ in range(r.below(64)))
    return bytes(b)


def _depth(b):
    # nesting of [ and { outside strings (an independent count for the oracle above)
    d = m = 0
    q = e = False
    for c in b:
        if q:
            e, q = (False, q) if e else (c == 0x5C, c != 0x22)
        elif c == 0x22:
            q = True
        elif c == 0x5B or c == 0x7B:
            d += 1
            m = max(m, d)
        elif c == 0x5D or c == 0x7D:
            d -= 1
    return m


def run_config_text(count=FAST, seed=SEED + 1):
    rng = Rng(seed)
    seeds = _texts()
    accepted = 0
    json_errors = 0
    stats = {}
    rate = Rate("config.parse+validate(text)")
    for i in range(count):
        text = mutate_text(rng, seeds, None)
        # 1. the device's path: parse() wraps every JSON problem in ConfigError
        parsed = True
        try:
            obj = config.parse(text, "config.json")
        except ConfigError as e:
            parsed = False
            json_errors += 1
            if not str(e).startswith("config.json"):
                fail("parse error does not name the file: %r" % str(e)[:100], seed, i, text)
        except Exception as e:
            fail("config.parse raised %r" % (e,), seed, i, text)
        # 2. plain json.loads: a value or ValueError.  (MemoryError only where parse()
        # already turned the same text into a ConfigError: MicroPython's json needs heap
        # per nesting level, which is why parse() limits the depth first.)
        loads_ok = True
        try:
            json.loads(text)
        except ValueError:
            loads_ok = False
        except MemoryError:
            loads_ok = False
            if parsed:
                fail("json.loads ran out of memory on a text parse() accepted", seed, i, text)
        except Exception as e:
            fail("json.loads raised %r (not ValueError)" % (e,), seed, i, text)
        gc.collect()
        if not parsed:
            if loads_ok and text.strip() and len(text) <= config.MAX_CONFIG_BYTES \
                    and _depth(text) <= config.MAX_JSON_DEPTH:
                try:
                    text.decode()
                except UnicodeError:
                    continue
                fail("parse() rejected what json.loads accepts", seed, i, text)
            continue
        accepted += _validate_checked(obj, rng.chance(1, 2), seed, i, "text", stats)
        if i & 63 == 0:
            gc.collect()
    rate.done(count, "json_errors=%d validated_ok=%d distinct_error_paths=%d" % (
        json_errors, accepted, len(stats)))
    assert json_errors > count // 10 and accepted > 0, (json_errors, accepted)
    return accepted


# ------------------------------------------------------------------ secrets
SECRET_WORDS = ("Sup3rS3cretPW", "MyHomeNet-5G", "mqtt-user-7731", "hunter2hunter2")


def run_secrets(count=FAST, seed=SEED + 2):
    rng = Rng(seed)
    r = rng
    accepted = 0
    rate = Rate("config.validate_secrets")
    for i in range(count):
        d = {"wifi": {"ssid": SECRET_WORDS[1], "password": SECRET_WORDS[0]},
             "mqtt": {"user": SECRET_WORDS[2], "password": SECRET_WORDS[3]}}
        for _ in range(1 + r.below(3)):
            sec = r.pick(("wifi", "mqtt"))
            key = r.pick(("ssid", "password") if sec == "wifi" else ("user", "password", "ca_file",
                                                                      "cert_reqs"))
            w = r.pick(SECRET_WORDS)
            v = r.pick((w * 6, w + "\x01", [w], {"v": w}, w[:3], "", None, 5, w + "\u00e9", w))
            if r.below(8) == 0:
                d[sec] = r.pick((w, [w], None))
            elif type(d[sec]) is dict:
                d[sec][key] = v
        before = repr(d)
        try:
            config.validate_secrets(d)
            accepted += 1
        except ConfigError as e:
            msg = str(e)
            for w in SECRET_WORDS:
                if w in msg or w[:6] in msg:
                    fail("a secret appears in the error %r" % msg, seed, i, before)
        except Exception as e:
            fail("validate_secrets raised %r" % (e,), seed, i, before)
        if repr(d) != before:
            fail("validate_secrets changed its input", seed, i, before)
    rate.done(count, "accepted=%d" % accepted)
    assert 0 < accepted < count
    return accepted


