"""One sandbox host: a real sshd as PID 1 of its own namespaces, with its own disk folders.

On the controller a host is a folder:

    hosts/<name>/ssh_host_ed25519_key(.pub)  its SSH host key (new on every rebuild)
    hosts/<name>/sshd_config
    hosts/<name>/disk/...                    what the host sees at /opt/octopus, /etc/octopus,
                                             /home/Octopus, /etc/systemd/system and /tmp
    hosts/<name>/control/                    /run/octoboot-sandbox on the host: faults.json,
                                             latency.json, argv.jsonl (every Tentacle call),
                                             systemctl state
    hosts/<name>/sshd.log

The process tree is `ip netns exec` → `unshare --pid --fork --kill-child` → host_init.sh,
which becomes sshd. Killing the recorded unshare process kills PID 1 of the host's PID
namespace, and with it every process the host ever started (Tentacle services included).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from octoboot.files import write_atomic
from octoboot.sandbox import processes

DISK_MOUNTS = {
    "opt-octopus": "/opt/octopus",
    "etc-octopus": "/etc/octopus",
    "home-Octopus": "/home/Octopus",
    "etc-systemd-system": "/etc/systemd/system",
    "tmp": "/tmp",
}
INIT_SCRIPT = Path(__file__).with_name("host_init.sh")

SSHD_CONFIG = """\
# A sandbox host. Root logs in with the sandbox's client key only.
Port 22
ListenAddress 0.0.0.0
HostKey {host_dir}/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile {host_dir}/authorized_keys
PermitRootLogin prohibit-password
# The sandbox may live under /tmp (tests), whose mode StrictModes rejects.
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 500:30:1000
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel INFO
"""


@dataclass(frozen=True)
class Host:
    """A sandbox host as the controller knows it."""

    name: str
    index: int
    address: str
    namespace: str
    dir: Path

    @property
    def control(self) -> Path:
        return self.dir / "control"

    @property
    def host_key_public(self) -> str:
        return (self.dir / "ssh_host_ed25519_key.pub").read_text().strip()

    def disk_path(self, path_on_host: str) -> Path:
        """The controller's path of a file the host sees at path_on_host."""
        for folder, mount in DISK_MOUNTS.items():
            if path_on_host == mount or path_on_host.startswith(mount + "/"):
                return self.dir / "disk" / folder / path_on_host[len(mount) :].lstrip("/")
        raise ValueError(f"{path_on_host} is not on a sandbox host's own disk")

    def tentacle_calls(self) -> list[list[str]]:
        """Every argument list the host's Tentacle was called with, oldest first."""
        log = self.control / "argv.jsonl"
        if not log.exists():
            return []
        return [json.loads(line)["argv"] for line in log.read_text().splitlines() if line]

    def set_faults(self, faults: dict[str, object]) -> None:
        path = self.control / "faults.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        tmp.replace(path)

    def set_startup_seconds(self, seconds: float) -> None:
        """How long every Tentacle command on this host takes to start."""
        path = self.control / "latency.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"startup_seconds": seconds}))
        tmp.replace(path)

    def refuse_login(self, refuse: bool, authorized_keys: Path) -> None:
        """sshd reads authorized_keys at every login: empty, the client key is refused."""
        target = self.dir / "authorized_keys"
        if refuse:
            target.write_text("")
        else:
            shutil.copyfile(authorized_keys, target)

    def faults(self) -> dict[str, object]:
        path = self.control / "faults.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # --- life cycle -------------------------------------------------------------------

    def create(self, authorized_keys: Path) -> None:
        """Lay out the host's folders and a new host key (an empty disk)."""
        for folder in DISK_MOUNTS:
            (self.dir / "disk" / folder).mkdir(parents=True, exist_ok=True)
        (self.dir / "disk" / "tmp").chmod(0o1777)
        self.control.mkdir(parents=True, exist_ok=True)
        self.new_host_key()
        # A copy per host, so that one host can refuse the key (the refuse_login fault).
        shutil.copyfile(authorized_keys, self.dir / "authorized_keys")
        (self.dir / "sshd_config").write_text(SSHD_CONFIG.format(host_dir=self.dir))

    def new_host_key(self) -> None:
        write_ssh_key(self.dir / "ssh_host_ed25519_key", comment=self.name)

    def wipe_disk(self) -> None:
        shutil.rmtree(self.dir / "disk", ignore_errors=True)

    def boot(self, shared: Path, keep_under_tmp: list[str]) -> processes.Recorded:
        """Start the host's namespaces and sshd; returns the process to end it by."""
        # A new PID namespace numbers from 1 again: pid files of the last boot lie.
        shutil.rmtree(self.control / "units", ignore_errors=True)
        argv = [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc",
            "/bin/sh", str(INIT_SCRIPT), self.name, str(self.dir), str(shared),
            *keep_under_tmp,
        ]  # fmt: skip
        return processes.spawn(argv, log=self.dir / "sshd.log")


def write_ssh_key(private: Path, *, comment: str) -> None:
    """A new Ed25519 key pair in OpenSSH format: private (0600) and private + '.pub'."""
    key = ed25519.Ed25519PrivateKey.generate()
    write_atomic(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private.with_name(private.name + ".pub").write_text(f"{public.decode()} {comment}\n")


def paths_to_keep_visible(sandbox_root: Path) -> list[str]:
    """Controller paths a host needs (python, this package, the sandbox's own files) that
    its private /tmp would hide."""
    needed = {
        Path(sys.prefix).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(__file__).resolve().parents[2],
        sandbox_root.resolve(),
    }
    return sorted(str(p) for p in needed if p.is_relative_to("/tmp"))
