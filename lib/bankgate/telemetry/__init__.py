# Telemetry: MQTT publishing, Home Assistant discovery, store-and-forward and commands
# (docs/mqtt.md documents every topic and payload).
#
#   tel = Telemetry(net, cfg, gateway, clock=None)
#                                           clock: ticks_ms()/ticks_us() (default gateway.hw.clock,
#                                           else bankgate.clock.PortTicks); every time telemetry
#                                           reads comes from it
#                                           gateway: snapshot(), events (EventLog), poller.rescan(),
#                                           diagnoser.acknowledge(code, addr), cfg
#   tel.service(now, budget_ms)             once per loop iteration; returns within about budget_ms
#   tel.online, tel.published, tel.dropped, tel.reconnects, tel.rejected_commands, tel.stats()
#   tel.stop(now)                           retained "offline" + DISCONNECT (orderly shutdown)
#
# Isolation from the control loop: everything below is a bounded state machine.  The socket is
# non-blocking (transport.py), DNS runs in a worker thread (bankgate.net), nothing waits for a
# broker reply (client.py), and service() stops doing work once budget_ms of real CPU time is used
# (checked between units of work: one message encoded, one socket read/write pass).
# The worst single unit is formatting one message as JSON (allocates; ~1-3 ms on an ESP32).
#
# Streaming (heap): with the real Gateway, each message is built from the live records when it
# is encoded -- the bank message from bank_fields(), then one module message per call
# (gw.module_snapshot(m)), the diagnoses and the metrics -- and never from a whole gw.snapshot()
# (17.8 KB on a 32-bit port with 16 modules): at most one message's dict and JSON text exist
# at once.  A module message therefore shows the module as it is when encoded (within one bank
# period of the bank message).  A gateway without the live records (unit-test stand-ins with
# only snapshot()) is reported from snapshot() as before.
#
# Data flow: events are copied from the gateway's EventLog and snapshots are encoded into the
# store-and-forward Ring (ring.py) on schedule whether or not the broker is reachable; the ring is
# drained to the broker in order while online.  Events go at QoS 1 and stay in the ring until their
# PUBACK; telemetry at QoS 0.  Discovery and the status topic are sent directly after each CONNACK.
import io
import json

from micropython import const

from bankgate import clock as tk
from bankgate.events import EV_COMMAND, EV_MQTT, EVENT_NAMES
from bankgate.telemetry import commands as cmds
from bankgate.telemetry import ring as rg
from bankgate.telemetry.client import Client
from bankgate.telemetry.hadata import HaData, event_what
from bankgate.telemetry import loss as _loss
from bankgate.telemetry.transport import R_INTERNAL

_INFLIGHT_MAX = const(16)      # QoS 1 events awaiting PUBACK at once
_EVENTS_PER_PASS = const(32)   # events copied from the EventLog per service() call
_REPORTS_PER_S = const(10)     # rejected commands reported (event + reply) per second; all are counted
_TX_BYTES = const(4096)
_RX_BYTES = const(512)       # every acceptable command fits (CMD_MAX_BYTES 256 + topic < 400 B)
_J = (",", ":")

from bankgate import VERSION  # noqa: E402  (one version: the CLI's, HA's sw_version)


try:
    from bankgate.proto.fast import copy_into as _copy_into   # viper: no slice object per write
except (ImportError, ValueError, SyntaxError, NotImplementedError):
    _copy_into = None


class _Sink(io.IOBase):
    """json.dump() target that writes the JSON text straight into the ring's record (or, with
    buf None, only counts it).  A message then needs no heap block of its own: json.dumps grows
    a string by doubling and .encode() copies it, and in a small fragmented heap a 2.4 KB
    metrics message found no such block.  MicroPython hands write() a stack-allocated view, so
    nothing is allocated per call."""

    def __init__(self):
        self.buf = None
        self.p = 0
        self.lim = 0

    def write(self, b):
        k = len(b)
        p = self.p
        if self.buf is not None and p + k <= self.lim:
            if _copy_into is not None:
                _copy_into(self.buf, p, b, k)
            else:
                self.buf[p:p + k] = b
        self.p = p + k
        return k


def _write_metrics(k, t, metrics, rest):
    """The metrics message {"t_ms", "metrics", **rest} written into sink k key by key from the
    live arrays: one 16-element list at a time instead of Metrics.snapshot()'s whole dict
    (about 2.5 KB on the 32-bit port with 16 modules; docs/performance.md).  Same JSON object
    as json.dump({"t_ms": t, "metrics": metrics.snapshot(), **rest})."""
    per_module, bank = metrics.field_names()
    k.write(b'{"t_ms":')
    json.dump(t, k)
    k.write(b',"metrics":{')
    sep = b""
    for name in per_module:
        k.write(sep)
        json.dump(name, k)
        k.write(b":")
        json.dump(list(getattr(metrics, name)), k, separators=_J)
        sep = b","
    for name in bank:
        k.write(sep)
        json.dump(name, k)
        k.write(b":")
        json.dump(getattr(metrics, name), k)
        sep = b","
    k.write(b"}")
    for key in rest:
        k.write(b",")
        json.dump(key, k)
        k.write(b":")
        json.dump(rest[key], k, separators=_J)
    k.write(b"}")


def bank_fields(gw, now):
    """The bank message: gw.snapshot() without "modules", "metrics" and "diagnoses", built from
    the live records (bankgate.app.Gateway.bank_fields; tests check it equals the snapshot's)."""
    return gw.bank_fields(now)


class _Produce:
    """What goes into the store-and-forward ring: events copied from the gateway's log, the bank / module / metrics / derate messages streamed from the live records, at most one per call (Telemetry holds the state)."""

    def _copy_events(self, now):
        ev = self.events
        n = 0
        rec = self._evrec
        while self._ev_next <= ev.seq and n < _EVENTS_PER_PASS:
            old = ev.oldest()
            if self._ev_next < old:
                self.events_lost += old - self._ev_next
                self._ev_next = old
            s = self._ev_next
            if ev.get(s, rec):
                self.ring.append_event(s, rec[0], rec[1], rec[2], rec[3], rec[4])
            self._ev_next = s + 1
            n += 1
        if n:
            ev.mark_read(self._ev_next - 1)

    def _produce(self, now):
        """At most one snapshot or one encoded message per call (bounded cost)."""
        if self._produce_derate(now):
            return
        if self._live:
            self._produce_live(now)
            return
        if self._next_bank is None or tk.due(now, self._next_bank):
            self._next_bank = tk.add(now, self.bank_period)
            snap = self.gw.snapshot()
            bank = {}
            for k, v in snap.items():
                if k != "modules" and k != "metrics" and k != "diagnoses":
                    bank[k] = v
            bank["seq"] = self.events.seq
            self.ring.append(rg.K_BANK, json.dumps(bank, separators=_J).encode())
            if self._next_mod is None or tk.due(now, self._next_mod):
                self._next_mod = tk.add(now, self.module_period)
                self._mods = snap.get("modules") or None
                self._mod_i = 0
            if self._next_metrics is None or tk.due(now, self._next_metrics):
                self._next_metrics = tk.add(now, self.metrics_period)
                self._metrics_snap = snap
                self._diag_pending = True
            return
        mods = self._mods
        if mods is not None:
            d = mods[self._mod_i]
            self._mod_i += 1
            if self._mod_i >= len(mods):
                self._mods = None
            s = d.get("slot", 0)
            self.ring.append(rg.K_MODULE + (s & 15), json.dumps(d, separators=_J).encode(), d.get("addr", s) & 0xFFFF)
            return
        snap = self._metrics_snap
        if snap is not None:
            if self._diag_pending:
                self._diag_pending = False
                d = {"t_ms": snap.get("t_ms", now), "active": snap.get("diagnoses") or []}
                self.ring.append(rg.K_DIAG, json.dumps(d, separators=_J).encode())
                return
            self._metrics_snap = None
            d = {"t_ms": snap.get("t_ms", now), "metrics": snap.get("metrics"),
                 "bus": snap.get("bus"), "inverter": snap.get("inverter"), "mqtt": self.stats()}
            self.ring.append(rg.K_METRICS, json.dumps(d, separators=_J).encode())

    def _produce_derate(self, now):
        """The retained <base>/derate state (docs/mqtt.md): at boot (overwrites the state a
        previous boot left on the broker: controls do not survive a reboot), after every
        change (command, expiry), after each (re)connect and every metrics period.  True when
        a message was produced."""
        d = getattr(self.gw, "derate", None)
        if d is None:
            return False
        if d.version == self._derate_sent and self._next_derate is not None \
                and not tk.due(now, self._next_derate):
            return False
        self._derate_sent = d.version
        self._next_derate = tk.add(now, self.metrics_period)
        self._put(rg.K_DERATE, d.snapshot(now))
        return True

    def _put(self, kind, d, tag=0):
        """Encode d as JSON into a new ring record: one pass to count, one to write in place."""
        k = self._sink
        k.buf = None
        k.p = 0
        json.dump(d, k, separators=_J)
        n = k.p
        r = self.ring
        off = r._reserve(n, False, kind)      # (what Ring.append does, without a payload copy)
        if off < 0:
            return
        b = r.buf
        b[off + 2] = (tag >> 8) & 0xFF
        b[off + 3] = tag & 0xFF
        k.buf = b
        k.p = off + rg.HDR
        k.lim = k.p + n
        json.dump(d, k, separators=_J)
        k.buf = None

    def _produce_live(self, now):
        """_produce() from the live records: one message built and encoded per call."""
        gw = self.gw
        if self._next_bank is None or tk.due(now, self._next_bank):
            self._next_bank = tk.add(now, self.bank_period)
            t = gw.hw.clock.ticks_ms()
            d = bank_fields(gw, t)
            d["seq"] = self.events.seq
            self.hax.bank(d, t)
            self._put(rg.K_BANK, d)
            d = None
            if self._next_mod is None or tk.due(now, self._next_mod):
                self._next_mod = tk.add(now, self.module_period)
                self._mod_live = 0
            if self._next_metrics is None or tk.due(now, self._next_metrics):
                self._next_metrics = tk.add(now, self.metrics_period)
                self._metrics_t = t
                self._metrics_snap = True
                self._diag_pending = True
            return
        i = self._mod_live
        if i >= 0:
            mods = gw.bank.modules
            n = len(mods)
            while i < n and mods[i].addr < 0:
                i += 1
            if i < n:
                m = mods[i]
                self._mod_live = i + 1
                d = self.hax.module(gw.module_snapshot(m), m, gw.hw.clock.ticks_ms())
                self._put(rg.K_MODULE + (m.slot & 15), d, m.addr & 0xFFFF)
                return
            self._mod_live = -1
        if self._metrics_snap is not None:
            t = self._metrics_t
            if self._diag_pending:
                self._diag_pending = False
                self._put(rg.K_DIAG, {"t_ms": t, "active": gw.diagnoser.snapshot() or []})
                return
            self._metrics_snap = None
            inv = gw.inverter
            rest = {"bus": gw.health.snapshot(), "inverter": inv.snapshot() if inv is not None else None,
                    "mqtt": self.stats()}
            self._put_stream(rg.K_METRICS, lambda k: _write_metrics(k, t, gw.metrics, rest))

    def _put_stream(self, kind, write):
        """_put() for a message that write(sink) writes piece by piece (called twice: count,
        then write in place; it must write the same both times)."""
        k = self._sink
        k.buf = None
        k.p = 0
        write(k)
        n = k.p
        r = self.ring
        off = r._reserve(n, False, kind)
        if off < 0:
            return
        b = r.buf
        b[off + 2] = 0
        b[off + 3] = 0
        k.buf = b
        k.p = off + rg.HDR
        k.lim = k.p + n
        write(k)
        k.buf = None


class _Inbox(_Produce):
    """Commands received over MQTT (bankgate.telemetry.commands): executed or rejected, counted, replied to (Telemetry holds the state)."""

    def _on_message(self, topic, payload):
        t = bytes(topic)
        if t == self.t_ha_status:
            if bytes(payload) == b"online":
                self.republish_discovery()
            return
        p = self.t_cmd
        if t[:len(p)] != p:
            return
        code, args, reason = cmds.parse(topic[len(p):], payload)
        if reason == cmds.OK:
            reason = cmds.execute(self.gw, code, args, self.republish_discovery, self._now())
        if reason != cmds.OK:
            self._reject(code, reason)
            return
        self.accepted_commands += 1
        now = self._now()
        self.events.emit(now, EV_COMMAND, -1, code, 1)
        self._reply(code, True, reason)

    def _reject(self, code, reason):
        self.rejected_commands += 1
        now = self._now()
        d = tk.diff(now, self._report_window)
        if d >= 1000 or d < 0:           # < 0: a window older than 6.2 days (wrapped)
            self._report_window = now
            self._reports = 0
        if self._reports >= _REPORTS_PER_S:
            return
        self._reports += 1
        self.events.emit(now, EV_COMMAND, -1, code, 0)
        self._reply(code, False, reason)

    def _reply(self, code, ok, reason):
        d = '{"cmd":"%s","ok":%s,"reason":"%s","rejected":%d}' % (
            cmds.NAMES[code], "true" if ok else "false", reason, self.rejected_commands)
        self.ring.append(rg.K_REPLY, d.encode())


class Telemetry(_Inbox):
    def __init__(self, net, cfg, gateway, discovery_version=VERSION, clock=None):
        m = cfg["mqtt"]
        if clock is None:
            clock = getattr(getattr(gateway, "hw", None), "clock", None)
        self.clock = clock if clock is not None else tk.PortTicks()
        self.cfg = cfg
        self.gw = gateway
        self.events = gateway.events
        self.net = net
        gid = cfg["gateway_id"]
        base = "%s/%s" % (m["prefix"], gid)
        self.base = base
        self.t_status = (base + "/status").encode()
        self.t_bank = (base + "/bank").encode()
        self.t_metrics = (base + "/metrics").encode()
        self.t_diag = (base + "/diagnoses").encode()
        self.t_event = (base + "/event").encode()
        self.t_reply = (base + "/cmd_result").encode()
        self.t_derate = (base + "/derate").encode()
        self.t_module = base + "/module/%d"
        self.t_cmd = (base + "/cmd/").encode()
        self.t_cmd_sub = (base + "/cmd/+").encode()
        self.t_ha_status = (m["discovery_prefix"] + "/status").encode()
        user = getattr(net, "user", None)
        pswd = getattr(net, "password", None)
        self.client = Client(
            net, m["host"], m["port"], ("bankgate-" + gid).encode(), keepalive_s=m["keepalive_s"],
            tls=m["tls"], user=user.encode() if user else None,
            password=(pswd or "").encode() if user else None,
            will_topic=self.t_status, will_msg=b"offline", tx_size=_TX_BYTES, rx_size=_RX_BYTES,
            connect_timeout_ms=m["connect_timeout_ms"], max_backoff_ms=m["reconnect_max_ms"])
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_puback = self._on_puback
        c.on_oversize = self._on_oversize
        c.on_refused = self._on_refused
        self.ring = rg.Ring(m["ring_bytes"])
        self.disc = None
        if m["discovery"]:
            from bankgate.telemetry.ha import Discovery
            self.disc = Discovery(cfg, base, self.t_status.decode(), discovery_version, gateway)
        self.bank_period = m["bank_period_ms"]
        self.module_period = m["module_period_ms"]
        self.metrics_period = m["metrics_period_ms"]
        self._next_bank = None          # None: at the first service()
        self._next_mod = None
        self._next_metrics = None
        self._mods = None               # module dicts of the current module cycle (snapshot path)
        self._live = getattr(gateway, "module_snapshot", None) is not None and \
            getattr(gateway, "bank", None) is not None
        self._mod_live = -1             # next bank.modules index of the module cycle, -1: none
        self.hax = HaData(cfg, gateway, self) if self._live else None   # HA fields, energy (hadata.py)
        self._metrics_t = 0             # t_ms of the metrics/diagnoses messages still to encode
        self._sink = _Sink()
        self._mod_i = 0
        self._metrics_snap = None       # snapshot whose metrics/diagnoses are still to encode
        self._diag_pending = False
        self._derate_sent = -1          # derate.version last put in the ring (-1: publish now)
        self._next_derate = None        # also republished every metrics period (retained state)
        ev = self.events
        self._ev_next = ev.oldest() if ev.seq else 1
        self._evrec = [0, 0, 0, 0, 0]
        self._session = 0               # session set-up steps left after CONNACK (status, 2 subs)
        self._disc_i = -1               # next discovery message, -1: none pending
        self._inflight = 0
        self._report_window = 0
        self._reports = 0
        # counters
        self.published = 0              # PUBLISH packets encoded for the broker
        self.reconnects = 0
        self.rejected_commands = 0
        self.accepted_commands = 0
        self.events_lost = 0            # events overwritten in the EventLog before telemetry copied them
        self.service_max_us = 0         # worst real time of one service() call
        self.overruns = 0               # calls that ended past their budget (one unit of work overran)
        self.internal_errors = 0        # exceptions caught in service() (bugs, MemoryError)
        self.last_exception = None
        self.loss = _loss.LossWatch()   # why the ring dropped events; reported at the next PUBACK

    # --------------------------------------------------------------- public
    @property
    def online(self):
        return self.client.online

    @property
    def dropped(self):
        r = self.ring
        return r.dropped_events + r.dropped_telemetry + self.events_lost

    def stats(self):
        c = self.client
        r = self.ring
        return {"online": c.online, "published": self.published, "dropped": self.dropped,
                "dropped_events": r.dropped_events + self.events_lost,
                "dropped_telemetry": r.dropped_telemetry, "queued": r.n_records,
                "queued_bytes": r.used(), "reconnects": self.reconnects,
                "connects": c.connects, "attempts": c.attempts,
                "rejected_commands": self.rejected_commands,
                "accepted_commands": self.accepted_commands, "rx_oversize": c.rx_oversize,
                "last_error": c.last_error, "service_max_us": self.service_max_us,
                "overruns": self.overruns, "internal_errors": self.internal_errors,
                "resends": c.resends, "noack_drops": c.noack_drops, "slow_connects": c.slow_connects + c.slow_sessions,
                "rx_qos_refused": c.rx_qos_refused, "loss_cause": self.loss.cause_name()}

    def service(self, now, budget_ms=5):
        clk = self.clock
        t0 = clk.ticks_us()
        budget_us = budget_ms * 1000
        c = self.client
        try:
            self.net.service(now)
            self._copy_events(now)
            self._produce(now)
            self.loss.watch(now, self)
            if tk.diff(clk.ticks_us(), t0) < budget_us:
                c.service(now)
                while c.online and tk.diff(clk.ticks_us(), t0) < budget_us:
                    if not self._send_one(now):
                        break
                c.flush(now)
        except Exception as e:  # noqa: BLE001
            # Telemetry must never take the control loop down: a bug or a MemoryError here drops
            # the connection (it is retried after the backoff) and is counted, nothing more.
            self.internal_errors += 1
            self.last_exception = e
            try:
                c._lost(now, R_INTERNAL)
            except Exception:  # noqa: BLE001
                pass
        dt = tk.diff(clk.ticks_us(), t0)
        if dt > self.service_max_us:
            self.service_max_us = dt
        if dt > budget_us:
            self.overruns += 1

    def republish_discovery(self):
        if self.disc is not None:
            self._disc_i = 0

    def stop(self, now):
        self.client.close(now, self.t_status)

    # ----------------------------------------------------------- producing
    # ------------------------------------------------------------- sending
    def _send_one(self, now):
        """Encode one message into the transport's tx buffer.  False: nothing to do / no room."""
        c = self.client
        if self._session:
            if self._session == 3:
                if not c.fits(len(self.t_status), 6, 0):
                    return False
                c.publish(self.t_status, b"online", True, 0)
            elif self._session == 2:
                if c.tx_free() < len(self.t_cmd_sub) + 8:
                    return False
                c.subscribe(self.t_cmd_sub, 0)
            else:
                if c.tx_free() < len(self.t_ha_status) + 8:
                    return False
                if self.disc is not None:
                    c.subscribe(self.t_ha_status, 0)
            self._session -= 1
            self.published += 1
            return True
        if self._disc_i >= 0:
            disc = self.disc
            if not disc.send(c, self._sink, self._disc_i):
                return False
            self.published += 1
            self._disc_i += 1
            if self._disc_i >= disc.count():
                self._disc_i = -1
            return True
        r = self.ring
        pid = c.due_resend(now)
        if pid:                                   # PUBACK overdue: same packet id, DUP set
            off = r.find_inflight(pid)
            if off < 0:
                c.forget(pid)                     # its event left the ring (overflow)
                return True
            payload = self._event_json(r, off)
            if not c.fits(len(self.t_event), len(payload), 1):
                return False
            c.republish(self.t_event, payload, pid)
            self.published += 1
            return True
        off = r.next_pending()
        if off < 0:
            return False
        kind = r.kind(off)
        if kind == rg.K_EVENT:
            if not c.inflight_room():         # client.INFLIGHT_MAX (16) awaiting PUBACK
                return False
            payload = self._event_json(r, off)
            if not c.fits(len(self.t_event), len(payload), 1):
                return False
            pid = c.publish(self.t_event, payload, False, 1)
            self._inflight += 1
            r.mark_sent(off, pid)
        else:
            topic = self._topic(r, off, kind)
            n = r.payload_len(off)
            if not c.fits(len(topic), n, 0):
                if n + len(topic) + 8 > len(c.t.tx):
                    r.mark_sent(off, 0)       # can never fit: drop it (counted as telemetry drop)
                    r.dropped_telemetry += 1
                    return True
                return False
            c.publish(topic, r.payload(off), kind != rg.K_REPLY and kind != rg.K_LOSS, 0)  # retained state
            r.mark_sent(off, 0)
        self.published += 1
        return True

    def _topic(self, r, off, kind):
        if kind == rg.K_BANK:
            return self.t_bank
        if kind == rg.K_METRICS:
            return self.t_metrics
        if kind == rg.K_DIAG:
            return self.t_diag
        if kind == rg.K_REPLY:
            return self.t_reply
        if kind == rg.K_LOSS:
            return (self.base + "/telemetry_loss").encode()
        if kind == rg.K_DERATE:
            return self.t_derate
        return (self.t_module % r.tag(off)).encode()

    def _event_json(self, r, off):
        seq, t, code, addr, a, b = r.event(off)
        return ('{"seq":%d,"t_ms":%d,"code":%d,"ev":"%s","addr":%d,"a":%d,"b":%d,"what":"%s"}'
                % (seq, t, code, EVENT_NAMES.get(code, "?"), addr, a, b, event_what(code, a, b))).encode()

    # ----------------------------------------------------------- callbacks
    def _on_connect(self, now):
        if self.client.connects > 1:
            self.reconnects += 1
        self._session = 3
        self._inflight = 0
        self._derate_sent = -1          # the derate state again on every session
        if self.disc is not None:
            self._disc_i = 0
        self.events.emit(now, EV_MQTT, -1, 1, self.client.connects)

    def _on_disconnect(self, now, reason, was_online):
        self.ring.rewind()
        self._inflight = 0
        self._session = 0
        self._disc_i = -1
        if was_online:
            self.events.emit(now, EV_MQTT, -1, 0, reason)
            self.loss.went_offline(now)

    def _on_puback(self, pid):
        if self.ring.ack(pid) and self._inflight > 0:
            self._inflight -= 1
        if self.loss.events:                      # the broker takes events again: say what was lost
            self.loss.report(self._now(), self)

    def _on_oversize(self):
        self._reject(cmds.CMD_UNKNOWN, cmds.E_SIZE)

    def _on_refused(self, qos):
        self._reject(cmds.CMD_UNKNOWN, cmds.E_QOS)

    def _now(self):
        return self.clock.ticks_ms()
