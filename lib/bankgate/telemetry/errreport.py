# Reports an invalid configuration over MQTT while firmware.hold() keeps every output released.
#
# Used only when the configuration failed validation but its `gateway_id` and `mqtt` section are
# valid on their own (config.salvage_mqtt): the installer then sees the error where they normally
# watch the gateway, not only on the USB console.  What it publishes (docs/mqtt.md):
#   <base>/status   retained "config_error" (Home Assistant: every entity unavailable; the last will
#                   stays "offline")
#   <base>/bank     retained {"state": "config_error", "error": "<text>"} once per connection
# It subscribes to nothing and executes no command: a gateway that holds on a bad configuration
# offers nothing to control.  Same non-blocking client as the running telemetry (client.py).
import json

from bankgate.telemetry.client import Client


class ErrorReporter:
    def __init__(self, hw, cfg, net, text):
        m = cfg["mqtt"]
        gid = cfg["gateway_id"]
        base = "%s/%s" % (m["prefix"], gid)
        self.t_status = (base + "/status").encode()
        self.t_bank = (base + "/bank").encode()
        self.payload = json.dumps({"state": "config_error", "error": text}).encode()
        user = getattr(net, "user", None)
        pswd = getattr(net, "password", None)
        self.client = c = Client(
            net, m["host"], m["port"], ("bankgate-" + gid).encode(), keepalive_s=m["keepalive_s"],
            tls=m["tls"], user=user.encode() if user else None,
            password=(pswd or "").encode() if user else None,
            will_topic=self.t_status, will_msg=b"offline", tx_size=1024, rx_size=256,
            connect_timeout_ms=m["connect_timeout_ms"], max_backoff_ms=m["reconnect_max_ms"])
        c.on_connect = self._on_connect
        self.net = net
        self._due = False           # the report is still to be sent on this connection
        self.reports = 0            # connections on which the report was handed to the socket

    def _on_connect(self, now):
        self._due = True

    def service(self, now):
        """Non-blocking, like Telemetry.service: one pass of the client's state machine."""
        self.net.service(now)
        c = self.client
        c.service(now)
        if self._due and c.online and c.fits(len(self.t_bank) + len(self.t_status), len(self.payload) + 16, 0):
            c.publish(self.t_status, b"config_error", retain=True, qos=0)
            c.publish(self.t_bank, self.payload, retain=True, qos=0)
            self._due = False
            self.reports += 1
        if c.online:
            c.flush(now)
