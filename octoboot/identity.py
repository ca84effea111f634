"""The identity store: one certificate per machine, minted once, kept on the controller.

    <state>/identities/                        0700
    <state>/identities/web03.pfx               0600, PKCS#12 encrypted with the store's password
    <state>/identities/password-verifier.json  0600, proves the password before a mint

A machine's thumbprint is therefore known before anything is registered, and a rebuilt
machine of the same name gets the same certificate back: it returns to Octopus as itself.

A mistyped OCTOBOOT_PFX_PASSWORD must not mint a certificate that the right password cannot
open later. So the store proves the password before minting: against its verifier (an
scrypt hash, written with the store's first identity), or, in a store from before verifiers,
against a PFX that opens (and then writes the verifier). With the password proved, a PFX that
does not open is damaged, and is reported as such, for its machine only. Files are written
whole (temporary file, fsync, rename), so a crash or a full disk never leaves a cut-off PFX.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from octoboot import certificates
from octoboot.errors import ConfigError, OctobootError
from octoboot.files import write_atomic

VERIFIER = "password-verifier.json"
# scrypt's interactive-login cost (n=2^14, r=8): ~50 ms and 16 MB, once per run.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class IdentityStoreError(ConfigError):
    """The store cannot be used safely (permissions, password)."""


class DamagedIdentity(OctobootError):
    """One machine's PFX cannot be read although the password is right: that machine
    fails, the others go on."""


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
        self._proved = False  # the password is known to be the store's

    def path(self, machine: str) -> Path:
        return self.dir / f"{machine}.pfx"

    def get(self, machine: str) -> Identity | None:
        """The machine's identity, None if it has none; DamagedIdentity if its PFX cannot be
        read, IdentityStoreError if the password is not the store's."""
        path = self.path(machine)
        if not path.exists():
            self._opened.pop(machine, None)
            return None
        self._check_private(path)
        if machine in self._opened:
            return self._opened[machine]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self._damaged(machine, f"it cannot be read: {exc.strerror}") from None
        if not certificates.is_whole_pfx(data):
            cut = "it is not a whole PFX file: cut short or overwritten"
            raise self._damaged(machine, "it is empty" if not data else cut)
        try:
            key, cert = certificates.load_pfx(data, self._password)
        except certificates.CertificateError:
            with self._lock:
                self._prove()  # raises if the password is what is wrong
            raise self._damaged(
                machine, "it does not open with the store's password, which is the right one"
            ) from None
        identity = Identity(machine, certificates.thumbprint(cert), path, key=key, cert=cert)
        self._opened[machine] = identity
        return identity

    def check(self) -> None:
        """Before any host is touched: the store is private and the password is the store's
        (IdentityStoreError, a ConfigError, otherwise). Writes nothing; a damaged PFX is its
        machine's failure, not the run's."""
        if self.dir.exists():
            self._check_private(self.dir)
            with self._lock:
                self._prove()

    def get_or_create(self, machine: str) -> Identity:
        """The machine's identity, minting and saving it the first time (once the password
        is proved to be the store's)."""
        with self._lock:
            self._ensure_dir()
            self._ensure_verifier()
            minting = self._minting.setdefault(machine, threading.Lock())
        # One lock per machine: key generation releases the GIL, so machines mint in parallel.
        with minting:
            existing = self.get(machine)
            if existing:
                return existing
            key, cert = certificates.new_self_signed()
            data = certificates.to_pfx(key, cert, self._password, name=machine)
            path = self.path(machine)
            try:
                write_atomic(path, data, replace=False)
            except FileExistsError:  # another run minted it a moment ago: that one counts
                existing = self.get(machine)
                assert existing is not None
                return existing
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

    # --- the password ----------------------------------------------------------------------

    def _prove(self) -> bool:
        """Whether the password is proved to be the store's: by the verifier, else by a PFX
        it opens. False if there is nothing to prove it against (no verifier, no whole PFX);
        IdentityStoreError if it is not the store's. Call with self._lock held."""
        if self._proved:
            return True
        verifier = self.dir / VERIFIER
        if verifier.exists():
            self._check_private(verifier)
            if not _matches(self._read_verifier(verifier), self._password):
                raise IdentityStoreError(self._wrong_password(verifier))
            self._proved = True
            return True
        refused = None
        for path in sorted(self.dir.glob("*.pfx")):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if not certificates.is_whole_pfx(data):
                continue  # damaged: proves nothing either way
            try:
                certificates.load_pfx(data, self._password)
            except certificates.CertificateError:
                refused = refused or path
                continue
            self._proved = True
            return True
        if refused:
            raise IdentityStoreError(self._wrong_password(refused))
        return False

    def _ensure_verifier(self) -> None:
        """Before a mint: the password proved, and the verifier written if there is none
        (a new store, or one from before verifiers). Call with self._lock held."""
        verifier = self.dir / VERIFIER
        self._prove()
        if verifier.exists():
            return
        try:
            write_atomic(verifier, _new_verifier(self._password), replace=False)
        except FileExistsError:  # another run wrote it first: its password must be ours
            self._proved = False
            self._prove()
        self._proved = True

    def _read_verifier(self, path: Path) -> _Verifier:
        try:
            data = json.loads(path.read_text())
            return _Verifier(
                {name: int(data["scrypt"][name]) for name in ("n", "r", "p")},
                bytes.fromhex(data["salt"]),
                bytes.fromhex(data["key"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            raise IdentityStoreError(
                f"{path} is damaged: restore it from a backup, or delete it (the next run "
                "that mints writes a new one, proved against an identity that opens)"
            ) from None

    def _wrong_password(self, path: Path) -> str:
        return (
            f"OCTOBOOT_PFX_PASSWORD is not the password of the identity store {self.dir} "
            f"(checked against {path.name}): set the one the store was created with; "
            "nothing was changed"
        )

    def _damaged(self, machine: str, why: str) -> DamagedIdentity:
        return DamagedIdentity(
            f"the identity {self.path(machine)} is damaged ({why}): restore it from a backup, "
            f"or run `inv deregister --host {machine} --forget-identity` so that {machine} "
            "comes back as a new machine"
        )

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


@dataclass(frozen=True)
class _Verifier:
    scrypt: dict[str, int]
    salt: bytes
    key: bytes


def _new_verifier(password: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT, dklen=32)
    return json.dumps({"scrypt": _SCRYPT, "salt": salt.hex(), "key": key.hex()})


def _matches(verifier: _Verifier, password: str) -> bool:
    key = hashlib.scrypt(
        password.encode(), salt=verifier.salt, **verifier.scrypt, dklen=len(verifier.key)
    )
    return hmac.compare_digest(key, verifier.key)
