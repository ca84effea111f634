import errno
import itertools
import os
import shutil
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from octoboot import certificates, files
from octoboot.files import StateWriteError
from octoboot.identity import VERIFIER, DamagedIdentity, IdentityStore, IdentityStoreError


@pytest.fixture(autouse=True, scope="module")
def cheap_minting():
    """Minting at a fraction of its cost, which is not what these tests are about: the
    password verifier's scrypt cheaper (the verifier records the parameters it was made with,
    so it proves and refuses the same at any cost), and the RSA keys taken in turn from three
    made once (each certificate is still new: its own serial, its own thumbprint). New keys
    are test_certificates' subject."""
    keys = itertools.cycle([rsa.generate_private_key(65537, 2048) for _ in range(3)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("octoboot.identity._SCRYPT", {"n": 2**4, "r": 8, "p": 1})
        patch.setattr(rsa, "generate_private_key", lambda public_exponent, key_size: next(keys))
        yield


def test_first_use_mints_and_later_uses_return_the_same_identity(tmp_path):
    store = IdentityStore(tmp_path, "pw")
    first = store.get_or_create("web01")
    again = IdentityStore(tmp_path, "pw").get_or_create("web01")
    assert first.created and not again.created
    assert first.thumbprint == again.thumbprint
    assert certificates.thumbprint(certificates.load_pfx(first.path.read_bytes(), "pw")[1]) == (
        first.thumbprint
    )
    assert store.get_or_create("web02").thumbprint != first.thumbprint


def test_files_are_private(tmp_path):
    identity = IdentityStore(tmp_path, "pw").get_or_create("web01")
    assert stat.S_IMODE(identity.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.path.parent.stat().st_mode) == 0o700


def test_the_pfx_is_password_protected_at_rest(tmp_path):
    identity = IdentityStore(tmp_path, "pw").get_or_create("web01")
    with pytest.raises(certificates.CertificateError):
        certificates.load_pfx(identity.path.read_bytes(), None)


def test_the_copy_for_the_host_opens_without_a_password_and_has_the_same_thumbprint(tmp_path):
    identity = IdentityStore(tmp_path, "pw").get_or_create("web01")
    _, cert = certificates.load_pfx(identity.unprotected_pfx(), None)
    assert certificates.thumbprint(cert) == identity.thumbprint


def test_wrong_password_is_a_clear_error_without_the_password(tmp_path):
    IdentityStore(tmp_path, "right-password").get_or_create("web01")
    with pytest.raises(IdentityStoreError) as err:
        IdentityStore(tmp_path, "wrong-password").get_or_create("web01")
    assert "OCTOBOOT_PFX_PASSWORD" in str(err.value)
    assert "wrong-password" not in str(err.value) and "right-password" not in str(err.value)


def test_a_store_others_can_read_is_refused(tmp_path):
    store = IdentityStore(tmp_path, "pw")
    store.get_or_create("web01")
    os.chmod(store.dir, 0o755)
    with pytest.raises(IdentityStoreError, match="chmod 700"):
        store.get_or_create("web02")


def test_forget(tmp_path):
    store = IdentityStore(tmp_path, "pw")
    store.get_or_create("web01")
    assert store.forget("web01") and store.get("web01") is None
    assert not store.forget("web01")


# --- the password is proved before a mint ---------------------------------------------------


def test_a_mistyped_password_mints_nothing(tmp_path):
    IdentityStore(tmp_path, "right").get_or_create("web01")
    before = sorted(os.listdir(tmp_path / "identities"))
    store = IdentityStore(tmp_path, "mistyped")
    for attempt in (store.check, lambda: store.get_or_create("web02")):
        with pytest.raises(IdentityStoreError, match="OCTOBOOT_PFX_PASSWORD is not the password"):
            attempt()
    assert sorted(os.listdir(tmp_path / "identities")) == before
    assert IdentityStore(tmp_path, "right").get_or_create("web02").created


def test_the_verifier_refuses_a_wrong_password_when_no_identity_is_left(tmp_path):
    store = IdentityStore(tmp_path, "right")
    store.get_or_create("web01")
    store.forget("web01")
    with pytest.raises(IdentityStoreError, match=r"checked against password-verifier\.json"):
        IdentityStore(tmp_path, "mistyped").get_or_create("web02")
    assert not (tmp_path / "identities" / "web02.pfx").exists()


def test_a_store_from_before_verifiers_is_proved_against_its_pfx_then_gets_one(tmp_path):
    IdentityStore(tmp_path, "right").get_or_create("web01")
    verifier = tmp_path / "identities" / VERIFIER
    verifier.unlink()  # as a store written before verifiers existed
    with pytest.raises(IdentityStoreError, match=r"checked against web01\.pfx"):
        IdentityStore(tmp_path, "mistyped").get_or_create("web02")
    assert not verifier.exists() and not (tmp_path / "identities" / "web02.pfx").exists()
    IdentityStore(tmp_path, "right").check()  # read-only: proves, writes nothing
    assert not verifier.exists()
    IdentityStore(tmp_path, "right").get_or_create("web02")
    assert stat.S_IMODE(verifier.stat().st_mode) == 0o600
    with pytest.raises(IdentityStoreError):
        IdentityStore(tmp_path, "mistyped").check()


def test_a_damaged_verifier_says_what_to_do(tmp_path):
    IdentityStore(tmp_path, "pw").get_or_create("web01")
    (tmp_path / "identities" / VERIFIER).write_text("{")
    with pytest.raises(IdentityStoreError, match="is damaged: restore it from a backup, or delete"):
        IdentityStore(tmp_path, "pw").check()


# --- a damaged PFX is that machine's problem, and says so ------------------------------------


@pytest.fixture(scope="module")
def two_minted(tmp_path_factory):
    """A state folder whose store (password "pw") holds web01 and web02: minting is slow."""
    state = tmp_path_factory.mktemp("minted")
    store = IdentityStore(state, "pw")
    store.get_or_create("web01")
    store.get_or_create("web02")
    return state


def _empty(data: bytes) -> bytes:
    return b""


def _cut_short(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flipped(data: bytes) -> bytes:
    # A bit flipped inside: still a whole file, but its MAC no longer matches.
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_empty, "it is empty"),
        (_cut_short, "not a whole PFX file"),
        (_flipped, "does not open with the store's password, which is the right one"),
    ],
)
@pytest.mark.parametrize("with_verifier", [True, False])
def test_a_damaged_pfx_is_reported_as_damaged_for_its_machine_only(
    tmp_path, two_minted, damage, why, with_verifier
):
    shutil.copytree(two_minted, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "identities" / "web02.pfx"
    path.write_bytes(damage(path.read_bytes()))
    if not with_verifier:
        (tmp_path / "identities" / VERIFIER).unlink()
    damaged_bytes = path.read_bytes()
    store = IdentityStore(tmp_path, "pw")
    store.check()  # the store and its password are fine: the run goes on
    assert store.get("web01") is not None
    for attempt in (store.get, store.get_or_create):
        with pytest.raises(DamagedIdentity) as err:
            attempt("web02")
        message = str(err.value)
        assert f"the identity {path} is damaged" in message and why in message
        assert "restore it from a backup" in message
        assert "inv deregister --host web02 --forget-identity" in message
        assert "OCTOBOOT_PFX_PASSWORD" not in message
    assert path.read_bytes() == damaged_bytes  # never minted over


def test_a_full_disk_while_minting_leaves_no_pfx(tmp_path, two_minted, monkeypatch):
    shutil.copytree(two_minted, tmp_path, dirs_exist_ok=True)
    store = IdentityStore(tmp_path, "pw")
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(StateWriteError, match=r"web03\.pfx: No space left on device"):
        store.get_or_create("web03")
    assert sorted(os.listdir(store.dir)) == [VERIFIER, "web01.pfx", "web02.pfx"]
    monkeypatch.setattr(files.os, "write", real_write)
    assert store.get("web03") is None and store.get_or_create("web03").created


def test_rename_moves_the_identity_and_never_replaces_one(tmp_path):
    store = IdentityStore(tmp_path, "pw")
    old = store.get_or_create("web01")
    assert store.rename("web01", "web01-new")
    assert store.get("web01") is None and not store.path("web01").exists()
    moved = IdentityStore(tmp_path, "pw").get("web01-new")
    assert moved is not None and moved.thumbprint == old.thumbprint
    assert store.get("web01-new").thumbprint == old.thumbprint
    assert not store.rename("web01", "web01-new")  # already moved: nothing to do

    store.get_or_create("web02")
    minted = store.get_or_create("web02-new")
    with pytest.raises(IdentityStoreError, match="exists already"):
        store.rename("web02", "web02-new")
    assert store.get("web02-new").thumbprint == minted.thumbprint
    assert store.get("web02") is not None
