"""The sandbox: a local fleet of sshd hosts plus the Octopus and package stand-ins.

    Sandbox(root).up(hosts=5)      hosts sbx01..sbx05, Octopus at http://10.77.<k>.2
    Sandbox(root).up(5, ssh_only=2)  sbx04, sbx05 reachable over SSH only (as behind NAT):
                                   their Tentacles must poll Octopus (port 10943)
    Sandbox(root).down()           everything it started and made, by recorded PID and name

The root folder holds all of it (see host.py for a host's part):

    state.json                  slot, hosts and the processes to end (PID + start time)
    client_key(.pub)            the key root logs in to every host with
    ssh_config, known_hosts     for the tool and for plain `ssh -F ssh_config sbx01`
    sbin/systemctl              the systemd stand-in, first on every host's PATH
    sbin/unshare                the real unshare, or a refusal (fault no_namespaces)
    packages/                   the Tentacle stand-in archive, also served over HTTP
    octopus/                    the Octopus stand-in's state and its API key (0600)

How real the stand-ins are (task cap, Health task time, API rate limit, Tentacle start-up)
is the sandbox's StandInSettings, kept in state.json and shown by `describe()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from octoboot.errors import SandboxError
from octoboot.files import write_atomic
from octoboot.sandbox import net, processes
from octoboot.sandbox.archive import (
    DEFAULT_TENTACLE_VERSION,
    build_tentacle_archive,
    write_systemctl_launcher,
    write_unshare_launcher,
)
from octoboot.sandbox.host import Host, paths_to_keep_visible, write_ssh_key
from octoboot.sandbox.octopus_api import API_KEY_ENV
from octoboot.sandbox.standin_settings import (
    DEFAULT_HOSTS,
    DEFAULT_INSTALL_SECONDS,
    StandInSettings,
)

ENVIRONMENT = "Sandbox"
OCTOPUS_PORT = 80
POLLING_PORT = 10943
# Worker pools the Octopus stand-in has besides its "Default Worker Pool".
STATIC_WORKER_POOL = "Linux workers"
DYNAMIC_WORKER_POOL = "Hosted Ubuntu"
PACKAGE_PORT = 8081
HOST_EXIT_SECONDS = 30.0  # how long a powered-off host's processes may take to end
# Created on the controller as empty mount points when missing; removed by the last `down`.
MOUNT_POINTS = ("/opt/octopus", "/etc/octopus", "/home/Octopus")
INVENTORY_MARKER = "# Written by `inv sandbox.up`"
_CREATED_MOUNT_POINTS = Path("/run/octoboot-sandbox-mountpoints.json")
_PROJECT_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Endpoints:
    """Where the tool reaches the sandbox."""

    octopus_url: str
    package_url: str
    ssh_config: Path
    api_key_file: Path


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    # --- reading ----------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def state(self) -> dict:
        if not self.state_file.exists():
            raise SandboxError(f"no sandbox in {self.root}: run `inv sandbox.up` first")
        return json.loads(self.state_file.read_text())

    def is_up(self) -> bool:
        return self.state_file.exists()

    def hosts(self) -> list[Host]:
        state = self.state()
        return [self._host(h) for h in state["hosts"]]

    def host(self, name: str) -> Host:
        for host in self.hosts():
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts())
        raise SandboxError(f"no sandbox host {name!r} (hosts: {known})")

    def endpoints(self) -> Endpoints:
        slot = self._slot()
        return Endpoints(
            octopus_url=f"http://{slot.octopus_address}:{OCTOPUS_PORT}",
            package_url=f"http://{slot.octopus_address}:{PACKAGE_PORT}",
            ssh_config=self.root / "ssh_config",
            api_key_file=self.root / "octopus" / "api-key",
        )

    def api_key(self) -> str:
        return self.endpoints().api_key_file.read_text().strip()

    def settings(self) -> StandInSettings:
        return StandInSettings.from_json(self.state().get("settings"))

    def host_is_running(self, name: str) -> bool:
        rec = self._record(name)
        return rec is not None and processes.is_alive(rec)

    def describe(self) -> str:
        """The hosts as a table, and where the Octopus and package stand-ins are."""
        rows = [
            (
                h.name,
                h.address,
                "running" if self.host_is_running(h.name) else "stopped",
                ", ".join(
                    [
                        *(["ssh only (no inbound Tentacle port)"] if self.ssh_only(h.name) else []),
                        *(f"{k}={v}" for k, v in sorted(self._faults(h).items()) if v),
                    ]
                )
                or "-",
            )
            for h in self.hosts()
        ]
        ends = self.endpoints()
        table = tabulate(rows, headers=["host", "address", "state", "faults"])
        limits = "\n                   ".join(self.settings().describe())
        return (
            f"{table}\n\n"
            f"Octopus stand-in:  {ends.octopus_url} (API key in {ends.api_key_file}), "
            f"polling on port {POLLING_PORT}, worker pools {STATIC_WORKER_POOL!r} (static) and "
            f"{DYNAMIC_WORKER_POOL!r} (dynamic)\n"
            f"Tentacle archive:  {ends.package_url}/\n"
            f"SSH:               ssh -F {ends.ssh_config} sbx01\n"
            f"Stand-ins:         {limits}"
        )

    # --- up and down ------------------------------------------------------------------

    def up(
        self,
        hosts: int = DEFAULT_HOSTS,
        *,
        install_seconds: float = DEFAULT_INSTALL_SECONDS,
        settings: StandInSettings = StandInSettings(),  # noqa: B008 (frozen)
        ssh_only: int = 0,
        octopus_options: dict[str, float] | None = None,
    ) -> None:
        """ssh_only: the last that many hosts take no inbound connection but SSH (their
        Tentacles must poll). octopus_options: the Octopus stand-in's timeouts, e.g.
        {"polling_queue_timeout": 5, "connect_timeout": 5} (default: the real ones)."""
        if self.is_up():
            raise SandboxError(f"a sandbox is already up in {self.root}: `inv sandbox.down` first")
        if not 1 <= hosts <= net.MAX_HOSTS:
            raise SandboxError(f"a sandbox holds 1 to {net.MAX_HOSTS} hosts, not {hosts}")
        if not 0 <= ssh_only <= hosts:
            raise SandboxError(f"--ssh-only takes 0 to {hosts} (the hosts), not {ssh_only}")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        _create_mount_points()
        with net.slot_lock():
            slot = net.free_slot(wide=hosts > net.HOSTS_PER_SLOT)
            # Record the slot before making anything, so `down` can clean up a half start.
            self._save(
                {
                    "slot": slot.number,
                    "wide": slot.wide,
                    "hosts": [],
                    "servers": {},
                    "settings": settings.to_json(),
                    "octopus_options": octopus_options or {},
                }
            )
            net.create_bridge(slot)
        try:
            self._populate(slot, hosts, install_seconds, ssh_only)
        except BaseException:
            self.down()
            raise

    def _populate(self, slot: net.Slot, count: int, install_seconds: float, ssh_only: int) -> None:
        self._write_shared_files()
        hosts: list[dict[str, Any]] = [
            {
                "name": f"sbx{i:02d}",
                "index": i,
                "address": slot.host_address(i),
                "namespace": slot.namespace(f"sbx{i:02d}"),
                "ssh_only": i > count - ssh_only,
            }
            for i in range(1, count + 1)
        ]
        state = self.state()
        state["hosts"] = hosts
        self._save(state)
        members = [(slot.namespace("octopus"), 0, slot.octopus_address)]
        members += [(h["namespace"], h["index"], h["address"]) for h in hosts]
        net.create_namespaces(slot, members)
        for entry in hosts:
            if entry["ssh_only"]:
                net.allow_only_ssh_in(entry["namespace"])
        self._start_servers(slot)
        keep = paths_to_keep_visible(self.root)
        for host in self.hosts():
            host.create(self.root / "client_key.pub")
            host.set_faults({"install_seconds": install_seconds})
            host.set_startup_seconds(self.settings().tentacle_startup_seconds)
            self._set_record(host.name, host.boot(self.root, keep))
        self._write_ssh_config()
        self._wait_for_ssh(self.hosts())

    def down(self) -> None:
        """Stop and remove everything this sandbox started and made. Idempotent."""
        if not self.is_up():
            return
        state = self.state()
        hosts = [
            processes.Recorded.from_json(h["process"]) for h in state["hosts"] if h.get("process")
        ]
        servers = [processes.Recorded.from_json(p) for p in state["servers"].values()]
        slot = self._slot(state)
        processes.terminate(hosts, first=signal.SIGKILL)
        processes.terminate(servers)
        _wait_until_gone(net.namespaces(slot.prefix))
        net.remove_slot(slot)
        _remove_mount_points_if_last()
        inventory = state.get("inventory")
        if inventory and _is_ours(Path(inventory)):
            Path(inventory).unlink()
        shutil.rmtree(self.root, ignore_errors=True)

    def write_target_files(
        self, machines_dir: Path, dotenv: Path, *, from_command: bool = False
    ) -> list[Path]:
        """The inventory of environment `sandbox` and, when there is no .env yet, one with a
        PFX password, so `inv bootstrap --env sandbox` needs no setup. A user's own files are
        never overwritten. from_command: the inventory takes its machines from a command
        that lists the sandbox's hosts ([source], the example of an inventory from
        elsewhere) instead of listing them. Returns the files written."""
        inventory = machines_dir / "sandbox.toml"
        if inventory.exists() and not _is_ours(inventory):
            raise SandboxError(
                f"{inventory} exists and was not written by the sandbox: move it away first"
            )
        machines_dir.mkdir(parents=True, exist_ok=True)
        inventory.write_text(self._inventory_text(machines_dir, from_command))
        state = self.state()
        state["inventory"] = str(inventory.resolve())
        self._save(state)
        written = [inventory]
        if not dotenv.exists():
            write_atomic(
                dotenv,
                "# Written by `inv sandbox.up` because there was no .env; yours to edit.\n"
                "# Password of the identity store's PFX files (keep it: without it the\n"
                "# machines' certificates cannot be read, and they would get new thumbprints).\n"
                f"OCTOBOOT_PFX_PASSWORD={secrets.token_urlsafe(24)}\n",
                replace=False,
            )
            written.append(dotenv)
        return written

    def _inventory_text(self, machines_dir: Path, from_command: bool) -> str:
        ends = self.endpoints()

        def rel(path: Path) -> str:
            return os.path.relpath(path, machines_dir.resolve())

        lines = [
            f"{INVENTORY_MARKER} for the local sandbox fleet; `inv sandbox.down` removes it.",
            f'environment = "{ENVIRONMENT}"',
            'roles = ["web"]',
            "",
            "[octopus]",
            f'url = "{ends.octopus_url}"',
            f'api_key_file = "{rel(ends.api_key_file)}"',
            "",
            "[ssh]",
            f'config = "{rel(ends.ssh_config)}"',
            # A new sandbox is a new fleet: its host keys start a known_hosts of their own.
            f'known_hosts = "{rel(self.root / "known_hosts")}"',
            "connect_timeout = 5",
            "deadline = 300",
            "",
            "[tentacle]",
            f'version = "{DEFAULT_TENTACLE_VERSION}"',
            f'source = "{ends.package_url}/tentacle-{{version}}-net8.0-linux-x64.tar.gz"',
        ]
        if from_command:
            # As a cloud API would, the command gives addresses, which ssh_config's
            # `Host sbx*` does not match: the user and key are said here instead.
            lister = Path(__file__).resolve().with_name("list_hosts.py")
            command = shlex.join([sys.executable, str(lister), str(self.root)])
            at = lines.index("connect_timeout = 5")
            lines[at:at] = ['user = "root"', f'key = "{rel(self.root / "client_key")}"']
            return "\n".join([*lines, "", "[source]", f"command = {json.dumps(command)}"]) + "\n"
        for host in self.hosts():
            lines += ["", "[[machines]]", f'name = "{host.name}"']
            if self.ssh_only(host.name):
                # Octopus cannot reach it: its Tentacle connects to Octopus instead.
                lines.append('communication = "polling"')
        return "\n".join(lines) + "\n"

    def ssh_only(self, name: str) -> bool:
        """Whether the host takes no inbound connection but SSH."""
        return any(h["name"] == name and h.get("ssh_only") for h in self.state()["hosts"])

    # --- one host -----------------------------------------------------------------------

    def stop_host(self, name: str) -> None:
        """Power the host off: sshd and everything it started end; its disk stays."""
        host = self.host(name)
        rec = self._record(host.name)
        if rec is not None:
            # A power cut: `unshare` ignores SIGTERM while it waits for the host's PID 1, and
            # SIGKILLing it takes the whole PID namespace down (--kill-child).
            processes.terminate([rec], first=signal.SIGKILL)
            _wait_until_gone([host.namespace])
        self._set_record(name, None)

    def start_host(self, name: str) -> None:
        """Power the host on again (enabled services start, as at boot)."""
        host = self.host(name)
        if self.host_is_running(name):
            return
        self._set_record(name, host.boot(self.root, paths_to_keep_visible(self.root)))
        self._wait_for_ssh([host])

    def rebuild_host(self, name: str) -> None:
        """Destroy and recreate: empty disk, a new SSH host key, none of the old processes."""
        host = self.host(name)
        self.stop_host(name)
        host.wipe_disk()
        host.create(self.root / "client_key.pub")
        self.start_host(name)

    def set_faults(
        self,
        name: str,
        *,
        install_fails: bool | None = None,
        install_seconds: float | None = None,
        hang: Iterable[str] | None = None,
        untrusting: bool | None = None,
        refuse_login: bool | None = None,
        blackhole: bool | None = None,
        no_namespaces: bool | None = None,
    ) -> dict[str, object]:
        """Change the host's faults (None leaves one as it is); returns them all.
        no_namespaces: the host may not make namespaces, as a container without
        CAP_SYS_ADMIN (its `unshare` fails)."""
        host = self.host(name)
        faults = host.faults()
        if install_fails is not None:
            faults["install_fails"] = install_fails
        if install_seconds is not None:
            faults["install_seconds"] = install_seconds
        if hang is not None:
            faults["hang"] = list(hang)
        if untrusting is not None:
            faults["untrusting"] = untrusting
        if refuse_login is not None:
            faults["refuse_login"] = refuse_login
            host.refuse_login(refuse_login, self.root / "client_key.pub")
        if no_namespaces is not None:
            faults["no_namespaces"] = no_namespaces
        host.set_faults(faults)
        if blackhole is not None:
            self.set_blackhole(name, blackhole)
        return self._faults(host)

    def set_blackhole(self, name: str, on: bool = True) -> None:
        """The host stops answering the controller at all (packets dropped, not refused)."""
        host = self.host(name)
        net.set_blackhole(host.namespace, self._controller_address(), on)

    def _faults(self, host: Host) -> dict[str, object]:
        """The host's faults: those its stand-ins read, and the blackhole in its network."""
        blackhole = net.is_blackholed(host.namespace, self._controller_address())
        return {**host.faults(), "blackhole": blackhole}

    def _controller_address(self) -> str:
        return self._slot().controller_address

    # --- internals ----------------------------------------------------------------------

    def _slot(self, state: dict | None = None) -> net.Slot:
        state = state or self.state()
        return net.Slot(state["slot"], wide=state.get("wide", False))

    def _host(self, entry: dict) -> Host:
        return Host(
            name=entry["name"],
            index=entry["index"],
            address=entry["address"],
            namespace=entry["namespace"],
            dir=self.root / "hosts" / entry["name"],
        )

    def _save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    def _record(self, name: str) -> processes.Recorded | None:
        for entry in self.state()["hosts"]:
            if entry["name"] == name and entry.get("process"):
                return processes.Recorded.from_json(entry["process"])
        return None

    def _set_record(self, name: str, rec: processes.Recorded | None) -> None:
        state = self.state()
        for entry in state["hosts"]:
            if entry["name"] == name:
                entry["process"] = rec.to_json() if rec else None
        self._save(state)

    def _write_shared_files(self) -> None:
        write_ssh_key(self.root / "client_key", comment="octoboot-sandbox")
        (self.root / "empty").write_text("")
        (self.root / "sbin").mkdir(exist_ok=True)
        write_systemctl_launcher(self.root / "sbin" / "systemctl")
        write_unshare_launcher(self.root / "sbin" / "unshare", unshare=_real_unshare())
        build_tentacle_archive(self.root / "packages")
        octopus = self.root / "octopus"
        octopus.mkdir(mode=0o700, exist_ok=True)
        write_atomic(octopus / "api-key", _new_api_key() + "\n")

    def _start_servers(self, slot: net.Slot) -> None:
        self._start_server("octopus", slot)
        self._start_server("packages", slot)

    def _start_server(self, which: str, slot: net.Slot) -> None:
        ns, address = slot.namespace("octopus"), slot.octopus_address
        env = {**os.environ, "PYTHONPATH": str(_PROJECT_DIR)}
        if which == "octopus":
            env[API_KEY_ENV] = self.api_key()
            argv = [
                "-m", "octoboot.sandbox.octopus_api", "--state", str(self.root / "octopus"),
                "--listen", f"{address}:{OCTOPUS_PORT}", "--environment", ENVIRONMENT,
                "--polling-port", str(POLLING_PORT), "--worker-pool", STATIC_WORKER_POOL,
                "--dynamic-worker-pool", DYNAMIC_WORKER_POOL,
            ]  # fmt: skip
            settings = self.settings()
            for name in settings.OCTOPUS_FIELDS:
                argv += [f"--{name.replace('_', '-')}", str(getattr(settings, name))]
            for option, value in self.state().get("octopus_options", {}).items():
                argv += [f"--{option.replace('_', '-')}", str(value)]
            ports, log = [OCTOPUS_PORT, POLLING_PORT], self.root / "octopus" / "server.log"
        else:
            argv = ["-m", "http.server", str(PACKAGE_PORT), "--bind", address,
                    "--directory", str(self.root / "packages")]  # fmt: skip
            ports, log = [PACKAGE_PORT], self.root / "packages.log"
        rec = processes.spawn(["ip", "netns", "exec", ns, sys.executable, *argv], log=log, env=env)
        state = self.state()
        state["servers"][which] = rec.to_json()
        self._save(state)
        _wait_for_ports([(address, p) for p in ports], what=f"the {which} stand-in", log=log)

    def stop_octopus(self) -> None:
        """The Octopus stand-in goes away (its state stays on disk)."""
        state = self.state()
        rec = state["servers"].pop("octopus", None)
        if rec:
            processes.terminate([processes.Recorded.from_json(rec)])
        self._save(state)

    def start_octopus(self) -> None:
        if "octopus" not in self.state()["servers"]:
            self._start_server("octopus", self._slot())

    def change_settings(self, **changes: Any) -> StandInSettings:
        """Make the stand-ins more or less real (StandInSettings' fields); the Octopus
        stand-in restarts if its part changed (tasks in flight then fail, as on a real
        restart). Returns the settings now in force."""
        before = self.settings()
        after = replace(before, **changes)
        state = self.state()
        state["settings"] = after.to_json()
        self._save(state)
        if any(getattr(before, f) != getattr(after, f) for f in after.OCTOPUS_FIELDS):
            self.stop_octopus()
            self.start_octopus()
        if before.tentacle_startup_seconds != after.tentacle_startup_seconds:
            for host in self.hosts():
                host.set_startup_seconds(after.tentacle_startup_seconds)
        return after

    def set_octopus_fault(
        self,
        status: int | None,
        times: int,
        *,
        match: str = "",
        methods: Iterable[str] = (),
        delay: float = 0,
    ) -> None:
        """The next `times` requests whose path contains `match` (and whose method is one of
        `methods`, if given) get HTTP `status`; with no status, each is held `delay`
        seconds before Octopus handles it (the work is done even if the client gave up)."""
        fault: dict[str, object] = {"status": status, "times": times, "match": match}
        if methods:
            fault["methods"] = list(methods)
        if delay:
            fault["delay"] = delay
        path = self.root / "octopus" / "faults.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(fault))
        tmp.replace(path)

    def _write_ssh_config(self) -> None:
        lines = ["# Written by `inv sandbox.up`: how to reach the sandbox hosts.", ""]
        for host in self.hosts():
            lines += [f"Host {host.name}", f"    HostName {host.address}", ""]
        lines += [
            "Host sbx*",
            "    User root",
            "    Port 22",
            f"    IdentityFile {self.root / 'client_key'}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {self.root / 'known_hosts'}",
            "    StrictHostKeyChecking accept-new",
            "",
        ]
        (self.root / "ssh_config").write_text("\n".join(lines))

    def _wait_for_ssh(self, hosts: list[Host]) -> None:
        _wait_for_ports(
            [(h.address, 22) for h in hosts],
            what=f"sshd on {len(hosts)} host(s)",
            log=hosts[0].dir / "sshd.log" if hosts else None,
        )


def _wait_for_ports(
    targets: list[tuple[str, int]], *, what: str, log: Path | None, timeout: float = 30.0
) -> None:
    pending = set(targets)
    deadline = time.monotonic() + timeout
    while pending:
        for target in sorted(pending):
            try:
                with socket.create_connection(target, timeout=0.5):
                    pending.discard(target)
            except OSError:
                pass
        if pending and time.monotonic() > deadline:
            where = f"; see {log}" if log else ""
            raise SandboxError(f"{what} did not start listening within {timeout:.0f} s{where}")
        if pending:
            time.sleep(0.05)


def _wait_until_gone(namespaces: list[str], timeout: float = HOST_EXIT_SECONDS) -> None:
    """Wait until no process is left in the namespaces. Killing a host's `unshare` only starts
    the end of its PID namespace: its processes go on exiting for a while (a big one takes
    seconds), and a following `up`, `start` or test must not meet them."""
    deadline = time.monotonic() + timeout
    while left := net.processes_in(namespaces):
        if time.monotonic() > deadline:
            raise SandboxError(
                f"processes {', '.join(map(str, left))} still run in the sandbox's network "
                f"namespaces {timeout:.0f} s after their hosts ended: end them and try again"
            )
        time.sleep(0.02)


def _is_ours(inventory: Path) -> bool:
    return inventory.read_text().startswith(INVENTORY_MARKER)


def _real_unshare() -> str:
    found = shutil.which("unshare")
    if found is None:
        raise SandboxError("the sandbox needs unshare (Debian package util-linux)")
    return found


def _new_api_key() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "API-" + "".join(secrets.choice(alphabet) for _ in range(26))


def _create_mount_points() -> None:
    created = _created_mount_points()
    for path in MOUNT_POINTS:
        if not os.path.isdir(path):
            os.makedirs(path)
            created.append(path)
    _CREATED_MOUNT_POINTS.write_text(json.dumps(sorted(set(created))))


def _created_mount_points() -> list[str]:
    if _CREATED_MOUNT_POINTS.exists():
        return json.loads(_CREATED_MOUNT_POINTS.read_text())
    return []


def _remove_mount_points_if_last() -> None:
    with net.slot_lock():
        if net.slots_in_use():
            return
        for path in _created_mount_points():
            with contextlib.suppress(OSError):
                os.rmdir(path)
        _CREATED_MOUNT_POINTS.unlink(missing_ok=True)
