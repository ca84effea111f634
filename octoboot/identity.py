"""The identity store: one certificate per machine, minted once, kept on the controller.

    <state>/identities/            0700
    <state>/identities/web03.pfx   0600, PKCS#12 encrypted with the store's password

A machine's thumbprint is therefore known before anything is registered, and a rebuilt
machine of the same name gets the same certificate back: it returns to Octopus as itself.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from octoboot import certificates
from octoboot.errors import ConfigError


class IdentityStoreError(ConfigError):
    """The store cannot be used safely (permissions, password)."""


@dataclass(frozen=True)
class Identity:
    machine: str
    thumbprint: str
    path: Path
    created: bool = False
    key: rsa.RSAPrivateKey | None = field(default=None, repr=False, compare=False)
    cert: x509.Certificate | None = field(default=None, repr=False, compare=False)

    def unprotected_pfx(self) -> bytes:
        """The PFX re-encoded without a password, for its one trip to the host: the Tentacle
        command line is the only way to pass a PFX password, and command lines are public."""
        assert self.key is not None and self.cert is not None
        return certificates.to_pfx(self.key, self.cert, None, name=self.machine)


class IdentityStore:
    def __init__(self, state_dir: Path, password: str) -> None:
        self.dir = state_dir / "identities"
        self._password = password
        self._lock = threading.Lock()
        self._minting: dict[str, threading.Lock] = {}
        # Opening a PFX costs ~40 ms of key derivation: once per machine and run is enough.
        self._opened: dict[str, Identity] = {}

    def path(self, machine: str) -> Path:
        return self.dir / f"{machine}.pfx"

    def get(self, machine: str) -> Identity | None:
        path = self.path(machine)
        if not path.exists():
            self._opened.pop(machine, None)
            return None
        self._check_private(path)
        if machine in self._opened:
            return self._opened[machine]
        try:
            key, cert = certificates.load_pfx(path.read_bytes(), self._password)
        except OSError as exc:
            raise IdentityStoreError(f"cannot read {path}: {exc.strerror}") from None
        except certificates.CertificateError:
            raise IdentityStoreError(
                f"cannot open {path}: wrong OCTOBOOT_PFX_PASSWORD (it must be the one the "
                "identity was created with)"
            ) from None
        identity = Identity(machine, certificates.thumbprint(cert), path, key=key, cert=cert)
        self._opened[machine] = identity
        return identity

    def check(self, machines: list[str]) -> None:
        """Before any host is touched: the store is private and the password opens the
        identities of these machines (IdentityStoreError, a ConfigError, otherwise)."""
        if self.dir.exists():
            self._check_private(self.dir)
        for machine in machines:
            self.get(machine)

    def get_or_create(self, machine: str) -> Identity:
        """The machine's identity, minting and saving it the first time."""
        with self._lock:
            self._ensure_dir()
            minting = self._minting.setdefault(machine, threading.Lock())
        # One lock per machine: key generation releases the GIL, so machines mint in parallel.
        with minting:
            existing = self.get(machine)
            if existing:
                return existing
            key, cert = certificates.new_self_signed()
            data = certificates.to_pfx(key, cert, self._password, name=machine)
            path = self.path(machine)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            identity = Identity(
                machine, certificates.thumbprint(cert), path, created=True, key=key, cert=cert
            )
            self._opened[machine] = replace(identity, created=False)
            return identity

    def rename(self, old: str, new: str) -> bool:
        """Move old's identity to new (a machine renamed in the inventory keeps its
        certificate); False when old has none (e.g. moved by an earlier run)."""
        with self._lock:
            source, target = self.path(old), self.path(new)
            if not source.exists():
                return False
            self._check_private(source)
            try:
                # A link, unlike a rename, never replaces a file that exists.
                os.link(source, target)
            except FileExistsError:
                raise IdentityStoreError(
                    f"cannot give {new} the identity of {old}: {target} exists already (minted "
                    "for the new name); delete it if no host uses it, and run again"
                ) from None
            source.unlink()
            moved = self._opened.pop(old, None)
            if moved is not None:
                self._opened[new] = replace(moved, machine=new, path=target)
            return True

    def forget(self, machine: str) -> bool:
        self._opened.pop(machine, None)
        path = self.path(machine)
        if path.exists():
            path.unlink()
            return True
        return False

    def _ensure_dir(self) -> None:
        if not self.dir.exists():
            self.dir.mkdir(parents=True, mode=0o700)
        self._check_private(self.dir)

    @staticmethod
    def _check_private(path: Path) -> None:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            mode = "700" if path.is_dir() else "600"
            raise IdentityStoreError(
                f"refusing to use {path}: it is readable or writable by others "
                f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod {mode} {path}`"
            )
