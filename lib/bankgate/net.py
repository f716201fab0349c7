# Portable network adapter: what bankgate.telemetry needs from "the network",
# and nothing it could block on.
#
#   net.up()                 link usable? (Wi-Fi associated with an IP on the ESP32; True on the unix port)
#   net.service(now)         drive Wi-Fi (re)connection (hal.wifi), bounded and non-blocking
#   net.resolver(host, port) a Resolver for that broker, cached: DNS is asked once per process
#   net.socket()             a NEW non-blocking TCP socket (raises OSError while the link is down)
#   net.wrap_tls(sock, host) TLS over a connected non-blocking socket, handshake deferred (see below)
#   net.user / net.password / net.ssl_params / net.ssl_context     MQTT credentials (from secrets.json)
#
# DNS: socket.getaddrinfo() blocks (lwIP on the ESP32: seconds while Wi-Fi is bad; glibc on the unix
# port: up to its resolver timeout).  It is therefore never called from the control path with a name:
#   - an IP literal is converted by getaddrinfo without any lookup (glibc and lwIP parse it first);
#   - a name is looked up ONCE in a one-shot `_thread` worker (the ESP32 and unix ports have _thread);
#     until the worker answers, the broker counts as unreachable (telemetry stays offline and buffers);
#   - a port without _thread looks the name up synchronously at construction (before the control loop
#     runs, while the outputs are still released) -- documented, not used on the supported ports.
# The lookup function is injectable (`getaddrinfo=`) so a test can make it hang forever.
#
# TLS: umqtt.simple 1.3.4 takes `ssl=True, ssl_params={...}` and calls `ussl.wrap_socket(sock,
# **ssl_params)`; newer umqtt takes an `ssl.SSLContext`.  Both forms are accepted here (ssl_params=
# dict or ssl_context=SSLContext).  bankgate never lets umqtt touch a real socket (it only encodes
# packets, see bankgate.telemetry.client), so the TLS wrap happens here, on the real socket, with
# the handshake deferred to the first non-blocking read/write.  `tls_module()` is the shim for ports
# that have `ssl` but no `ussl` (the unix port) and for old firmware that has only `ussl`.
import sys

try:
    import socket
except ImportError:  # very old ports
    import usocket as socket

try:
    import _thread
except ImportError:
    _thread = None

# Resolver states
R_IDLE = 0
R_PENDING = 1
R_DONE = 2
R_FAILED = 3


def pem_to_der(data):
    """First certificate of a PEM blob as DER (the C `tls` module parses DER only); DER passes."""
    if not data.startswith(b"-----BEGIN"):
        return data
    import binascii
    lines = data.split(b"\n")
    body = []
    for ln in lines[1:]:
        if ln.startswith(b"-----END"):
            break
        body.append(ln.strip())
    return binascii.a2b_base64(b"".join(body))


class _TlsShim:
    """`ssl`-like module over the built-in C `tls` module, for a unix port whose MICROPYPATH
    hides the frozen `ssl.py` (and which has no `ussl`): what umqtt 1.3.4's ssl_params expect."""

    def __init__(self, tlsmod):
        self._t = tlsmod
        self.CERT_NONE = tlsmod.CERT_NONE
        self.CERT_OPTIONAL = tlsmod.CERT_OPTIONAL
        self.CERT_REQUIRED = tlsmod.CERT_REQUIRED
        self.PROTOCOL_TLS_CLIENT = tlsmod.PROTOCOL_TLS_CLIENT
        self.PROTOCOL_TLS_SERVER = tlsmod.PROTOCOL_TLS_SERVER

    def SSLContext(self, protocol):
        return self._t.SSLContext(protocol)

    def wrap_socket(self, sock, server_side=False, key=None, cert=None, cert_reqs=0, cadata=None,
                    server_hostname=None, do_handshake=True):
        t = self._t
        ctx = t.SSLContext(t.PROTOCOL_TLS_SERVER if server_side else t.PROTOCOL_TLS_CLIENT)
        if cert is not None or key is not None:
            ctx.load_cert_chain(cert, key)
        if cadata:
            ctx.load_verify_locations(pem_to_der(cadata))
        ctx.verify_mode = cert_reqs
        return ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake,
                               server_hostname=server_hostname)


_tls = None


def tls_module():
    """The TLS module of this port: `ssl` (MicroPython >= 1.21), the old `ussl`, or a shim over
    the C `tls` module (unix port started with a MICROPYPATH without `.frozen`)."""
    global _tls
    if _tls is None:
        try:
            import ssl
            _tls = ssl
        except ImportError:
            try:
                import ussl
                _tls = ussl
            except ImportError:
                import tls
                _tls = _TlsShim(tls)
    return _tls


def is_ip_literal(host):
    """True for a dotted IPv4 address ("192.168.1.10") or an IPv6 literal (contains ':')."""
    if ":" in host:
        return True
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3:
            return False
        for c in p:
            if c < "0" or c > "9":
                return False
        if int(p) > 255:
            return False
    return True


class Resolver:
    """Resolve (host, port) to a socket address once, without blocking the caller.

    poll() -> address or None.  `state` is R_PENDING while the worker runs, R_DONE with
    `addr` set, R_FAILED with `error` set (poll() then returns None; retry() starts again
    -- only after a failure, never while a worker may still be hanging)."""

    def __init__(self, host, port, getaddrinfo=None, use_thread=True):
        self.host = host
        self.port = port
        self._gai = getaddrinfo or socket.getaddrinfo
        self._thread = use_thread and _thread is not None
        self.state = R_IDLE
        self.addr = None
        self.error = None
        self._box = [None, None]    # written by the worker: [addr, error]; read by poll()
        self.lookups = 0            # lookups started (a cached result never starts another)

    def _lookup(self):
        try:
            ai = self._gai(self.host, self.port)
            self._box[0] = ai[0][-1]
        except Exception as e:  # noqa: BLE001 -- any failure means "unresolved"
            self._box[1] = e if e is not None else OSError(-1)
        if self._box[0] is None and self._box[1] is None:
            self._box[1] = OSError(-2)

    def start(self):
        if self.state != R_IDLE:
            return
        self.lookups += 1
        self.state = R_PENDING
        if is_ip_literal(self.host) or not self._thread:
            # a literal is parsed, not looked up: synchronous and immediate
            self._lookup()
            self._collect()
        else:
            _thread.start_new_thread(self._lookup, ())

    def _collect(self):
        if self._box[0] is not None:
            self.addr = self._box[0]
            self.state = R_DONE
        elif self._box[1] is not None:
            self.error = self._box[1]
            self.state = R_FAILED

    def poll(self):
        if self.state == R_IDLE:
            self.start()
        if self.state == R_PENDING:
            self._collect()
        return self.addr if self.state == R_DONE else None

    def retry(self):
        """After R_FAILED only: allow one more lookup."""
        if self.state == R_FAILED:
            self.state = R_IDLE
            self._box[0] = None
            self._box[1] = None
            self.error = None


class Net:
    """The network as telemetry sees it.  `link` (hal.wifi.Wifi or a fake) has
    isconnected() and service(now); None means a wired/host network that is always up."""

    def __init__(self, link=None, getaddrinfo=None, use_thread=True, user=None, password=None,
                 ssl_params=None, ssl_context=None, socket_factory=None):
        self.link = link
        self._gai = getaddrinfo
        self._use_thread = use_thread
        self._resolvers = {}
        self._socket_factory = socket_factory
        self.user = user
        self.password = password
        self.ssl_params = ssl_params
        self.ssl_context = ssl_context

    def up(self):
        return self.link is None or bool(self.link.isconnected())

    def service(self, now):
        if self.link is not None:
            self.link.service(now)

    def resolver(self, host, port):
        key = "%s:%d" % (host, port)
        r = self._resolvers.get(key)
        if r is None:
            r = Resolver(host, port, self._gai, self._use_thread)
            self._resolvers[key] = r
            if not self._use_thread or _thread is None:
                r.start()   # no worker thread on this port: the (documented) blocking fallback
        return r

    def socket(self):
        if not self.up():
            raise OSError(113)  # EHOSTUNREACH: no link
        if self._socket_factory is not None:
            s = self._socket_factory()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        return s

    def wrap_tls(self, sock, host):
        """TLS client over a connected non-blocking socket; the handshake runs inside
        the following non-blocking reads/writes."""
        # SNI/hostname check: MicroPython insists on server_hostname with CERT_REQUIRED; for an IP
        # literal mbedtls then matches it against the certificate's IP subjectAltName.
        sni = host
        if self.ssl_context is not None:
            return self.ssl_context.wrap_socket(sock, server_side=False,
                                                do_handshake_on_connect=False, server_hostname=sni)
        params = dict(self.ssl_params or {})
        if "server_hostname" not in params:
            params["server_hostname"] = sni
        params["do_handshake"] = False
        return tls_module().wrap_socket(sock, **params)


def load_secrets(path):
    """secrets.json: {"wifi": {"ssid", "password"}, "mqtt": {"user", "password",
    "ca_file", "cert_reqs": "required"|"none"}}; a missing file means no secrets."""
    import json
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError:
        return {}
    return d if type(d) is dict else {}


def _ssl_params_from(m):
    params = {}
    ca = m.get("ca_file")
    if ca:
        with open(ca, "rb") as f:
            params["cadata"] = f.read()
        params["cert_reqs"] = tls_module().CERT_REQUIRED
    if m.get("cert_reqs") == "none":
        params["cert_reqs"] = tls_module().CERT_NONE
    return params


def open_net(hw, cfg, secrets_path):
    """The device's network: Wi-Fi (hal.wifi) when the port has `network`, else the host stack."""
    s = load_secrets(secrets_path)
    m = s.get("mqtt", {}) if type(s.get("mqtt")) is dict else {}
    link = None
    w = s.get("wifi")
    if type(w) is dict and w.get("ssid"):
        try:
            from bankgate.hal.wifi import Wifi
            link = Wifi(w["ssid"], w.get("password", ""), hostname=cfg.get("gateway_id"))
        except ImportError:
            sys.stdout.write("bankgate: no `network` module: Wi-Fi settings ignored\n")
    net = Net(link, user=m.get("user"), password=m.get("password"),
              ssl_params=_ssl_params_from(m) if cfg["mqtt"]["tls"] else None)
    if hw is not None:
        hw.net = net
    return net
