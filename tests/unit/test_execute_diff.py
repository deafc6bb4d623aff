from __future__ import annotations

from deploykit.execute.diff import diff_host, probe_spec
from deploykit.execute.probe import FileFact, HostFacts
from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.secret import Redactor, Secret

CONF = ManagedFile("/etc/etcd.conf", "name=a\nport=1\n", notify=("etcd",))
STATE = RoleState("etcd", packages=("etcd-server",), directories=(Directory("/var/lib/etcd", "0700", "etcd", "etcd"),),
                  files=(CONF,), services=(Unit("etcd"),), masked=("etcd-default",),
                  waits=(Wait("healthy", "etcdctl endpoint health"),))


def facts(content: bytes | None = b"name=a\nport=1\n", unit=("enabled", "active"), pkg=True, masked=True,
          mode=0o644, dir_ok=True) -> HostFacts:
    f = HostFacts()
    f.files = {CONF.path: None if content is None else FileFact(mode, "root", "root", content)}
    f.directories = {"/var/lib/etcd": (0o700, "etcd", "etcd") if dir_ok else None}
    f.packages = {"etcd-server": pkg}
    f.units = {"etcd": unit, "etcd-default": ("masked" if masked else "enabled", "inactive")}
    return f


def ident(x: str) -> str:
    return x


def test_converged_host_has_no_changes():
    plan = diff_host("h", [STATE], facts(), ident)
    assert not plan.changed
    assert plan.count() == 0
    assert plan.roles[0].waits == ()  # nothing to wait for when nothing changes


def test_fresh_host_gets_everything_in_order():
    plan = diff_host("h", [STATE], facts(content=None, unit=("disabled", "inactive"), pkg=False, masked=False,
                                          dir_ok=False), ident)
    rc = plan.roles[0]
    assert rc.packages == ("etcd-server",)
    assert rc.masks == ("etcd-default",)
    assert [d.path for d in rc.directories] == ["/var/lib/etcd"]
    assert [(c.file.path, c.action) for c in rc.files] == [("/etc/etcd.conf", "create")]
    # a service that gets started needs no restart on top
    assert [(s.name, s.actions) for s in rc.services] == [("etcd", ("enable", "start"))]
    assert rc.waits == STATE.waits
    assert plan.count() == 5


def test_changed_file_restarts_its_running_service_and_shows_a_diff():
    plan = diff_host("h", [STATE], facts(content=b"name=a\nport=2\n"), ident)
    rc = plan.roles[0]
    assert [(c.action) for c in rc.files] == ["update"]
    assert "-port=2\n" in rc.files[0].diff and "+port=1\n" in rc.files[0].diff
    assert [(s.name, s.actions) for s in rc.services] == [("etcd", ("restart",))]


def test_reload_instead_of_restart_when_the_service_says_so():
    state = RoleState("lb", files=(ManagedFile("/etc/haproxy.cfg", "new", notify=("haproxy",)),),
                      services=(Unit("haproxy", reload=True),))
    f = HostFacts(files={"/etc/haproxy.cfg": FileFact(0o644, "root", "root", b"old")},
                  units={"haproxy": ("enabled", "active")})
    rc = diff_host("h", [state], f, ident).roles[0]
    assert [(s.name, s.actions) for s in rc.services] == [("haproxy", ("reload",))]


def test_mode_only_change_is_metadata_and_restarts_nothing():
    rc = diff_host("h", [STATE], facts(mode=0o600), ident).roles[0]
    assert [(c.action) for c in rc.files] == ["metadata"]
    assert rc.services == ()


def test_masked_service_is_unmasked_enabled_and_started():
    rc = diff_host("h", [STATE], facts(unit=("masked", "inactive")), ident).roles[0]
    assert rc.services[0].actions == ("unmask", "enable", "start")


def test_service_that_must_not_run_is_stopped_and_disabled():
    state = RoleState("x", services=(Unit("postgresql", enabled=False, running=False),))
    f = HostFacts(units={"postgresql": ("enabled", "active")})
    assert diff_host("h", [state], f, ident).roles[0].services[0].actions == ("disable", "stop")


def test_seed_file_is_written_only_when_absent_or_not_seeded_by_deploykit():
    seed = ManagedFile("/etc/redis/sentinel.conf", "# Seeded by deploykit\nsentinel monitor m 10.0.0.1 6379 2\n",
                       seed=True)
    state = RoleState("cache", files=(seed,))
    rewritten = b"# Seeded by deploykit\nsentinel monitor m 10.0.0.2 6379 2\nsentinel known-replica m 10.0.0.1 6379\n"
    f = HostFacts(files={seed.path: FileFact(0o644, "root", "root", rewritten)})
    assert not diff_host("h", [state], f, ident).changed
    # a new seed (the inventory or the master changed) does not replace what the service owns
    newer_seed = "# Seeded by deploykit\nsentinel monitor m 10.0.0.3 6379 3\n"
    newer = RoleState("cache", files=(ManagedFile(seed.path, newer_seed, seed=True),))
    assert not diff_host("h", [newer], f, ident).changed
    # ... but the package's default (no seed header) is replaced
    f.files[seed.path] = FileFact(0o644, "root", "root", b"# Debian's default\nport 26379\n")
    assert [c.action for c in diff_host("h", [state], f, ident).roles[0].files] == ["update"]
    # ... and an absent one (a new or wiped host) is written
    f.files[seed.path] = None
    assert [c.action for c in diff_host("h", [state], f, ident).roles[0].files] == ["create"]
    # ... and its mode is still kept
    f.files[seed.path] = FileFact(0o600, "root", "root", rewritten)
    assert [c.action for c in diff_host("h", [state], f, ident).roles[0].files] == ["metadata"]


def test_secrets_are_redacted_in_diffs():
    pw = Secret("db-superuser-password", "hunter2hunter2")
    state = RoleState("db", files=(ManagedFile("/etc/patroni.yml", f"password: {pw.reveal()}\n"),))
    f = HostFacts(files={"/etc/patroni.yml": FileFact(0o644, "root", "root", b"password: oldsecretvalue\n")})
    old = Secret("old", "oldsecretvalue")
    diff = diff_host("h", [state], f, Redactor([pw, old])).roles[0].files[0].diff
    assert "hunter2hunter2" not in diff and "oldsecretvalue" not in diff
    assert "+password: <redacted:db-superuser-password>" in diff


def test_a_package_shared_by_two_roles_is_installed_once():
    a = RoleState("a", packages=("curl",))
    b = RoleState("b", packages=("curl", "jq"))
    plan = diff_host("h", [a, b], HostFacts(packages={"curl": False, "jq": False}), ident)
    assert [r.packages for r in plan.roles] == [("curl",), ("jq",)]


def test_probe_spec_deduplicates_across_roles():
    a = RoleState("a", packages=("curl",), services=(Unit("x"),))
    b = RoleState("b", packages=("curl",), services=(Unit("x"),), masked=("y",))
    spec = probe_spec([a, b])
    assert spec.packages == ("curl",) and spec.units == ("x", "y")


def test_desired_hash_changes_with_content():
    f1 = HostFacts(files={CONF.path: None})
    s2 = RoleState("etcd", files=(ManagedFile(CONF.path, "other"),))
    assert diff_host("h", [STATE], f1, ident).desired_hash != diff_host("h", [s2], f1, ident).desired_hash
