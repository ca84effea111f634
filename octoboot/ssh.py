"""SSH connections to machines: ssh_config honoured, host keys checked on purpose.

Fabric accepts any host key (AutoAddPolicy) and, under `inv`, may not read ~/.ssh/config.
So octoboot builds its own fabric.Config from the ssh_config the inventory names (default:
the user's ~/.ssh/config), and checks host keys against its own known_hosts file: a machine
seen for the first time is accepted and remembered, a changed key is refused unless the
machine was named for accepting a new key (a rebuilt machine).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote
from invoke.terminals import isatty

from octoboot.errors import ConfigError, OctobootError
from octoboot.inventory import Machine

USER_SSH_CONFIG = Path("~/.ssh/config").expanduser()


class BufferedStdinRemote(Remote):
    """Fabric's Remote runner, tuned for many machines at once:
    - a non-terminal in_stream is read in 64 KiB chunks: Invoke reads anything that is not
      a TTY one byte per 10 ms, so a 3 KB input took 30 s;
    - waiting for the command wakes when its exit status arrives, instead of every 10 ms:
      a hundred machines each polling a hundred times a second cost a whole core;
    - the command's stdin is never closed from here after its input: on the host, the end of
      stdin means the session is over and ends the command (tentacle.supervised), so it is
      sent only to stop a command (end_commands) or comes with the connection's end."""

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        super().start(command, shell, env, timeout)
        with _running_lock:
            _running.add(self.channel)

    def stop(self) -> None:
        with _running_lock:
            _running.discard(getattr(self, "channel", None))
        super().stop()

    def wait(self) -> None:
        # paramiko sets status_event when the exit status arrives or the channel closes.
        while not (self.process_is_finished or self.has_dead_threads):
            self.channel.status_event.wait(0.5)

    def read_our_stdin(self, input_: IO) -> str | None:
        if isatty(input_):
            return super().read_our_stdin(input_)
        data = input_.read(65536)
        if not data:
            # Nothing (None: "not ready") until the command is done, instead of EOF.
            self.program_finished.wait(1)
            return None
        return data.decode() if isinstance(data, bytes) else data


# The channels of the commands running now, for end_commands.
_running: set[paramiko.Channel] = set()
_running_lock = threading.Lock()


def end_commands(connections: Iterable[Connection], within: float) -> None:
    """End the commands running over connections: each gets end-of-input, which ends its
    process group on the host (tentacle.supervised); then wait, at most `within` seconds in
    all, for the host to say each one has ended."""
    transports = {t for c in connections if (t := c.client.get_transport()) is not None}
    with _running_lock:
        channels = [ch for ch in _running if ch.get_transport() in transports]
    for channel in channels:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.shutdown_write()
    deadline = time.monotonic() + within
    for channel in channels:
        channel.status_event.wait(max(0.0, deadline - time.monotonic()))


class HostKeyChanged(OctobootError):
    """The machine presented another host key than the one remembered for it."""


class KnownHosts:
    """A known_hosts file shared by every connection of a run (thread-safe)."""

    def __init__(
        self, path: Path, *, accept_new_for: Iterable[str] = (), persist: bool = True
    ) -> None:
        self.path = path
        self._accept_new_for = set(accept_new_for)
        self._persist = persist  # False in a dry run: keys are accepted but not written
        self._lock = threading.Lock()
        self._keys = paramiko.HostKeys()
        if path.exists():
            try:
                self._keys.load(str(path))
            except (OSError, paramiko.SSHException) as exc:
                raise ConfigError(f"cannot read the known_hosts file {path}: {exc}") from None

    def prepare(self, client: paramiko.SSHClient, machine: str, lookup_name: str) -> None:
        """Give client what is known of lookup_name (the name paramiko checks: host, or
        [host]:port), unless this machine's new key is to be accepted."""
        client.set_missing_host_key_policy(_Remember(self))
        if machine in self._accept_new_for:
            return
        with self._lock:
            known = self._keys.lookup(lookup_name)
        if known:
            for key_type, key in known.items():
                client.get_host_keys().add(lookup_name, key_type, key)

    def remember(self, lookup_name: str, key: paramiko.PKey) -> None:
        with self._lock:
            entry = self._keys.lookup(lookup_name)
            replacing = entry is not None
            if replacing:
                del self._keys[lookup_name]
            self._keys.add(lookup_name, key.get_name(), key)
            if not self._persist:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if replacing:
                self._keys.save(str(self.path))
            else:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as out:
                    out.write(f"{lookup_name} {key.get_name()} {key.get_base64()}\n")


class _Remember(paramiko.MissingHostKeyPolicy):
    """Accept a key paramiko has no entry for, and write it down."""

    def __init__(self, known_hosts: KnownHosts) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self._known_hosts.remember(hostname, key)


def host_key_changed_message(machine: str, exc: paramiko.BadHostKeyException) -> str:
    return (
        f"the SSH host key changed; if {machine} was rebuilt, run again with "
        f"--accept-new-host-key --host {machine}, otherwise find out why before connecting "
        f"(was {exc.expected_key.fingerprint}, now {exc.key.fingerprint})"
    )


class Connector:
    """Makes fabric Connections for machines; one per run, shared by all threads."""

    def __init__(
        self,
        known_hosts_default: Path,
        *,
        accept_new_for: Iterable[str] = (),
        persist_host_keys: bool = True,
    ) -> None:
        self._default_known_hosts = known_hosts_default
        self._accept_new_for = tuple(accept_new_for)
        self._persist = persist_host_keys
        self._configs: dict[Path | None, Config] = {}
        self._known_hosts: dict[Path, KnownHosts] = {}
        self._lock = threading.Lock()

    def _config(self, path: Path | None) -> Config:
        with self._lock:
            if path not in self._configs:
                if path is None and USER_SSH_CONFIG.exists():
                    path = USER_SSH_CONFIG
                try:
                    ssh_config = (
                        paramiko.SSHConfig.from_path(str(path)) if path else paramiko.SSHConfig()
                    )
                except OSError as exc:
                    raise ConfigError(f"cannot read the ssh_config file {path}: {exc}") from None
                config = Config(ssh_config=ssh_config)
                # Never read our terminal: machines may run in parallel threads.
                config.run.in_stream = False
                config.runners.remote = BufferedStdinRemote
                self._configs[path] = config
            return self._configs[path]

    def known_hosts(self, path: Path | None) -> KnownHosts:
        path = path or self._default_known_hosts
        with self._lock:
            if path not in self._known_hosts:
                self._known_hosts[path] = KnownHosts(
                    path, accept_new_for=self._accept_new_for, persist=self._persist
                )
            return self._known_hosts[path]

    def connection(self, machine: Machine) -> Connection:
        options = machine.ssh
        connect_kwargs: dict[str, object] = {
            "banner_timeout": options.connect_timeout,
            "auth_timeout": options.connect_timeout,
        }
        if options.key:
            connect_kwargs["key_filename"] = str(options.key)
        conn = Connection(
            machine.address,
            user=options.user,
            port=options.port,
            config=self._config(options.config),
            connect_timeout=int(max(1, options.connect_timeout)),
            connect_kwargs=connect_kwargs,
        )
        known_hosts = self.known_hosts(options.known_hosts)
        known_hosts.prepare(conn.client, machine.name, _lookup_name(conn))
        if isinstance(conn.gateway, Connection):
            # ProxyJump: Fabric builds the jump host's Connection itself, trusting any key and
            # waiting forever; give it the same host-key policy and timeouts.
            jump = conn.gateway
            jump.connect_timeout = conn.connect_timeout
            jump.connect_kwargs.update(
                banner_timeout=options.connect_timeout, auth_timeout=options.connect_timeout
            )
            known_hosts.prepare(jump.client, f"{machine.name} (jump host)", _lookup_name(jump))
        return conn


def close(conn: Connection) -> None:
    """Close a connection and its jump host's (Fabric's close leaves the gateway open)."""
    conn.close()
    if isinstance(conn.gateway, Connection):
        conn.gateway.close()


def _lookup_name(conn: Connection) -> str:
    """The name paramiko looks a host key up by."""
    return conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"


def unreachable_reason(exc: BaseException, timeout: float) -> str:
    """Why a machine could not be reached, in words (paramiko's own say "[Errno None]")."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = [e.strerror or str(e) for e in exc.errors.values()]
        return "; ".join(dict.fromkeys(errors)) or str(exc)
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer within {timeout:g} s (the connect timeout)"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def is_unreachable(exc: BaseException) -> bool:
    """Errors that mean the machine could not be reached at all (as opposed to refusing us)."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError | socket.timeout):
        return True
    if isinstance(exc, paramiko.SSHException) and "banner" in str(exc).lower():
        return True
    return isinstance(exc, OSError) and not isinstance(exc, paramiko.SSHException)
