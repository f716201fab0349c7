# Commands over MQTT: <prefix>/<gateway_id>/cmd/<name>.  NON-SAFETY ACTIONS ONLY.
#
#   rescan      payload empty or {}                         -> gateway.poller.rescan()
#   discovery   payload empty or {}                         -> republish Home Assistant discovery
#   ack         {"code": "<diagnosis code>", "addr": n}     -> gateway.diagnoser.acknowledge(code, addr)
#               (acknowledging silences a diagnosis notice; it does not clear a latched fault)
#   chg_cap_a, dsg_cap_a, chg_stop_soc, dsg_stop_soc, hold_joins
#               {"value": <int>}                            -> gateway.derate.set(i, value, now)
#               DERATE-ONLY controls (bankgate.derate): each can only lower a limit or hold
#               joins, and runs out after mqtt.control_ttl_s without a refresh.
#
# There is deliberately no command that closes a contactor, raises a limit, changes the
# configuration, or clears a latched fault: those need the local reset (button/USB).  Any other
# name is "unknown".
# Checks, in order, each with its own reason: name length and known, payload size (CMD_MAX_BYTES),
# UTF-8, JSON, an object, exactly the expected fields with the expected types and ranges.  A
# rejected command changes nothing.  The caller (Telemetry) counts, emits EV_COMMAND and replies.
import json

from micropython import const

from bankgate import derate as _derate

CMD_MAX_BYTES = const(256)     # larger payloads are rejected unread
_NAME_MAX = const(16)

# command codes (EV_COMMAND a): 0 = unknown/unparseable name
CMD_UNKNOWN = const(0)
CMD_RESCAN = const(1)
_CMD_DISCOVERY = const(2)
_CMD_ACK = const(3)
_CMD_DERATE = const(4)         # 4..8: the derate controls, in bankgate.derate.NAMES order

NAMES = ("?", "rescan", "discovery", "ack",
         "chg_cap_a", "dsg_cap_a", "chg_stop_soc", "dsg_stop_soc", "hold_joins")

# rejection reasons (reply "reason")
OK = "ok"
E_UNKNOWN = "unknown command"
E_SIZE = "payload too large"
E_ENCODING = "payload not UTF-8"
E_JSON = "payload not JSON"
E_SHAPE = "unexpected payload"
E_FIELD = "bad field"
E_TARGET = "no such diagnosis"
E_FAILED = "action failed"
E_QOS = "QoS 2 refused"
E_RANGE = _derate.E_RANGE    # "out of range" (bankgate.derate: the valid range is config-derived)


def _name_code(name):
    for i in range(1, len(NAMES)):
        if NAMES[i] == name:
            return i
    return CMD_UNKNOWN


def parse(name_mv, payload_mv):
    """Validate a command without acting.  Returns (code, args, reason): reason is OK or why
    it is rejected; args is None or (code_str, addr) for ack."""
    if len(name_mv) == 0 or len(name_mv) > _NAME_MAX:
        return CMD_UNKNOWN, None, E_UNKNOWN
    try:
        name = str(bytes(name_mv), "utf-8")
    except Exception:
        return CMD_UNKNOWN, None, E_UNKNOWN
    code = _name_code(name)
    if code == CMD_UNKNOWN:
        return CMD_UNKNOWN, None, E_UNKNOWN
    if len(payload_mv) > CMD_MAX_BYTES:
        return code, None, E_SIZE
    try:
        text = str(bytes(payload_mv), "utf-8")
    except Exception:
        return code, None, E_ENCODING
    text = text.strip()
    if code in (CMD_RESCAN, _CMD_DISCOVERY):
        if text == "":
            return code, None, OK
    try:
        obj = json.loads(text)
    except Exception:
        return code, None, E_JSON
    if type(obj) is not dict:
        return code, None, E_SHAPE
    if code in (CMD_RESCAN, _CMD_DISCOVERY):
        return (code, None, OK) if not obj else (code, None, E_SHAPE)
    if code >= _CMD_DERATE:
        if len(obj) != 1 or "value" not in obj:
            return code, None, E_SHAPE
        v = obj["value"]
        if type(v) is not int:
            return code, None, E_FIELD
        return code, (v,), OK
    # ack
    if len(obj) != 2 or "code" not in obj or "addr" not in obj:
        return code, None, E_SHAPE
    c = obj["code"]
    a = obj["addr"]
    if type(c) is not str or not 0 < len(c) <= 32 or type(a) is not int or a < -1 or a > 255:
        return code, None, E_FIELD
    return code, (c, a), OK


def execute(gateway, code, args, republish, now=0):
    """Perform a validated command.  Returns OK or a rejection reason.  now: ticks_ms (the
    derate controls' refresh time)."""
    try:
        if code >= _CMD_DERATE and code < len(NAMES):
            d = getattr(gateway, "derate", None)
            if d is None:
                return E_UNKNOWN
            return d.set(code - _CMD_DERATE, args[0], now)      # OK or derate.E_RANGE
        if code == CMD_RESCAN:
            gateway.poller.rescan()
        elif code == _CMD_DISCOVERY:
            republish()
        elif code == _CMD_ACK:
            if gateway.diagnoser.acknowledge(args[0], args[1]) is False:
                return E_TARGET
        else:
            return E_UNKNOWN
    except Exception:
        return E_FAILED
    return OK
