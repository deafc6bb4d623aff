from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from deploykit import secrets_store
from deploykit.secrets_store import SecretMaker, SecretsError, SecretStore, key_path, secrets_path

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"


@pytest.fixture()
def inv(lab_copy):
    return lab_copy


def test_generated_once_stored_encrypted_and_stable(inv):
    store = SecretStore(inv)
    pw = store.get("db-superuser-password")
    assert len(pw.reveal()) == 32 and pw.reveal().isalnum()
    raw = store.path.read_bytes()
    assert pw.reveal().encode() not in raw and b"db-superuser-password" not in raw
    again = SecretStore(inv)
    assert again.get("db-superuser-password") == pw
    assert again.names() == ["db-superuser-password"]
    key = again.key_file
    assert key.stat().st_mode & 0o777 == 0o600
    assert not key.is_relative_to(inv.directory)


def test_secret_repr_is_redacted(inv):
    pw = SecretStore(inv).get("cache-password")
    assert pw.reveal() not in repr(pw) and pw.reveal() not in str(pw) and pw.reveal() not in f"{pw}"


def test_redactor_replaces_every_value(inv):
    store = SecretStore(inv)
    a, b = store.get("a"), store.get("b")
    text = f"x={a.reveal()} y={b.reveal()}"
    assert store.redactor()(text) == "x=<redacted:a> y=<redacted:b>"


def test_wrong_key_is_a_clear_error(inv, tmp_path, monkeypatch):
    SecretStore(inv).get("x")
    other = tmp_path / "other.key"
    from cryptography.fernet import Fernet

    other.write_bytes(Fernet.generate_key())
    monkeypatch.setenv("DEPLOYKIT_KEY_FILE", str(other))
    with pytest.raises(SecretsError, match="cannot be decrypted"):
        SecretStore(inv)


def test_missing_key_with_existing_secrets_is_refused(inv):
    store = SecretStore(inv)
    store.get("x")
    os.remove(store.key_file)
    with pytest.raises(SecretsError, match="key .* is missing"):
        SecretStore(inv)


def test_key_inside_inventory_directory_is_refused(inv, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_KEY_FILE", str(inv.directory / "k.key"))
    with pytest.raises(SecretsError, match="inside the inventory directory"):
        SecretStore(inv)


def test_unknown_secret_lists_known(inv):
    store = SecretStore(inv)
    store.get("cache-password")
    with pytest.raises(SecretsError, match="known: cache-password"):
        store.existing("nope")


# --- the deployment name cannot lead the key or the secrets file elsewhere (defence in depth: validation
# already restricts `name` to a slug; these inventories are built directly, bypassing it) -------------------


def _named(inv, name: str):
    return dataclasses.replace(inv, name=name)


@pytest.mark.parametrize("name", ["../escaped", "../../../tmp/escaped", "sub/dir", "/abs/olute", "a\x00b"])
def test_key_path_outside_the_keys_directory_is_refused(inv, tmp_path, name):
    with pytest.raises(SecretsError, match=r"deployment name .* would put the secrets key at .*; "
                                           r"the name must be a plain slug like 'chirp'"):
        key_path(_named(inv, name))


@pytest.mark.parametrize("name", ["../escaped", "../../x", "sub/dir", "/abs/olute", "a\x00b"])
def test_secrets_file_outside_the_inventory_directory_is_refused(inv, monkeypatch, tmp_path, name):
    monkeypatch.setenv("DEPLOYKIT_KEY_FILE", str(tmp_path / "elsewhere.key"))  # the key path is not the point
    with pytest.raises(SecretsError, match=r"deployment name .* would put the secrets file at .*; "
                                           r"the name must be a plain slug like 'chirp'"):
        secrets_path(_named(inv, name))
    with pytest.raises(SecretsError, match="the secrets file"):
        SecretStore(_named(inv, name))


def test_escaping_name_creates_nothing(inv, tmp_path):
    # "../escaped" would lead both files one level up: still inside tmp_path, where the test can look
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(SecretsError):
        SecretStore(_named(inv, "../escaped")).get("x")
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_an_inventory_built_directly_with_a_plain_name_still_works(inv, tmp_path):
    store = SecretStore(_named(inv, "other"))
    store.get("x")
    assert store.key_file == (tmp_path / "config" / "deploykit" / "keys" / "other.key").resolve()
    assert store.path == inv.directory / "other.secrets"


# --- secrets made by their owner (SecretMaker): kept while good, made again when not -----------------------------


@pytest.fixture()
def counter(monkeypatch):
    """Makers for `test-made-*`: `test-made-base` is a counter (kept while under 3), `test-made-derived` is made
    from it (asking the store for it, as the edge certificate asks for the CA), `test-made-public` not redacted."""
    made: list[str] = []

    def base(store, name, current):
        made.append(name)
        return current if current is not None and int(current) < 3 else str(made.count(name))

    def derived(store, name, current):
        made.append(name)
        want = "from-" + store.get("test-made-base").reveal()
        return current if current == want else want

    for maker in (SecretMaker("test-made-base", base), SecretMaker("test-made-derived", derived),
                  SecretMaker("test-made-public", lambda store, name, current: "public-value", public=True)):
        monkeypatch.setitem(secrets_store._MAKERS, maker.pattern, maker)
    return made


def test_a_made_secret_is_kept_while_its_maker_keeps_it(inv, counter):
    store = SecretStore(inv)
    assert store.get("test-made-derived").reveal() == "from-1"  # the derived one asked for the base (re-entrant)
    assert store.get("test-made-derived").reveal() == "from-1"
    again = SecretStore(inv)
    before = again.path.read_bytes()
    assert again.get("test-made-derived").reveal() == "from-1"
    assert again.path.read_bytes() == before  # judged current: nothing written
    assert "test-made-base" in again.names()


def test_a_made_secret_the_maker_replaces_is_stored_before_it_is_used(inv, counter):
    store = SecretStore(inv)
    store.get("test-made-base")
    store._values["test-made-base"] = "7"  # noqa: SLF001 (as if stored so by an earlier run)
    store._checked.clear()  # noqa: SLF001
    new = store.get("test-made-base").reveal()
    assert new != "7" and SecretStore(inv).existing("test-made-base").reveal() == new


def test_another_runs_value_is_judged_not_overwritten(inv, counter):
    ours, theirs = SecretStore(inv), SecretStore(inv)
    ours.get("x")
    assert theirs.get("test-made-base").reveal() == "1"  # another run made it meanwhile
    ours._values["test-made-base"] = "9"  # noqa: SLF001 (ours is stale and bad: remake, but from theirs)
    assert ours.get("test-made-base").reveal() == "1"
    assert set(SecretStore(inv).names()) == {"x", "test-made-base"}


def test_public_made_values_are_not_redacted_private_ones_and_pem_keys_are(inv, counter):
    store = SecretStore(inv)
    base, public = store.get("test-made-base").reveal(), store.get("test-made-public").reveal()
    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----"
    assert store.redactor()(f"{base} {public} {key}") == "<redacted:test-made-base> public-value <redacted:private key>"
