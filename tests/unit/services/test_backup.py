"""Service backup (pgBackRest): repositories and members from the inventory, each host's settings from its
peers' SSH keys (facts), WAL archiving as the db service is told it, the tier rule, the desired state and its
rendered files (golden), the key scripts run for real, the cipher keys that are never rotated, and the
inventory's `services.backup` settings.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploykit.apply import rotation
from deploykit.errors import DeploykitError
from deploykit.execute.probe import ProbeSpec, parse_probe, probe_command
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import RoleState, Unit
from deploykit.plan.verdict import Status
from deploykit.secret import Secret
from deploykit.secrets_store import SecretStore
from deploykit.services import SERVICES
from deploykit.services.backup import CIPHER_NOT_ROTATED, SERVICE, desired, judge_backup
from deploykit.services.backup import config as backup
from deploykit.services.backup.archiving import NO_ARCHIVE, wal_archiving
from deploykit.services.backup.config import (
    HOST_KEY_FACT,
    KEY_FACT,
    BackupHostConfig,
    Pg,
    backup_config,
    stanza_members,
)
from deploykit.services.backup.placement import BackupPlan, PgMember, Repository, backup_plan, plan_backup
from deploykit.services.backup.state import TIMERS
from deploykit.services.contract import ConfigContext, TierContext

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "backup"
LAB_INV = load_inventory(REPO / "inventories" / "lab.yml")
NAMES = [h.name for h in LAB_INV.hosts]
DATA = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")
REPOSITORIES = ("ams1-web-2", "fra1-web-2")  # the lab's backup hosts, in natural name order
CONF = "/etc/pgbackrest/pgbackrest.conf"


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


def user_key(name: str) -> str:
    return f"ssh-ed25519 AAAAC3user{name.replace('-', '')} pgbackrest@{name}"


def host_key(name: str) -> str:
    return f"ssh-ed25519 AAAAC3host{name.replace('-', '')}"


def keys_of(*names: str) -> dict[str, dict[str, str]]:
    """The facts of hosts whose pgBackRest key and SSH host key have been read (fake, deterministic keys)."""
    return {n: {KEY_FACT: user_key(n), HOST_KEY_FACT: host_key(n)} for n in names}


def context(inv: Inventory = LAB_INV, facts: dict[str, dict[str, str]] | None = None,
            secrets: Callable[[str], Secret] = secret) -> ConfigContext:
    return ConfigContext(inv, plan_placement(inv), secrets, facts=keys_of(*NAMES) if facts is None else facts)


LAB = context()


def config(host: str, ctx: ConfigContext = LAB) -> BackupHostConfig:
    return backup_config(ctx, ctx.inv.host(host))


def mesh(name: str, inv: Inventory = LAB_INV) -> str:
    return str(inv.host(name).mesh_address)


def files_of(state: RoleState) -> dict[str, str]:
    return {f.path: f.content for f in state.files}


def with_hosts(make_inventory: Callable[..., str], base_hosts: dict[str, str], **changes: str) -> str:
    """The test inventory (three sites at three providers) with some hosts' bodies replaced or added."""
    return make_inventory(hosts={**base_hosts, **changes})


# --- placement ---------------------------------------------------------------------------------------------------

def test_the_lab_has_a_repository_per_backup_host_numbered_in_name_order() -> None:
    plan = plan_backup(LAB_INV)
    assert plan.stanza == LAB_INV.name == "chirp-lab"
    assert plan.repositories == (
        Repository(1, "ams1-web-2", LAB_INV.host("ams1-web-2").mesh_address, "ams1", "leaseweb", False, 22),
        Repository(2, "fra1-web-2", LAB_INV.host("fra1-web-2").mesh_address, "fra1", "hetzner", False, 22),
    )
    assert plan.members == tuple(PgMember(n, LAB_INV.host(n).mesh_address, 22) for n in DATA)
    assert backup_plan(LAB.placement) == plan  # the placement holds the same plan
    assert plan.repository("fra1-web-2") is plan.repositories[1] and plan.repository("fra1-data-1") is None


def test_repository_numbers_follow_natural_name_order_not_text_order(make_inventory, base_hosts, load_text) -> None:
    inv = load_text(with_hosts(
        make_inventory, base_hosts,
        **{"fra1-bak-10": "{address: 10.1.0.40, site: fra1, roles: [backup]}",
           "fra1-bak-2": "{address: 10.1.0.32, site: fra1, roles: [backup]}",
           "rbx1-data-1": "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache, backup]}"}))
    plan = plan_backup(inv)
    assert [(r.index, r.host) for r in plan.repositories] == [(1, "fra1-bak-2"), (2, "fra1-bak-10"),
                                                              (3, "rbx1-data-1")]
    assert [r.db_host for r in plan.repositories] == [False, False, True]
    assert [(r.site, r.provider) for r in plan.repositories] == [("fra1", "hetzner"), ("fra1", "hetzner"),
                                                                 ("rbx1", "ovh")]
    assert plan.stanza == "chirp-test"
    assert [m.host for m in plan.members] == ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]


def test_an_inventory_without_backup_hosts_has_members_and_no_repository(make_inventory, load_text) -> None:
    plan = plan_backup(load_text(make_inventory()))
    assert plan.repositories == () and [m.host for m in plan.members] == list(DATA)


def test_stanza_members_name_the_host_itself_first_then_the_others_over_ssh() -> None:
    plan = BackupPlan("s", (), tuple(PgMember(n, LAB_INV.host(n).mesh_address, 22) for n in DATA))
    # a member only: itself, local, as pg1
    assert stanza_members(plan, "fra1-data-1", member=True, repository=False) == (
        Pg(1, "fra1-data-1", "", True),)
    # a repository host only: every member, by mesh address
    assert stanza_members(plan, "fra1-web-2", member=False, repository=True) == tuple(
        Pg(i, n, mesh(n), False) for i, n in enumerate(DATA, 1))
    # both: itself as pg1, then the other members from pg2
    assert stanza_members(plan, "fra1-data-1", member=True, repository=True) == (
        Pg(1, "fra1-data-1", "", True),
        Pg(2, "ams1-data-1", mesh("ams1-data-1"), False),
        Pg(3, "rbx1-data-1", mesh("rbx1-data-1"), False),
    )
    assert stanza_members(plan, "fra1-web-1", member=False, repository=False) == ()


def test_it_runs_on_the_backup_hosts_and_on_every_db_host() -> None:
    assert [n for n in NAMES if SERVICE.runs_on(LAB_INV.host(n))] == [
        "ams1-data-1", "ams1-web-2", "fra1-data-1", "fra1-web-2", "rbx1-data-1"]
    phases = [s.name for s in SERVICES]
    assert SERVICE.name == "backup" and phases.index("backup") == phases.index("db") + 2  # after db's and its pooler's


# --- per-host config ---------------------------------------------------------------------------------------------

def test_a_repository_host_keeps_its_own_encrypted_repository_and_reaches_every_member() -> None:
    asked: list[str] = []

    def recording(name: str) -> Secret:
        asked.append(name)
        return secret(name)

    cfg = config("fra1-web-2", context(secrets=recording))
    assert (cfg.name, cfg.stanza, cfg.member) == ("fra1-web-2", "chirp-lab", False)
    repo = cfg.repository
    assert repo is not None
    assert (repo.index, repo.path) == (2, "/var/lib/pgbackrest")
    assert repo.cipher_pass.name == "backup-cipher-fra1-web-2" and asked == ["backup-cipher-fra1-web-2"]
    svc = LAB_INV.services.backup
    assert (repo.retention_full, repo.retention_diff, repo.full, repo.diff) == (
        svc.retention_full, svc.retention_diff, svc.full, svc.diff) == (2, 6, "Sun *-*-* 01:00:00",
                                                                        "Mon..Sat *-*-* 01:00:00")
    assert [m.host for m in cfg.members] == list(DATA) and not any(m.local for m in cfg.members)
    assert [p.host for p in cfg.authorized] == [p.host for p in cfg.known] == list(DATA)
    assert cfg.authorized[0].address == mesh("ams1-data-1")
    assert cfg.authorized[0].user_key == user_key("ams1-data-1")
    assert cfg.known[0].host_key == host_key("ams1-data-1")
    assert cfg.own_key == user_key("fra1-web-2") and cfg.missing == ()
    assert (cfg.data_dir, cfg.port, cfg.bin_dir) == ("/var/lib/postgresql/15/chirp-lab", 5432,
                                                     "/usr/lib/postgresql/15/bin")
    assert (cfg.archive_queue_max_mib, cfg.process_max) == (1024, 2)  # the lab's settings


def test_each_repository_host_has_a_cipher_key_of_its_own() -> None:
    names = {config(n).repository.cipher_pass.name for n in REPOSITORIES}  # type: ignore[union-attr]
    assert names == {"backup-cipher-ams1-web-2", "backup-cipher-fra1-web-2"}


def test_a_member_pushes_to_every_repository_and_asks_for_no_cipher_key() -> None:
    asked: list[str] = []

    def recording(name: str) -> Secret:
        asked.append(name)
        return secret(name)

    cfg = config("fra1-data-1", context(secrets=recording))
    assert cfg.member and cfg.repository is None and asked == []
    assert cfg.repositories == plan_backup(LAB_INV).repositories
    assert cfg.members == (Pg(1, "fra1-data-1", "", True),)
    assert [(p.host, p.address) for p in cfg.known] == [(n, mesh(n)) for n in REPOSITORIES]
    assert cfg.authorized == cfg.known  # the repository hosts log in to back it up


def test_a_db_host_that_is_also_a_backup_host_talks_to_the_other_members_and_repositories(
        make_inventory, base_hosts, load_text) -> None:
    inv = load_text(with_hosts(
        make_inventory, base_hosts,
        **{"fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache, backup]}",
           "rbx1-web-[1:2]": "{address: 10.2.0.11, site: rbx1, roles: [lb, app, worker, backup]}"}))
    ctx = context(inv, facts=keys_of(*(h.name for h in inv.hosts)))
    cfg = config("fra1-data-1", ctx)
    assert cfg.member and cfg.repository is not None and cfg.repository.index == 1
    assert [(m.index, m.host, m.local) for m in cfg.members] == [
        (1, "fra1-data-1", True), (2, "ams1-data-1", False), (3, "rbx1-data-1", False)]
    # the other repositories (its WAL goes there too), then the other members (it backs them up)
    assert [p.host for p in cfg.known] == ["rbx1-web-1", "rbx1-web-2", "ams1-data-1", "rbx1-data-1"]


def test_peers_whose_keys_are_not_read_yet_are_left_out_and_named() -> None:
    facts = keys_of(*NAMES)
    del facts["rbx1-data-1"][HOST_KEY_FACT]  # its user key alone is not enough
    del facts["ams1-data-1"]  # never reached
    ctx = context(facts=facts)
    cfg = config("fra1-web-2", ctx)
    assert [p.host for p in cfg.authorized] == [p.host for p in cfg.known] == ["fra1-data-1"]
    assert cfg.missing == ("ams1-data-1", "rbx1-data-1")
    assert SERVICE.check(ctx, LAB_INV.host("fra1-web-2")) == (
        "pgBackRest's SSH keys of ams1-data-1, rbx1-data-1 are not known yet (read when they are reached): left "
        "out until then",)
    files = files_of(desired(cfg))
    assert mesh("ams1-data-1") not in files["/etc/pgbackrest/ssh/known_hosts"]
    assert mesh("ams1-data-1") not in files["/var/lib/postgresql/.ssh/authorized_keys"]
    # the stanza still names every member: a backup finds the primary among those it can reach
    assert [m.host for m in cfg.members] == list(DATA)
    assert SERVICE.check(LAB, LAB_INV.host("fra1-web-2")) == ()  # every key known: nothing to say


def test_an_offline_plan_knows_no_key_and_says_so() -> None:
    ctx = context(facts={})
    cfg = config("fra1-data-1", ctx)
    assert cfg.own_key is None and cfg.known == cfg.authorized == ()
    assert cfg.missing == REPOSITORIES
    wrapper = files_of(desired(cfg))["/usr/local/lib/deploykit/pgbackrest-ssh"]
    assert "# Key: -\n" in wrapper
    assert SERVICE.check(ctx, LAB_INV.host("fra1-data-1")) == (
        "pgBackRest's SSH keys of ams1-web-2, fra1-web-2 are not known yet (read when they are reached): left out "
        "until then",)


# --- WAL archiving (read by the db service) --------------------------------------------------------------------------

def test_wal_is_archived_to_the_repositories_and_fetched_back_from_them() -> None:
    a = wal_archiving(LAB_INV)
    assert a.archive_command == "/usr/bin/pgbackrest --stanza=chirp-lab archive-push %p"
    assert a.restore_command is None  # standbys stream only: the archive may hold WAL past a failover's fork
    assert a.archive_timeout == 30  # the lab's setting
    assert a.replica_methods == ("pgbackrest", "basebackup")
    assert a.replica_command == "/usr/bin/pgbackrest --stanza=chirp-lab --delta restore"


def test_without_backup_hosts_archiving_is_on_but_archives_nothing(make_inventory, load_text) -> None:
    inv = load_text(make_inventory())
    a = wal_archiving(inv)
    assert a.archive_command == NO_ARCHIVE == "/bin/true"
    assert a.restore_command is None and a.replica_command is None
    assert a.replica_methods == ("basebackup",)
    assert a.archive_timeout == 60  # the default


def test_the_db_service_sets_archiving_from_it(make_inventory, load_text) -> None:
    from deploykit.services.db.config import db_config

    lab = db_config(LAB, LAB_INV.host("fra1-data-1"))
    assert lab.archiving == wal_archiving(LAB_INV)
    params = dict(lab.dcs.parameters)
    assert (params["archive_mode"], params["archive_timeout"]) == ("on", "30s")
    assert params["archive_command"] == "/usr/bin/pgbackrest --stanza=chirp-lab archive-push %p"
    inv = load_text(make_inventory())
    bare = db_config(context(inv, facts={}), inv.host("fra1-data-1"))
    assert bare.archiving == wal_archiving(inv)
    # on from the first start (a restart to change), archiving nothing until there are backup hosts
    assert (dict(bare.dcs.parameters)["archive_mode"], dict(bare.dcs.parameters)["archive_command"]) == (
        "on", "/bin/true")


# --- the tier rule -----------------------------------------------------------------------------------------------

def judge(gone: set[str], level: str = "provider", inv: Inventory = LAB_INV):  # noqa: ANN201
    ctx = TierContext(inv, plan_placement(inv), frozenset(gone), f"losing {', '.join(sorted(gone)) or 'nothing'}",
                      level, {})
    return judge_backup(ctx)


def test_no_repository_no_verdict(make_inventory, load_text) -> None:
    assert judge({"fra1-data-1"}, inv=load_text(make_inventory())) is None


def test_every_repository_there_is_up() -> None:
    v = judge(set())
    assert v is not None and (v.tier, v.status) == ("backup", Status.UP)
    assert v.reason == "all 2 repositories unaffected"


def test_some_repositories_lost_is_up_and_says_how_many_are_left() -> None:
    v = judge({"fra1-web-2", "fra1-web-1"})
    assert v is not None and v.status is Status.UP
    assert v.reason.startswith("1 of 2 repositories left: backups and restores go on from them")
    assert "1024 MiB" in v.reason  # the lab's archive_queue_max_mib


def test_every_repository_lost_is_down_for_the_resilience_proof_but_only_degraded_for_the_apply() -> None:
    v = judge(set(REPOSITORIES))
    assert v is not None and v.status is Status.DOWN
    assert v.reason.startswith("losing ams1-web-2, fra1-web-2 loses every backup repository (2): no backup and no "
                               "point-in-time recovery")
    assert "1024 MiB" in v.reason and v.fix
    for level in ("site", "provider"):
        assert judge(set(REPOSITORIES), level).status is Status.DOWN  # type: ignore[union-attr]
    applying = judge(set(REPOSITORIES), "host")
    assert applying is not None and applying.status is Status.DEGRADED and applying.reason == v.reason


def test_repositories_at_one_provider_fail_the_resilience_proof(make_inventory, base_hosts, plan_text) -> None:
    planned = plan_text(with_hosts(make_inventory, base_hosts,
                                   **{"fra1-web-[1:2]": "{address: 10.1.0.11, site: fra1, "
                                                        "roles: [lb, app, worker, backup]}"}))
    assert planned.verdict("provider", "hetzner", "backup").status is Status.DOWN
    assert planned.verdict("provider", "ovh", "backup").status is Status.UP
    assert not planned.report.survives


def test_the_offline_plan_describes_the_repositories_or_their_absence(make_inventory, load_text) -> None:
    (section,) = SERVICE.describe(LAB_INV, LAB.placement)
    assert section.columns == ("repository", "host", "schedule")
    assert section.rows[:2] == (
        ("repo1", "ams1-web-2 (leaseweb)", "full Sun *-*-* 01:00:00, diff Mon..Sat *-*-* 01:00:00; keeps 2 full, "
                                           "6 diff; encrypted"),
        ("repo2", "fra1-web-2 (hetzner)", "full Sun *-*-* 01:00:00, diff Mon..Sat *-*-* 01:00:00; keeps 2 full, "
                                          "6 diff; encrypted"),
    )
    assert section.rows[2][:2] == ("WAL", "ams1-data-1, fra1-data-1, rbx1-data-1")
    inv = load_text(make_inventory())
    ((_, host, why),) = SERVICE.describe(inv, plan_placement(inv))[0].rows
    assert host == "no backup hosts" and "no point-in-time recovery" in why


# --- desired state -------------------------------------------------------------------------------------------------

def test_a_repository_host_state() -> None:
    state = desired(config("fra1-web-2"))
    assert state.role == "backup"
    assert state.packages == ("pgbackrest", "postgresql-15")  # PostgreSQL's binaries for restore drills
    assert state.services == tuple(Unit(t, enabled=True, running=True) for t in TIMERS)
    assert TIMERS == ("deploykit-backup-full.timer", "deploykit-backup-diff.timer")
    (wait,) = state.waits
    assert wait.description == "WAL from the primary reaches repository 2 on fra1-web-2"
    assert wait.command == "runuser -u postgres -- /usr/bin/pgbackrest --stanza=chirp-lab --archive-timeout=30 check"
    assert wait.timeout_s >= 60
    assert state.rollout_order == 1  # after the members, whose authorized keys let it in
    files = {f.path: f for f in state.files}
    createcluster = files["/etc/postgresql-common/createcluster.d/60-deploykit.conf"]
    assert createcluster.before_install  # before postgresql-15: Debian's cluster is never made
    conf = files[CONF]
    assert (conf.mode, conf.owner, conf.group) == ("0640", "root", "postgres")
    assert conf.after_change == ("runuser -u postgres -- /usr/bin/pgbackrest --stanza=chirp-lab "
                                 "--log-level-console=info stanza-create")
    assert set(files) >= {f"/etc/systemd/system/{t}" for t in TIMERS}
    assert set(files) >= {f"/etc/systemd/system/{t.replace('.timer', '.service')}" for t in TIMERS}


def test_a_member_state() -> None:
    state = desired(config("fra1-data-1"))
    assert state.packages == ("pgbackrest",)
    assert state.services == tuple(Unit(t, enabled=False, running=False) for t in TIMERS)  # no schedule here
    assert state.waits == () and state.rollout_order == 0
    files = {f.path: f for f in state.files}
    assert files[CONF].after_change is None  # no repository: no stanza to create here
    assert not any(p.startswith(("/etc/systemd/", "/etc/postgresql-common/")) for p in files)


def test_the_ssh_files_are_postgres_s_and_the_key_is_handed_to_it() -> None:
    files = {f.path: f for f in desired(config("fra1-data-1")).files}
    wrapper = files["/usr/local/lib/deploykit/pgbackrest-ssh"]
    assert wrapper.mode == "0755"
    assert wrapper.after_change == ("chown -R postgres:postgres /etc/pgbackrest/ssh && chmod 0700 /etc/pgbackrest/ssh"
                                    " && chmod 0600 /etc/pgbackrest/ssh/id_ed25519")
    keys = files["/var/lib/postgresql/.ssh/authorized_keys"]
    assert (keys.mode, keys.owner, keys.group) == ("0600", "postgres", "postgres")
    assert files["/etc/pgbackrest/ssh/known_hosts"].owner == "postgres"
    # the key handed to postgres and the peers trusted before the config, whose stanza-create goes over SSH
    paths = list(files)
    assert max(paths.index(p) for p in ("/usr/local/lib/deploykit/pgbackrest-ssh", "/etc/pgbackrest/ssh/known_hosts",
                                        "/var/lib/postgresql/.ssh/authorized_keys")) < paths.index(CONF)


def test_the_cipher_key_is_only_in_the_repository_host_s_config_and_never_printed() -> None:
    cfg = config("fra1-web-2")
    assert "s3cr3t" not in repr(cfg) and "<secret:backup-cipher-fra1-web-2>" in repr(cfg)
    state = desired(cfg)
    assert {f.path for f in state.files if "s3cr3t" in f.content} == {CONF}
    assert "repo2-cipher-pass=s3cr3t-backup-cipher-fra1-web-2\n" in files_of(state)[CONF]
    for f in state.files:
        assert "s3cr3t" not in " ".join(filter(None, (f.validate, f.after_change)))
    assert not any("s3cr3t" in w.command for w in state.waits)
    assert all("s3cr3t" not in f.content for f in desired(config("fra1-data-1")).files)


def test_the_configs_name_every_repository_by_the_same_number() -> None:
    member = files_of(desired(config("rbx1-data-1")))[CONF]
    assert f"repo1-host={mesh('ams1-web-2')}\n" in member and f"repo2-host={mesh('fra1-web-2')}\n" in member
    assert "repo1-path=/var/lib/pgbackrest\n" in files_of(desired(config("ams1-web-2")))[CONF]
    assert "repo2-path=/var/lib/pgbackrest\n" in files_of(desired(config("fra1-web-2")))[CONF]
    assert "repo1-path" not in files_of(desired(config("fra1-web-2")))[CONF]


def test_the_schedule_is_the_inventory_s(make_inventory, base_hosts, load_text) -> None:
    inv = load_text(with_hosts(make_inventory, base_hosts,
                               **{"ams1-web-[1:2]": "{address: 10.3.0.11, site: ams1, "
                                                    "roles: [lb, app, worker, backup]}"})
                    + "services:\n  backup: {full: daily, diff: '*-*-* 06,18:00:00'}\n")
    files = files_of(desired(config("ams1-web-1", context(inv, facts={}))))
    assert "OnCalendar=daily\n" in files["/etc/systemd/system/deploykit-backup-full.timer"]
    assert "OnCalendar=*-*-* 06,18:00:00\n" in files["/etc/systemd/system/deploykit-backup-diff.timer"]
    assert ("ExecStart=/usr/bin/pgbackrest --stanza=chirp-test --repo=1 --type=diff backup\n"
            in files["/etc/systemd/system/deploykit-backup-diff.service"])


def test_a_host_leaving_every_role_it_ran_stops_the_timers() -> None:
    retired = SERVICE.retire(LAB, LAB_INV.host("fra1-web-1"))
    assert retired.retiring and retired.services == tuple(Unit(t, enabled=False, running=False) for t in TIMERS)
    assert set(SERVICE.packages) == {"pgbackrest", "postgresql-15"}


# --- rendered files: golden ----------------------------------------------------------------------------------------

def golden_cases() -> list[tuple[str, str]]:
    return [(h, f.path) for h in ("fra1-web-2", "fra1-data-1") for f in desired(config(h)).files]


@pytest.mark.parametrize(("host", "path"), golden_cases())
def test_golden(host: str, path: str, matches_golden) -> None:
    content = files_of(desired(config(host)))[path]
    matches_golden(GOLDEN / f"{host}__{Path(path).name}.txt", content)


def test_golden_member_and_repository_on_one_host(make_inventory, base_hosts, load_text, matches_golden) -> None:
    inv = load_text(with_hosts(
        make_inventory, base_hosts,
        **{"fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache, backup]}",
           "rbx1-web-[1:2]": "{address: 10.2.0.11, site: rbx1, roles: [lb, app, worker, backup]}"}))
    cfg = config("fra1-data-1", context(inv, facts=keys_of(*(h.name for h in inv.hosts))))
    matches_golden(GOLDEN / "member-and-repository__pgbackrest.conf.txt", files_of(desired(cfg))[CONF])


def test_golden_cases_cover_every_kind_of_file() -> None:
    names = {Path(p).name for _, p in golden_cases()}
    assert names == {"60-deploykit.conf", "pgbackrest-ssh", "known_hosts", "authorized_keys", "pgbackrest.conf",
                     "deploykit-backup-full.service", "deploykit-backup-full.timer",
                     "deploykit-backup-diff.service", "deploykit-backup-diff.timer"}


# --- the key scripts, run for real ---------------------------------------------------------------------------------

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def run(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    """A fact script with its paths moved under `root` (`/etc/pgbackrest/ssh` and the SSH host key)."""
    script = script.replace(backup.SSH_DIR, str(root / "ssh")).replace(backup.HOST_KEY_FILE, str(root / "host.pub"))
    assert "/etc/" not in script, script  # never the machine's own files
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


@needs_ssh_keygen
def test_a_key_pair_is_made_once_and_only_its_public_half_is_read(tmp_path: Path) -> None:
    assert run(backup.READ_KEY, tmp_path).stdout == ""  # no key yet: nothing, and nothing made
    assert not (tmp_path / "ssh").exists()
    made = run(backup.ENSURE_KEY, tmp_path)
    assert made.returncode == 0, made.stderr
    private = tmp_path / "ssh" / "id_ed25519"
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "ssh").stat().st_mode & 0o777) == "0o700"
    public = made.stdout.strip()
    kind, blob, comment = public.split(" ")
    assert kind == "ssh-ed25519" and comment.startswith("pgbackrest@") and len(blob) > 60
    assert "PRIVATE" not in made.stdout + made.stderr and private.read_text().strip() not in made.stdout
    assert len(made.stdout.splitlines()) == 1  # one line: the probe's value
    again = run(backup.ENSURE_KEY, tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == public  # kept, not made again
    assert run(backup.READ_KEY, tmp_path).stdout.strip() == public


@needs_ssh_keygen
def test_the_host_key_is_read_without_its_comment(tmp_path: Path) -> None:
    assert run(backup.READ_HOST_KEY, tmp_path).stdout == ""  # no host key: nothing
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@somewhere", "-f",
                    str(tmp_path / "host")], check=True)
    read = run(backup.READ_HOST_KEY, tmp_path)
    assert read.returncode == 0
    assert read.stdout.strip() == " ".join((tmp_path / "host.pub").read_text().split()[:2])
    assert "root@somewhere" not in read.stdout


@needs_ssh_keygen
def test_keys_read_by_the_probe_make_files_ssh_accepts(tmp_path: Path) -> None:
    """Both facts through the probe's script and parser, for two hosts, then the files rendered from them
    checked by ssh-keygen itself (authorized_keys with its options, known_hosts by address)."""
    spec = ProbeSpec(facts=tuple((f.name, f.ensure or f.read) for f in backup.FACTS if f.stored))
    facts: dict[str, dict[str, str]] = {}
    for name in ("fra1-data-1", "fra1-web-2"):
        root = tmp_path / name
        root.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host")], check=True)
        out = run(probe_command(spec), root).stdout
        facts[name] = parse_probe(spec, out.splitlines()).facts
        assert set(facts[name]) == {KEY_FACT, HOST_KEY_FACT}
    cfg = config("fra1-data-1", context(facts=facts))
    assert cfg.missing == ("ams1-web-2",) and [p.host for p in cfg.known] == ["fra1-web-2"]
    files = files_of(desired(cfg))
    (tmp_path / "authorized_keys").write_text(files["/var/lib/postgresql/.ssh/authorized_keys"])
    (tmp_path / "known_hosts").write_text(files["/etc/pgbackrest/ssh/known_hosts"])
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "authorized_keys")], capture_output=True,
                            text=True, check=True).stdout
    assert len(listed.splitlines()) == 1 and "pgbackrest@" in listed and "ED25519" in listed
    found = subprocess.run(["ssh-keygen", "-F", mesh("fra1-web-2"), "-f", str(tmp_path / "known_hosts")],
                           capture_output=True, text=True, check=False)
    assert found.returncode == 0 and facts["fra1-web-2"][HOST_KEY_FACT] in found.stdout
    wrapper = tmp_path / "pgbackrest-ssh"
    wrapper.write_text(files["/usr/local/lib/deploykit/pgbackrest-ssh"])
    assert subprocess.run(["/bin/sh", "-n", str(wrapper)], check=False).returncode == 0
    assert f"# Key: {facts['fra1-data-1'][KEY_FACT]}\n" in wrapper.read_text()


def test_the_fact_scripts_are_the_ones_declared() -> None:
    assert SERVICE.host_facts == backup.FACTS
    assert [(f.name, f.read, f.ensure, f.stored) for f in backup.FACTS] == [
        (KEY_FACT, backup.READ_KEY, backup.ENSURE_KEY, True), (HOST_KEY_FACT, backup.READ_HOST_KEY, None, True),
        (backup.ARCHIVER_FACT, backup.READ_ARCHIVER, None, False)]
    ProbeSpec(facts=tuple((f.name, f.read) for f in backup.FACTS))  # names the probe accepts


# --- rotation: a repository's key never changes -----------------------------------------------------------------

def test_a_cipher_key_is_never_rotated() -> None:
    assert rotation.not_rotated("backup-cipher-fra1-web-2") == CIPHER_NOT_ROTATED
    assert rotation.not_rotated("backup-cipher-any-host") == CIPHER_NOT_ROTATED
    assert rotation.not_rotated("cache-password") is None
    assert rotation.not_rotated("tls-ca-key") == rotation.NOT_ROTATED["tls-ca-key"]
    assert "backup-cipher-*" in SERVICE.secrets and set(SERVICE.unrotated) <= set(SERVICE.secrets)


def test_the_store_s_cipher_keys_are_left_out_of_a_rotation(lab_copy: Inventory) -> None:
    store = SecretStore(lab_copy)
    for name in ("backup-cipher-fra1-web-2", "backup-cipher-ams1-web-2", "cache-password"):
        store.get(name)
    store = SecretStore(lab_copy)
    every = rotation.rotatable(store)
    assert "cache-password" in every
    assert not [n for n in every if n.startswith("backup-cipher-")]
    assert rotation.chosen(store, ()) == every
    with pytest.raises(DeploykitError, match="backup-cipher-fra1-web-2 is not rotated: a repository's "
                                             "encryption key cannot change under its backups"):
        rotation.chosen(store, ("backup-cipher-fra1-web-2",))


# --- the inventory's services.backup ---------------------------------------------------------------------------------

def test_the_defaults_and_the_lab_s_settings(make_inventory, load_text) -> None:
    svc = load_text(make_inventory()).services.backup
    assert (svc.retention_full, svc.retention_diff, svc.full, svc.diff) == (2, 6, "Sun *-*-* 01:00:00",
                                                                            "Mon..Sat *-*-* 01:00:00")
    assert (svc.archive_timeout, svc.archive_queue_max_mib, svc.process_max) == (60, 4096, 2)
    lab = LAB_INV.services.backup
    assert (lab.archive_timeout, lab.archive_queue_max_mib) == (30, 1024)


def test_settings_are_read(make_inventory, load_text) -> None:
    svc = load_text(make_inventory(services="services:\n  backup: {retention_full: 4, retention_diff: 14, "
                                            "full: '  Sat *-*-* 03:00:00 ', diff: daily, process_max: 4}")
                    ).services.backup
    assert (svc.retention_full, svc.retention_diff, svc.full, svc.diff, svc.process_max) == (
        4, 14, "Sat *-*-* 03:00:00", "daily", 4)


@pytest.mark.parametrize(("body", "key", "message"), [
    ("{retention_full: 0}", "retention_full", "input should be greater than or equal to 1, got the number 0"),
    ("{retention_diff: 1001}", "retention_diff", "input should be less than or equal to 1000, got the number 1001"),
    ("{archive_timeout: 5}", "archive_timeout", "input should be greater than or equal to 10, got the number 5"),
    ("{archive_timeout: '60'}", "archive_timeout", "expected a whole number, got the text '60'"),
    ("{archive_queue_max_mib: 10}", "archive_queue_max_mib",
     "input should be greater than or equal to 64, got the number 10"),
    ("{process_max: 33}", "process_max", "input should be less than or equal to 32, got the number 33"),
    ("{retention_ful: 3}", "retention_ful", "unknown key 'retention_ful' (did you mean 'retention_full'?)"),
])
def test_bad_settings_name_the_key(body: str, key: str, message: str, make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services=f"services:\n  backup: {body}"))
    assert checked.only_error() == f"inventory.yml:17: services/backup/{key}: {message}"


@pytest.mark.parametrize(("key", "value"), [("full", '"x; rm"'), ("full", "\"$(reboot)\""), ("diff", "''"),
                                            ("diff", "'daily | true'"), ("full", "'`id`'")])
def test_a_schedule_that_is_not_a_calendar_expression_is_refused(key: str, value: str, make_inventory,
                                                                 check_text) -> None:
    checked = check_text(make_inventory(services=f"services:\n  backup: {{{key}: {value}}}"))
    error = checked.only_error()
    assert error.startswith(f"inventory.yml:17: services/backup/{key}: ")
    assert "write a systemd OnCalendar expression such as 'Sun *-*-* 01:00:00' or 'daily'" in error


def test_every_bad_setting_is_reported_at_once(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  backup:\n    retention_full: 0\n    full: 'a;b'\n"))
    assert [e.split(": ")[1] for e in checked.errors] == ["services/backup/retention_full", "services/backup/full"]
    assert [e.split(":")[1] for e in checked.errors] == ["18", "19"]



@pytest.mark.parametrize(("value", "said"), [
    (None, None),
    ("", None),
    ("garbage", None),
    ("2 4 -", None),  # archiving, little waiting: fine
    ("2 4 900", None),  # an old failure, archived since
    ("3 50 4", "WAL archiving is failing (last archived 50 s ago; 48 MiB waiting of the 1024 MiB"),
    ("1 - 7", "WAL archiving is failing (nothing archived yet; 16 MiB waiting"),
    ("16 2 -", "WAL archiving lags (last archived 2 s ago; 256 MiB waiting of the 1024 MiB"),
])
def test_the_primarys_archiver_is_reported_when_wal_piles_up_or_pushes_fail(value: str | None,
                                                                             said: str | None) -> None:
    found = backup.archiving_problem(value, 1024)
    if said is None:
        assert found is None
    else:
        assert found is not None and found.startswith(said) and "archive-push-queue-max" in found


def test_the_archiver_fact_reads_nothing_where_there_is_no_data_directory(tmp_path: Path) -> None:
    # On a repository host (no PostgreSQL data) and on a replica the fact is empty: nothing to report.
    out = subprocess.run(["sh", "-c", backup.READ_ARCHIVER.replace("/var/lib/postgresql", str(tmp_path))],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout == ""


def test_a_peer_on_another_ssh_port_is_known_and_reached_there() -> None:
    assert backup.Peer("h", "10.0.0.1", "k", "ssh-ed25519 AAA", 22).known_as == "10.0.0.1"
    assert backup.Peer("h", "10.0.0.1", "k", "ssh-ed25519 AAA", 2222).known_as == "[10.0.0.1]:2222"


def test_backup_hosts_that_are_all_db_hosts_are_an_error(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("""version: 1
name: t
domain: t.example
failure_domains: [provider]
ssh: {user: root}
sites:
  a: {provider: p1}
  b: {provider: p2}
  c: {provider: p3}
hosts:
  a-db-1: {address: 10.0.1.1, site: a, roles: [db, etcd, backup]}
  b-db-1: {address: 10.0.2.1, site: b, roles: [db, etcd, backup]}
  c-db-1: {address: 10.0.3.1, site: c, roles: [db, etcd]}
""")
    with pytest.raises(DeploykitError) as caught:
        load_inventory(inv)
    assert any("inv.yml:11: hosts/a-db-1/roles: every backup host is also a db host (a-db-1, b-db-1)" in line
               for line in caught.value.lines())
    inv.write_text(inv.read_text().replace("c-db-1: {address: 10.0.3.1, site: c, roles: [db, etcd]}",
                                           "c-db-1: {address: 10.0.3.1, site: c, roles: [db, etcd]}\n"
                                           "  c-bak-1: {address: 10.0.3.2, site: c, roles: [backup]}"))
    assert [h.name for h in load_inventory(inv).with_role("backup")] == ["a-db-1", "b-db-1", "c-bak-1"]
