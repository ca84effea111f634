"""The stand-in's HTTP server and its life: `OctopusStandIn` mints the server certificate
on first use, opens the state, starts and stops the HTTP server and the polling endpoint,
and takes each request from the socket to its answer: injected faults (`faults.json`), the
API key, the rate limit (`ratelimit`), the route (`routes`), errors as Octopus's error body,
and one line per request in `requests.jsonl` (the API key redacted).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography import x509

from octoboot import certificates
from octoboot.errors import SandboxError
from octoboot.files import write_atomic
from octoboot.sandbox.octopus_api import polling
from octoboot.sandbox.octopus_api.call import ApiError, Call, error_body
from octoboot.sandbox.octopus_api.health import DEFAULT_CONNECT_TIMEOUT, HealthTasks
from octoboot.sandbox.octopus_api.polling import PollingListener
from octoboot.sandbox.octopus_api.ratelimit import RateLimited, RateLimiter
from octoboot.sandbox.octopus_api.records import (
    NotFoundError,
    ServerError,
    ValidationError,
    iso,
    now,
)
from octoboot.sandbox.octopus_api.routes import Routes
from octoboot.sandbox.octopus_api.state import POLLING_STYLE, OctopusState
from octoboot.sandbox.standin_settings import StandInSettings

log = logging.getLogger(__name__)

SERVER_COMMON_NAME = "Octopus Deploy"


def _redact(path: str) -> str:
    """The request path for the log, with any apikey query value replaced."""
    parts = urlsplit(path)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k.lower() == "apikey" for k, _ in query):
        return path
    safe = [(k, "REDACTED" if k.lower() == "apikey" else v) for k, v in query]
    return f"{parts.path}?{urlencode(safe)}"


def _ensure_server_certificate(state_dir: Path) -> tuple[Path, Path, str]:
    """(key file, cert file, thumbprint) of the server certificate, minted on first use."""
    key_path = state_dir / "server-key.pem"
    cert_path = state_dir / "server-cert.pem"
    if not (key_path.exists() and cert_path.exists()):
        key_pem, cert_pem = certificates.to_pem(*certificates.new_self_signed(SERVER_COMMON_NAME))
        write_atomic(key_path, key_pem)
        write_atomic(cert_path, cert_pem, mode=0o644)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return key_path, cert_path, certificates.thumbprint(cert)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], standin: OctopusStandIn) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup we neither need nor want to wait for.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = str(host)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive connections, so a stopped stand-in answers nobody."""
        with self._connections_lock:
            open_now = list(self._connections)
        for conn in open_now:
            with contextlib.suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up are no news
            super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each answer waits for a delayed ACK.
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections
    server: _Server

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        headers: dict[str, str] = {}
        if length < 0:
            status, payload = 400, error_body("The Content-Length header is not valid.")
        else:
            body = self.rfile.read(length) if length else b""
            status, payload, headers = self.server.standin.respond(
                self.command, self.path, self.headers, body
            )
        # Logged before answering, so a client that got its answer finds the call counted.
        self.server.standin.log_request(self.command, self.path, status)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: requests.jsonl is the log."""


class OctopusStandIn:
    """The stand-in server; state and server certificate live in state_dir."""

    def __init__(
        self,
        state_dir: Path,
        api_key: str,
        environments: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        settings: StandInSettings = StandInSettings(),  # noqa: B008 (frozen)
        worker_pools: Sequence[tuple[str, str]] = (),
        polling_port: int = 0,
        polling_queue_timeout: float = polling.DEFAULT_QUEUE_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        """worker_pools: (name, StaticWorkerPool or DynamicWorkerPool) to create if missing.
        polling_port: where polling Tentacles connect (0: a free one). polling_queue_timeout:
        how long a request waits for a polling Tentacle to collect it (Halibut's
        PollingRequestQueueTimeout). connect_timeout: how long a health check waits for a
        listening Tentacle to answer (Halibut's TcpClientConnectTimeout)."""
        if not api_key:
            raise SandboxError("the Octopus stand-in needs an API key")
        state_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self._api_key = api_key.encode()
        self._rate_limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self._address = (host, port)
        key_path, cert_path, self._thumbprint = _ensure_server_certificate(state_dir)
        self._state = OctopusState(state_dir / "octopus.json", environments, worker_pools)
        self._polling = PollingListener(
            host, polling_port, cert_path, key_path, self._polls_as_known
        )
        self._tasks = HealthTasks(
            self._state,
            settings,
            self._polling,
            cert_path,
            key_path,
            polling_queue_timeout=polling_queue_timeout,
            connect_timeout=connect_timeout,
        )
        self._routes = Routes(self._state, self._thumbprint, self._tasks)
        self._requests_log = state_dir / "requests.jsonl"
        self._faults_path = state_dir / "faults.json"
        self._log_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise SandboxError("the Octopus stand-in is not running")
        host, port = self._server.server_address[:2]
        address = str(host)  # an IP address: the server is AF_INET or AF_INET6
        return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"

    @property
    def server_thumbprint(self) -> str:
        return self._thumbprint

    @property
    def polling_port(self) -> int:
        return self._polling.port

    def _polls_as_known(self, thumbprint: str) -> bool:
        """Whether a polling record (target or worker) has this certificate: the only
        clients the polling endpoint lets in."""
        return any(
            m["Endpoint"].get("CommunicationStyle") == POLLING_STYLE
            and str(m["Endpoint"].get("Thumbprint", "")).upper() == thumbprint
            for m in self._state.machines() + self._state.workers()
        )

    def start(self) -> None:
        if self._server is not None:
            raise SandboxError("the Octopus stand-in was already started")
        try:
            self._server = _Server(self._address, self)
        except OSError as exc:
            raise SandboxError(
                f"the Octopus stand-in cannot listen on {self._address[0]}:{self._address[1]}: "
                f"{exc.strerror or exc}"
            ) from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(0.1,),  # shutdown() waits up to one poll interval
            name="octopus-standin",
            daemon=True,
        )
        self._thread.start()
        try:
            self._polling.start()
        except OSError as exc:
            self.stop()
            raise SandboxError(
                f"the polling endpoint cannot listen: {exc.strerror or exc}"
            ) from exc

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._tasks.stop()
        self._polling.stop()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join()
        self._state.close()
        self._thread = None

    def __enter__(self) -> OctopusStandIn:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- request handling --

    def respond(
        self, method: str, raw_path: str, headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON payload, extra headers) for one request."""
        parts = urlsplit(raw_path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        injected, delay = self._injected_fault(method, parts.path)
        if injected:
            return injected, error_body(f"Injected fault: the server answered {injected}."), {}
        time.sleep(delay)  # a slow Octopus: it still does the work, after the client gave up
        advice: dict[str, str] = {}
        try:
            key = self._authenticate(headers, query)
            advice = self._rate_limiter.take(key)
            call = Call(
                method=method,
                path=parts.path.rstrip("/") or "/",
                query=[(k, v) for k, v in query if k.lower() != "apikey"],
                body=body,
            )
            status, payload = self._routes.route(call)
            return status, payload, advice
        except RateLimited as exc:
            return 429, error_body(str(exc)), exc.headers
        except ApiError as exc:
            return exc.status, error_body(str(exc), exc.errors), advice
        except ValidationError as exc:
            return 400, error_body(str(exc), exc.errors), advice
        except NotFoundError as exc:
            return 404, error_body(str(exc)), advice
        except ServerError as exc:
            return 500, error_body(str(exc)), advice
        except Exception as exc:
            log.exception("the Octopus stand-in failed on %s %s", method, parts.path)
            full = traceback.format_exc()
            return 500, error_body(f"{type(exc).__name__}: {exc}", full=full), advice

    def _injected_fault(self, method: str, path: str) -> tuple[int | None, float]:
        """The sandbox's way to make Octopus fail: faults.json in the state dir holds
        {"status": 503, "times": N, "match": "/machines", "methods": ["POST"], "delay": S}
        (all but times optional); each of the next N matching requests gets that status,
        or, without a status, is held S seconds and then handled: (status, delay)."""
        with self._log_lock:
            if not self._faults_path.exists():
                return None, 0.0
            fault = json.loads(self._faults_path.read_text() or "{}")
            if fault.get("times", 0) <= 0 or fault.get("match", "") not in path:
                return None, 0.0
            if method not in fault.get("methods", [method]):
                return None, 0.0
            fault["times"] -= 1
            self._faults_path.write_text(json.dumps(fault))
            status = fault.get("status")
            return (int(status) if status else None), float(fault.get("delay", 0))

    def log_request(self, method: str, raw_path: str, status: int) -> None:
        line = json.dumps(
            {"time": iso(now()), "method": method, "path": _redact(raw_path), "status": status}
        )
        with self._log_lock, self._requests_log.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    def _authenticate(self, headers: Any, query: list[tuple[str, str]]) -> bytes:
        """The API key of a request, if it is the right one; else 401."""
        given = headers.get("X-Octopus-ApiKey") or next(
            (v for k, v in query if k.lower() == "apikey"), ""
        )
        if not given:
            raise ApiError(
                401,
                "You must be logged in to perform this action. Please provide an API key in the "
                "X-Octopus-ApiKey header or the apikey query parameter.",
            )
        if not hmac.compare_digest(given.encode(), self._api_key):
            raise ApiError(
                401,
                "The API key you provided was not valid. Please double-check your API key and "
                "try again.",
            )
        return self._api_key
