"""SSH connections to machines: ssh_config honoured, host keys checked on purpose.

Fabric accepts any host key (AutoAddPolicy) and, under `inv`, may not read ~/.ssh/config.
So octoboot builds its own fabric.Config from the ssh_config the inventory names (default:
the user's ~/.ssh/config), and checks host keys against its own known_hosts file: a machine
seen for the first time is accepted and remembered, a changed key is refused unless the
machine was named for accepting a new key (a rebuilt machine). known_hosts is rewritten
whole (files.write_atomic) under a lock shared with other runs, from the file as it is then,
so concurrent runs keep each other's keys; a damaged line is refused, naming it, rather than
skipped (paramiko skips it, which would silently trust whatever key that host shows next).
"""

from __future__ import annotations

import contextlib
import copy
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote
from invoke.terminals import isatty
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from octoboot.errors import ConfigError
from octoboot.files import StateWriteError, write_atomic
from octoboot.inventory import Machine
from octoboot.locks import Locks

USER_SSH_CONFIG = Path("~/.ssh/config").expanduser()


@runtime_checkable
class OutputSink(Protocol):
    """Where a command's output goes instead of memory (runlog.CommandOutput): given as
    run(out_stream=..., err_stream=...), it is fed the bytes as they come, then closed."""

    def feed(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class BufferedStdinRemote(Remote):
    """Fabric's Remote runner, tuned for many machines at once:
    - a non-terminal in_stream is read in 64 KiB chunks: Invoke reads anything that is not
      a TTY one byte per 10 ms, so a 3 KB input took 30 s;
    - waiting for the command wakes when its exit status arrives, instead of every 10 ms:
      a hundred machines each polling a hundred times a second cost a whole core;
    - output is read in 64 KiB chunks (Invoke: 1000 bytes), and not joined again for every
      chunk: Invoke's `respond` joins the whole buffer per chunk for watchers, which octoboot
      never uses, so output cost time in the square of its size (pyinvoke/invoke#1079:
      20 MB took 60 s);
    - an OutputSink given as out_stream/err_stream gets the output instead of the buffer,
      so a command's output of any size costs bounded memory;
    - the command's stdin is never closed from here after its input: on the host, the end of
      stdin means the session is over and ends the command (tentacle.supervised), so it is
      sent only to stop a command (end_commands) or comes with the connection's end.;
    - no thread of its own: Invoke starts three per command (stdout, stderr, the timeout's
      Timer), each of which, with a hundred machines at work, waits its turn for the GIL
      to start and to end. The thread that runs the command reads both streams as they
      come (paramiko signals either on one pipe) and checks the timeout itself. Only a
      command given stdin, a pty or output to show (not octoboot's) gets Invoke's threads.
      The controller's CPU is what a wide run waits for (docs/performance.md)."""

    read_chunk_size = 65536
    _expires: float | None = None
    _timed_out = False

    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        super().start(command, shell, env, timeout)
        with _running_lock:
            _running.add(self.channel)

    def stop(self) -> None:
        with _running_lock:
            _running.discard(getattr(self, "channel", None))
        super().stop()

    def handle_stdout(self, buffer_: list[str], hide: bool, output: IO) -> None:
        if isinstance(output, OutputSink):
            self._stream(self.read_proc_stdout, output)
        else:
            super().handle_stdout(buffer_, hide, output)

    def handle_stderr(self, buffer_: list[str], hide: bool, output: IO) -> None:
        if isinstance(output, OutputSink):
            self._stream(self.read_proc_stderr, output)
        else:
            super().handle_stderr(buffer_, hide, output)

    def _stream(self, read: Callable[[int], bytes | None], sink: OutputSink) -> None:
        try:
            while data := read(self.read_chunk_size):
                sink.feed(data)
        finally:
            sink.close()

    def respond(self, buffer_: list[str]) -> None:
        if self.watchers:
            super().respond(buffer_)

    def start_timer(self, timeout: float | None) -> None:
        self._expires = None if timeout is None else time.monotonic() + timeout
        self._timed_out = False

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    def _expired(self) -> bool:
        """Kill the command if its time is up (closing the channel, as Invoke's Timer)."""
        if self._expires is not None and time.monotonic() >= self._expires:
            self._timed_out = True
            self.kill()
        return self._timed_out

    def _wake_in(self) -> float:
        left = 0.5 if self._expires is None else self._expires - time.monotonic()
        return max(0.0, min(0.5, left))

    def create_io_threads(self) -> tuple[dict, list[str], list[str]]:
        hide = self.opts["hide"] or ()
        quiet = all(
            isinstance(self.streams[key], OutputSink) or name in hide
            for key, name in (("out", "stdout"), ("err", "stderr"))
        )
        if self.streams["in"] or self.using_pty or self.watchers or not quiet:
            return super().create_io_threads()
        return {}, [], []  # wait() reads the output itself

    def wait(self) -> None:
        if not self.threads:
            self._read_output()
        # paramiko sets status_event when the exit status arrives or the channel closes.
        while not (self.process_is_finished or self.has_dead_threads or self._expired()):
            self.channel.status_event.wait(self._wake_in())

    def _read_output(self) -> None:
        """Both streams into their sinks (or buffers) as they come, until the command's
        end of output (or the channel's end, or the timeout)."""
        channel = self.channel
        streams = (
            (channel.recv_ready, channel.recv, self.streams["out"], self.stdout),
            (channel.recv_stderr_ready, channel.recv_stderr, self.streams["err"], self.stderr),
        )
        # A pipe that paramiko makes readable when either stream has data or ends.
        ready = select.poll()
        ready.register(channel.fileno(), select.POLLIN)
        try:
            while True:
                ended = channel.eof_received or channel.closed
                for has_data, read, output, buffer_ in streams:
                    while has_data():
                        data = read(self.read_chunk_size)
                        if isinstance(output, OutputSink):
                            output.feed(data)
                        else:
                            buffer_.append(self.decode(data))
                if ended or self._expired():
                    return
                ready.poll(self._wake_in() * 1000)
        finally:
            for _, _, output, _ in streams:
                if isinstance(output, OutputSink):
                    output.close()

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


_GLOB = re.compile(r"[*?\[!]")


class SSHConfig(paramiko.SSHConfig):
    """paramiko's ssh_config, without its cost per Host block. paramiko takes every lookup
    through every block, asking the OS for the local user name (a passwd lookup when $USER is
    unset) and running fnmatch at each, so the N lookups of a run over an ssh_config of N
    `Host` blocks (one per machine, as generated ones are) cost N² of each: 1.4 s of the
    controller's CPU before the first connection at 300 machines. Same answers: a lookup
    sees only the blocks that can match the host (those naming it, and those with wildcards
    or `Match`), in their order; a block with no `Match` does not match by Match, and a name
    without wildcards matches only itself. With CanonicalizeHostname (a second pass under
    another name) every lookup sees every block, as paramiko's."""

    def parse(self, file_obj: IO[str]) -> None:
        super().parse(file_obj)
        self._named: dict[str, list[int]] = {}  # literal host name -> its blocks
        self._open: list[int] = []  # blocks with wildcards, negations or Match
        for index, context in enumerate(self._config):
            hosts = context.get("host")
            if hosts and not any(_GLOB.search(h) for h in hosts):
                for host in hosts:
                    self._named.setdefault(host, []).append(index)
            else:
                self._open.append(index)
        self._canonical = any("canonicalizehostname" in c["config"] for c in self._config)

    def lookup(self, hostname: str) -> paramiko.SSHConfigDict:
        if not hasattr(self, "_named") or self._canonical:  # not parsed: paramiko's own
            return super().lookup(hostname)
        view = copy.copy(self)
        blocks = sorted(self._open + self._named.get(hostname, []))
        view._config = [self._config[index] for index in blocks]
        return paramiko.SSHConfig.lookup(view, hostname)

    def _does_match(self, match_list: list, *args: object) -> object:
        return match_list and super()._does_match(match_list, *args)

    def _pattern_matches(self, patterns: list | str, target: str) -> bool:
        if isinstance(patterns, list) and not any(_GLOB.search(p) for p in patterns):
            return target in patterns
        return super()._pattern_matches(patterns, target)


class KnownHosts:
    """A known_hosts file shared by every connection of a run (thread-safe)."""

    def __init__(
        self,
        path: Path,
        *,
        accept_new_for: Iterable[str] = (),
        persist: bool = True,
        locks: Locks | None = None,
    ) -> None:
        self.path = path
        self._accept_new_for = set(accept_new_for)
        self._persist = persist  # False in a dry run: keys are accepted but not written
        self._locks = locks  # shared with other runs, for rewriting the file
        self._lock = threading.Lock()
        self.learned = 0  # keys of hosts seen for the first time
        try:
            text = path.read_text() if path.exists() else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the known_hosts file {path}: {exc}") from None
        self._keys = _load(path, text)

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
        """Trust key for lookup_name from now on (StateWriteError if it cannot be written
        down: the machine fails rather than run with a key nobody remembers)."""
        with self._lock:
            entry = self._keys.lookup(lookup_name)
            replacing = entry is not None
            if replacing:
                del self._keys[lookup_name]
            else:
                self.learned += 1
            self._keys.add(lookup_name, key.get_name(), key)
            if not self._persist:
                return
            if self._locks is None:
                self._save(lookup_name, key)
            else:
                with self._locks.held(f"known_hosts:{self.path.absolute()}"):
                    self._save(lookup_name, key)

    def _save(self, lookup_name: str, key: paramiko.PKey) -> None:
        # From the file as it is now, not as it was read: another run may have added keys.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            text = self.path.read_text() if self.path.exists() else ""
        except OSError as exc:
            raise StateWriteError(self.path, exc) from None
        lines = [kept for line in text.splitlines() if (kept := _without(line, lookup_name))]
        lines.append(f"{lookup_name} {key.get_name()} {key.get_base64()}")
        write_atomic(self.path, "\n".join(lines) + "\n")


def _load(path: Path, text: str) -> paramiko.HostKeys:
    """The keys of a known_hosts file. A damaged line is a ConfigError naming it (paramiko's
    own loader skips it, or fails on it with a traceback). Key types paramiko does not know
    and @marker lines, which OpenSSH's files may hold, are left alone."""
    keys = paramiko.HostKeys()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            if len(line.split()) < 3:
                raise ValueError("it needs host names, a key type and a key")
            entry = HostKeyEntry.from_line(line, number)
        except (ValueError, InvalidHostKey, paramiko.SSHException) as exc:
            why = exc.args[0] if isinstance(exc, ValueError) else "its key cannot be read"
            raise ConfigError(
                f"{path} line {number} is damaged ({why}): restore it, or delete that line "
                "(octoboot then trusts the key that host shows next: check it)"
            ) from None
        for name in entry.hostnames if entry else ():
            keys.add(name, entry.key.get_name(), entry.key)
    return keys


def _without(line: str, lookup_name: str) -> str:
    """line with lookup_name taken out of its host names ("" if none are left); other lines
    (comments, blank, other hosts) as they are."""
    fields = line.split()
    if len(fields) < 3 or line.lstrip().startswith(("#", "@")):
        return line
    names = fields[0].split(",")
    kept = [name for name in names if not _names_host(name, lookup_name)]
    if len(kept) == len(names):
        return line
    return " ".join([",".join(kept), *fields[1:]]) if kept else ""


def _names_host(name: str, lookup_name: str) -> bool:
    if name.startswith("|1|"):  # a hashed name (HashKnownHosts)
        return paramiko.HostKeys.hash_host(lookup_name, name) == name
    return name == lookup_name


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


class _Connection(Connection):
    """Fabric's Connection, made in a third less time. Its attributes go through Invoke's
    DataProxy, which tells a real attribute from a config key by `key in dir(self)` at every
    set (about twenty per Connection) and builds a message listing every key and attribute
    for every miss (`hasattr`); a run makes one Connection per machine, before any connects
    (0.5 ms each, 50 ms for 100 machines). Same rule, looked up directly."""

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.__dict__ or any(key in vars(cls) for cls in type(self).__mro__):
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def __getattr__(self, key: str) -> Any:
        try:
            return self._get(key)
        except KeyError:
            if key in self._proxies:
                return getattr(self._config, key)
            raise AttributeError(f"no attribute or config key {key!r}") from None


class Connector:
    """Makes fabric Connections for machines; one per run, shared by all threads."""

    def __init__(
        self,
        known_hosts_default: Path,
        *,
        accept_new_for: Iterable[str] = (),
        persist_host_keys: bool = True,
        locks: Locks | None = None,
    ) -> None:
        self._default_known_hosts = known_hosts_default
        self._accept_new_for = tuple(accept_new_for)
        self._persist = persist_host_keys
        self._locks = locks
        self._configs: dict[Path | None, Config] = {}
        self._known_hosts: dict[Path, KnownHosts] = {}
        self._lock = threading.Lock()

    def _config(self, path: Path | None) -> Config:
        with self._lock:
            if path not in self._configs:
                if path is None and USER_SSH_CONFIG.exists():
                    path = USER_SSH_CONFIG
                try:
                    ssh_config = SSHConfig.from_path(str(path)) if path else SSHConfig()
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
                    path,
                    accept_new_for=self._accept_new_for,
                    persist=self._persist,
                    locks=self._locks,
                )
            return self._known_hosts[path]

    def host_keys_learned(self) -> int:
        """How many hosts' keys were seen for the first time (across known_hosts files)."""
        with self._lock:
            return sum(known.learned for known in self._known_hosts.values())

    def connection(self, machine: Machine) -> Connection:
        options = machine.ssh
        connect_kwargs: dict[str, object] = {
            "banner_timeout": options.connect_timeout,
            "auth_timeout": options.connect_timeout,
        }
        if options.key:
            connect_kwargs["key_filename"] = str(options.key)
        conn = _Connection(
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
    _close(conn)
    if isinstance(conn.gateway, Connection):
        _close(conn.gateway)


def _close(conn: Connection) -> None:
    """Fabric's close, then the TCP stream shut down. paramiko only closes its socket, and
    its thread blocked in recv on it notices at its next 0.1 s poll: until then the kernel
    keeps the connection open (the host does not see the session end), and a run ended
    with those threads alive, which took its process about 10 ms more to exit at 30
    machines. The shutdown goes through a duplicate made before, once the close has sent
    all it sends (an SFTP session's end)."""
    sock = getattr(conn.transport, "sock", None)
    stream = None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # closed already, or no descriptor left
            stream = sock.dup()
    conn.close()
    if stream is not None:
        with stream, contextlib.suppress(OSError):
            stream.shutdown(socket.SHUT_RDWR)


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
