"""The Octopus stand-in's polling endpoint: where polling Tentacles connect to (port 10943).

As the real server's Halibut listener: mutual TLS, where the server presents its certificate
and asks the Tentacle for its own; a Tentacle whose certificate belongs to no polling record
(machine or worker) is turned away; a known one names its subscription
(`MX-SUBSCRIBER 1.0 poll://<id>/`, answered `MX-SERVER 1.0`: Halibut's
`MessageExchangeStream.IdentifyAsSubscriber`) and waits for requests. A request for
`poll://<id>/` is collected only by a Tentacle polling with that id *and* the record's
thumbprint; if none does within the queue timeout, it fails with Halibut's own words
("... did not collect the request within the allowed time ...").

Known difference: after the identification the real protocol exchanges zipped BSON messages
(with NEXT/PROCEED control lines); here a request and its response are one JSON line each.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from octoboot import certificates
from octoboot.sandbox.tentacle_standin.agent import accept_any_client_certificate

log = logging.getLogger(__name__)

DEFAULT_PORT = 10943
# Halibut's ServiceEndPoint.PollingRequestQueueTimeout default: 2 minutes.
DEFAULT_QUEUE_TIMEOUT = 120.0
SUBSCRIBER = "MX-SUBSCRIBER"
SERVER_IDENTITY = "MX-SERVER 1.0"
_HANDSHAKE_SECONDS = 10.0
_LINE_LIMIT = 64 * 1024


def timespan(seconds: float) -> str:
    """A .NET TimeSpan as Halibut prints it: 00:02:00."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _Subscriber:
    """One polling Tentacle's connection, identified."""

    def __init__(self, tls: ssl.SSLSocket, subscription: str, thumbprint: str) -> None:
        self.tls = tls
        self.subscription = subscription
        self.thumbprint = thumbprint
        self.reader = tls.makefile("rb")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.tls.close()


class PollingListener:
    """Accepts polling Tentacles; `call()` sends one of them a request."""

    def __init__(
        self,
        host: str,
        port: int,
        cert_path: Path,
        key_path: Path,
        is_known: Callable[[str], bool],
    ) -> None:
        """is_known(thumbprint): whether a polling record has that certificate."""
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert_path, key_path)
        # Trust is the thumbprint, judged after the handshake, as Halibut does.
        accept_any_client_certificate(self._context)
        self._is_known = is_known
        self._address = (host, port)
        self._listener: socket.socket | None = None
        self._idle: list[_Subscriber] = []  # connected, not busy with a request
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)

    @property
    def port(self) -> int:
        assert self._listener is not None, "start() first"
        return self._listener.getsockname()[1]

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
        self._listener = socket.create_server(self._address, family=family, backlog=256)
        threading.Thread(target=self._accept, name="octopus-polling", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._changed:
            for subscriber in self._idle:
                subscriber.close()
            self._idle.clear()
            self._changed.notify_all()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                connection, peer = self._listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._identify, args=(connection, peer), daemon=True).start()

    def _identify(self, connection: socket.socket, peer: tuple) -> None:
        connection.settimeout(_HANDSHAKE_SECONDS)
        try:
            tls = self._context.wrap_socket(connection, server_side=True)
            der = tls.getpeercert(binary_form=True)
            thumbprint = certificates.thumbprint_of_der(der) if der else None
            if thumbprint is None or not self._is_known(thumbprint):
                log.info("rejected a polling client at %s: thumbprint %s", peer[0], thumbprint)
                tls.close()
                return
            subscriber = _Subscriber(tls, "", thumbprint)
            identity = _read_line(subscriber).split()
            if len(identity) != 3 or identity[0] != SUBSCRIBER:
                log.info("a polling client at %s did not identify: %r", peer[0], identity)
                subscriber.close()
                return
            _read_line(subscriber)  # the blank line that ends the identification
            subscriber.subscription = identity[2].lower()
            tls.sendall(f"{SERVER_IDENTITY}\r\n\r\n".encode())
            tls.settimeout(None)
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts included
            log.info("a polling client at %s failed to connect: %s", peer[0], exc)
            connection.close()
            return
        log.info("%s polls as %s from %s", thumbprint, subscriber.subscription, peer[0])
        with self._changed:
            if self._stopping.is_set():
                subscriber.close()
                return
            self._idle.append(subscriber)
            self._changed.notify_all()

    def call(self, subscription: str, thumbprint: str, queue_timeout: float) -> tuple[bool, str]:
        """Ask the Tentacle polling as subscription with thumbprint for its capabilities;
        (answered, what happened). Waits up to queue_timeout for it to collect the request."""
        wanted = (subscription.strip().lower(), thumbprint.strip().upper())
        deadline = time.monotonic() + queue_timeout
        while True:
            subscriber = self._take(wanted, deadline)
            if subscriber is None:
                return False, (
                    f"An error occurred when sending a request to '{subscription}', before the "
                    "request could begin: A request was sent to a polling endpoint, but the "
                    "polling endpoint did not collect the request within the allowed time "
                    f"({timespan(queue_timeout)}), so the request timed out."
                )
            try:
                answer = self._exchange(subscriber, deadline)
            except (OSError, ValueError) as exc:
                # A connection that went away (Tentacle stopped, server restarted on its
                # side): drop it and wait for the Tentacle to poll again.
                log.info("the connection of %s failed: %s", subscription, exc)
                subscriber.close()
                continue
            with self._changed:
                self._idle.append(subscriber)
                self._changed.notify_all()
            return True, answer

    def _take(self, wanted: tuple[str, str], deadline: float) -> _Subscriber | None:
        with self._changed:
            while True:
                for subscriber in self._idle:
                    if (subscriber.subscription, subscriber.thumbprint) == wanted:
                        self._idle.remove(subscriber)
                        return subscriber
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return None
                self._changed.wait(left)

    def _exchange(self, subscriber: _Subscriber, deadline: float) -> str:
        request = {
            "Id": f"{subscriber.subscription}{next(self._ids)}",
            "ServiceName": "ICapabilitiesServiceV2",
            "MethodName": "GetCapabilities",
        }
        subscriber.tls.settimeout(max(1.0, deadline - time.monotonic()))
        subscriber.tls.sendall(json.dumps(request).encode() + b"\n")
        response = json.loads(_read_line(subscriber))
        subscriber.tls.settimeout(None)
        if response.get("Id") != request["Id"] or "Result" not in response:
            raise ValueError(f"unexpected response {response!r}")
        return json.dumps(response["Result"])


def _read_line(subscriber: _Subscriber) -> str:
    line = subscriber.reader.readline(_LINE_LIMIT)
    if not line:
        raise ConnectionError("the Tentacle closed the connection")
    return line.decode("utf-8", "replace").strip()
