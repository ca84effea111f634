import os
import stat

import pytest

from octoboot import certificates
from octoboot.identity import IdentityStore, IdentityStoreError


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
