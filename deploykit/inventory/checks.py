"""Whole-inventory rules and the building of the frozen model.

The shape of each part has been checked by `shape.py`; here the parts are related to each other:
sites named by hosts, host ranges expanded, names and addresses unique, one spelling per provider, site and
rack name, VIPs, quorum sizes, ports. Every problem is recorded (with file, line and key path) before anything
is returned. The known roles (and their canonical order) are a parameter, `roles`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address
from pathlib import Path
from typing import Any

from deploykit.inventory import schema
from deploykit.inventory.meshchecks import MeshEntry, build_mesh
from deploykit.inventory.model import (
    DEFAULT_MAX_STARTUPS,
    LEVELS,
    AppService,
    BackupService,
    CacheService,
    DbService,
    DnsService,
    EtcdService,
    Host,
    Inventory,
    LbService,
    LbTls,
    PoolerService,
    Services,
    Site,
    SshSettings,
    default_session_pool,
)
from deploykit.inventory.names import LABEL, domain_problem, name_problem, natural_key
from deploykit.inventory.ranges import RangeError, check_range_addresses, expand_names
from deploykit.inventory.shape import describe, validate_part
from deploykit.inventory.spelling import check_one_spelling, fold, other_spelling
from deploykit.inventory.suggest import did_you_mean
from deploykit.inventory.tlschecks import check_tls
from deploykit.inventory.yamlsource import KeyPath, Source

SUPPORTED_VERSION = 1
_SITE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_SSH_DEFAULTS = {"user": "root", "port": 22, "identity_file": "~/.ssh/id_ed25519", "known_hosts": "known_hosts",
                 "max_startups": DEFAULT_MAX_STARTUPS}


@dataclass
class _Entry:
    """One `hosts:` entry after its shape was checked: the hosts it expands to."""

    key: str
    spec: schema.HostSpec
    names: tuple[str, ...]
    first: IPv4Address
    is_range: bool
    usable: bool  # False when its roles, site or provider are wrong: still checked for collisions

    @property
    def path(self) -> KeyPath:
        return ("hosts", self.key)

    def address(self, i: int) -> IPv4Address:
        return self.first + i


def parse_address(src: Source, path: KeyPath, text: str, what: str = "address") -> IPv4Address | None:
    try:
        return IPv4Address(text.strip())
    except AddressValueError:
        hint = " (IPv6 is not supported yet)" if ":" in text else " like 10.10.0.21"
        src.error(path, f"'{text}' is not a valid IPv4 {what}; write four numbers 0-255{hint}")
        return None


def build(src: Source, file: Path, roles: tuple[str, ...]) -> Inventory | None:
    data = src.data
    if not isinstance(data, dict):
        src.error((), f"the inventory must be a mapping of keys (version, name, hosts, ...), got {describe(data)}")
        return None
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    for key in data:
        if key not in schema.SECTION_KEYS[""]:
            src.error((key,), f"unknown key '{key}'{did_you_mean(key, schema.SECTION_KEYS[''])}; "
                      "keys starting with 'x-' are free for YAML anchors")
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SUPPORTED_VERSION:
        src.error(("version",), f"unsupported version {version}; this deploykit reads inventory version "
                  f"{SUPPORTED_VERSION}")
        return None
    head = validate_part(src, _Head, {k: data[k] for k in _Head.model_fields if k in data}, ())
    ssh = validate_part(src, schema.SshSpec, _or_empty(data.get("ssh")), ("ssh",))
    services = validate_part(src, schema.ServicesSpec, _or_empty(data.get("services")), ("services",))
    mesh_spec = validate_part(src, schema.MeshSpec, _or_empty(data.get("mesh")), ("mesh",))
    levels = _check_levels(src, head.failure_domains if head else ["host"])
    if head is not None and (problem := name_problem(head.name)) is not None:
        src.error(("name",), problem)
    if head is not None and (problem := domain_problem(head.domain)) is not None:
        src.error(("domain",), problem)

    sites = _build_sites(src, data.get("sites"))
    entries = _expand_hosts(src, data.get("hosts"), sites, roles)
    check_one_spelling(src, "rack", ((e.spec.rack, e.path + ("rack",)) for e in entries if e.spec.rack))
    _check_unique(src, entries, sites)
    ssh_defaults = _ssh_settings(file, _SSH_DEFAULTS, ssh)
    public = [e.address(i) for e in entries for i in range(len(e.names))]
    public += [s.vip for s in sites.values() if s is not None and s.vip is not None]
    mesh, mesh_addresses = build_mesh(src, mesh_spec, (MeshEntry(e.path, e.names, e.spec.mesh_address)
                                                        for e in entries), public)
    hosts = _build_hosts(src, entries, sites, file, ssh_defaults, ssh, roles, mesh_addresses)
    tls = check_tls(src, file, services.lb.tls if services else None, head.domain if head else None,
                    services.dns.names if services else [])
    svc = _build_services(services, tls)
    _check_tiers(src, sites, entries, levels, roles)
    _check_dns(src, sites, entries, roles, services, head.domain if head else None)
    _check_ports(src, svc, hosts, entries)
    _check_pooler(src, svc, hosts)

    if head is None or ssh is None or services is None or mesh is None \
            or any(p.severity == "error" for p in src.problems):
        return None
    warnings = tuple(p.render() for p in src.problems if p.severity == "warning")
    return Inventory(
        path=file, name=head.name, domain=head.domain, failure_domains=tuple(levels), ssh=ssh_defaults,
        sites={n: s for n, s in sites.items() if s is not None},
        hosts=tuple(sorted(hosts, key=lambda h: natural_key(h.name))), services=svc, warnings=warnings, mesh=mesh,
    )


def _or_empty(value: Any) -> Any:
    """An absent or empty (`ssh:`) section means defaults; any other value is checked as it is."""
    return {} if value is None else value


class _Head(schema._Spec):
    version: schema.StrictInt
    name: schema.Name
    domain: schema.Domain
    failure_domains: list[schema.StrictStr] = schema.Field(default_factory=lambda: ["host"])


def _check_levels(src: Source, levels: list[str]) -> list[str]:
    out: list[str] = []
    if not levels:
        src.error(("failure_domains",), "list at least one level, e.g. [host] or [provider, site]")
    for i, level in enumerate(levels):
        if level not in LEVELS:
            src.error(("failure_domains", i), f"unknown failure-domain level '{level}'{did_you_mean(level, LEVELS)}")
        elif level in out:
            src.error(("failure_domains", i), f"level '{level}' is listed twice")
        else:
            out.append(level)
    return sorted(out, key=LEVELS.index)


def _build_sites(src: Source, raw: Any) -> dict[str, Site | None]:
    """Site name -> Site, or None for a site whose entry is broken (still known, to avoid noise)."""
    sites: dict[str, Site | None] = {}
    providers: list[tuple[str, KeyPath]] = []
    if raw is None:
        src.error(("sites",), "required key 'sites' is missing; every host belongs to a site, e.g. "
                  "fra1: {provider: hetzner, vip: 10.10.0.100}")
        return sites
    if not isinstance(raw, dict):
        src.error(("sites",), f"expected a mapping of site names to settings, got {describe(raw)}")
        return sites
    spellings: dict[str, list[str]] = {}
    for name in raw:
        spellings.setdefault(fold(str(name)), []).append(str(name))
    for name, body in raw.items():
        path: KeyPath = ("sites", name)
        spec = validate_part(src, schema.SiteSpec, body, path)
        sites[name] = None
        if spec is not None:
            providers.append((spec.provider, path + ("provider",)))
        if not _SITE.match(name):
            others = [n for n in spellings[fold(name)] if n != name]
            if others:  # a valid spelling (lower-case) of the same name first
                other = sorted(others, key=lambda n: not _SITE.match(n))[0]
                other_spelling(src, "site", name, path, other, ("sites", other), _site_spelling(other, name))
            else:
                fix = f" (e.g. '{name.lower()}')" if _SITE.match(name.lower()) else ""
                src.error(path, f"site name '{name}' must be lower-case letters, digits and '-' (at most 31){fix}")
            continue
        if spec is None:
            continue
        vip = parse_address(src, path + ("vip",), spec.vip, "VIP") if spec.vip is not None else None
        if spec.vip is not None and vip is None:
            continue
        sites[name] = Site(name=name, provider=spec.provider, vip=vip, interface=spec.interface)
    if not raw:
        src.error(("sites",), "no sites defined; add at least one, e.g. fra1: {provider: hetzner}")
    check_one_spelling(src, "provider", providers)
    return sites


def _site_spelling(*names: str) -> str:
    """The spelling to suggest for a site named in several ways: the first valid one (lower-case)."""
    candidates = [*names, *(n.lower() for n in names)]
    return next((n for n in candidates if _SITE.match(n)), names[0])


def _site_folds(sites: dict[str, Site | None]) -> dict[str, str]:
    """Folded site name -> the site's key (the first, if several keys differ only in case)."""
    folds: dict[str, str] = {}
    for name in sites:
        folds.setdefault(fold(name), name)
    return folds


def _expand_hosts(src: Source, raw: Any, sites: dict[str, Site | None], roles: tuple[str, ...]) -> list[_Entry]:
    if raw is None:
        src.error(("hosts",), "required key 'hosts' is missing; list your servers, e.g. "
                  "web-[1:2]: {address: 10.10.0.11, site: fra1, roles: [lb, app]}")
        return []
    if not isinstance(raw, dict):
        src.error(("hosts",), f"expected a mapping of host names to settings, got {describe(raw)}")
        return []
    if not raw:
        src.error(("hosts",), "no hosts defined; add at least one server")
    providers = {s.provider for s in sites.values() if s is not None}
    folded_providers = {fold(p) for p in providers}
    site_folds = _site_folds(sites)
    entries: list[_Entry] = []
    for key, body in raw.items():
        path: KeyPath = ("hosts", key)
        try:
            expansion = expand_names(key)
        except RangeError as exc:
            src.error(path, str(exc))
            expansion = None
        if isinstance(body, dict) and "roles" in body and body["roles"] == []:
            # Deliberately empty: the step before removing a host (docs/operations.md).
            src.warn(path + ("roles",), "this host has no roles: the next apply retires every role it ran (hands "
                     "leadership over, leaves the clusters, stops the services); remove it from the inventory after")
        elif isinstance(body, dict) and "roles" in body and body["roles"] is None:
            src.error(path + ("roles",), "this host has no roles; give it at least one of: " + ", ".join(roles)
                      + " (or roles: [] to retire every role it ran)")
            body = {k: v for k, v in body.items() if k != "roles"}
        elif isinstance(body, dict) and "roles" not in body:
            src.error(path, "this host has no roles; add e.g. roles: [app] (one or more of: "
                      + ", ".join(roles) + ")")
        spec = validate_part(src, schema.HostSpec, body, path)
        if spec is None:
            if isinstance(body, dict) and isinstance(body.get("address"), str):
                parse_address(src, path + ("address",), body["address"])
            continue
        if expansion is None:
            parse_address(src, path + ("address",), spec.address)
            continue
        ok = True
        for i, role in enumerate(spec.roles):
            if role not in roles:
                src.error(path + ("roles", i), f"unknown role '{role}'{did_you_mean(role, roles)}")
                ok = False
            elif role in spec.roles[:i]:
                src.warn(path + ("roles", i), f"role '{role}' is listed twice")
        if spec.site not in sites:
            same = site_folds.get(fold(spec.site))
            if same is not None:
                other_spelling(src, "site", spec.site, path + ("site",), same, ("sites", same),
                               _site_spelling(same, spec.site))
            else:
                src.error(path + ("site",), f"unknown site '{spec.site}'{did_you_mean(spec.site, sites)}; "
                          "sites are defined under 'sites:'")
            ok = False
        else:
            site = sites[spec.site]
            if spec.provider is not None and site is not None and spec.provider != site.provider:
                if fold(spec.provider) == fold(site.provider):
                    other_spelling(src, "provider", spec.provider, path + ("provider",), site.provider,
                                   ("sites", spec.site, "provider"))
                elif fold(spec.provider) not in folded_providers:
                    src.error(path + ("provider",), f"unknown provider '{spec.provider}'"
                              f"{did_you_mean(spec.provider, providers)}")
                else:
                    src.error(path + ("provider",), f"site '{spec.site}' is at provider '{site.provider}', "
                              f"not '{spec.provider}'; drop this key or fix the site")
                ok = False
        first = parse_address(src, path + ("address",), spec.address)
        if first is None:
            continue
        if int(first) + len(expansion.names) - 1 > int(IPv4Address("255.255.255.255")):
            src.error(path + ("address",), f"{len(expansion.names)} consecutive addresses from {first} run past "
                      "255.255.255.255")
            continue
        if expansion.is_range:
            try:
                check_range_addresses(key, first, len(expansion.names))
            except RangeError as exc:  # kept as an entry: its hosts still count for collisions and tiers
                src.error(path + ("address",), str(exc))
        entries.append(_Entry(key, spec, expansion.names, first, expansion.is_range, ok))
    return entries


def _check_unique(src: Source, entries: list[_Entry], sites: dict[str, Site | None]) -> None:
    by_name: dict[str, _Entry] = {}
    by_addr: dict[IPv4Address, tuple[_Entry, str]] = {}
    for e in entries:
        for i, name in enumerate(e.names):
            other = by_name.get(name)
            if other is not None:
                src.error(e.path, f"host '{name}' is defined twice: by '{other.key}' (line "
                          f"{src.line_of(other.path)}) and by '{e.key}'; rename one")
            else:
                by_name[name] = e
            addr = e.address(i)
            prev = by_addr.get(addr)
            if prev is None:
                by_addr[addr] = (e, name)
                continue
            p_entry, p_name = prev
            line = src.line_of(p_entry.path)
            if e.is_range and i > 0:
                src.error(e.path + ("address",), f"the range's consecutive addresses "
                          f"{e.first}..{e.address(len(e.names) - 1)} run into {addr}, the address of "
                          f"'{p_name}' (line {line}); start the range elsewhere or move that host")
            elif p_entry.is_range and p_name != p_entry.names[0]:
                src.error(e.path + ("address",), f"address {addr} lies inside the range of '{p_entry.key}' "
                          f"(line {line}), which gives it to '{p_name}'; pick another address")
            else:
                src.error(e.path + ("address",), f"address {addr} is already used by '{p_name}' (line {line})")
    vips: dict[IPv4Address, str] = {}
    for name, site in sites.items():
        if site is None or site.vip is None:
            continue
        vpath: KeyPath = ("sites", name, "vip")
        if site.vip in by_addr:
            entry, host = by_addr[site.vip]
            src.error(vpath, f"VIP {site.vip} is also the address of host '{host}' (line "
                      f"{src.line_of(entry.path)}); a VIP must be a free address the load balancers share")
        if site.vip in vips:
            src.error(vpath, f"VIP {site.vip} is also the VIP of site '{vips[site.vip]}'")
        vips[site.vip] = name


def _ssh_settings(file: Path, base: dict[str, Any], spec: schema.SshSpec | None) -> SshSettings:
    merged = dict(base)
    if spec is not None:
        merged.update({k: v for k, v in spec.model_dump().items() if v is not None})
    return SshSettings(
        user=merged["user"], port=merged["port"],
        identity_file=_resolve(file, merged["identity_file"]), known_hosts=_resolve(file, merged["known_hosts"]),
        max_startups=merged["max_startups"],
    )


def _resolve(file: Path, value: str | Path) -> Path:
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else (file.parent / p)


def _build_hosts(src: Source, entries: list[_Entry], sites: dict[str, Site | None], file: Path,
                 ssh: SshSettings, spec: schema.SshSpec | None, roles: tuple[str, ...],
                 mesh_addresses: dict[str, IPv4Address]) -> list[Host]:
    hosts: list[Host] = []
    base = {"user": ssh.user, "port": ssh.port, "identity_file": str(ssh.identity_file),
            "known_hosts": str(ssh.known_hosts), "max_startups": ssh.max_startups}
    for e in entries:
        site = sites.get(e.spec.site)
        if site is None or not e.usable:
            continue
        host_ssh = ssh if e.spec.ssh is None else _ssh_settings(file, base, e.spec.ssh)
        host_roles = tuple(r for r in roles if r in e.spec.roles)
        line = src.line_of(e.path) or 0
        for i, name in enumerate(e.names):
            hosts.append(Host(name=name, address=e.address(i), site=site.name, provider=site.provider,
                              rack=e.spec.rack, roles=host_roles, ssh=host_ssh, line=line,
                              interface=e.spec.interface or site.interface,
                              mesh_address=mesh_addresses.get(name, IPv4Address(0))))
    return hosts


def _build_services(spec: schema.ServicesSpec | None, tls: LbTls) -> Services:
    if spec is None:
        return Services()
    return Services(
        app=AppService(**spec.app.model_dump()), db=DbService(**spec.db.model_dump()),
        cache=CacheService(**spec.cache.model_dump()), etcd=EtcdService(**spec.etcd.model_dump()),
        lb=LbService(**spec.lb.model_dump(exclude={"tls"}), tls=tls),
        dns=DnsService(ttl=spec.dns.ttl, names=tuple(spec.dns.names), check_interval=spec.dns.check_interval,
                       check_timeout=spec.dns.check_timeout),
        backup=BackupService(**spec.backup.model_dump()),
        pooler=PoolerService(**spec.pooler.model_dump()),
    )


@dataclass(frozen=True)
class _Member:
    """A host as the tier checks see it: also from entries with another error (an unknown role,
    a broken site), so that one typo does not cause a cascade of misleading tier errors."""

    name: str
    site: str
    roles: tuple[str, ...]
    rack: str | None

    def has(self, role: str) -> bool:
        return role in self.roles


def _members(entries: list[_Entry], sites: dict[str, Site | None], roles: tuple[str, ...]) -> list[_Member]:
    """Every host of the entries; a site named in another case (an error already) counts as that site."""
    folds = _site_folds(sites)
    out: list[_Member] = []
    for e in entries:
        site = e.spec.site if e.spec.site in sites else folds.get(fold(e.spec.site), e.spec.site)
        host_roles = tuple(r for r in roles if r in e.spec.roles)
        out.extend(_Member(n, site, host_roles, e.spec.rack) for n in e.names)
    return out  # file order: messages name hosts as the reader meets them


def _check_tiers(src: Source, sites: dict[str, Site | None], entries: list[_Entry], levels: list[str],
                 roles: tuple[str, ...]) -> None:
    entry_of = {n: e for e in entries for n in e.names}
    hosts = _members(entries, sites, roles)
    lbs_of: dict[str, list[_Member]] = {}
    for h in hosts:
        if h.has("lb"):
            lbs_of.setdefault(h.site, []).append(h)
    for name, site in sites.items():
        lbs = lbs_of.get(name, [])
        if site is not None and site.vip is None and lbs:
            src.error(("sites", name), f"site '{name}' has load balancers ({', '.join(h.name for h in lbs)}) "
                      "but no 'vip'; add vip: <a free address in the site's network> for them to share")
    etcd = [h for h in hosts if h.has("etcd")]
    if etcd and len(etcd) % 2 == 0:
        src.error(("hosts", entry_of[etcd[-1].name].key, "roles"),
                  f"etcd has an even number of members ({len(etcd)}: {', '.join(h.name for h in etcd)}); "
                  f"{len(etcd)} members tolerate no more failures than {len(etcd) - 1}: add or remove one")
    if any(h.has("db") for h in hosts) and not etcd:
        src.error(("hosts",), "the db tier needs etcd (Patroni keeps its leader lock there): give the 'etcd' "
                  "role to an odd number of hosts, e.g. the db hosts")
    repos = [h for h in hosts if h.has("backup")]
    if repos and all(h.has("db") for h in repos):
        src.error(("hosts", entry_of[repos[0].name].key, "roles"),
                  f"every backup host is also a db host ({', '.join(h.name for h in repos)}): a database server "
                  "lost would take its backups with it; give the 'backup' role to a host without 'db' too")
    if repos and not any(h.has("db") for h in hosts):
        src.warn(("hosts", entry_of[repos[0].name].key, "roles"), "there are backup hosts but no 'db' host: "
                 "nothing to back up")
    if any(h.has("app") for h in hosts) and not any(h.has("lb") for h in hosts):
        src.warn(("hosts",), "there are app hosts but no 'lb' host: nothing will load-balance them")
    if "rack" in levels:
        rackless = [h.name for h in hosts if h.rack is None]
        if rackless:
            src.warn(("failure_domains",), f"'rack' is a failure domain but {len(rackless)} host(s) have no rack "
                     f"(e.g. {rackless[0]}); each counts as a rack of its own")
    used = {h.site for h in hosts}
    for name in sites:
        if name not in used:
            src.warn(("sites", name), f"site '{name}' has no hosts")


DNS_ROLE = "dns"
# Labels under the domain that the dns role names itself: ns1, ns2 ... for its servers.
_NS_LABEL = re.compile(r"^ns[0-9]+$")


def _check_dns(src: Source, sites: dict[str, Site | None], entries: list[_Entry], roles: tuple[str, ...],
               spec: schema.ServicesSpec | None, domain: str | None) -> None:
    """The dns role: servers at two providers or more, something to answer with, and valid extra names.

    Two providers imply two units of every failure-domain level (a provider holds its sites, racks and
    hosts), so losing any one unit of any level leaves a dns server: the resilience proof's dns tier is then
    down only if no site's entry survives, which the lb tier reports too.
    """
    if DNS_ROLE not in roles:
        return
    entry_of = {n: e for e in entries for n in e.names}
    hosts = _members(entries, sites, roles)
    dns = [h for h in hosts if h.has(DNS_ROLE)]
    names = spec.dns.names if spec is not None else []
    _check_dns_names(src, names, domain)
    if not dns:
        return
    where: KeyPath = ("hosts", entry_of[dns[-1].name].key, "roles")
    served = domain or "the domain"
    provider_of = {n: s.provider for n, s in sites.items() if s is not None}
    providers: dict[str, list[str]] = {}
    for h in dns:
        if h.site in provider_of:
            providers.setdefault(fold(provider_of[h.site]), []).append(h.name)
    if len(providers) == 1:
        (hosts_at,) = providers.values()
        provider = provider_of[next(h.site for h in dns if h.site in provider_of)]
        if len(dns) == 1:
            what = f"the dns role is on one host only ({dns[0].name}, at {provider})"
        else:
            what = f"every dns host is at provider '{provider}' ({', '.join(hosts_at)})"
        src.error(where, f"{what}: losing {provider} would take {served} off the air; give the dns role to "
                  "hosts at two or more providers (e.g. one host per provider)")
    if not any(h.has("lb") for h in hosts):
        src.error(where, f"the dns role answers {served} with the sites' entry addresses (each site's VIP), but "
                  "no site has lb hosts; add lb hosts (and a vip) to the sites")
    if domain is not None and "." not in domain and domain_problem(domain) is None:
        src.error(("domain",), f"the dns role serves '{domain}' itself, but a registrar delegates only a name of "
                  "two labels or more; use e.g. 'chirp.example'")


def _check_dns_names(src: Source, names: list[str], domain: str | None) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        path: KeyPath = ("services", "dns", "names", i)
        if not LABEL.match(name):
            fix = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
            src.error(path, f"'{name}' is not a DNS label: lower-case letters, digits and '-', at most 63, one label "
                      f"under the domain{f' (e.g. {fix!r})' if LABEL.match(fix) else ''}")
        elif name == "www":
            src.warn(path, "'www' is always answered (with the apex); drop it here")
        elif _NS_LABEL.match(name):
            src.error(path, f"'{name}' names a dns server (ns1, ns2 ... are the NS records); pick another name")
        elif name in seen:
            src.warn(path, f"'{name}' is listed twice")
        elif domain is not None and len(f"{name}.{domain}") > 253:
            src.error(path, f"'{name}.{domain}' is longer than 253 characters")
        seen.add(name)


# Ports a role always listens on (not settings): another service's port setting must not take them.
_FIXED_PORTS = {DNS_ROLE: {53: "DNS (always port 53)"}}


def _check_ports(src: Source, svc: Services, hosts: list[Host], entries: list[_Entry]) -> None:
    """Two services of one host must not listen on the same port."""
    ports = {
        "lb": {"lb.http_port": svc.lb.http_port, "lb.https_port": svc.lb.https_port,
               "lb.stats_port": svc.lb.stats_port, "lb.db_primary_port": svc.lb.db_primary_port,
               "lb.db_replica_port": svc.lb.db_replica_port, "lb.cache_port": svc.lb.cache_port},
        "app": {"app.port": svc.app.port},
        "db": {"db.port": svc.db.port, "db.patroni_port": svc.db.patroni_port, "pooler.port": svc.pooler.port},
        "cache": {"cache.port": svc.cache.port, "cache.sentinel_port": svc.cache.sentinel_port},
        "etcd": {"etcd.client_port": svc.etcd.client_port, "etcd.peer_port": svc.etcd.peer_port},
    }
    seen_combos: set[tuple[str, ...]] = set()
    for h in hosts:
        if h.roles in seen_combos:
            continue
        seen_combos.add(h.roles)
        taken: dict[int, str] = {}
        for role in h.roles:
            for port, what in _FIXED_PORTS.get(role, {}).items():
                taken.setdefault(port, what)
        for role in h.roles:
            for key, port in ports.get(role, {}).items():
                if port in taken:
                    src.error(("services", key.split(".")[0], key.split(".")[1]),
                              f"port {port} of {key} is also {taken[port]} on host '{h.name}' (roles "
                              f"{', '.join(h.roles)}); pick another port")
                taken.setdefault(port, key)


def _check_pooler(src: Source, svc: Services, hosts: list[Host]) -> None:
    """The pooler's settings against the hosts that connect through it: every worker host holds a session-pool
    connection (its LISTEN) and the release takes one for its migration lock; each app host opens at least one
    client connection per gunicorn worker (more with threads, see services/pooler) and each worker host two."""
    pooler = svc.pooler
    workers = sum(1 for h in hosts if h.has("worker"))
    apps = sum(1 for h in hosts if h.has("app"))
    if pooler.session_pool_size is not None and pooler.session_pool_size < workers + 1:
        src.error(("services", "pooler", "session_pool_size"),
                  f"{pooler.session_pool_size} session connections cannot hold the LISTEN of the {workers} worker "
                  f"hosts and the release's migration lock: write at least {workers + 1}, or leave it out "
                  f"(then {default_session_pool(workers)})")
    least = apps * svc.app.workers + workers * 2 + 1
    if pooler.max_client_conn is not None and pooler.max_client_conn < least:
        src.error(("services", "pooler", "max_client_conn"),
                  f"{pooler.max_client_conn} client connections are fewer than the {least} the app opens at least "
                  f"({apps} app hosts x {svc.app.workers} gunicorn workers, {workers} worker hosts x 2, the "
                  "release): write more, or leave it out (then computed from the app)")
