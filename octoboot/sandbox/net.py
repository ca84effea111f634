"""The sandbox's network: one bridge, and one network namespace per host joined to it.

Each sandbox takes a *slot* k (1..250) and with it the names `ob<k>br` (bridge),
`ob<k>-<host>` (namespaces), `ob<k>h<i>` (host ends of the veth pairs) and the subnet
10.77.<k>.0/24: the controller is .1, the Octopus stand-in .2, hosts from .11 to .250 (240).
A *wide* sandbox, for more hosts than that, takes two slots k and k+1 (k even) and their
subnets together as 10.77.<k>.0/23: hosts 241 and on are 10.77.<k+1>.11 and up, and an
empty bridge `ob<k+1>br` keeps slot k+1 taken for every checkout. Everything is derived
from the slot, so `down` can remove it all after a crash from the slot alone. Nothing here
is reachable from outside this machine: the bridge has no uplink and no route leads out of
the namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from octoboot.errors import SandboxError

SUBNET_BASE = "10.77"
FIRST_HOST_OCTET = 11
HOSTS_PER_SLOT = 240
MAX_HOSTS = 2 * HOSTS_PER_SLOT  # a wide sandbox
_SLOT_LOCK = Path("/run/octoboot-sandbox-slots.lock")
_NAMED_NAMESPACES = Path("/run/netns")  # where `ip netns add` keeps them


@dataclass(frozen=True)
class Slot:
    number: int
    wide: bool = False  # with slot number + 1: up to MAX_HOSTS hosts

    @property
    def bridge(self) -> str:
        return f"ob{self.number}br"

    @property
    def reserved_bridge(self) -> str | None:
        """The empty bridge that keeps a wide sandbox's second slot taken."""
        return f"ob{self.number + 1}br" if self.wide else None

    @property
    def prefix_length(self) -> int:
        return 23 if self.wide else 24

    @property
    def max_hosts(self) -> int:
        return MAX_HOSTS if self.wide else HOSTS_PER_SLOT

    @property
    def controller_address(self) -> str:
        return f"{SUBNET_BASE}.{self.number}.1"

    @property
    def octopus_address(self) -> str:
        return f"{SUBNET_BASE}.{self.number}.2"

    @property
    def prefix(self) -> str:
        return f"ob{self.number}-"

    def namespace(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def host_address(self, index: int) -> str:
        if not 1 <= index <= self.max_hosts:
            raise SandboxError(f"a sandbox holds 1 to {self.max_hosts} hosts, not {index}")
        third, place = divmod(index - 1, HOSTS_PER_SLOT)
        return f"{SUBNET_BASE}.{self.number + third}.{FIRST_HOST_OCTET + place}"

    def veth(self, index: int) -> str:
        return f"ob{self.number}h{index}"


def ip(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        cmd = " ".join(args) if stdin is None else f"{' '.join(args)} <batch>"
        raise SandboxError(f"`ip {cmd}` failed: {proc.stderr.strip()}")
    return proc.stdout


@contextmanager
def slot_lock() -> Iterator[None]:
    """Serialise slot choice between sandboxes that start at the same time."""
    with open(_SLOT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def slots_in_use() -> set[int]:
    """Slots whose bridge exists, i.e. sandboxes that are up (in any checkout)."""
    bridges = {
        line.split(":")[1].strip().split("@")[0]
        for line in ip("-o", "link", "show", "type", "bridge").splitlines()
    }
    return {n for n in range(1, 251) if Slot(n).bridge in bridges}


def free_slot(wide: bool = False) -> Slot:
    """The lowest slot with no bridge yet (wide: an even one whose next is free too); call
    under slot_lock() and create the bridge."""
    used = slots_in_use()
    for number in range(2, 250, 2) if wide else range(1, 251):
        if number not in used and not (wide and number + 1 in used):
            return Slot(number, wide)
    raise SandboxError("no free sandbox slot: run `inv sandbox.down` in other checkouts")


def create_bridge(slot: Slot) -> None:
    ip("link", "add", slot.bridge, "type", "bridge")
    ip("addr", "add", f"{slot.controller_address}/{slot.prefix_length}", "dev", slot.bridge)
    ip("link", "set", slot.bridge, "up")
    if slot.reserved_bridge:
        ip("link", "add", slot.reserved_bridge, "type", "bridge")


def create_namespaces(slot: Slot, members: Sequence[tuple[str, int, str]]) -> None:
    """Namespaces joined to the bridge: members are (namespace, veth index, address)."""
    root = []
    for ns, index, _ in members:
        veth = slot.veth(index)
        root += [
            f"netns add {ns}",
            f"link add {veth} type veth peer name eth0 netns {ns}",
            f"link set {veth} master {slot.bridge} up",
        ]
    ip("-batch", "-", stdin="\n".join(root) + "\n")
    for ns, _, address in members:
        ipaddress.ip_address(address)
        up = "link set eth0 up\nlink set lo up\n"
        batch = f"addr add {address}/{slot.prefix_length} dev eth0\n{up}"
        ip("-netns", ns, "-batch", "-", stdin=batch)


def namespaces(prefix: str = "") -> list[str]:
    return [
        line.split()[0]
        for line in ip("netns", "list").splitlines()
        if line.strip() and line.split()[0].startswith(prefix)
    ]


def processes_in(names: Iterable[str]) -> list[int]:
    """The processes living in these network namespaces (`ip netns pids`, for many at once;
    a zombie has left its namespaces)."""
    wanted = set()
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            found = (_NAMED_NAMESPACES / name).stat()
            wanted.add((found.st_dev, found.st_ino))
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # it ended meanwhile
                found = os.stat(f"/proc/{entry.name}/ns/net")
                if (found.st_dev, found.st_ino) in wanted:
                    pids.append(int(entry.name))
    return pids


def remove_slot(slot: Slot) -> None:
    """Every namespace and the bridge of the slot; safe to call when some are gone. Under the
    slot lock, and the bridge last: until it is gone no other sandbox can take the slot."""
    with slot_lock():
        for ns in namespaces(slot.prefix):
            ip("netns", "delete", ns)
        links = [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines()]
        veths = [name for name in links if name.startswith(f"ob{slot.number}h")]
        bridges = [b for b in (slot.bridge, slot.reserved_bridge) if b and b in links]
        for name in [*veths, *bridges]:
            try:
                ip("link", "delete", name)
            except SandboxError as exc:
                # A veth goes away by itself once its namespace is gone.
                if "Cannot find device" not in str(exc):
                    raise


def set_blackhole(ns: str, controller_address: str, on: bool) -> None:
    """Make a host drop the controller's packets silently (no answer, no refusal)."""
    action = "replace" if on else "delete"
    if on or is_blackholed(ns, controller_address):
        ip("-netns", ns, "route", action, "blackhole", f"{controller_address}/32")


def is_blackholed(ns: str, controller_address: str) -> bool:
    return f"blackhole {controller_address}" in ip("-netns", ns, "route", "show")


# Inbound TCP connections other than SSH are dropped (SYN without ACK): what a host behind
# NAT or a firewall looks like from the controller's side. Its own outbound connections (a
# polling Tentacle's to Octopus) and their replies pass.
_SSH_ONLY_RULES = """\
table inet octoboot_sandbox {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport != 22 tcp flags & (syn | ack) == syn drop
    }
}
"""


def allow_only_ssh_in(ns: str) -> None:
    """Only SSH can reach the host from outside (nftables, in its own namespace)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=_SSH_ONLY_RULES, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SandboxError(f"cannot keep {ns} to SSH only (nft): {proc.stderr.strip()}")
