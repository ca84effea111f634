"""Health tasks, as Octopus runs them: the task queue (at most `task_cap` tasks run at once,
the rest wait `Queued`), a task's run (it takes `health_seconds`, a little more per machine,
and ends `Success`, `Failed` or `TimedOut`), and each machine's check. A listening Tentacle
is checked over mutual TLS, the server presenting its certificate and checking the
thumbprint the Tentacle presents (through the endpoint's proxy, if it names one); a polling
Tentacle must collect the request at the polling endpoint (`polling`)."""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from octoboot import certificates
from octoboot.sandbox.octopus_api.polling import PollingListener
from octoboot.sandbox.octopus_api.records import Resource, human_time, now, parse_timespan
from octoboot.sandbox.octopus_api.state import (
    DEFAULT_MACHINE_TIMEOUT,
    DEFAULT_TASK_TIMEOUT,
    POLLING_STYLE,
    OctopusState,
)
from octoboot.sandbox.standin_settings import StandInSettings

log = logging.getLogger(__name__)

TENTACLE_DEFAULT_PORT = 10933
DEFAULT_CONNECT_TIMEOUT = 60.0  # Halibut's ServiceEndPoint.TcpClientConnectTimeout


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


class HealthTasks:
    """Runs the health tasks the API queues, under the task cap, with the server's
    certificate (cert_path, key_path) as its TLS client identity."""

    def __init__(
        self,
        state: OctopusState,
        settings: StandInSettings,
        polling: PollingListener,
        cert_path: Path,
        key_path: Path,
        *,
        polling_queue_timeout: float,
        connect_timeout: float,
    ) -> None:
        self._state = state
        self._settings = settings
        self._polling = polling
        self._polling_queue_timeout = polling_queue_timeout
        self._connect_timeout = connect_timeout
        # Tasks waiting for a free slot under the task cap, oldest first.
        self._queue: deque[tuple[Resource, list[Resource]]] = deque()
        self._running_tasks = 0
        self._stopping = False
        self._lock = threading.Lock()
        self._client_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._client_tls.check_hostname = False
        self._client_tls.verify_mode = ssl.CERT_NONE  # trust is the thumbprint, not a CA
        self._client_tls.load_cert_chain(cert_path, key_path)

    def submit(self, task: Resource, machines: list[Resource]) -> None:
        """Queue a task the state just added; it starts when a slot under the cap is free."""
        with self._lock:
            self._queue.append((task, machines))
            self._start_queued_tasks()

    def stop(self) -> None:
        """Start no more tasks: queued ones never start, and a restart fails them."""
        with self._lock:
            self._stopping = True

    def _start_queued_tasks(self) -> None:
        """Start the oldest queued tasks while fewer than the task cap run (lock held)."""
        while self._queue and self._running_tasks < self._settings.task_cap and not self._stopping:
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
            with self._lock:
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
            done_at = time.monotonic() + self._settings.health_task_seconds(len(machines))
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
