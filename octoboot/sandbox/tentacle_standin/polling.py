"""A polling Tentacle's side of the conversation: connect out to each server it polls.

For every trusted server of style TentacleActive with an address (what `server-comms` or
`register-with --comms-style TentacleActive` wrote), the service connects to that address
over TLS, presenting its own certificate; it goes on only if the server presents the
thumbprint it trusts, then names its subscription (`MX-SUBSCRIBER 1.0 poll://<id>/`, as
Halibut's `IdentifyAsSubscriber`) and answers the server's requests on that connection.
When the connection fails or the server goes away (a restart), it connects again after a
short pause, for as long as the service runs. With a proxy of its own (`polling-proxy`: a
host, and UseDefaultProxy false), it connects through that proxy with HTTP CONNECT, as
Halibut does, sending the proxy username (and password, if any) as Basic credentials; the
system's default proxy (UseDefaultProxy true, no host) is taken as none, as on a host whose
environment names no proxy.

Known difference: requests and responses are one JSON line each, not Halibut's zipped BSON.
"""

from __future__ import annotations

import base64
import json
import select
import socket
import ssl
import threading
from urllib.parse import urlsplit

from .log import Log
from .pfx import thumbprint_of_der
from .proxy import PROXY_HOST, PROXY_PASSWORD, PROXY_PORT, PROXY_USERNAME, USE_DEFAULT_PROXY
from .settings import Settings

POLLING = 2  # CommunicationStyle.TentacleActive, as the configuration stores it
_CONNECT_SECONDS = 10.0
_RETRY_SECONDS = 1.0  # Halibut's RetryListeningSleepInterval
_POLL_SECONDS = 0.5
_LINE_LIMIT = 64 * 1024


def polled_servers(settings: Settings) -> list[dict]:
    """The trusted servers this Tentacle polls."""
    return [
        server
        for server in settings.trusted_servers
        if server.get("CommunicationStyle") == POLLING
        and server.get("Address")
        and server.get("SubscriptionId")
    ]


def proxy_of(settings: Settings) -> tuple[str, int, str, str] | None:
    """The proxy this Tentacle polls through: (host, port, username, password), or None."""
    host = settings.get(PROXY_HOST)
    if not host or (settings.get(USE_DEFAULT_PROXY) or "true").lower() == "true":
        return None
    port = int(settings.get(PROXY_PORT) or 80)
    return host, port, settings.get(PROXY_USERNAME) or "", settings.get(PROXY_PASSWORD) or ""


def client_context(settings: Settings) -> ssl.SSLContext:
    identity = settings.identity()
    assert identity is not None, "run generates a certificate before it polls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trust is the server's thumbprint, checked below
    identity.load_into(context)
    return context


class Poller:
    """Keeps one server polled until `stopping` is set."""

    def __init__(
        self,
        server: dict,
        trusted: set[str],
        context: ssl.SSLContext,
        answer: dict,
        log: Log,
        stopping: threading.Event,
        proxy: tuple[str, int, str, str] | None = None,
    ) -> None:
        address = urlsplit(server["Address"])
        self.proxy = proxy
        self.host, self.port = address.hostname or "", address.port or 443
        self.subscription = server["SubscriptionId"]
        self.trusted = trusted  # the thumbprints the service trusted when it started
        self.context = context
        self.answer = answer  # what the capabilities request is answered with
        self.log = log
        self.stopping = stopping

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._session()
            except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts included
                self.log.info(f"Polling {self.host}:{self.port} failed: {exc}")
            self.stopping.wait(_RETRY_SECONDS)

    def _session(self) -> None:
        address = (self.host, self.port) if self.proxy is None else self.proxy[:2]
        with (
            socket.create_connection(address, timeout=_CONNECT_SECONDS) as raw,
            self.context.wrap_socket(self._tunnel(raw)) as tls,
        ):
            presented = thumbprint_of_der(tls.getpeercert(binary_form=True) or b"")
            if presented not in self.trusted:
                raise ValueError(f"the server presented thumbprint {presented}, not trusted")
            tls.sendall(f"MX-SUBSCRIBER 1.0 {self.subscription}\r\n\r\n".encode())
            lines = _Lines(tls)
            if not (lines.next(_CONNECT_SECONDS) or "").startswith("MX-SERVER"):
                raise ValueError("the server did not identify itself")
            self.log.info(f"Polling {self.host}:{self.port} as {self.subscription}")
            tls.settimeout(None)
            self._serve(tls, lines)

    def _tunnel(self, raw: socket.socket) -> socket.socket:
        """raw, through the proxy to the server when there is one (HTTP CONNECT)."""
        if self.proxy is None:
            return raw
        _, _, username, password = self.proxy
        target = f"{self.host}:{self.port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if username:
            credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
            head += f"Proxy-Authorization: Basic {credentials}\r\n"
        raw.sendall(f"{head}\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = raw.recv(1)  # byte by byte: what follows the answer is the server's TLS
            if not chunk or len(answer) > _LINE_LIMIT:
                raise ConnectionError(f"the proxy {self.proxy[0]}:{self.proxy[1]} hung up")
            answer += chunk
        status = answer.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] != ["200"]:
            raise ConnectionError(f"the proxy {self.proxy[0]}:{self.proxy[1]} said {status}")
        return raw

    def _serve(self, tls: ssl.SSLSocket, lines: _Lines) -> None:
        while not self.stopping.is_set():
            line = lines.next(_POLL_SECONDS)
            if not line:
                continue  # nothing yet, or Halibut's blank line after an identification
            request = json.loads(line)
            response = {"Id": request.get("Id"), "Result": self.answer}
            tls.sendall(json.dumps(response).encode() + b"\n")


class _Lines:
    """Lines from a TLS socket, waiting at most a given time for the next one (a socket
    timeout would leave a file object unusable, so select() does the waiting)."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self.tls = tls
        self.buffer = b""

    def next(self, wait: float) -> str | None:
        """The next line, or None if none came within wait seconds."""
        while b"\n" not in self.buffer:
            if not self.tls.pending() and not select.select([self.tls], [], [], wait)[0]:
                return None
            chunk = self.tls.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
            if len(self.buffer) > _LINE_LIMIT:
                raise ValueError("the server sent a line that is too long")
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8", "replace").strip()
