"""`deploykit secrets rotate` (issue 12): the store's previous values, which secrets are rotated, and the
workflow's order (refuse before anything when a host is down; two applies; half-way kept), with the applies
and the plan replaced by recorders (the real ones are the e2e test's)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from deploykit.apply import rotation
from deploykit.errors import DeploykitError, ExitCode
from deploykit.inventory import Inventory
from deploykit.secrets_store import SecretStore

PASSWORDS = ("cache-password", "db-app-password", "db-replication-password")


def stored(inv: Inventory) -> SecretStore:
    store = SecretStore(inv)
    for name in (*PASSWORDS, "tls-ca-key", "tls-ca-cert", "tls-edge-key", "tls-edge-cert"):
        store.get(name)
    return SecretStore(inv)


def test_rotate_keeps_the_old_value_as_previous_until_finished(lab_copy: Inventory) -> None:
    store = stored(lab_copy)
    old = store.get("db-app-password").reveal()
    store.rotate(["db-app-password"])
    again = SecretStore(lab_copy)  # what another command sees
    assert again.get("db-app-password").reveal() != old
    assert again.previous("db-app-password") is not None and again.previous("db-app-password").reveal() == old
    assert again.previous("cache-password") is None and again.rotating() == ["db-app-password"]
    # both values are redacted while the rotation is under way
    assert old not in again.redactor()(f"x {old} {again.get('db-app-password').reveal()}")
    # rotating it again keeps the oldest value (what hosts may still hold)
    again.rotate(["db-app-password"])
    assert SecretStore(lab_copy).previous("db-app-password").reveal() == old
    SecretStore(lab_copy).finish_rotation()
    done = SecretStore(lab_copy)
    assert done.rotating() == [] and done.previous("db-app-password") is None


def test_a_rotated_key_gets_a_certificate_made_from_it(lab_copy: Inventory) -> None:
    store = stored(lab_copy)
    key, cert = store.get("tls-edge-key").reveal(), store.get("tls-edge-cert").reveal()
    store.rotate(["tls-edge-key"])
    fresh = SecretStore(lab_copy)
    assert fresh.get("tls-edge-key").reveal() != key
    assert fresh.get("tls-edge-cert").reveal() != cert  # re-issued for the new key by its maker


def test_what_is_rotated_by_default_and_by_name(lab_copy: Inventory) -> None:
    store = stored(lab_copy)
    every = rotation.chosen(store, ())
    assert set(PASSWORDS) <= set(every) and "tls-edge-key" in every
    assert not {"tls-ca-key", "tls-ca-cert", "tls-edge-cert"} & set(every)
    assert rotation.chosen(store, ("cache-password", "cache-password")) == ["cache-password"]
    with pytest.raises(DeploykitError, match="tls-ca-key is not rotated: every client"):
        rotation.chosen(store, ("tls-ca-key",))
    with pytest.raises(DeploykitError, match="tls-edge-cert is public and made from its key"):
        rotation.chosen(store, ("tls-edge-cert",))
    with pytest.raises(DeploykitError, match="no secret named 'cache-pasword' to rotate \\(did you mean "
                                             "'cache-password'\\?\\)"):
        rotation.chosen(store, ("cache-pasword",))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The plan and the applies replaced: `down` hosts unreachable, `codes` the applies' exit codes."""
    record: dict[str, Any] = {"applies": [], "down": {}, "codes": [ExitCode.OK, ExitCode.OK]}

    def plan(inv: Any, placement: Any, err: Any, limit: Any, accept: Any, *, ensure_facts: bool) -> Any:
        return SimpleNamespace(has_errors=bool(record["down"]), unreachable=record["down"], probe_failed={}), None

    def apply(target: Path, out: Any, err: Any, **kwargs: Any) -> int:
        store = SecretStore(rotation.load_inventory(target), create_key=False)
        record["applies"].append(store.rotating())
        return int(record["codes"][len(record["applies"]) - 1])

    monkeypatch.setattr(rotation, "_plan", plan)
    monkeypatch.setattr(rotation, "apply_target", apply)
    monkeypatch.setattr("deploykit.execute.executor.disconnect", lambda session: None)
    return record


def console() -> Console:
    return Console(file=open("/dev/null", "w"))  # noqa: SIM115


def test_two_applies_first_with_both_values_then_with_the_new_ones_only(lab_copy: Inventory,
                                                                       recorded: dict[str, Any]) -> None:
    old = stored(lab_copy).get("cache-password").reveal()
    code = rotation.rotate_secrets(lab_copy.path, ("cache-password",), console(), console(), yes=True,
                                   show_diffs=False)
    assert code == ExitCode.OK
    assert recorded["applies"] == [["cache-password"], []]
    assert SecretStore(lab_copy).get("cache-password").reveal() != old


def test_nothing_is_rotated_while_a_host_cannot_be_reached(lab_copy: Inventory, recorded: dict[str, Any]) -> None:
    old = stored(lab_copy).get("cache-password").reveal()
    recorded["down"] = {"fra1-data-1": "connection refused"}
    with pytest.raises(DeploykitError, match=r"not rotating: 1 host\(s\) cannot be planned \(fra1-data-1\)"):
        rotation.rotate_secrets(lab_copy.path, (), console(), console(), yes=True, show_diffs=False)
    assert recorded["applies"] == [] and SecretStore(lab_copy).get("cache-password").reveal() == old
    assert SecretStore(lab_copy).rotating() == []


def test_a_failed_first_apply_leaves_the_rotation_half_way_and_a_rerun_finishes_it(
        lab_copy: Inventory, recorded: dict[str, Any]) -> None:
    stored(lab_copy)
    recorded["codes"] = [ExitCode.ERROR, ExitCode.OK, ExitCode.OK]
    assert rotation.rotate_secrets(lab_copy.path, ("db-app-password",), console(), console(), yes=True,
                                   show_diffs=False) == ExitCode.ERROR
    half = SecretStore(lab_copy)
    assert half.rotating() == ["db-app-password"]
    new = half.get("db-app-password").reveal()
    with pytest.raises(DeploykitError, match="a rotation of db-app-password is under way: finish it first"):
        rotation.rotate_secrets(lab_copy.path, ("cache-password",), console(), console(), yes=True,
                                show_diffs=False)
    assert rotation.rotate_secrets(lab_copy.path, (), console(), console(), yes=True,
                                   show_diffs=False) == ExitCode.OK
    assert recorded["applies"] == [["db-app-password"], ["db-app-password"], []]
    assert SecretStore(lab_copy).get("db-app-password").reveal() == new  # finished, not rotated again
