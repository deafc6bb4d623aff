"""check_inventory: every rule, each checked on its rendered problem (`file:line: key/path: message`).

The base inventory (conftest.BASE_HOSTS/BASE_SITES) puts the header on lines 1-4, `sites:` on line 5 with
fra1/rbx1/ams1 on lines 6-8, `hosts:` on line 9 and the six host entries on lines 10-15.
"""

from __future__ import annotations

import random
import textwrap
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from deploykit.errors import InventoryError, Problem
from deploykit.inventory import Inventory, check_inventory, load_inventory
from deploykit.inventory import load as load_module

F = "inventory.yml"
ROLES_LIST = "dns, lb, app, worker, db, etcd, cache, backup"


# --- the base and the shipped inventories --------------------------------------------------------------------


def test_base_inventory_is_valid_and_clean(make_inventory, check_text) -> None:
    checked = check_text(make_inventory())
    assert checked.rendered == []
    inv = checked.inventory
    assert isinstance(inv, Inventory)
    assert inv.name == "chirp-test"
    assert inv.domain == "chirp.test"
    assert inv.failure_domains == ("provider", "site")
    assert list(inv.sites) == ["fra1", "rbx1", "ams1"]
    assert inv.providers == ("hetzner", "ovh", "leaseweb")
    assert len(inv.hosts) == 9
    assert inv.warnings == ()


def test_model_of_a_host(make_inventory, load_text) -> None:
    inv = load_text(make_inventory())
    h = inv.host("fra1-web-2")
    assert h.address == IPv4Address("10.1.0.12")
    assert (h.site, h.provider, h.rack) == ("fra1", "hetzner", None)
    assert h.roles == ("lb", "app", "worker")
    assert h.line == 10
    assert inv.sites["rbx1"].vip == IPv4Address("10.2.0.100")


def test_roles_are_stored_in_canonical_order(make_inventory, base_hosts, load_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [cache, etcd, db]}"
    inv = load_text(make_inventory(hosts=base_hosts))
    assert inv.host("fra1-data-1").roles == ("db", "etcd", "cache")


def test_hosts_are_sorted_by_name(make_inventory, load_text) -> None:
    inv = load_text(make_inventory())
    names = [h.name for h in inv.hosts]
    assert names == sorted(names)
    assert names[0] == "ams1-data-1"


def test_failure_domains_default_to_host(load_text) -> None:
    inv = load_text(textwrap.dedent("""\
        version: 1
        name: one
        domain: one.test
        sites: {s1: {provider: p}}
        hosts:
          h1: {address: 10.0.0.1, site: s1, roles: [app, worker]}
        """))
    assert inv.failure_domains == ("host",)


def test_failure_domains_are_kept_in_canonical_order(make_inventory, load_text) -> None:
    inv = load_text(make_inventory(failure_domains="[host, site, provider]"))
    assert inv.failure_domains == ("provider", "site", "host")


def test_lab_inventory_is_valid(repo_root: Path) -> None:
    inv, problems = check_inventory(repo_root / "inventories" / "lab.yml")
    assert problems == []
    assert inv is not None
    assert len(inv.hosts) == 9
    assert inv.services.db.watchdog is False


def test_example_inventory_is_valid(repo_root: Path) -> None:
    path = repo_root / "inventories" / "example.yml"
    if not path.exists():
        pytest.skip("inventories/example.yml is not written yet")
    inv, problems = check_inventory(path)
    assert [p.render() for p in problems if p.severity == "error"] == []
    assert inv is not None


# --- the file itself ------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    inv, problems = check_inventory("nope.yml")
    assert inv is None
    assert [p.render() for p in problems] == [
        "nope.yml: no such file; check the path (example: inventories/example.yml)"
    ]


def test_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inv").mkdir()
    inv, problems = check_inventory("inv")
    assert inv is None
    assert [p.render() for p in problems] == ["inv: is a directory; give the inventory's YAML file"]


@pytest.mark.parametrize("text", ["", "\n", "   \n  \n", "# nothing yet\n", "# a\n\n# b\n"],
                         ids=["empty", "newline", "whitespace", "comment", "comments"])
def test_empty_file(check_text, text: str) -> None:
    checked = check_text(text)
    assert not checked.valid
    assert checked.rendered == [f"{F}: the inventory is empty; start from inventories/example.yml"]


def test_binary_file(check_text) -> None:
    checked = check_text(b"\x7fELF\x02\x01\x00\x00binary")
    assert checked.rendered == [f"{F}: is a binary file, not YAML text; did you pass the wrong file?"]


def test_utf16_file_is_reported_as_binary(make_inventory, check_text) -> None:
    checked = check_text(make_inventory().encode("utf-16"))
    assert checked.rendered == [f"{F}: is a binary file, not YAML text; did you pass the wrong file?"]


def test_non_utf8_file_names_the_line(check_text) -> None:
    checked = check_text(b"version: 1\nname: chirp\ndomain: caf\xe9.test\n")
    assert checked.rendered == [f"{F}:3: is not UTF-8 text (binary file or wrong encoding); save it as UTF-8"]


def test_utf8_bom_is_accepted(make_inventory, check_text) -> None:
    checked = check_text(b"\xef\xbb\xbf" + make_inventory().encode())
    assert checked.rendered == []
    assert checked.valid


def test_too_big_file(make_inventory, check_text, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "MAX_BYTES", 100)
    text = make_inventory()
    checked = check_text(text)
    assert checked.rendered == [f"{F}: is {len(text.encode())} bytes; an inventory is at most 100 bytes"]


@pytest.mark.parametrize(("text", "got"), [
    ("- a\n- b\n", "a list"),
    ("hello\n", "the text 'hello'"),
    ("42\n", "the number 42"),
    ("true\n", "true"),
])
def test_document_that_is_not_a_mapping(check_text, text: str, got: str) -> None:
    assert check_text(text).rendered == [
        f"{F}:1: the inventory must be a mapping of keys (version, name, hosts, ...), got {got}"
    ]


@pytest.mark.parametrize("text", ["---\n", "~\n", "null\n"])
def test_null_document_is_reported(check_text, text: str) -> None:
    checked = check_text(text)
    assert not checked.valid
    assert len(checked.errors) == 1


def test_two_documents(make_inventory, check_text) -> None:
    text = make_inventory() + "---\nversion: 1\n"
    line = text.splitlines().index("---") + 1
    assert check_text(text).rendered == [
        f"{F}:{line}: YAML syntax error: holds more than one YAML document (a second '---'); "
        "an inventory is one document"
    ]


def test_yaml_syntax_error_names_its_line(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert not checked.valid
    assert len(checked.rendered) == 1
    assert checked.rendered[0].startswith(f"{F}:13: YAML syntax error: ")


def test_path_with_tilde_is_expanded(tmp_path: Path, make_inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "inv.yml").write_text(make_inventory())
    inv, problems = check_inventory("~/inv.yml")
    assert problems == []
    assert inv is not None and inv.path == tmp_path.resolve() / "inv.yml"


def test_inventory_path_is_absolute(make_inventory, load_text, tmp_path: Path) -> None:
    inv = load_text(make_inventory())
    assert inv.path == tmp_path.resolve() / F
    assert inv.directory == tmp_path.resolve()


# --- top level -------------------------------------------------------------------------------------------


def test_unknown_top_level_key(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(extra="servics: {}"))
    assert checked.only_error() == (
        f"{F}:16: servics: unknown key 'servics' (did you mean 'services'?); "
        "keys starting with 'x-' are free for YAML anchors"
    )


def test_unknown_top_level_key_without_a_close_match(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(extra="colour: blue"))
    assert checked.only_error() == (
        f"{F}:16: colour: unknown key 'colour' (expected one of: domain, failure_domains, hosts, mesh, name, "
        "services, sites, ssh, version); keys starting with 'x-' are free for YAML anchors"
    )


def test_x_keys_are_free_for_anchors(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(extra="x-anything: {whatever: [1, 2]}\nx-notes: free text"))
    assert checked.rendered == []
    assert checked.valid


def test_anchors_aliases_and_merge_keys(make_inventory, check_text) -> None:
    text = make_inventory(hosts={
        "fra1-web-[1:2]": "{<<: *web, address: 10.1.0.11, site: fra1}",
        "fra1-data-1": "{<<: *data, address: 10.1.0.21, site: fra1}",
        "rbx1-web-[1:2]": "{<<: *web, address: 10.2.0.11, site: rbx1}",
        "rbx1-data-1": "{<<: *data, address: 10.2.0.21, site: rbx1}",
        "ams1-web-[1:2]": "{address: 10.3.0.11, site: ams1, roles: *web-roles}",
        "ams1-data-1": "{<<: *data, address: 10.3.0.21, site: ams1, rack: r9}",
    })
    anchors = "x-web-roles: &web-roles [lb, app, worker]\nx-web: &web {roles: *web-roles, rack: r1}\n" \
              "x-data: &data {roles: [db, etcd, cache], rack: r2}\n"
    checked = check_text(anchors + text)
    assert checked.rendered == []
    inv = checked.inventory
    assert inv is not None
    assert inv.host("fra1-web-2").roles == ("lb", "app", "worker")
    assert inv.host("fra1-web-2").rack == "r1"
    assert inv.host("ams1-web-1").rack is None
    assert inv.host("rbx1-data-1").roles == ("db", "etcd", "cache")
    assert inv.host("ams1-data-1").rack == "r9"  # explicit key wins over the merged one
    assert inv.host("fra1-data-1").rack == "r2"


def test_explicit_key_overriding_a_merged_one_is_not_a_duplicate(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{<<: *defaults, address: 10.1.0.11, site: fra1}"
    text = "x-defaults: &defaults {site: rbx1, roles: [lb, app, worker]}\n" + make_inventory(hosts=base_hosts)
    checked = check_text(text)
    assert checked.rendered == []
    assert checked.inventory is not None and checked.inventory.host("fra1-web-1").site == "fra1"


def test_duplicate_top_level_key(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(extra="name: other"))
    assert checked.only_error() == (
        f"{F}:16: name: duplicate key 'name' (first at line 2); YAML would silently keep only the last one: "
        "remove or rename one of them"
    )


def test_duplicate_key_nested_in_a_host(make_inventory, base_hosts, check_text) -> None:
    text = make_inventory(hosts=base_hosts).replace(
        "  rbx1-data-1: {address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache]}\n",
        "  rbx1-data-1:\n    address: 10.2.0.21\n    site: rbx1\n    roles: [db, etcd, cache]\n"
        "    address: 10.2.0.22\n")
    checked = check_text(text)
    assert checked.only_error() == (
        f"{F}:17: hosts/rbx1-data-1/address: duplicate key 'address' (first at line 14); YAML would silently "
        "keep only the last one: remove or rename one of them"
    )


def test_duplicate_host_entry_key(make_inventory, check_text) -> None:
    text = make_inventory().replace(
        "hosts:\n", "hosts:\n  ams1-data-1: {address: 10.3.0.21, site: ams1, roles: [db, etcd, cache]}\n")
    checked = check_text(text)
    assert f"{F}:16: hosts/ams1-data-1: duplicate key 'ams1-data-1' (first at line 10)" in checked.errors[0]
    assert len(checked.errors) == 1


def test_duplicate_key_in_services(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  lb: {http_port: 80}\n  lb: {http_port: 81}"))
    assert checked.only_error().startswith(f"{F}:18: services/lb: duplicate key 'lb' (first at line 17)")


def test_missing_required_keys(check_text) -> None:
    checked = check_text("failure_domains: [host]\n")
    assert checked.errors == [
        f"{F}:1: version: required key 'version' is missing",
        f"{F}:1: name: required key 'name' is missing",
        f"{F}:1: domain: required key 'domain' is missing",
        f"{F}:1: sites: required key 'sites' is missing; every host belongs to a site, e.g. "
        "fra1: {provider: hetzner, vip: 10.10.0.100}",
        f"{F}:1: hosts: required key 'hosts' is missing; list your servers, e.g. "
        "web-[1:2]: {address: 10.10.0.11, site: fra1, roles: [lb, app]}",
    ]


def test_unsupported_version(make_inventory, check_text) -> None:
    text = make_inventory().replace("version: 1", "version: 2")
    assert check_text(text).rendered == [
        f"{F}:1: version: unsupported version 2; this deploykit reads inventory version 1"
    ]


@pytest.mark.parametrize(("value", "got"), [('"1"', "the text '1'"), ("true", "true"), ("1.0", "the number 1.0")])
def test_version_must_be_a_whole_number(make_inventory, check_text, value: str, got: str) -> None:
    text = make_inventory().replace("version: 1", f"version: {value}")
    assert check_text(text).only_error() == f"{F}:1: version: expected a whole number, got {got}"


def test_empty_name(make_inventory, check_text) -> None:
    text = make_inventory().replace("name: chirp-test", "name: ''")
    assert check_text(text).only_error() == f"{F}:2: name: must not be empty"


def test_name_must_be_text(make_inventory, check_text) -> None:
    text = make_inventory().replace("name: chirp-test", "name: [a]")
    assert check_text(text).only_error() == f"{F}:2: name: expected text, got a list"


NAME_RULE = ("is not a valid deployment name: use lower-case letters, digits and '-', starting with a letter "
             "and not ending with '-', at most 63 characters (it names the secrets files, the etcd cluster, the "
             "Redis master and the Patroni scope)")


@pytest.mark.parametrize(("name", "fix"), [
    ("../../.ssh/authorized_keys", "; e.g. 'ssh-authorized-keys'"),
    ("prod/chirp", "; e.g. 'prod-chirp'"),
    ("Chirp", "; e.g. 'chirp'"),
    ("chirp_lab", "; e.g. 'chirp-lab'"),
    ("chirp.lab", "; e.g. 'chirp-lab'"),
    ("Zürich Prod", "; e.g. 'zurich-prod'"),
    ("1chirp", "; e.g. 'chirp'"),
    ("chirp-", "; e.g. 'chirp'"),
    ("-chirp", "; e.g. 'chirp'"),
    ("..", ""),
    ("2024", ""),
])
def test_name_must_be_a_safe_slug(make_inventory, check_text, name: str, fix: str) -> None:
    text = make_inventory().replace("name: chirp-test", f"name: '{name}'")
    assert check_text(text).only_error() == f"{F}:2: name: '{name}' {NAME_RULE}{fix}"


@pytest.mark.parametrize("name", ["c", "chirp", "chirp-lab-2", "a" + "-b" * 31])
def test_valid_names(make_inventory, load_text, name: str) -> None:
    assert load_text(make_inventory(name=name)).name == name


def test_name_longer_than_63_characters(make_inventory, check_text) -> None:
    assert "at most 63 characters" in check_text(make_inventory(name="a" * 64)).only_error()


def test_invalid_domain(make_inventory, check_text) -> None:
    text = make_inventory().replace("domain: chirp.test", "domain: Chirp_Test")
    assert check_text(text).only_error() == (
        f"{F}:3: domain: 'Chirp_Test' is not a valid DNS name (lower-case, like chirp.example): '_' not allowed "
        "(letters, digits, '-' and '.' only), use lower-case letters; e.g. 'chirp-test'"
    )


# --- failure domains ------------------------------------------------------------------------------------------


def test_unknown_failure_domain_level(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(failure_domains="[provider, sitee]"))
    assert checked.only_error() == (
        f"{F}:4: failure_domains/1: unknown failure-domain level 'sitee' (did you mean 'site'?)"
    )


def test_unknown_failure_domain_level_without_close_match(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(failure_domains="[region]"))
    assert checked.only_error() == (
        f"{F}:4: failure_domains/0: unknown failure-domain level 'region' "
        "(expected one of: host, provider, rack, site)"
    )


def test_duplicate_failure_domain_level(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(failure_domains="[provider, site, provider]"))
    assert checked.only_error() == f"{F}:4: failure_domains/2: level 'provider' is listed twice"


def test_failure_domain_levels_on_their_own_lines(make_inventory, check_text) -> None:
    text = make_inventory().replace("failure_domains: [provider, site]",
                                    "failure_domains:\n  - provider\n  - rackk")
    checked = check_text(text)
    assert checked.only_error() == f"{F}:6: failure_domains/1: unknown failure-domain level 'rackk' " \
                                   "(did you mean 'rack'?)"


def test_empty_failure_domains(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(failure_domains="[]"))
    assert checked.only_error() == (
        f"{F}:4: failure_domains: list at least one level, e.g. [host] or [provider, site]"
    )


def test_failure_domains_must_be_a_list(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(failure_domains="site"))
    assert checked.only_error() == f"{F}:4: failure_domains: expected a list, got the text 'site'"


# --- ssh ------------------------------------------------------------------------------------------------------


def test_ssh_defaults(make_inventory, load_text, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    inv = load_text(make_inventory())
    assert inv.ssh.user == "root"
    assert inv.ssh.port == 22
    assert inv.ssh.identity_file == Path("/home/tester/.ssh/id_ed25519")
    assert inv.ssh.known_hosts == tmp_path.resolve() / "known_hosts"
    assert all(h.ssh == inv.ssh for h in inv.hosts)


def test_relative_ssh_paths_resolve_against_the_inventory_directory(
        make_inventory, write_inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = make_inventory(ssh="ssh: {identity_file: keys/id, known_hosts: .lab/known_hosts}")
    write_inventory(text, "deep/dir/inv.yml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    inv = load_inventory("../deep/dir/inv.yml")
    base = tmp_path.resolve() / "deep" / "dir"
    assert inv.ssh.identity_file == base / "keys" / "id"
    assert inv.ssh.known_hosts == base / ".lab" / "known_hosts"


def test_ssh_tilde_is_expanded_and_absolute_paths_kept(make_inventory, load_text,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    inv = load_text(make_inventory(ssh="ssh: {user: deploy, port: 2222, identity_file: ~/.ssh/deploy, "
                                       "known_hosts: /etc/ssh/ssh_known_hosts}"))
    assert (inv.ssh.user, inv.ssh.port) == ("deploy", 2222)
    assert inv.ssh.identity_file == Path("/home/tester/.ssh/deploy")
    assert inv.ssh.known_hosts == Path("/etc/ssh/ssh_known_hosts")


def test_per_host_ssh_override(make_inventory, base_hosts, load_text, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    base_hosts["fra1-data-1"] = ("{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache], "
                                 "ssh: {port: 2200, known_hosts: hosts/fra1}}")
    inv = load_text(make_inventory(hosts=base_hosts, ssh="ssh: {user: deploy, identity_file: ~/.ssh/k}"))
    own = inv.host("fra1-data-1").ssh
    assert own.port == 2200
    assert own.user == "deploy"  # inherited from the inventory's ssh
    assert own.identity_file == Path("/home/tester/.ssh/k")
    assert own.known_hosts == tmp_path.resolve() / "hosts" / "fra1"
    other = inv.host("rbx1-data-1").ssh
    assert other == inv.ssh
    assert (other.port, other.known_hosts) == (22, tmp_path.resolve() / "known_hosts")


def test_per_host_ssh_override_applies_to_every_host_of_a_range(make_inventory, base_hosts, load_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker], ssh: {user: web}}"
    inv = load_text(make_inventory(hosts=base_hosts))
    assert inv.host("fra1-web-1").ssh.user == inv.host("fra1-web-2").ssh.user == "web"
    assert inv.host("rbx1-web-1").ssh.user == "root"


def test_unknown_ssh_key(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(ssh="ssh: {user: root, prot: 22}"))
    assert checked.only_error() == f"{F}:16: ssh/prot: unknown key 'prot' (did you mean 'port'?)"


def test_unknown_per_host_ssh_key(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache], ssh: {usr: x}}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert f"{F}:13: hosts/rbx1-data-1/ssh/usr: unknown key 'usr' (did you mean 'user'?)" in checked.errors


def test_ssh_port_must_be_a_number_not_text(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(ssh='ssh:\n  user: root\n  port: "22"'))
    assert checked.only_error() == f"{F}:18: ssh/port: expected a whole number, got the text '22'"


def test_per_host_ssh_port_must_be_a_number(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker], ssh: {port: '22'}}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert f"{F}:10: hosts/fra1-web-[1:2]/ssh/port: expected a whole number, got the text '22'" in checked.errors


@pytest.mark.parametrize(("port", "bound"), [(0, "greater than or equal to 1"), (65536, "less than or equal to 65535")])
def test_ssh_port_range(make_inventory, check_text, port: int, bound: str) -> None:
    checked = check_text(make_inventory(ssh=f"ssh: {{port: {port}}}"))
    assert checked.only_error() == f"{F}:16: ssh/port: input should be {bound}, got the number {port}"


def test_ssh_user_must_be_text(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(ssh="ssh: {user: true}"))
    assert checked.only_error() == f"{F}:16: ssh/user: expected text, got true"


def test_ssh_max_startups_defaults_to_32_on_every_host(make_inventory, base_hosts, load_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache], ssh: {port: 2200}}"
    inv = load_text(make_inventory(hosts=base_hosts))
    assert inv.ssh.max_startups == 32
    assert {h.ssh.max_startups for h in inv.hosts} == {32}


def test_ssh_max_startups_is_the_whole_runs_and_every_host_carries_it(make_inventory, base_hosts,
                                                                      load_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache], ssh: {port: 2200}}"
    inv = load_text(make_inventory(hosts=base_hosts, ssh="ssh: {max_startups: 10}"))
    assert inv.ssh.max_startups == 10
    assert {h.ssh.max_startups for h in inv.hosts} == {10}  # a host with its own ssh section inherits it
    assert inv.host("fra1-data-1").ssh.port == 2200


@pytest.mark.parametrize(("value", "message"), [
    ("0", "input should be greater than or equal to 1, got the number 0"),
    ("1025", "input should be less than or equal to 1024, got the number 1025"),
    ("'10'", "expected a whole number, got the text '10'"),
    ("2.5", "expected a whole number, got the number 2.5"),
])
def test_ssh_max_startups_must_be_a_number_from_1_to_1024(make_inventory, check_text, value: str,
                                                           message: str) -> None:
    checked = check_text(make_inventory(ssh=f"ssh: {{max_startups: {value}}}"))
    assert checked.only_error() == f"{F}:16: ssh/max_startups: {message}"


def test_ssh_max_startups_is_not_a_per_host_setting(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache], ssh: {max_startups: 5}}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert (f"{F}:13: hosts/rbx1-data-1/ssh/max_startups: a setting of the whole run, allowed in the top-level "
            "ssh section only, got the number 5") in checked.errors


def test_an_unknown_ssh_key_suggests_max_startups(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(ssh="ssh: {max_startup: 10}"))
    assert checked.only_error() == f"{F}:16: ssh/max_startup: unknown key 'max_startup' (did you mean 'max_startups'?)"


@pytest.mark.parametrize("section", ["ssh: []", "services: []", "ssh: ''", "services: false"])
def test_falsy_wrong_type_of_section_is_an_error(make_inventory, check_text, section: str) -> None:
    checked = check_text(make_inventory(extra=section))
    assert not checked.valid
    assert len(checked.errors) == 1
    assert checked.errors[0].startswith(f"{F}:16: {section.split(':')[0]}: expected a mapping")


def test_truthy_wrong_type_of_section_is_an_error(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(extra="ssh: [root]"))
    assert checked.only_error() == f"{F}:16: ssh: expected a mapping (key: value pairs), got a list"


# --- sites ----------------------------------------------------------------------------------------------------


def test_sites_must_be_a_mapping(make_inventory, check_text) -> None:
    text = make_inventory(sites={}).replace("sites:\n", "sites: [fra1, rbx1]\n")
    checked = check_text(text)
    assert checked.errors[0] == f"{F}:5: sites: expected a mapping of site names to settings, got a list"


def test_no_sites(make_inventory, check_text) -> None:
    text = make_inventory(sites={}).replace("sites:\n", "sites: {}\n")
    checked = check_text(text)
    assert checked.errors[0] == f"{F}:5: sites: no sites defined; add at least one, e.g. fra1: {{provider: hetzner}}"


def test_unknown_site_key(make_inventory, base_sites, check_text) -> None:
    base_sites["rbx1"] = "{provider: ovh, vip: 10.2.0.100, vpi: 10.2.0.101}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.errors[0] == f"{F}:7: sites/rbx1/vpi: unknown key 'vpi' (did you mean 'vip'?)"


def test_unknown_site_key_lists_the_allowed_ones(make_inventory, base_sites, check_text) -> None:
    base_sites["rbx1"] = "{provider: ovh, vip: 10.2.0.100, zone: b}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.errors[0] == (f"{F}:7: sites/rbx1/zone: unknown key 'zone' "
                                 "(expected one of: interface, provider, vip)")


def test_site_without_provider(make_inventory, base_sites, check_text) -> None:
    base_sites["ams1"] = "{vip: 10.3.0.100}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.errors[0] == f"{F}:8: sites/ams1/provider: required key 'provider' is missing"


def test_site_name_must_be_lower_case(make_inventory, base_sites, check_text) -> None:
    sites = {("FRA1" if k == "fra1" else k): v for k, v in base_sites.items()}
    checked = check_text(make_inventory(sites=sites))
    assert checked.errors[0] == (
        f"{F}:6: sites/FRA1: site name 'FRA1' must be lower-case letters, digits and '-' (at most 31) (e.g. 'fra1')"
    )
    # the hosts' `site: fra1` is the site's name in another case (see test_inventory_spelling.py)
    assert f"{F}:10: hosts/fra1-web-[1:2]/site: site 'fra1' differs only in case from 'FRA1' (sites/FRA1, " \
           "line 6); site names compare ignoring case, so these are one name spelt two ways: use one spelling, " \
           "'fra1'" in checked.errors


def test_invalid_site_name_without_a_lower_case_form(make_inventory, base_sites, check_text) -> None:
    sites = {**base_sites, "lon_1": "{provider: ovh}"}
    checked = check_text(make_inventory(sites=sites))
    assert checked.only_error() == (
        f"{F}:9: sites/lon_1: site name 'lon_1' must be lower-case letters, digits and '-' (at most 31)"
    )


@pytest.mark.parametrize(("vip", "hint"), [
    ("10.1.0.300", "like 10.10.0.21"),
    ("fd00::100", "(IPv6 is not supported yet)"),
    ("10.1.0.0/24", "like 10.10.0.21"),
])
def test_invalid_vip(make_inventory, base_sites, check_text, vip: str, hint: str) -> None:
    base_sites["fra1"] = f"{{provider: hetzner, vip: '{vip}'}}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.errors[0] == (
        f"{F}:6: sites/fra1/vip: '{vip}' is not a valid IPv4 VIP; write four numbers 0-255 {hint}"
    )


def test_vip_equal_to_a_host_address(make_inventory, base_sites, check_text) -> None:
    base_sites["rbx1"] = "{provider: ovh, vip: 10.2.0.21}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.only_error() == (
        f"{F}:7: sites/rbx1/vip: VIP 10.2.0.21 is also the address of host 'rbx1-data-1' (line 13); "
        "a VIP must be a free address the load balancers share"
    )


def test_vip_equal_to_an_address_inside_a_range(make_inventory, base_sites, check_text) -> None:
    base_sites["ams1"] = "{provider: leaseweb, vip: 10.3.0.12}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.only_error() == (
        f"{F}:8: sites/ams1/vip: VIP 10.3.0.12 is also the address of host 'ams1-web-2' (line 14); "
        "a VIP must be a free address the load balancers share"
    )


def test_two_sites_sharing_a_vip(make_inventory, base_sites, check_text) -> None:
    base_sites["ams1"] = "{provider: leaseweb, vip: 10.1.0.100}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.only_error() == f"{F}:8: sites/ams1/vip: VIP 10.1.0.100 is also the VIP of site 'fra1'"


def test_lb_hosts_in_a_site_without_vip(make_inventory, base_sites, check_text) -> None:
    base_sites["rbx1"] = "{provider: ovh}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.only_error() == (
        f"{F}:7: sites/rbx1: site 'rbx1' has load balancers (rbx1-web-1, rbx1-web-2) but no 'vip'; "
        "add vip: <a free address in the site's network> for them to share"
    )


def test_site_without_vip_and_without_lbs_is_fine(make_inventory, base_sites, base_hosts, check_text) -> None:
    sites = {**base_sites, "dbx1": "{provider: ovh}"}
    hosts = {**base_hosts, "dbx1-db-1": "{address: 10.9.0.1, site: dbx1, roles: [app]}"}
    checked = check_text(make_inventory(sites=sites, hosts=hosts))
    assert checked.rendered == []


def test_site_without_hosts_is_a_warning_only(make_inventory, base_sites, check_text) -> None:
    checked = check_text(make_inventory(sites={**base_sites, "lon1": "{provider: ovh}"}))
    assert checked.errors == []
    assert checked.warnings == [f"{F}:9: sites/lon1: warning: site 'lon1' has no hosts"]
    assert checked.inventory is not None
    assert checked.inventory.warnings == (f"{F}:9: sites/lon1: warning: site 'lon1' has no hosts",)


# --- hosts: shape ---------------------------------------------------------------------------------------------


def test_hosts_must_be_a_mapping(make_inventory, check_text) -> None:
    text = make_inventory(hosts={}).replace("hosts:\n", "hosts: [web-1, web-2]\n")
    checked = check_text(text)
    assert checked.errors == [f"{F}:9: hosts: expected a mapping of host names to settings, got a list"]


def test_no_hosts(make_inventory, check_text) -> None:
    text = make_inventory(hosts={}).replace("hosts:\n", "hosts: {}\n")
    checked = check_text(text)
    assert checked.errors == [f"{F}:9: hosts: no hosts defined; add at least one server"]


@pytest.mark.parametrize(("body", "got"), [
    ("[10.1.0.21]", "a list"),
    ("10.1.0.21", "the text '10.1.0.21'"),
    ("", "nothing (an empty value)"),
])
def test_host_entry_must_be_a_mapping(make_inventory, base_hosts, check_text, body: str, got: str) -> None:
    base_hosts["fra1-web-[1:2]"] = body
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.errors == [f"{F}:10: hosts/fra1-web-[1:2]: expected a mapping (key: value pairs), got {got}"]


def test_unknown_host_key(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker], rak: r1}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == f"{F}:10: hosts/fra1-web-[1:2]/rak: unknown key 'rak' (did you mean 'rack'?)"


def test_unknown_host_key_lists_the_allowed_ones(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker], zz: 1}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:10: hosts/fra1-web-[1:2]/zz: unknown key 'zz' "
        "(expected one of: address, interface, mesh_address, provider, rack, roles, site, ssh)"
    )


def test_host_without_address(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{site: fra1, roles: [lb, app, worker]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == f"{F}:10: hosts/fra1-web-[1:2]/address: required key 'address' is missing"


def test_rack_must_be_text(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache], rack: true}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert f"{F}:11: hosts/fra1-data-1/rack: expected text, got true" in checked.errors


def test_invalid_host_name(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts, "Fra1_App": "{address: 10.1.0.31, site: fra1, roles: [app]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.only_error() == (
        f"{F}:16: hosts/Fra1_App: 'Fra1_App' is not a valid host name: use lower-case letters, digits and '-', "
        "at most 63 characters, not starting or ending with '-' (e.g. 'fra1-app')"
    )


def test_invalid_range_key_still_checks_the_address(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts, "web-[1:2]-[3:4]": "{address: 10.1.0.999, site: fra1, roles: [app]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.errors == [
        f"{F}:16: hosts/web-[1:2]-[3:4]: 'web-[1:2]-[3:4]' is not a valid host range; write one range of "
        "numbers like 'web-[01:40]'",
        f"{F}:16: hosts/web-[1:2]-[3:4]/address: '10.1.0.999' is not a valid IPv4 address; write four numbers "
        "0-255 like 10.10.0.21",
    ]


# --- hosts: addresses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "hint"), [
    ("10.0.0.300", "like 10.10.0.21"),
    ("10.0.0", "like 10.10.0.21"),
    ("10.1.0.011", "like 10.10.0.21"),
    ("web1.example.com", "like 10.10.0.21"),
    ("fe80::1", "(IPv6 is not supported yet)"),
    ("'2001:db8::10'", "(IPv6 is not supported yet)"),
])
def test_invalid_address(make_inventory, base_hosts, check_text, address: str, hint: str) -> None:
    base_hosts["rbx1-data-1"] = f"{{address: {address}, site: rbx1, roles: [db, etcd, cache]}}"
    checked = check_text(make_inventory(hosts=base_hosts))
    shown = address.strip("'")
    assert f"{F}:13: hosts/rbx1-data-1/address: '{shown}' is not a valid IPv4 address; write four numbers 0-255 " \
           f"{hint}" in checked.errors


def test_address_must_be_text(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10, site: fra1, roles: [lb, app, worker]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == f"{F}:10: hosts/fra1-web-[1:2]/address: expected text, got the number 10"


def test_address_with_surrounding_spaces_is_accepted(make_inventory, base_hosts, load_text) -> None:
    base_hosts["rbx1-data-1"] = "{address: ' 10.2.0.21 ', site: rbx1, roles: [db, etcd, cache]}"
    inv = load_text(make_inventory(hosts=base_hosts))
    assert inv.host("rbx1-data-1").address == IPv4Address("10.2.0.21")


def test_duplicate_address(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-data-1"] = "{address: 10.1.0.21, site: rbx1, roles: [db, etcd, cache]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:13: hosts/rbx1-data-1/address: address 10.1.0.21 is already used by 'fra1-data-1' (line 11)"
    )


def test_address_inside_an_earlier_range(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.12, site: fra1, roles: [db, etcd, cache]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:11: hosts/fra1-data-1/address: address 10.1.0.12 lies inside the range of 'fra1-web-[1:2]' "
        "(line 10), which gives it to 'fra1-web-2'; pick another address"
    )


def test_range_running_into_a_later_host(make_inventory, base_hosts, check_text) -> None:
    # fra1-app-[01:40] from 10.1.1.21 takes .21 to .60; a later host on .60 is inside that span
    hosts = {"fra1-app-[01:40]": "{address: 10.1.1.21, site: fra1, roles: [app]}", **base_hosts,
             "fra1-cache-1": "{address: 10.1.1.60, site: fra1, roles: [worker]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.only_error() == (
        f"{F}:17: hosts/fra1-cache-1/address: address 10.1.1.60 lies inside the range of 'fra1-app-[01:40]' "
        "(line 10), which gives it to 'fra1-app-40'; pick another address"
    )


def test_range_running_into_an_earlier_host(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts, "fra1-app-[01:40]": "{address: 10.1.0.1, site: fra1, roles: [app]}"}
    checked = check_text(make_inventory(hosts=hosts))
    # .1-.40 runs into fra1-web-1 (.11), fra1-web-2 (.12) and fra1-data-1 (.21): one problem per collision
    assert checked.errors == [
        f"{F}:16: hosts/fra1-app-[01:40]/address: the range's consecutive addresses 10.1.0.1..10.1.0.40 run "
        f"into {addr}, the address of '{name}' (line {line}); start the range elsewhere or move that host"
        for addr, name, line in (("10.1.0.11", "fra1-web-1", 10), ("10.1.0.12", "fra1-web-2", 10),
                                 ("10.1.0.21", "fra1-data-1", 11))
    ]


def test_range_starting_on_another_hosts_address(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts, "fra1-app-[1:2]": "{address: 10.2.0.21, site: fra1, roles: [app]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.only_error() == (
        f"{F}:16: hosts/fra1-app-[1:2]/address: address 10.2.0.21 is already used by 'rbx1-data-1' (line 13)"
    )


def test_duplicate_host_names_from_overlapping_ranges(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts,
             "fra1-app-[01:40]": "{address: 10.1.1.21, site: fra1, roles: [app]}",
             "fra1-app-[39:41]": "{address: 10.1.2.1, site: fra1, roles: [app]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.errors == [
        f"{F}:17: hosts/fra1-app-[39:41]: host 'fra1-app-{n}' is defined twice: by 'fra1-app-[01:40]' (line 16) "
        "and by 'fra1-app-[39:41]'; rename one"
        for n in (39, 40)
    ]


def test_duplicate_host_name_from_a_range_and_a_plain_entry(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts, "fra1-web-2": "{address: 10.1.0.50, site: fra1, roles: [app]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.only_error() == (
        f"{F}:16: hosts/fra1-web-2: host 'fra1-web-2' is defined twice: by 'fra1-web-[1:2]' (line 10) and by "
        "'fra1-web-2'; rename one"
    )


def test_padded_and_unpadded_ranges_do_not_collide(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts,
             "fra1-app-[01:09]": "{address: 10.1.1.1, site: fra1, roles: [app]}",
             "fra1-app-[1:9]": "{address: 10.1.2.1, site: fra1, roles: [app]}"}
    inv = load_text(make_inventory(hosts=hosts))
    assert inv.host("fra1-app-01").address != inv.host("fra1-app-1").address


# --- hosts: site, provider, roles -----------------------------------------------------------------------------


def test_unknown_site(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-web-[1:2]"] = "{address: 10.2.0.11, site: rbx2, roles: [lb, app, worker]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:12: hosts/rbx1-web-[1:2]/site: unknown site 'rbx2' (did you mean 'rbx1'?); "
        "sites are defined under 'sites:'"
    )


def test_unknown_site_without_close_match(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-web-[1:2]"] = "{address: 10.2.0.11, site: tokyo, roles: [lb, app, worker]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:12: hosts/rbx1-web-[1:2]/site: unknown site 'tokyo' (expected one of: ams1, fra1, rbx1); "
        "sites are defined under 'sites:'"
    )


def test_matching_provider_on_a_host_is_fine(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, provider: ovh, roles: [db, etcd, cache]}"
    assert check_text(make_inventory(hosts=base_hosts)).rendered == []


def test_provider_mismatch_on_a_host(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-web-[1:2]"] = "{address: 10.2.0.11, site: rbx1, provider: hetzner, roles: [lb, app, worker]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:12: hosts/rbx1-web-[1:2]/provider: site 'rbx1' is at provider 'ovh', not 'hetzner'; "
        "drop this key or fix the site"
    )


def test_unknown_provider_on_a_host(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-web-[1:2]"] = "{address: 10.2.0.11, site: rbx1, provider: ovhh, roles: [lb, app, worker]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:12: hosts/rbx1-web-[1:2]/provider: unknown provider 'ovhh' (did you mean 'ovh'?)"
    )


def test_host_without_roles_key(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:10: hosts/fra1-web-[1:2]: this host has no roles; add e.g. roles: [app] (one or more of: "
        f"{ROLES_LIST})"
    )


@pytest.mark.parametrize("roles", ["", "~"])
def test_host_with_empty_roles(make_inventory, base_hosts, check_text, roles: str) -> None:
    base_hosts["fra1-web-[1:2]"] = f"{{address: 10.1.0.11, site: fra1, roles: {roles}}}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:10: hosts/fra1-web-[1:2]/roles: this host has no roles; give it at least one of: {ROLES_LIST}"
        " (or roles: [] to retire every role it ran)"
    )


def test_a_host_with_an_empty_role_list_is_being_retired_a_warning(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-extra-1"] = "{address: 10.1.0.31, site: fra1, roles: []}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.inventory is not None and checked.inventory.host("fra1-extra-1").roles == ()
    assert [p.render() for p in checked.problems] == [
        f"{F}:16: hosts/fra1-extra-1/roles: warning: this host has no roles: the next apply retires every role it "
        "ran (hands leadership over, leaves the clusters, stops the services); remove it from the inventory after"]


def test_roles_must_be_a_list(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: lb}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == f"{F}:10: hosts/fra1-web-[1:2]/roles: expected a list, got the text 'lb'"


def test_unknown_role(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, dbb]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == f"{F}:10: hosts/fra1-web-[1:2]/roles/2: unknown role 'dbb' (did you mean 'db'?)"


def test_unknown_role_on_its_own_line(make_inventory, base_hosts, check_text) -> None:
    text = make_inventory(hosts=base_hosts).replace(
        "  fra1-web-[1:2]: {address: 10.1.0.11, site: fra1, roles: [lb, app, worker]}\n",
        "  fra1-web-[1:2]:\n    address: 10.1.0.11\n    site: fra1\n    roles:\n      - lb\n      - web\n")
    checked = check_text(text)
    assert checked.only_error() == (
        f"{F}:15: hosts/fra1-web-[1:2]/roles/1: unknown role 'web' (expected one of: app, backup, cache, db, dns, "
        "etcd, lb, worker)"
    )


def test_role_listed_twice_is_a_warning(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker, app]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.errors == []
    assert checked.warnings == [f"{F}:10: hosts/fra1-web-[1:2]/roles/3: warning: role 'app' is listed twice"]
    assert checked.inventory is not None
    assert checked.inventory.host("fra1-web-1").roles == ("lb", "app", "worker")


def test_unknown_role_on_an_etcd_host_is_the_only_error(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [dbb, etcd, cache]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.errors == [f"{F}:11: hosts/fra1-data-1/roles/0: unknown role 'dbb' (did you mean 'db'?)"]


def test_broken_site_reports_only_its_own_error(make_inventory, base_sites, check_text) -> None:
    base_sites["fra1"] = "{provider: hetzner, vip: 10.1.0.300}"
    checked = check_text(make_inventory(sites=base_sites))
    assert checked.rendered == [
        f"{F}:6: sites/fra1/vip: '10.1.0.300' is not a valid IPv4 VIP; write four numbers 0-255 like 10.10.0.21"
    ]


# --- tiers ----------------------------------------------------------------------------------------------------


def test_even_number_of_etcd_members(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts, "ams1-data-2": "{address: 10.3.0.22, site: ams1, roles: [etcd]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.only_error() == (
        f"{F}:16: hosts/ams1-data-2/roles: etcd has an even number of members (4: fra1-data-1, rbx1-data-1, "
        "ams1-data-1, ams1-data-2); 4 members tolerate no more failures than 3: add or remove one"
    )


def test_even_etcd_counts_every_host_of_a_range(make_inventory, base_hosts, check_text) -> None:
    hosts = {"etcd-[1:2]": "{address: 10.9.0.1, site: fra1, roles: [etcd]}",
             **{k: v.replace("etcd, ", "") for k, v in base_hosts.items()}}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.only_error() == (
        f"{F}:10: hosts/etcd-[1:2]/roles: etcd has an even number of members (2: etcd-1, etcd-2); "
        "2 members tolerate no more failures than 1: add or remove one"
    )


def test_db_without_etcd(make_inventory, base_hosts, check_text) -> None:
    hosts = {k: v.replace("etcd, ", "") for k, v in base_hosts.items()}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.only_error() == (
        f"{F}:9: hosts: the db tier needs etcd (Patroni keeps its leader lock there): give the 'etcd' role to "
        "an odd number of hosts, e.g. the db hosts"
    )


def test_single_etcd_member_is_valid(make_inventory, base_hosts, check_text) -> None:
    hosts = dict(base_hosts)
    hosts["rbx1-data-1"] = hosts["rbx1-data-1"].replace("etcd, ", "")
    hosts["ams1-data-1"] = hosts["ams1-data-1"].replace("etcd, ", "")
    assert check_text(make_inventory(hosts=hosts)).rendered == []


def test_app_without_lb_is_a_warning(make_inventory, base_hosts, base_sites, check_text) -> None:
    hosts = {k: v.replace("lb, ", "") for k, v in base_hosts.items()}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.errors == []
    assert checked.warnings == [
        f"{F}:9: hosts: warning: there are app hosts but no 'lb' host: nothing will load-balance them"
    ]
    assert checked.valid


def test_rack_level_with_rackless_hosts_is_a_warning(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, rack: r1, roles: [lb, app, worker]}"
    checked = check_text(make_inventory(hosts=base_hosts, failure_domains="[site, rack]"))
    assert checked.errors == []
    assert checked.warnings == [
        f"{F}:4: failure_domains: warning: 'rack' is a failure domain but 7 host(s) have no rack "
        "(e.g. fra1-data-1); each counts as a rack of its own"
    ]
    assert checked.valid


def test_rack_level_with_every_host_racked_has_no_warning(make_inventory, base_hosts, check_text) -> None:
    hosts = {k: v.replace("{", "{rack: r1, ") for k, v in base_hosts.items()}
    assert check_text(make_inventory(hosts=hosts, failure_domains="[rack]")).rendered == []


def test_rack_without_rack_level_has_no_warning(make_inventory, check_text) -> None:
    assert check_text(make_inventory(failure_domains="[host]")).rendered == []


def test_warnings_do_not_make_the_inventory_invalid(make_inventory, base_hosts, base_sites, check_text) -> None:
    hosts = {k: v.replace("lb, ", "") for k, v in base_hosts.items()}
    hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache, db]}"
    sites = {**base_sites, "lon1": "{provider: ovh}"}
    checked = check_text(make_inventory(hosts=hosts, sites=sites, failure_domains="[rack]"))
    assert checked.errors == []
    assert checked.warnings == [
        f"{F}:4: failure_domains: warning: 'rack' is a failure domain but 9 host(s) have no rack (e.g. fra1-web-1); "
        "each counts as a rack of its own",
        f"{F}:9: sites/lon1: warning: site 'lon1' has no hosts",
        f"{F}:10: hosts: warning: there are app hosts but no 'lb' host: nothing will load-balance them",
        f"{F}:12: hosts/fra1-data-1/roles/3: warning: role 'db' is listed twice",
    ]
    assert checked.inventory is not None
    # the model keeps them in the order they were found (not sorted by line)
    assert sorted(checked.inventory.warnings) == sorted(checked.warnings)


# --- services -------------------------------------------------------------------------------------------------


def test_service_defaults(make_inventory, load_text) -> None:
    svc = load_text(make_inventory()).services
    assert (svc.app.port, svc.app.health, svc.app.min_capacity, svc.app.workers) == (8000, "/healthz", 0.5, 2)
    assert (svc.db.port, svc.db.synchronous, svc.db.patroni_port) == (5432, True, 8008)
    assert (svc.cache.port, svc.cache.sentinel_port) == (6379, 26379)
    assert (svc.etcd.client_port, svc.etcd.peer_port) == (2379, 2380)
    assert (svc.lb.http_port, svc.lb.stats_port, svc.lb.cache_port) == (80, 8404, 6380)


def test_service_settings_are_read(make_inventory, load_text) -> None:
    svc = load_text(make_inventory(services="services:\n  app: {port: 9000, min_capacity: 0.75}\n"
                                            "  db: {synchronous: false}\n  worker: {}")).services
    assert (svc.app.port, svc.app.min_capacity, svc.db.synchronous) == (9000, 0.75, False)


def test_unknown_service(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  dbb: {port: 5432}"))
    assert checked.only_error() == f"{F}:17: services/dbb: unknown key 'dbb' (did you mean 'db'?)"


def test_unknown_service_key(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  app:\n    prot: 8000"))
    assert checked.only_error() == f"{F}:18: services/app/prot: unknown key 'prot' (did you mean 'port'?)"


def test_unknown_key_in_each_service(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  lb: {http_prt: 80}\n  cache: {sentinel: 1}\n"
                                                 "  etcd: {peer: 1}\n  worker: {count: 2}"))
    assert checked.errors == [
        f"{F}:17: services/lb/http_prt: unknown key 'http_prt' (did you mean 'http_port'?)",
        f"{F}:18: services/cache/sentinel: unknown key 'sentinel' (did you mean 'sentinel_port'?)",
        f"{F}:19: services/etcd/peer: unknown key 'peer' (did you mean 'peer_port'?)",
        f"{F}:20: services/worker/count: unknown key 'count'",
    ]


def test_port_as_text_is_an_error(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services='services:\n  app: {port: "8000"}'))
    assert checked.only_error() == f"{F}:17: services/app/port: expected a whole number, got the text '8000'"


@pytest.mark.parametrize(("value", "got"), [("'yes'", "the text 'yes'"), ("1", "the number 1"),
                                            ("[true]", "a list")])
def test_bool_must_be_true_or_false(make_inventory, check_text, value: str, got: str) -> None:
    checked = check_text(make_inventory(services=f"services:\n  db: {{synchronous: {value}}}"))
    assert checked.only_error() == f"{F}:17: services/db/synchronous: expected true or false, got {got}"


def test_service_must_be_a_mapping(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  app: [8000]"))
    assert checked.only_error() == f"{F}:17: services/app: expected a mapping (key: value pairs), got a list"


def test_services_must_be_a_mapping(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services: app"))
    assert checked.only_error() == f"{F}:16: services: expected a mapping (key: value pairs), got the text 'app'"


def test_min_capacity_bounds(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  app: {min_capacity: 0}"))
    assert checked.only_error() == (
        f"{F}:17: services/app/min_capacity: input should be greater than 0, got the number 0"
    )
    checked = check_text(make_inventory(services="services:\n  app: {min_capacity: 1.5}"))
    assert checked.only_error() == (
        f"{F}:17: services/app/min_capacity: input should be less than or equal to 1, got the number 1.5"
    )


def test_port_out_of_range(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  lb: {http_port: 70000}"))
    assert checked.only_error() == (
        f"{F}:17: services/lb/http_port: input should be less than or equal to 65535, got the number 70000"
    )


def test_port_collision_between_roles_on_one_host(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  app: {port: 8404}"))
    assert checked.only_error() == (
        f"{F}:17: services/app/port: port 8404 of app.port is also lb.stats_port on host 'fra1-web-1' "
        "(roles lb, app, worker); pick another port"
    )


def test_port_collision_inside_one_role(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  lb:\n    stats_port: 80"))
    assert checked.only_error() == (
        f"{F}:18: services/lb/stats_port: port 80 of lb.stats_port is also lb.http_port on host 'fra1-web-1' "
        "(roles lb, app, worker); pick another port"
    )


def test_port_collision_between_db_and_etcd(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  etcd: {client_port: 5432}"))
    assert checked.only_error() == (
        f"{F}:17: services/etcd/client_port: port 5432 of etcd.client_port is also db.port on host 'fra1-data-1' "
        "(roles db, etcd, cache); pick another port"
    )


def test_same_port_on_roles_of_different_hosts_is_fine(make_inventory, check_text) -> None:
    # app hosts and db hosts are different machines in the base inventory
    assert check_text(make_inventory(services="services:\n  app: {port: 5432}")).rendered == []


def test_each_role_combination_is_reported_once(make_inventory, base_hosts, check_text) -> None:
    hosts = {**base_hosts, "fra1-both-1": "{address: 10.1.0.31, site: fra1, roles: [app, db]}"}
    checked = check_text(make_inventory(hosts=hosts, services="services:\n  app: {port: 5432}"))
    # reported once (not again for another host with the same roles), on the later role's port; db.port is not
    # written in the file, so the line is that of `services:`
    assert checked.only_error() == (
        f"{F}:17: services/db/port: port 5432 of db.port is also app.port on host 'fra1-both-1' "
        "(roles app, db); pick another port"
    )


# --- everything at once, and no exceptions ---------------------------------------------------------------------


ALL_AT_ONCE = """\
version: 1
name: chirp-test
domain: Chirp_Test
failure_domains: [provider, sitee]
ssh: {user: root, port: "22"}
sites:
  fra1: {provider: hetzner, vip: 10.1.0.100}
  rbx1: {provider: ovh, vip: 10.1.0.100}
  ams1: {provider: leaseweb, vip: 10.3.0.100}
hosts:
  fra1-web-[1:2]: {address: 10.1.0.11, site: fra1, roles: [lb, app, worker]}
  fra1-data-1: {address: 10.1.0.21, site: fra1, roles: [db, etcd, cache]}
  rbx1-web-[1:2]: {address: 10.2.0.11, site: rbx2, roles: [lb, app, worker]}
  rbx1-data-1: {address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache]}
  ams1-web-[1:2]: {address: 10.3.0.11, site: ams1, roles: [lb, app, wrker]}
  ams1-data-1: {address: 10.3.0.21, site: ams1, roles: [db, etcd, cache]}
  ams1-extra-1: {address: 10.3.0.300, site: ams1, roles: [app]}
  ams1-extra-[3:1]: {address: 10.3.0.40, site: ams1, roles: [app]}
  fra1-web-1: {address: 10.1.0.50, site: fra1, roles: [app]}
services:
  app: {port: 8000, workers: 0}
  db: {synchronous: "yes"}
  lb: {http_port: 80, http_port: 81}
servics: {}
"""


def test_every_error_is_reported_at_once(check_text) -> None:
    checked = check_text(ALL_AT_ONCE)
    assert not checked.valid
    found = [(p.line, p.path) for p in checked.problems if p.severity == "error"]
    assert found == [
        (3, "domain"),
        (4, "failure_domains/1"),
        (5, "ssh/port"),
        (8, "sites/rbx1/vip"),
        (13, "hosts/rbx1-web-[1:2]/site"),
        (15, "hosts/ams1-web-[1:2]/roles/2"),
        (17, "hosts/ams1-extra-1/address"),
        (18, "hosts/ams1-extra-[3:1]"),
        (19, "hosts/fra1-web-1"),
        (21, "services/app/workers"),
        (22, "services/db/synchronous"),
        (23, "services/lb/http_port"),
        (24, "servics"),
    ]
    messages = "\n".join(checked.errors)
    for fragment in ("not a valid DNS name", "did you mean 'site'?", "got the text '22'", "also the VIP of site 'fra1'",
                     "unknown site 'rbx2' (did you mean 'rbx1'?)", "unknown role 'wrker' (did you mean 'worker'?)",
                     "'10.3.0.300' is not a valid IPv4 address", "range [3:1] is reversed",
                     "host 'fra1-web-1' is defined twice", "greater than or equal to 1",
                     "expected true or false", "duplicate key 'http_port' (first at line 23)",
                     "did you mean 'services'?"):
        assert fragment in messages


def test_problems_are_sorted_by_line(check_text) -> None:
    lines = [p.line or 0 for p in check_text(ALL_AT_ONCE).problems]
    assert lines == sorted(lines)


def test_load_inventory_raises_with_every_error(write_inventory) -> None:
    write_inventory(ALL_AT_ONCE)
    with pytest.raises(InventoryError) as exc:
        load_inventory(F)
    assert len(exc.value.problems) == 13
    assert all(p.severity == "error" for p in exc.value.problems)
    assert exc.value.lines()[0].startswith(
        f"{F}:3: domain: 'Chirp_Test' is not a valid DNS name (lower-case, like chirp.example)"
    )
    assert str(exc.value) == "\n".join(exc.value.lines())


def test_load_inventory_returns_a_valid_inventory(make_inventory, write_inventory) -> None:
    write_inventory(make_inventory())
    assert load_inventory(F).name == "chirp-test"


FUZZ_BASE = """\
version: 1
name: chirp-fuzz
domain: chirp.test
failure_domains: [provider, site, rack]
ssh: {user: root, port: 22, identity_file: ~/.ssh/id, known_hosts: kh}
x-web: &web {roles: [lb, app, worker], rack: r1}
sites:
  fra1: {provider: hetzner, vip: 10.1.0.100}
  rbx1: {provider: ovh, vip: 10.2.0.100}
  ams1: {provider: leaseweb, vip: 10.3.0.100}
hosts:
  fra1-web-[1:2]: {<<: *web, address: 10.1.0.11, site: fra1}
  rbx1-web-[01:02]: {<<: *web, address: 10.2.0.11, site: rbx1, provider: ovh}
  ams1-web-[8:11]: {<<: *web, address: 10.3.0.11, site: ams1}
  fra1-data-1: {address: 10.1.0.21, site: fra1, roles: [db, etcd, cache], ssh: {port: 2222}}
  rbx1-data-1: {address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache], rack: r2}
  ams1-data-1:
    address: 10.3.0.21
    site: ams1
    roles:
      - db
      - etcd
      - cache
services:
  app: {port: 8000, health: /healthz, min_capacity: 0.5, workers: 2}
  db: {synchronous: true, watchdog: false}
  cache: {port: 6379}
  etcd: {client_port: 2379}
  lb: {http_port: 80}
  worker: {}
"""

_TOKENS = [b"[", b"]", b"{", b"}", b":", b": ", b"*web", b"&a ", b"<<: *web", b"'", b'"', b"- ", b"\t", b"!!str ",
           b"~", b"[1:0]", b"[01:99]", b"255.255.255.255", b"x-", b"---\n", b"\\", b"%", b"@", b"\x00", b"\xff"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    lines = data.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        line = lines[i]
        op = rng.randrange(7)
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1 and len(line) > 1:
            a, b = rng.randrange(len(line)), rng.randrange(len(line))
            chars = bytearray(line)
            chars[a], chars[b] = chars[b], chars[a]
            lines[i] = bytes(chars)
        elif op == 2:
            p = rng.randrange(len(line) + 1)
            lines[i] = line[:p] + bytes([rng.randrange(256)]) + line[p:]
        elif op == 3:
            lines.insert(rng.randrange(len(lines)), line)
        elif op == 4:
            p = rng.randrange(len(line) + 1)
            lines[i] = line[:p] + rng.choice(_TOKENS) + line[p:]
        elif op == 5 and line:
            p = rng.randrange(len(line))
            lines[i] = line[:p] + line[p + 1:]
        else:
            lines[i] = rng.choice([b"", b"  ", b"    "]) + line.lstrip()
    return b"\n".join(lines)


def test_fuzz_base_is_valid(check_text) -> None:
    checked = check_text(FUZZ_BASE)
    assert checked.errors == []
    assert checked.valid


def test_random_mutations_never_raise(write_inventory) -> None:
    base = FUZZ_BASE.encode()
    outcomes = {"valid": 0, "invalid": 0}
    for seed in range(200):
        data = _mutate(random.Random(seed), base)
        write_inventory(data)
        try:
            inv, problems = check_inventory(F)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"seed {seed}: check_inventory raised {exc!r} for:\n{data.decode('utf-8', 'replace')}")
        assert inv is None or isinstance(inv, Inventory), seed
        assert all(isinstance(p, Problem) and p.severity in ("error", "warning") for p in problems), seed
        assert all(isinstance(p.render(), str) for p in problems), seed
        if inv is None:
            assert any(p.severity == "error" for p in problems), f"seed {seed}: invalid without an error"
        outcomes["valid" if inv is not None else "invalid"] += 1
    # the mutations must exercise both outcomes, or the test proves little
    assert outcomes["invalid"] > 100
    assert outcomes["valid"] > 0


@pytest.mark.parametrize("text", [
    "version: 1\nhosts: {h: {address: [1, 2], site: {a: 1}, roles: [[lb]]}}\n",
    "version: 1\nname: x\ndomain: x.test\nsites: {s: {provider: p}}\nhosts: {'[1:2]': {address: 1.2.3.4, "
    "site: s, roles: [app]}}\n",
    "version: 1\nsites: {1: {provider: 2, vip: 3}}\nhosts: {2: {address: 4, site: 1, roles: [5]}}\n",
    "version: 1\nsites: {s: {provider: p, vip: 10.0.0.1}}\nhosts: {h: {address: 10.0.0.1, site: s, roles: [lb]}}\n",
    "version: 1\nfailure_domains: [[1], {a: 1}, ~]\nssh: {port: -1, user: ''}\n",
    "version: 1\nservices: {app: {min_capacity: .nan, port: .inf}}\n",
    "version: 9999999999999999999999999\n",
    "version: 1\nhosts: {'h-[0:99999999999999999999]': {address: 10.0.0.1, site: s, roles: [app]}}\n",
    "? [a]\n: 1\n? {b: 2}\n: 3\n",
    "version: !!binary aGVsbG8=\nname: !!timestamp 2001-12-14\n",
    "a: &a\n  b: 1\nc: *a\nd: {<<: [*a, *a]}\n",
])
def test_odd_inputs_never_raise(check_text, text: str) -> None:
    checked = check_text(text)
    assert checked.valid or checked.errors
