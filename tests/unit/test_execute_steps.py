from __future__ import annotations

from deploykit.execute.diff import FileChange, RoleChanges, ServiceChange
from deploykit.execute.steps import Shell, Upload, install_file, install_packages, role_steps, wait_command
from deploykit.plan.desired import Directory, ManagedFile, Wait


def test_a_before_install_file_is_in_place_before_the_packages():
    """createcluster.d must exist before postgresql-15 is installed, or its install makes Debian's cluster."""
    pre = ManagedFile("/etc/postgresql-common/createcluster.d/60-deploykit.conf", "create_main_cluster = false\n",
                      before_install=True, after_change="drop it")
    conf = ManagedFile("/etc/patroni/config.yml", "x: 1\n")
    rc = RoleChanges("db", packages=("postgresql-15",), files=(FileChange(conf, "create", ""),
                                                               FileChange(pre, "create", "")))
    assert [s.description for s in role_steps(rc)] == [
        "upload /etc/postgresql-common/createcluster.d/60-deploykit.conf",
        "check and install /etc/postgresql-common/createcluster.d/60-deploykit.conf",
        "install postgresql-15",
        "upload /etc/patroni/config.yml", "check and install /etc/patroni/config.yml",
        "apply /etc/postgresql-common/createcluster.d/60-deploykit.conf",
    ]


def test_install_packages_keeps_services_from_starting_and_cleans_up():
    cmd = install_packages(("etcd-server", "etcd-client"))
    assert "policy=/usr/sbin/policy-rc.d; stamp=/var/lib/deploykit/apt-updated;" in cmd
    assert "apt_get install -y -qq --no-install-recommends etcd-server etcd-client ||" in cmd
    assert cmd.endswith('rm -f "$policy"\nif [ $rc -ne 0 ]; then\n'
                        "  grep -E '^(E:|Err:|deploykit:)' \"$log\" | tail -3 >&2 || tail -3 \"$log\" >&2\nfi\n"
                        'rm -f "$log"\nexit $rc')


def test_install_file_without_check_is_an_atomic_rename():
    assert install_file("/etc/a.conf", None) == "mv -f /etc/a.conf.deploykit-new /etc/a.conf"


def test_install_file_checks_the_candidate_and_keeps_the_live_file_on_failure():
    assert install_file("/etc/haproxy/haproxy.cfg", "haproxy -c -f {path}") == (
        "if ( haproxy -c -f /etc/haproxy/haproxy.cfg.deploykit-new ); then "
        "mv -f /etc/haproxy/haproxy.cfg.deploykit-new /etc/haproxy/haproxy.cfg; "
        "else rc=$?; rm -f /etc/haproxy/haproxy.cfg.deploykit-new; "
        "echo 'deploykit: /etc/haproxy/haproxy.cfg failed its check; the live file is unchanged' >&2; exit $rc; fi"
    )


def test_wait_command_times_out():
    cmd = wait_command("curl -fsS http://127.0.0.1:8008/health", 30)
    assert cmd.startswith("deadline=$(( $(date +%s) + 30 )); until ( curl -fsS http://127.0.0.1:8008/health )")
    assert "timed out after 30s" in cmd


def test_role_steps_order():
    unit = ManagedFile("/etc/systemd/system/chirp.service", "[Service]\n", notify=("chirp",))
    conf = ManagedFile("/etc/chirp.env", "A=1\n", mode="0640", owner="root", group="chirp",
                       validate="test -s {path}", after_change="echo applied", notify=("chirp",))
    seed = ManagedFile("/etc/redis/sentinel.conf", "x\n", seed=True)
    rc = RoleChanges(
        "app", packages=("gunicorn",), masks=("nginx",), directories=(Directory("/opt/chirp"),),
        files=(FileChange(unit, "create", ""), FileChange(conf, "update", ""), FileChange(seed, "create", "")),
        services=(ServiceChange("chirp", ("enable", "restart")),), waits=(Wait("healthy", "true", 5),))
    steps = role_steps(rc)
    assert [s.description for s in steps] == [
        "install gunicorn", "mask nginx", "directory /opt/chirp",
        "upload /etc/systemd/system/chirp.service", "check and install /etc/systemd/system/chirp.service",
        "upload /etc/chirp.env", "check and install /etc/chirp.env",
        "upload /etc/redis/sentinel.conf", "check and install /etc/redis/sentinel.conf",
        "apply /etc/chirp.env", "systemd daemon-reload", "enable chirp", "restart chirp", "wait: healthy",
    ]
    upload = steps[5]
    assert isinstance(upload, Upload)
    assert (upload.dest, upload.mode, upload.owner, upload.group) == ("/etc/chirp.env.deploykit-new", "0640",
                                                                      "root", "chirp")
    assert isinstance(steps[2], Shell) and steps[2].command == "install -d -m 0755 -o root -g root /opt/chirp"


def test_metadata_change_is_chown_chmod_only():
    f = ManagedFile("/etc/x", "1", mode="0600", owner="etcd", group="etcd")
    steps = role_steps(RoleChanges("etcd", files=(FileChange(f, "metadata", ""),)))
    assert steps == [Shell("mode/owner of /etc/x", "chown etcd:etcd /etc/x && chmod 0600 /etc/x")]


def test_no_changes_no_steps_not_even_waits():
    assert role_steps(RoleChanges("etcd", waits=(Wait("x", "true"),))) == []
