# Why telemetry lost events, said once the broker can hear it.
#
# The store-and-forward ring (ring.py) keeps every event while it has room; only when
# nothing but events is left does a new event evict the oldest one (counted in
# ring.dropped_events; events overwritten in the EventLog before telemetry copied them
# count in Telemetry.events_lost).  LossWatch notices each new drop and records its
# CAUSE at that moment:
#   offline       the cause is the reason of the last disconnect or failed connect
#                 (transport R_*): R_NOACK "broker not acknowledging", R_SLOW "slowloris
#                 broker", R_LINK "Wi-Fi down", R_EOF/R_CONNECT/R_TIMEOUT ... "broker
#                 unreachable"; seconds = how long the gateway has been offline (for
#                 R_NOACK: since the broker's last PUBACK).
#   online        a QoS 1 packet waiting longer than the PUBACK timeout: R_NOACK (the
#                 broker is not acknowledging; seconds = since its last PUBACK); otherwise
#                 the cause before (the backlog of an outage still draining) or, with none,
#                 0 "backlog" (events produced faster than the link carries them).
# On the next successful delivery (the first PUBACK after the drops: a CONNACK alone proves
# nothing against a broker that does not acknowledge) report() emits one EV_TELEMETRY_LOSS event
# (addr = cause, a = events dropped, b = seconds) -- a QoS 1 event like any other, so it
# is delivered at least once -- and queues a diagnosis message on <base>/telemetry_loss
# (JSON: cause, events_dropped, telemetry_dropped, seconds, text).  The counts restart
# after each report.  Nothing here runs on the control path.
from bankgate import clock as tk
from bankgate.events import EV_TELEMETRY_LOSS
from bankgate.telemetry.transport import (   # the submodule, never the package (no cycle)
    REASON_NAMES, R_LINK, R_NOACK, R_SLOW)
from bankgate.telemetry.ring import K_LOSS as _K_LOSS

_TEXT = {
    R_NOACK: "broker took publishes but sent no PUBACK: check the broker (max inflight messages, "
             "disk, ACLs, bridge); events were kept until the ring was full",
    R_SLOW: "broker answered too slowly to finish connecting (slowloris or overloaded broker / "
            "link); events were kept until the ring was full",
    R_LINK: "Wi-Fi link down; events were kept until the ring was full",
    0: "events produced faster than the broker accepted them: raise mqtt.ring_bytes or check the "
       "link's throughput",
}
_OFFLINE_TEXT = "broker unreachable (%s); events were kept until the ring was full"


def cause_text(cause):
    t = _TEXT.get(cause)
    if t is None:
        n = REASON_NAMES[cause] if 0 <= cause < len(REASON_NAMES) else "?"
        t = _OFFLINE_TEXT % n
    return t


class LossWatch:
    def __init__(self):
        self.seen = -1          # dropped-event count already attributed (-1: not started)
        self.tel_seen = 0
        self.events = 0         # events dropped since the last report
        self.telemetry = 0      # telemetry records dropped since the last report
        self.cause = -1         # cause of the newest drop (-1: none)
        self.seconds = 0
        self.t_offline = None   # when the gateway last went offline (None: never online yet)
        self._t_start = None
        self.reports = 0        # EV_TELEMETRY_LOSS events emitted
        self.msg = None         # diagnosis message not yet in the ring

    def cause_name(self):
        c = self.cause
        if c < 0:
            return None
        if c == 0:
            return "backlog"
        return REASON_NAMES[c] if c < len(REASON_NAMES) else "?"

    def watch(self, now, tel):
        """After events were copied into the ring: attribute new drops to their cause."""
        if self._t_start is None:
            self._t_start = now
        r = tel.ring
        if self.msg is not None:
            d0 = r.dropped_telemetry
            if r.append(_K_LOSS, self.msg):
                self.msg = None
            else:
                r.dropped_telemetry = d0      # not a drop: tried again on the next pass
        n = r.dropped_events + tel.events_lost
        if self.seen < 0:
            self.seen = n
            self.tel_seen = r.dropped_telemetry
        if n == self.seen:
            return
        self.events += n - self.seen
        self.seen = n
        d = r.dropped_telemetry
        self.telemetry += d - self.tel_seen
        self.tel_seen = d
        c = tel.client
        if c.online:
            if self._oldest_wait_ms(now, c) >= c.puback_timeout_ms:
                self.cause = R_NOACK
            elif self.cause < 0:
                self.cause = 0
                self.seconds = 0
                return
            else:
                return                        # the backlog of the cause before: as it was
        else:
            self.cause = c.last_error
        if self.cause == R_NOACK:          # seconds since the broker last acknowledged
            t0 = c.t_puback if c.t_puback >= 0 else self._t_start
        else:                                 # seconds offline
            t0 = self.t_offline if self.t_offline is not None else self._t_start
        self.seconds = tk.diff(now, t0) // 1000

    def went_offline(self, now):
        self.t_offline = now

    def _oldest_wait_ms(self, now, c):
        w = 0
        p = c._ifp
        f = c._if0
        for k in range(c.inflight_max):
            if p[k]:
                a = tk.diff(now, f[k])
                if a > w:
                    w = a
        return w

    def report(self, now, tel):
        """On a PUBACK: event + diagnosis for the drops since the last report (if any)."""
        if self.events <= 0:
            return False
        cause = self.cause if self.cause >= 0 else 0
        tel.events.emit(now, EV_TELEMETRY_LOSS, cause, self.events, self.seconds)
        d = ('{"cause":"%s","events_dropped":%d,"telemetry_dropped":%d,"seconds":%d,"text":"%s"}'
             % (self.cause_name() or "backlog", self.events, self.telemetry, self.seconds,
                cause_text(cause)))
        self.msg = d.encode()         # queued by watch() once the ring takes telemetry again
        self.reports += 1
        self.events = 0
        self.telemetry = 0
        self.cause = -1
        return True
