"""A local stand-in for the Octopus Deploy REST API (octopus-facts §3), over plain HTTP.

It serves the routes octoboot and the Tentacle CLI use (root, spaces, current user, server
certificate, environments, machines, workers and worker pools, health tasks and their logs)
with Octopus's JSON shapes, paging and error bodies. A health task really connects to each
listening Tentacle over mutual TLS, presenting the server certificate, and checks the
thumbprint it presents; a polling Tentacle must instead be connected to the polling endpoint
(`octopus_polling.py`, its own port) with the record's thumbprint and subscription.

It keeps the real server's limits (StandInSettings): at most `task_cap` tasks run at once and
the rest wait `Queued`; a Health task takes `health_seconds` (and a little more per machine);
each API key gets a token bucket of `rate_burst` requests refilled at `rate_limit` per minute,
and a request finding it empty gets 429 with `Retry-After` (seconds), unprocessed.

    python -m octoboot.sandbox.octopus_api --state DIR --listen HOST:PORT [--environment NAME ...]
        [--task-cap N] [--health-seconds S] [--health-seconds-per-machine S]
        [--rate-limit PER_MINUTE] [--rate-burst N]
        [--polling-port PORT] [--worker-pool NAME ...] [--dynamic-worker-pool NAME ...]

The API key comes from OCTOPUS_STANDIN_API_KEY or --api-key-file, never from the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import http.client
import json
import logging
import math
import os
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography import x509

from octoboot import certificates
from octoboot.errors import SandboxError
from octoboot.files import write_atomic
from octoboot.sandbox import octopus_catalog, octopus_polling
from octoboot.sandbox.octopus_polling import PollingListener
from octoboot.sandbox.octopus_state import (
    DEFAULT_MACHINE_TIMEOUT,
    DEFAULT_TASK_TIMEOUT,
    DYNAMIC_POOL,
    POLLING_STYLE,
    SPACE_ID,
    STATIC_POOL,
    NotFoundError,
    OctopusState,
    Resource,
    ServerError,
    ValidationError,
    human_time,
    iso,
    now,
    parse_timespan,
    same_name,
)
from octoboot.sandbox.octopus_workers import TEMPLATES as WORKER_TEMPLATES
from octoboot.sandbox.octopus_workers import WorkerRoutes
from octoboot.sandbox.standin_settings import StandInSettings

log = logging.getLogger(__name__)

VERSION = "2025.4.1234"
API_VERSION = "3.0.0"
SERVER_COMMON_NAME = "Octopus Deploy"
API_KEY_ENV = "OCTOPUS_STANDIN_API_KEY"
DEFAULT_TAKE = 30
TAKE_ALL = 2147483647
TENTACLE_DEFAULT_PORT = 10933
DEFAULT_CONNECT_TIMEOUT = 60.0  # Halibut's ServiceEndPoint.TcpClientConnectTimeout
USER_ID = "Users-1"

_S = f"/api/{SPACE_ID}"
_TEMPLATES = {
    "Environment": f"{_S}/environments{{/id}}{{?name,skip,ids,take,partialName}}",
    "DeploymentTarget": (
        f"{_S}/machines{{/id}}{{?skip,take,name,ids,partialName,roles,isDisabled,healthStatuses,"
        "commStyles,tenantIds,tenantTags,environmentIds,thumbprint,deploymentId}"
    ),
    **{
        kind.item_type: f"{_S}/{kind.route}{{/id}}{kind.template}"
        for kind in octopus_catalog.KINDS.values()
    },
    "Space": "/api/spaces{/id}{?name,skip,ids,take,partialName}",
    "Task": "/api/tasks{/id}{?skip,take,ids,name,states,spaces}",
    **WORKER_TEMPLATES,
}
# A task's State as the Status of its activity (ActivityStatus in Octopus.Client).
_ACTIVITY_STATUS = {
    "Queued": "Pending", "Executing": "Running", "Cancelling": "Running", "Success": "Success",
    "Canceled": "Canceled",
}  # fmt: skip
_ENV_MACHINES_TEMPLATE = (
    "{?skip,take,partialName,roles,isDisabled,healthStatuses,commStyles,tenantIds,tenantTags}"
)


class ApiError(Exception):
    """An HTTP error answered with Octopus's error body."""

    def __init__(self, status: int, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.errors = list(errors)


def error_body(message: str, errors: Sequence[str] = (), full: str | None = None) -> Resource:
    return {
        "ErrorMessage": message,
        "Errors": list(errors),
        "FullException": full,
        "HelpText": None,
        "HelpLink": None,
        "Details": None,
        "ParsedHelpLinks": [],
    }


@dataclass
class _Call:
    """One request as the route handlers see it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> str | None:
        """The last non-blank value of a query parameter (names are case-insensitive)."""
        values = [v.strip() for k, v in self.query if k.lower() == name.lower() and v.strip()]
        return values[-1] if values else None

    def values(self, name: str) -> set[str]:
        """A list parameter, given as a comma list and/or repeated, case-folded."""
        return {
            item.strip().casefold()
            for k, v in self.query
            if k.lower() == name.lower()
            for item in v.split(",")
            if item.strip()
        }

    def integer(self, name: str, default: int) -> int:
        text = self.value(name)
        if text is None:
            return default
        if not text.isdigit():
            raise ApiError(400, f"The query parameter '{name}' must be a whole number.")
        return int(text)

    def json(self) -> Resource:
        try:
            parsed = json.loads(self.body)
        except ValueError as exc:
            raise ApiError(400, f"The request body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return parsed


Handler = Callable[[_Call], tuple[int, Any]]


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


def probe_tentacle(
    uri: str,
    expected_thumbprint: str,
    context: ssl.SSLContext,
    timeout: float,
    proxy: tuple[str, int] | None = None,
) -> tuple[bool, str]:
    """(healthy, StatusSummary) for one listening Tentacle, as Octopus's health check sees it;
    proxy: (host, port) of the HTTP proxy the endpoint's ProxyId names, tunnelled through
    with CONNECT (its credentials are not modelled)."""
    parts = urlsplit(uri)
    try:
        port = parts.port or TENTACLE_DEFAULT_PORT
    except ValueError:
        port = 0
    if parts.scheme.lower() != "https" or not parts.hostname or not port:
        return False, f"'{uri}' is not the address of a listening Tentacle (https://host:port/)."
    if proxy is None:
        conn = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPSConnection(*proxy, timeout=timeout, context=context)
        conn.set_tunnel(parts.hostname, port)
    try:
        conn.connect()
        assert conn.sock is not None  # connect() set it
        presented = certificates.thumbprint_of_der(conn.sock.getpeercert(binary_form=True) or b"")
        if presented != expected_thumbprint.strip().upper():
            return False, (
                f"The remote host presented a certificate with thumbprint {presented}, "
                f"but {expected_thumbprint} was expected."
            )
        conn.putrequest("GET", "/", skip_accept_encoding=True)
        conn.putheader("Connection", "close")
        conn.endheaders()
        response = conn.getresponse()
        body = response.read(64 * 1024).decode("utf-8", "replace").strip()
    except TimeoutError:
        return False, f"Could not connect to {uri}: Timed out"
    except ssl.SSLError as exc:
        return False, f"The TLS handshake with {uri} failed: {exc.reason or exc}"
    except http.client.HTTPException as exc:
        return False, f"The Tentacle at {uri} did not answer with HTTP: {exc!r}"
    except OSError as exc:
        return False, f"Could not connect to {uri}: {exc.strerror or exc}"
    finally:
        conn.close()
    first_line = body.splitlines()[0] if body else ""
    if response.status == 200:
        return True, _healthy_summary()
    if response.status == 403:
        return False, f"The Tentacle rejected the connection: {first_line}"
    return False, f"The Tentacle answered {response.status} {response.reason}: {first_line}"


def _healthy_summary() -> str:
    return (
        "Octopus was able to successfully establish a connection with this machine on "
        f"{human_time(now())}"
    )


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


class OctopusStandIn(WorkerRoutes):
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
        polling_queue_timeout: float = octopus_polling.DEFAULT_QUEUE_TIMEOUT,
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
        self._buckets: dict[bytes, _TokenBucket] = {}
        # Tasks waiting for a free slot under the task cap, oldest first.
        self._queue: deque[tuple[Resource, list[Resource]]] = deque()
        self._running_tasks = 0
        self._stopping = False
        self._tasks_lock = threading.Lock()
        self._address = (host, port)
        self._key_path, self._cert_path, self._thumbprint = _ensure_server_certificate(state_dir)
        self._state = OctopusState(state_dir / "octopus.json", environments, worker_pools)
        self._polling_queue_timeout = polling_queue_timeout
        self._connect_timeout = connect_timeout
        self._polling = PollingListener(
            host, polling_port, self._cert_path, self._key_path, self._polls_as_known
        )
        self._requests_log = state_dir / "requests.jsonl"
        self._faults_path = state_dir / "faults.json"
        self._log_lock = threading.Lock()
        self._client_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._client_tls.check_hostname = False
        self._client_tls.verify_mode = ssl.CERT_NONE  # trust is the thumbprint, not a CA
        self._client_tls.load_cert_chain(self._cert_path, self._key_path)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes = self._route_table()

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
        with self._tasks_lock:
            self._stopping = True  # queued tasks never start; a restart fails them
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
            advice = self._rate_limit(key)
            call = _Call(
                method=method,
                path=parts.path.rstrip("/") or "/",
                query=[(k, v) for k, v in query if k.lower() != "apikey"],
                body=body,
            )
            status, payload = self._route(call)
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

    def _rate_limit(self, key: bytes) -> dict[str, str]:
        """Take a token from the key's bucket: the advisory headers, or RateLimited."""
        rate, burst = self.settings.rate_limit, self.settings.rate_burst
        if not rate:
            return {}
        with self._log_lock:
            bucket = self._buckets.setdefault(key, _TokenBucket(rate, burst))
            allowed, remaining, full_in, retry_in = bucket.take(time.monotonic())
        headers = {
            "Octopus-RateLimit-Policy": f"l={burst};rpm={rate}",
            "Octopus-RateLimit": f"r={remaining};t={math.ceil(full_in)}",
        }
        if allowed:
            return headers
        raise RateLimited(
            "Rate limit policy Authenticated requests exceeded: too many requests; "
            f"retry after {math.ceil(retry_in)} seconds.",
            {**headers, "Retry-After": str(max(1, math.ceil(retry_in)))},
        )

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

    def _route(self, call: _Call) -> tuple[int, Any]:
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(call.path)
            if match is None:
                continue
            if method != call.method:
                allowed.append(method)
                continue
            call.params = {k: v for k, v in match.groupdict().items() if v is not None}
            space = call.params.get("space")
            if space is not None and space.casefold() != SPACE_ID.casefold():
                raise ApiError(404, f"The space '{space}' was not found.")
            return handler(call)
        if allowed:
            raise ApiError(405, f"The method {call.method} is not allowed on {call.path}.")
        raise ApiError(404, f"The resource '{call.path}' was not found.")

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        space = r"(?:/(?P<space>spaces-\d+))?"
        item = r"/(?P<id>[^/]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", r"/api", self._root),
            ("GET", r"/api/spaces", self._spaces_page),
            ("GET", r"/api/spaces/all", self._spaces_all),
            ("GET", rf"/api/spaces{item}", self._space),
            ("GET", r"/api/(?P<space>spaces-\d+)", self._space_home),
            ("GET", r"/api/users/me", self._current_user),
            ("GET", rf"/api/users{item}", self._user),
            ("GET", rf"/api/users{item}/spaces", self._user_spaces),
            ("GET", r"/api/(?:configuration/)?certificates/certificate-global", self._server_cert),
            ("GET", rf"/api{space}/environments", self._environments_page),
            ("POST", rf"/api{space}/environments", self._environment_create),
            ("GET", rf"/api{space}/environments/all", self._environments_all),
            ("GET", rf"/api{space}/environments{item}", self._environment),
            ("GET", rf"/api{space}/environments{item}/machines", self._environment_machines),
            ("GET", rf"/api{space}/machines", self._machines_page),
            ("POST", rf"/api{space}/machines", self._machine_create),
            ("GET", rf"/api{space}/machines/all", self._machines_all),
            ("GET", rf"/api{space}/machines{item}", self._machine),
            ("PUT", rf"/api{space}/machines{item}", self._machine_update),
            ("DELETE", rf"/api{space}/machines{item}", self._machine_delete),
            ("GET", rf"/api{space}/tasks", self._tasks_page),
            ("POST", rf"/api{space}/tasks", self._task_create),
            ("GET", rf"/api{space}/tasks{item}", self._task),
            ("GET", rf"/api{space}/tasks{item}/details", self._task_details),
            *self.worker_routes(space, item),
        ]
        for kind in octopus_catalog.KINDS.values():
            table += [
                ("GET", rf"/api{space}/{kind.route}", partial(self._catalog_page, kind)),
                ("POST", rf"/api{space}/{kind.route}", partial(self._catalog_create, kind)),
                ("GET", rf"/api{space}/{kind.route}/all", partial(self._catalog_all, kind)),
                ("GET", rf"/api{space}/{kind.route}{item}", partial(self._catalog_item, kind)),
            ]
        return [(m, re.compile(p, re.IGNORECASE), h) for m, p, h in table]

    # -- paging --

    def _page(
        self,
        call: _Call,
        item_type: str,
        items: list[Resource],
        render: Callable[[Resource], Resource],
    ) -> Resource:
        skip = call.integer("skip", 0)
        take = call.integer("take", DEFAULT_TAKE)
        total = len(items)
        pages = max(1, math.ceil(total / take)) if take else 1
        filters = [(k, v) for k, v in call.query if k.lower() not in ("skip", "take")]

        def page_link(page_skip: int, page_take: int) -> str:
            return f"{call.path}?{urlencode([('skip', page_skip), ('take', page_take), *filters])}"

        links = {
            "Self": f"{call.path}?{urlencode(call.query)}" if call.query else call.path,
            "Template": _TEMPLATES[item_type],
            "Page.All": page_link(0, TAKE_ALL),
            "Page.Current": page_link(skip, take),
        }
        if take and skip + take < total:
            links["Page.Next"] = page_link(skip + take, take)
        links["Page.Last"] = page_link((pages - 1) * take, take)
        links.update({f"Page.{n}": page_link(n * take, take) for n in range(pages)})
        return {
            "ItemType": item_type,
            "IsStale": False,
            "TotalResults": total,
            "ItemsPerPage": take,
            "NumberOfPages": pages,
            "LastPageNumber": pages - 1,
            "Items": [render(item) for item in items[skip : skip + take]],
            "Links": links,
        }

    # -- root, spaces, users, server certificate --

    def _root(self, call: _Call) -> tuple[int, Any]:
        return 200, {
            "Application": "Octopus Deploy",
            "Version": VERSION,
            "ApiVersion": API_VERSION,
            "InstallationId": self._state.installation_id,
            "Links": {
                "Self": "/api",
                "Spaces": _TEMPLATES["Space"],
                "SpaceHome": "/api/{spaceId}",
                "CurrentUser": "/api/users/me",
                "Users": "/api/users{/id}",
                "CertificateConfiguration": (
                    "/api/configuration/certificates{/id}{?skip,take,ids,partialName}"
                ),
                "Certificates": "/api/certificates{/id}{?skip,take,ids,partialName}",
                **self._space_links(),
            },
        }

    @staticmethod
    def _space_links() -> dict[str, str]:
        return {
            "Environments": _TEMPLATES["Environment"],
            "Machines": _TEMPLATES["DeploymentTarget"],
            "MachinePolicies": _TEMPLATES["MachinePolicy"],
            "Workers": _TEMPLATES["Worker"],
            "WorkerPools": _TEMPLATES["WorkerPool"],
            "Tasks": _TEMPLATES["Task"],
            **{kind.prefix: _TEMPLATES[kind.item_type] for kind in octopus_catalog.KINDS.values()},
        }

    @staticmethod
    def _space_out(space: Resource) -> Resource:
        links = {"Self": f"/api/spaces/{space['Id']}", "SpaceHome": f"/api/{space['Id']}"}
        return {**space, "Links": links}

    def _spaces_page(self, call: _Call) -> tuple[int, Any]:
        spaces = _filter_named(self._state.spaces(), call)
        return 200, self._page(call, "Space", spaces, self._space_out)

    def _spaces_all(self, call: _Call) -> tuple[int, Any]:
        return 200, [self._space_out(s) for s in _filter_named(self._state.spaces(), call)]

    def _space(self, call: _Call) -> tuple[int, Any]:
        for space in self._state.spaces():
            if space["Id"].casefold() == call.params["id"].casefold():
                return 200, self._space_out(space)
        raise ApiError(404, f"The space '{call.params['id']}' was not found.")

    def _space_home(self, call: _Call) -> tuple[int, Any]:
        return 200, {"Links": {"Self": _S, **self._space_links()}}

    def _current_user(self, call: _Call) -> tuple[int, Any]:
        return 200, self._user_out()

    def _user(self, call: _Call) -> tuple[int, Any]:
        _check_user(call.params["id"])
        return 200, self._user_out()

    def _user_spaces(self, call: _Call) -> tuple[int, Any]:
        _check_user(call.params["id"])
        return 200, [self._space_out(space) for space in self._state.spaces()]

    @staticmethod
    def _user_out() -> Resource:
        return {
            "Id": USER_ID,
            "Username": "admin",
            "DisplayName": "Administrator",
            "IsActive": True,
            "IsService": False,
            "EmailAddress": None,
            "CanPasswordBeEdited": True,
            "IsRequestor": False,
            "Identities": [],
            "Links": {"Self": f"/api/users/{USER_ID}", "Spaces": f"/api/users/{USER_ID}/spaces"},
        }

    def _server_cert(self, call: _Call) -> tuple[int, Any]:
        return 200, {
            "Id": "certificate-global",
            "Name": "Octopus Portal",
            "Thumbprint": self._thumbprint,
            "SignatureAlgorithm": "sha256RSA",
            "Links": {"Self": "/api/configuration/certificates/certificate-global"},
        }

    # -- environments --

    @staticmethod
    def _environment_out(env: Resource) -> Resource:
        self_link = f"{_S}/environments/{env['Id']}"
        links = {"Self": self_link, "Machines": f"{self_link}/machines{_ENV_MACHINES_TEMPLATE}"}
        return {**env, "Links": links}

    def _environments_page(self, call: _Call) -> tuple[int, Any]:
        envs = _filter_named(self._state.environments(), call)
        return 200, self._page(call, "Environment", envs, self._environment_out)

    def _environments_all(self, call: _Call) -> tuple[int, Any]:
        envs = _filter_named(self._state.environments(), call)
        return 200, [self._environment_out(env) for env in envs]

    def _environment(self, call: _Call) -> tuple[int, Any]:
        return 200, self._environment_out(self._state.environment(call.params["id"]))

    def _environment_create(self, call: _Call) -> tuple[int, Any]:
        return 201, self._environment_out(self._state.add_environment(call.json()))

    def _environment_machines(self, call: _Call) -> tuple[int, Any]:
        env_id = self._state.environment(call.params["id"])["Id"]
        machines = [
            m
            for m in _filter_machines(self._state.machines(), call)
            if env_id in m["EnvironmentIds"]
        ]
        return 200, self._page(call, "DeploymentTarget", machines, self._machine_out)

    # -- the catalog: machine policies, tenants, tag sets, proxies (octopus_catalog) --

    def _catalog_out(self, kind: octopus_catalog.Kind) -> Callable[[Resource], Resource]:
        return lambda item: octopus_catalog.rendered(kind, item, _S)

    def _catalog_page(self, kind: octopus_catalog.Kind, call: _Call) -> tuple[int, Any]:
        items = _filter_named(self._state.catalog(kind.route), call)
        return 200, self._page(call, kind.item_type, items, self._catalog_out(kind))

    def _catalog_all(self, kind: octopus_catalog.Kind, call: _Call) -> tuple[int, Any]:
        items = _filter_named(self._state.catalog(kind.route), call)
        return 200, [octopus_catalog.rendered(kind, item, _S) for item in items]

    def _catalog_item(self, kind: octopus_catalog.Kind, call: _Call) -> tuple[int, Any]:
        item = self._state.catalog_item(kind.route, call.params["id"])
        return 200, octopus_catalog.rendered(kind, item, _S)

    def _catalog_create(self, kind: octopus_catalog.Kind, call: _Call) -> tuple[int, Any]:
        item = self._state.add_catalog_item(kind.route, kind.prefix, call.json(), kind.build)
        return 201, octopus_catalog.rendered(kind, item, _S)

    # -- machines --

    @staticmethod
    def _machine_out(machine: Resource) -> Resource:
        self_link = f"{_S}/machines/{machine['Id']}"
        links = {
            "Self": self_link,
            "Connection": f"{self_link}/connection",
            "TasksTemplate": f"{self_link}/tasks{{?skip,take,type}}",
        }
        return {**machine, "Links": links}

    def _machines_page(self, call: _Call) -> tuple[int, Any]:
        machines = _filter_machines(self._state.machines(), call)
        return 200, self._page(call, "DeploymentTarget", machines, self._machine_out)

    def _machines_all(self, call: _Call) -> tuple[int, Any]:
        return 200, [self._machine_out(m) for m in _filter_machines(self._state.machines(), call)]

    def _machine(self, call: _Call) -> tuple[int, Any]:
        return 200, self._machine_out(self._state.machine(call.params["id"]))

    def _machine_create(self, call: _Call) -> tuple[int, Any]:
        return 201, self._machine_out(self._state.add_machine(call.json()))

    def _machine_update(self, call: _Call) -> tuple[int, Any]:
        body = call.json()
        return 200, self._machine_out(self._state.update_machine(call.params["id"], body))

    def _machine_delete(self, call: _Call) -> tuple[int, Any]:
        return 200, self._machine_out(self._state.delete_machine(call.params["id"]))

    # -- health tasks --

    @staticmethod
    def _task_out(task: Resource) -> Resource:
        self_link = f"/api/tasks/{task['Id']}"
        links = {
            "Self": self_link,
            "Web": f"/app#/{task['SpaceId']}/tasks/{task['Id']}",
            "Raw": f"{self_link}/raw",
            "Details": f"{self_link}/details{{?verbose,tail}}",
            "Cancel": f"{self_link}/cancel",
        }
        return {**task, "Links": links}

    def _tasks_page(self, call: _Call) -> tuple[int, Any]:
        ids, states, name = call.values("ids"), call.values("states"), call.value("name")
        tasks = [
            t
            for t in self._state.tasks()
            if (not ids or t["Id"].casefold() in ids)
            and (not states or t["State"].casefold() in states)
            and (name is None or same_name(t["Name"], name))
        ]
        return 200, self._page(call, "Task", tasks, self._task_out)

    def _task(self, call: _Call) -> tuple[int, Any]:
        return 200, self._task_out(self._state.task(call.params["id"]))

    def _task_details(self, call: _Call) -> tuple[int, Any]:
        """The task and its activity log (TaskDetailsResource): under the task, one element
        per machine it checks, named after the machine, with its outcome and messages."""
        task = self._task_out(self._state.task(call.params["id"]))
        children = [
            {
                "Id": f"{task['Id']}_{n}",
                "ShowAtSummaryLevel": True,
                "Children": [],
                "ProgressPercentage": 0 if entry["Ended"] is None else 100,
                "ProgressMessage": "",
                **entry,
            }
            for n, entry in enumerate(self._state.task_log(task["Id"]), 1)
        ]
        done = sum(1 for child in children if child["Ended"] is not None)
        percent = 100 * done // len(children) if children else 0
        root = {
            "Id": task["Id"],
            "Name": task["Description"],
            "Started": task["StartTime"],
            "Ended": task["CompletedTime"],
            "Status": _ACTIVITY_STATUS.get(task["State"], "Failed"),
            "ShowAtSummaryLevel": True,
            "LogElements": [],
            "ProgressPercentage": percent,
            "ProgressMessage": "",
            "Children": children,
        }
        progress = {"ProgressPercentage": percent, "EstimatedTimeRemaining": ""}
        return 200, {"Task": task, "ActivityLogs": [root], "Progress": progress}

    def _task_create(self, call: _Call) -> tuple[int, Any]:
        task, machines = self._state.add_health_task(call.json())
        with self._tasks_lock:
            self._queue.append((task, machines))
            self._start_queued_tasks()
        return 201, self._task_out(task)

    def _start_queued_tasks(self) -> None:
        """Start the oldest queued tasks while fewer than the task cap run (lock held)."""
        while self._queue and self._running_tasks < self.settings.task_cap and not self._stopping:
            task, machines = self._queue.popleft()
            self._running_tasks += 1
            threading.Thread(
                target=self._run_task,
                args=(task, machines),
                name=f"health-{task['Id']}",
                daemon=True,
            ).start()

    def _run_task(self, task: Resource, machines: list[Resource]) -> None:
        try:
            self._run_health_task(task, machines)
        finally:
            with self._tasks_lock:
                self._running_tasks -= 1
                self._start_queued_tasks()

    def _run_health_task(self, task: Resource, machines: list[Resource]) -> None:
        task_id = task["Id"]
        try:
            args = task["Arguments"]
            timeout = parse_timespan(args.get("Timeout"), DEFAULT_TASK_TIMEOUT)
            machine_timeout = parse_timespan(args.get("MachineTimeout"), DEFAULT_MACHINE_TIMEOUT)
            self._state.start_task(task_id, [m["Name"] for m in machines])
            # A real check runs a script through the Tentacle: it takes seconds, not the
            # milliseconds of a TLS handshake, and a little longer the more machines it covers.
            done_at = time.monotonic() + self.settings.health_task_seconds(len(machines))
            outcomes: dict[str, tuple[bool, str]] = {}
            # One thread per machine: a task may cover a whole environment, and a dead host
            # costs a full MachineTimeout; daemon threads never hold up the process exit.
            checks = [
                threading.Thread(
                    target=self._check_machine,
                    args=(task_id, machine, machine_timeout, done_at, outcomes),
                    daemon=True,
                )
                for machine in machines
            ]
            for check in checks:
                check.start()
            deadline = time.monotonic() + timeout
            for check in checks:
                check.join(max(0.0, deadline - time.monotonic()))
            time.sleep(max(0.0, min(done_at, deadline) - time.monotonic()))  # no machines
            if any(check.is_alive() for check in checks):
                self._state.finish_task(
                    task_id, "TimedOut", f"The health check did not finish within {timeout:g}s."
                )
                return
            failed = [
                f"{m['Name']}: {outcomes[m['Id']][1]}" for m in machines if not outcomes[m["Id"]][0]
            ]
            if failed:
                self._state.finish_task(
                    task_id,
                    "Failed",
                    f"{len(failed)} of {len(machines)} machines were unavailable: "
                    + "; ".join(failed),
                )
            else:
                self._state.finish_task(task_id, "Success")
        except Exception as exc:
            log.exception("health task %s failed", task_id)
            self._state.finish_task(task_id, "Failed", f"{type(exc).__name__}: {exc}")

    def _proxy(self, proxy_id: str | None) -> tuple[str, int] | None:
        """Where the Octopus-side proxy a listening endpoint names is: the server connects to
        the Tentacle through it (octopus-facts §6.3)."""
        if not proxy_id:
            return None
        proxy = self._state.catalog_item("proxies", proxy_id)
        return proxy["Host"], proxy["Port"]

    def _check_machine(
        self,
        task_id: str,
        machine: Resource,
        timeout: float,
        done_at: float,
        outcomes: dict[str, tuple[bool, str]],
    ) -> None:
        endpoint = machine["Endpoint"]
        if endpoint.get("CommunicationStyle") == POLLING_STYLE:
            outcome = self._polling.call(
                str(endpoint.get("Uri")),
                str(endpoint.get("Thumbprint")),
                min(timeout, self._polling_queue_timeout),
            )
            if outcome[0]:
                outcome = (True, _healthy_summary())
        elif endpoint.get("CommunicationStyle") != "TentaclePassive":
            outcome = (
                False,
                "Only Tentacles (TentaclePassive, TentacleActive) can be checked here.",
            )
        else:
            try:
                outcome = probe_tentacle(
                    str(endpoint.get("Uri")),
                    endpoint["Thumbprint"],
                    self._client_tls,
                    min(timeout, self._connect_timeout),
                    proxy=self._proxy(endpoint.get("ProxyId")),
                )
            except Exception as exc:  # e.g. a host name the resolver cannot even encode
                log.exception("health check of %s failed", machine["Id"])
                outcome = (False, f"The health check failed: {type(exc).__name__}: {exc}")
        time.sleep(max(0.0, done_at - time.monotonic()))
        healthy, summary = outcome
        # Recorded as each machine's check ends, not at the end of the task (Issues#3382).
        self._state.record_health(
            machine["Id"],
            "Healthy" if healthy else "Unavailable",
            "Online" if healthy else "Offline",
            summary,
            task_id=task_id,
        )
        outcomes[machine["Id"]] = outcome


class RateLimited(Exception):
    """429: the API key's bucket is empty; headers say when to come back."""

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers


class _TokenBucket:
    """Octopus' rate limiter (a token bucket): `burst` tokens to start with and at most,
    refilled continuously at `per_minute`; every request takes one."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._per_second = per_minute / 60
        self._burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self, now: float) -> tuple[bool, int, float, float]:
        """(allowed, tokens left, seconds until full, seconds until the next token)."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        full_in = (self._burst - self._tokens) / self._per_second
        next_in = max(0.0, 1 - self._tokens) / self._per_second
        return allowed, int(self._tokens), full_in, next_in


def _check_user(user_id: str) -> None:
    if user_id.casefold() != USER_ID.casefold():
        raise ApiError(404, f"The user '{user_id}' was not found.")


def _filter_named(resources: list[Resource], call: _Call) -> list[Resource]:
    """The name / partialName / ids filters shared by spaces, environments and policies."""
    name, partial, ids = call.value("name"), call.value("partialName"), call.values("ids")
    return [
        r
        for r in resources
        if (name is None or same_name(r["Name"], name))
        and (partial is None or partial.casefold() in r["Name"].casefold())
        and (not ids or r["Id"].casefold() in ids)
    ]


def _filter_machines(machines: list[Resource], call: _Call) -> list[Resource]:
    thumb = call.value("thumbprint")
    envs, roles = call.values("environmentIds"), call.values("roles")
    health, styles = call.values("healthStatuses"), call.values("commStyles")
    disabled = call.value("isDisabled")

    def matches(m: Resource) -> bool:
        return (
            (
                thumb is None
                or str(m["Endpoint"].get("Thumbprint", "")).casefold() == thumb.casefold()
            )
            and (not envs or any(e.casefold() in envs for e in m["EnvironmentIds"]))
            and (not roles or any(r.casefold() in roles for r in m["Roles"]))
            and (not health or m["HealthStatus"].casefold() in health)
            and (not styles or str(m["Endpoint"].get("CommunicationStyle")).casefold() in styles)
            and (disabled is None or str(m["IsDisabled"]).casefold() == disabled.casefold())
        )

    return [m for m in _filter_named(machines, call) if matches(m)]


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SandboxError(f"--listen wants HOST:PORT, not '{text}'")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m octoboot.sandbox.octopus_api",
        description="Serve a local stand-in for the Octopus Deploy REST API.",
    )
    parser.add_argument("--state", type=Path, required=True, help="directory for state and cert")
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0 picks a free one)")
    parser.add_argument(
        "--environment", action="append", default=[], help="environment to create if missing"
    )
    parser.add_argument(
        "--api-key-file", type=Path, help=f"file holding the API key (else ${API_KEY_ENV})"
    )
    defaults = StandInSettings()
    for name in StandInSettings.OCTOPUS_FIELDS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(getattr(defaults, name)),
            default=getattr(defaults, name),
        )
    parser.add_argument(
        "--polling-port", type=int,
        help=f"port of the polling endpoint, on the --listen host (default "
        f"{octopus_polling.DEFAULT_PORT}, or a free one when --listen picks a free one)",
    )  # fmt: skip
    parser.add_argument(
        "--polling-queue-timeout", type=float, default=octopus_polling.DEFAULT_QUEUE_TIMEOUT,
        help="seconds a request waits for a polling Tentacle to collect it (Halibut: 120)",
    )  # fmt: skip
    parser.add_argument(
        "--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds a health check waits to reach a listening Tentacle (Halibut: 60)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-pool", action="append", default=[], help="static worker pool to create"
    )
    parser.add_argument(
        "--dynamic-worker-pool", action="append", default=[],
        help="dynamic worker pool to create (it takes no workers)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.api_key_file:
            api_key = args.api_key_file.read_text(encoding="utf-8").strip()
        else:
            api_key = os.environ.get(API_KEY_ENV, "").strip()
        if not api_key:
            raise SandboxError(f"no API key: set {API_KEY_ENV} or pass --api-key-file")
        host, port = _parse_listen(args.listen)
        if args.polling_port is None:
            args.polling_port = octopus_polling.DEFAULT_PORT if port else 0
        # Block the stop signals before any thread starts, so only sigwait below receives them.
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        settings = StandInSettings.from_json(vars(args))
        pools = [(name, STATIC_POOL) for name in args.worker_pool]
        pools += [(name, DYNAMIC_POOL) for name in args.dynamic_worker_pool]
        standin = OctopusStandIn(
            args.state,
            api_key,
            args.environment,
            host,
            port,
            settings=settings,
            worker_pools=pools,
            polling_port=args.polling_port,
            polling_queue_timeout=args.polling_queue_timeout,
            connect_timeout=args.connect_timeout,
        )
        with standin:
            print(f"listening on {standin.url}", flush=True)
            print(f"polling endpoint on port {standin.polling_port}", flush=True)
            signal.sigwait(stop_signals)
    except (SandboxError, OSError) as exc:
        print(f"octopus stand-in: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
