"""Host facts in the online plan: read (or made, for a plan that will be applied) in the probe's one round trip,
used by the services that read them, kept beside the inventory, and their findings reported. The executor's
connect and probe are replaced by in-memory fakes that answer as the probe script would; the probe script
itself runs for real under `sh` below."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploykit.apply import planner
from deploykit.execute import executor
from deploykit.execute.probe import ProbeSpec, parse_probe, probe_command
from deploykit.facts_store import facts_path, load_facts, merge_facts
from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.secrets_store import SecretStore
from deploykit.services.backup.config import HOST_KEY_FACT as BACKUP_HOST_KEY
from deploykit.services.backup.config import KEY_FACT as BACKUP_KEY
from deploykit.services.mesh import keys

REPO = Path(__file__).resolve().parents[2]


def test_the_probe_script_reports_each_fact_or_why_it_failed() -> None:
    spec = ProbeSpec(facts=(("one", "echo ignored; echo 'a value'"), ("two", "echo 'no such tool' >&2; exit 3"),
                            ("none", "true")))
    out = subprocess.run(["/bin/sh", "-c", probe_command(spec)], capture_output=True, text=True, check=True).stdout
    facts = parse_probe(spec, out.splitlines())
    assert facts.facts == {"one": "a value", "none": ""}
    assert facts.fact_errors == {"two": "no such tool"}


def test_facts_change_the_fingerprint_of_a_saved_plan() -> None:
    spec = ProbeSpec(facts=(("k", "true"),))
    a = parse_probe(spec, ["@@FACT k abc", "@@END"])
    b = parse_probe(spec, ["@@FACT k abd", "@@END"])
    assert a.fingerprint() != b.fingerprint()


def test_unsafe_fact_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unsafe fact name"):
        ProbeSpec(facts=(("a b; rm -rf /", "true"),))


def test_stored_facts_fill_in_for_hosts_not_read_but_never_moments() -> None:
    stored = {"a": {"key": "A1", "handshakes": "old"}, "b": {"key": "B1", "handshakes": "old"}}
    got = merge_facts(stored, {"a": {"key": "A2", "handshakes": "new"}}, frozenset({"key"}))
    assert got == {"a": {"key": "A2", "handshakes": "new"}, "b": {"key": "B1"}}


# --- make_plan with fake connect and probe ---------------------------------------------------------------------

@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """inventories/lab.yml copied to tmp_path (its state files are written there), with fakes for connect and
    probe that answer like hosts with nothing installed, whose mesh keys are `key-<host>` and, where the probe
    asks for them, whose pgBackRest keys are `ssh-ed25519 user-<host>` and `ssh-ed25519 host-<host>`."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "inventories").mkdir()
    monkeypatch.setenv("DEPLOYKIT_KEY_FILE", str(tmp_path / "keys" / "key"))
    path = tmp_path / "inventories" / "lab.yml"
    path.write_text((REPO / "inventories" / "lab.yml").read_text())
    inv = load_inventory(path)
    seen: dict[str, ProbeSpec] = {}
    answers: dict[str, list[str]] = {}

    def connect(hosts, **_: object):
        return SimpleNamespace(unreachable={})

    def probe(session, specs: dict[str, ProbeSpec]):
        seen.update(specs)
        out = {}
        for name, spec in specs.items():
            backup = [f"@@FACT {BACKUP_KEY} ssh-ed25519 user-{name}",
                      f"@@FACT {BACKUP_HOST_KEY} ssh-ed25519 host-{name}"] if BACKUP_KEY in dict(spec.facts) else []
            lines = answers.get(name, [f"@@FACT mesh-public-key key-{name}", "@@FACT mesh-kernel userspace", *backup])
            out[name] = parse_probe(spec, [*lines, "@@END"])
        return out, {}

    monkeypatch.setattr(executor, "connect", connect)
    monkeypatch.setattr(executor, "probe", probe)

    def plan(ensure: bool = False, hosts=None):
        p, _ = planner.make_plan(inv, plan_placement(inv), SecretStore(inv), list(hosts or inv.hosts),
                                 ensure_facts=ensure)
        return p

    return SimpleNamespace(inv=inv, plan=plan, seen=seen, answers=answers)


def mesh_conf(plan, host: str) -> str:
    hp = plan.hosts[host]
    (change,) = [c for rc in hp.roles if rc.role == "mesh" for c in rc.files if c.file.path.endswith("mesh0.conf")]
    return change.file.content


def test_a_plain_plan_only_reads_facts_and_a_plan_to_apply_makes_them(lab) -> None:
    lab.plan(ensure=False)
    assert dict(lab.seen["fra1-web-1"].facts)["mesh-public-key"] == keys.READ_PUBLIC_KEY
    lab.plan(ensure=True)
    assert dict(lab.seen["fra1-web-1"].facts)["mesh-public-key"] == keys.ENSURE_PUBLIC_KEY


def test_the_mesh_config_is_computed_with_the_keys_just_read(lab) -> None:
    plan = lab.plan()
    conf = mesh_conf(plan, "fra1-web-1")
    others = [h.name for h in lab.inv.hosts if h.name != "fra1-web-1"]
    assert all(f"PublicKey = key-{n}" in conf for n in others)
    assert "key-fra1-web-1" not in conf and "left out" not in conf
    packages = [p for rc in plan.hosts["fra1-web-1"].roles if rc.role == "mesh" for p in rc.packages]
    assert packages == ["wireguard-tools", "wireguard-go"]  # the probe found no WireGuard in the kernel


def test_keys_are_kept_beside_the_inventory_and_used_for_hosts_not_reached(lab) -> None:
    lab.plan()
    stored = json.loads(facts_path(lab.inv).read_text())
    assert stored["ams1-data-1"] == {"backup-host-key": "ssh-ed25519 host-ams1-data-1",
                                     "backup-ssh-key": "ssh-ed25519 user-ams1-data-1",
                                     "mesh-kernel": "userspace", "mesh-public-key": "key-ams1-data-1"}
    plan = lab.plan(hosts=[lab.inv.host("fra1-web-1")])  # as with --limit fra1-web-1
    assert "PublicKey = key-ams1-data-1" in mesh_conf(plan, "fra1-web-1")
    assert load_facts(lab.inv)["ams1-data-1"]["mesh-public-key"] == "key-ams1-data-1"


def test_a_host_whose_key_could_not_be_made_fails_its_plan_with_the_reason(lab) -> None:
    lab.answers["rbx1-web-2"] = ["@@FACTERR mesh-public-key neither wg nor openssl is installed"]
    plan = lab.plan(ensure=True)
    assert plan.probe_failed == {"rbx1-web-2": "mesh-public-key: neither wg nor openssl is installed"}
    assert "rbx1-web-2" not in plan.hosts


def test_a_stale_tunnel_is_a_finding_named_in_the_plan(lab) -> None:
    now = 1_800_000_000
    pairs = " ".join(f"key-{h.name}={now - (900 if h.name == 'ams1-web-1' else 10)}"
                     for h in lab.inv.hosts if h.name != "fra1-web-1")
    lab.answers["fra1-web-1"] = ["@@FACT mesh-public-key key-fra1-web-1", f"@@FACT mesh-handshakes {now} {pairs}"]
    plan = lab.plan()
    assert plan.findings == {"fra1-web-1": ["mesh: no WireGuard handshake with ams1-web-1 in the last 300 s"]}


def test_a_service_reading_another_services_fact_is_computed_again_with_it(lab) -> None:
    """The pooler orders its rollout by db's leader fact (`reads_facts`): read in the same probe, it applies."""
    for h in ("ams1-data-1", "fra1-data-1", "rbx1-data-1"):
        lab.answers[h] = [f"@@FACT mesh-public-key key-{h}", "@@FACT mesh-kernel userspace",
                          f"@@FACT db-leader {'200' if h == 'fra1-data-1' else '503'}"]
    plan = lab.plan()
    order = {h: rc.rollout_order for h, hp in plan.hosts.items() for rc in hp.roles if rc.role == "pooler"}
    assert order == {"ams1-data-1": 0, "fra1-data-1": 1, "rbx1-data-1": 0}  # the leader's pooler last
    db = {h: rc.rollout_order for h, hp in plan.hosts.items() for rc in hp.roles if rc.role == "db"}
    assert db == {"ams1-data-1": 1, "fra1-data-1": 0, "rbx1-data-1": 1}  # and its Patroni first
