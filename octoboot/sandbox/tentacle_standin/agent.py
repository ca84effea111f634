"""`run` / `agent`: the Tentacle service process, a TLS listener that proves who it is.

It presents the instance's certificate on the configured port (ListenIP, else every IPv4
address; nothing when NoListen), and polls every server configured for polling
(`polling.py`). Like Halibut it takes any client certificate during the
handshake and judges it afterwards by thumbprint against the servers trusted when it started
(a real Tentacle, too, needs a restart after `configure --trust`): a trusted client gets
`200 OK` and a JSON {Application, Version, Thumbprint}; anyone else `403 Forbidden` and why.
SIGTERM (systemctl stop) or SIGINT ends it cleanly.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import ssl
import threading
import time

from . import control, crypto, polling
from .command import Command, Invocation
from .dotnet import parse_int
from .jsontext import dumps
from .log import Log
from .options import Option
from .pfx import thumbprint_of_der
from .settings import Settings
from .version import version_info

_REQUEST_LIMIT = 64 * 1024
_REQUEST_SECONDS = 5.0
_ACCEPT_POLL_SECONDS = 0.5
_SSL_VERIFY_PEER = 1
_SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 2
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# Kept for the life of the process: OpenSSL holds a raw pointer to it.
_accept_every_certificate = _VERIFY_CALLBACK(lambda preverify_ok, store: 1)


def _loaded_libssl() -> ctypes.CDLL:
    """The libssl this process's `ssl` module is linked against (not just any libssl)."""
    with open("/proc/self/maps") as maps:
        lines = maps.read().splitlines()
    for line in lines:
        path = line.split()[-1]
        if "/libssl.so" in path:
            return ctypes.CDLL(path)
    raise RuntimeError("the ssl module's libssl is not mapped into this process")


def accept_any_client_certificate(context: ssl.SSLContext) -> None:
    """Ask every client for a certificate and accept whatever it sends (or nothing).

    Python's ssl has no verify callback, and CERT_OPTIONAL still aborts the handshake when no
    loaded CA vouches for the client, so OpenSSL's callback is set through ctypes on the SSL_CTX
    that the context wraps (CPython's PySSLContext starts with PyObject_HEAD, then SSL_CTX*).
    The pointer is checked against the verify mode before it is used.
    """
    libssl = _loaded_libssl()
    libssl.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    libssl.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
    libssl.SSL_CTX_set_verify.restype = None
    ssl_ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    for mode, expected in (
        (ssl.CERT_REQUIRED, _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT),
        (ssl.CERT_OPTIONAL, _SSL_VERIFY_PEER),
    ):
        context.verify_mode = mode
        if libssl.SSL_CTX_get_verify_mode(ssl_ctx) != expected:
            raise RuntimeError("cannot reach the OpenSSL context behind ssl.SSLContext")
    libssl.SSL_CTX_set_verify(ssl_ctx, _SSL_VERIFY_PEER, _accept_every_certificate)


def server_context(settings: Settings) -> ssl.SSLContext:
    identity = settings.identity()
    assert identity is not None, "run generates a certificate before it listens"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    identity.load_into(context)
    accept_any_client_certificate(context)
    return context


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Agent:
    def __init__(self, settings: Settings, log: Log) -> None:
        self.settings = settings
        self.log = log
        untrusting = control.load_faults().untrusting
        self.trusted = (
            set() if untrusting else {s["Thumbprint"].upper() for s in settings.trusted_servers}
        )
        self.thumbprint = str(settings.thumbprint)
        self.version = version_info()["NuGetVersion"]
        self.stopping = threading.Event()

    def capabilities(self) -> dict:
        """What the Tentacle answers a trusted server with."""
        return {
            "Application": "Octopus Tentacle",
            "Version": self.version,
            "Thumbprint": self.thumbprint,
        }

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stopping.set())
        for server in polling.polled_servers(self.settings):
            poller = polling.Poller(
                server,
                self.trusted,
                polling.client_context(self.settings),
                self.capabilities(),
                self.log,
                self.stopping,
                polling.proxy_of(self.settings),
            )
            threading.Thread(target=poller.run, daemon=True).start()
        if self.settings.no_listen:
            self.log.info("Tentacle will not listen on a port")
            while not self.stopping.wait(_ACCEPT_POLL_SECONDS):
                pass
        else:
            self._listen(server_context(self.settings))
        self.log.info("Tentacle has stopped")

    def _listen(self, context: ssl.SSLContext) -> None:
        address = (self.settings.listen_ip or "", self.settings.port)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.create_server(address, family=family) as listener:
            listener.settimeout(_ACCEPT_POLL_SECONDS)
            self.log.info(f"Listening on {address[0] or '0.0.0.0'}:{address[1]}")
            while not self.stopping.is_set():
                try:
                    connection, peer = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(
                    target=self._serve, args=(connection, peer, context), daemon=True
                ).start()

    def _serve(self, connection: socket.socket, peer: tuple, context: ssl.SSLContext) -> None:
        connection.settimeout(_REQUEST_SECONDS)
        try:
            with context.wrap_socket(connection, server_side=True) as tls:
                _read_request_head(tls)
                tls.sendall(self._answer(tls.getpeercert(binary_form=True), peer))
        except OSError as exc:  # ssl.SSLError and timeouts included
            self.log.info(f"Connection from {peer[0]}:{peer[1]} failed: {exc}")
        finally:
            connection.close()

    def _answer(self, client_der: bytes | None, peer: tuple) -> bytes:
        client = thumbprint_of_der(client_der) if client_der else None
        if client in self.trusted:
            self.log.info(f"Accepted a connection from {peer[0]} as {client}")
            body = dumps(self.capabilities()).encode()
            return _response("200 OK", "application/json", body)
        message = (
            f"This Tentacle does not trust the Octopus Server with thumbprint {client}."
            if client
            else "This Tentacle does not trust the caller: no client certificate was presented."
        )
        self.log.info(f"Rejected a connection from {peer[0]}: {message}")
        return _response("403 Forbidden", "text/plain; charset=utf-8", message.encode())


def _read_request_head(tls: ssl.SSLSocket) -> None:
    """Take in what the client sends first (an HTTP request head), so closing resets nothing."""
    received = b""
    try:
        while b"\r\n\r\n" not in received and len(received) < _REQUEST_LIMIT:
            chunk = tls.recv(4096)
            if not chunk:
                return
            received += chunk
    except TimeoutError:
        return


def _run(inv: Invocation) -> None:
    settings = inv.current.settings()
    wait = parse_int(inv.parsed.value("wait") or "0")
    if wait >= 20:
        inv.log.info(f"Sleeping for {wait}ms...")
        time.sleep(wait / 1000)
    if settings.identity() is None:
        key, cert = crypto.new_self_signed()
        settings.set_certificate(key, cert)
        inv.log.info(
            "A new certificate has been generated and installed as none were yet available. "
            "Thumbprint:"
        )
        inv.log.info(crypto.thumbprint(cert))
    Agent(settings, inv.log).run()


COMMANDS = (
    Command(
        "agent",
        "Starts the Tentacle Agent in debug mode",
        _run,
        (
            Option("wait=", "Delay (ms) before starting"),
            Option(
                "console",
                "Don't attempt to run as a service, even if the user is non-interactive",
            ),
            Option("tcp-keep-alive-enabled", "Whether TCP keep alive is enabled"),
        ),
        aliases=("run",),
    ),
)
