# ESP32 Wi-Fi station (hardware layer: the only place that imports `network`).
#
# Never blocks: WLAN.connect() on the ESP32 starts association and returns at once;
# service(now) only reads the status and, when the link is down, starts another
# attempt after a capped exponential backoff (2 s .. 60 s, +-25 % jitter so a
# fleet does not hammer the access point in step).  The control loop calls
# service() through bankgate.net.Net.service() once per telemetry pass.
import network
import random

from bankgate import clock as tk

_RETRY_MIN_MS = 2000
_RETRY_MAX_MS = 60000
_ATTEMPT_MS = 15000      # an association still not up after this is abandoned and retried


class Wifi:
    def __init__(self, ssid, password, hostname=None, retry_min_ms=_RETRY_MIN_MS,
                 retry_max_ms=_RETRY_MAX_MS):
        self.ssid = ssid
        self.password = password
        self.retry_min_ms = retry_min_ms
        self.retry_max_ms = retry_max_ms
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        if hostname:
            try:
                network.hostname(hostname)
            except Exception:  # older firmware: no network.hostname()
                pass
        self.connects = 0        # association attempts started
        self.losses = 0          # connected -> disconnected transitions
        self._was_up = False
        self._backoff_ms = retry_min_ms
        self._next_try = None    # ticks_ms of the next attempt; None: now
        self._attempt_start = None

    def isconnected(self):
        return self.wlan.isconnected()

    def status(self):
        return self.wlan.status()

    def ifconfig(self):
        return self.wlan.ifconfig()

    def service(self, now):
        up = self.wlan.isconnected()
        if up:
            if not self._was_up:
                self._backoff_ms = self.retry_min_ms
                self._attempt_start = None
            self._was_up = True
            return
        if self._was_up:
            self.losses += 1
            self._was_up = False
            self._next_try = now
        if self._attempt_start is not None:
            if tk.diff(now, self._attempt_start) < _ATTEMPT_MS:
                return          # association in progress
            self._attempt_start = None
            try:
                self.wlan.disconnect()
            except OSError:
                pass
        if self._next_try is not None and not tk.due(now, self._next_try):
            return
        try:
            self.wlan.connect(self.ssid, self.password)
        except OSError:
            pass                # "already connecting" etc.: the next service() looks again
        self.connects += 1
        self._attempt_start = now
        jitter = self._backoff_ms // 4
        self._next_try = tk.add(now, self._backoff_ms - jitter + random.getrandbits(16) % (2 * jitter + 1))
        self._backoff_ms = min(self._backoff_ms * 2, self.retry_max_ms)
