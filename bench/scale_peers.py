"""What the peers run in bench/apply_scale.py: deploykit's smallest apply, as a pyinfra 3 deploy and an Ansible
playbook, generated from deploykit's own desired state (never a second description of the base role).

`derive(inv)` asks deploykit's planning code, offline, what every host of an inventory whose hosts have no roles
gets: the every-host services (base and mesh), in phase order, each host's files as deploykit renders them, the
commands that check and apply them, the units and the waits. `write_pyinfra` and `write_ansible` turn that into
files a pyinfra or Ansible user would run, doing the same in the same order, per service: packages, files
(each checked), after-change commands, daemon-reload, units (enabled, running; reloaded when a file notifies
them and they were already running), waits (only when something of the service changed).

The mesh config is the one file whose content exists only at run time: it names every other host's WireGuard
public key, made on that host. deploykit renders it here with a marker in place of each key; each peer's
template fills the markers in with the keys its own run reads from the hosts (pyinfra: a fact gathered from
all hosts at once; Ansible: a registered task and hostvars).
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploykit.apply.phases import desired_states
from deploykit.execute.steps import wait_command
from deploykit.inventory.model import Inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import RoleState, Unit
from deploykit.secret import Secret
from deploykit.services.mesh.config import KERNEL, PUBLIC_KEY
from deploykit.services.mesh.keys import ENSURE_PUBLIC_KEY

KEY_MARK = "@@dk-mesh-key:{name}@@"
KEY_MARK_RE = re.compile(r"@@dk-mesh-key:([^@\s]+)@@")
JINJA_DELIMITERS = ("{{", "{%", "{#")
SYSTEMD_DIRS = ("/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/")
# Directories a Debian 12 server with these packages has (/etc/wireguard: made by the key command, which runs
# first). Ansible's copy does not make a missing parent directory (deploykit's and pyinfra's uploads do): the
# playbook makes the others with ansible.builtin.file, as one would by hand.
PRESENT_DIRS = frozenset({"/etc", "/etc/ssh/sshd_config.d", "/etc/sysctl.d", "/etc/systemd/system", "/usr/local/lib",
                          "/etc/wireguard"})


@dataclass(frozen=True)
class Cmd:
    """A shell command: the same on every host, or one per host (e.g. a wait naming the host's mesh address),
    then kept in the host variable `var`."""

    var: str
    by_host: dict[str, str]

    @property
    def shared(self) -> str | None:
        values = set(self.by_host.values())
        return values.pop() if len(values) == 1 else None


@dataclass(frozen=True)
class PeerFile:
    path: str
    mode: str
    owner: str
    group: str
    validate: str | None  # deploykit's check, `{path}` standing for the file checked
    after_change: Cmd | None
    notify: tuple[str, ...]
    templated: bool  # holds key markers: rendered at run time with the hosts' public keys


@dataclass(frozen=True)
class PeerRole:
    role: str
    packages: tuple[str, ...]
    files: tuple[PeerFile, ...]
    units: tuple[Unit, ...]
    waits: tuple[tuple[str, Cmd], ...]  # (description, the command deploykit runs: retried until its timeout)


@dataclass(frozen=True)
class Equivalent:
    inv: Inventory
    roles: tuple[PeerRole, ...]
    contents: dict[str, dict[str, str]]  # host -> path -> content (key markers in the mesh config)
    key_command: str  # prints the host's mesh public key, making the key pair first if there is none

    def host_vars(self, name: str) -> dict[str, str]:
        return {c.var: c.by_host[name] for c in self.commands() if c.shared is None}

    def commands(self) -> list[Cmd]:
        out = [f.after_change for r in self.roles for f in r.files if f.after_change is not None]
        return out + [cmd for r in self.roles for _, cmd in r.waits]


def _no_secret(name: str) -> Secret:
    raise ValueError(f"the every-host services asked for secret {name!r}: bench/scale_peers.py cannot copy that")


def derive(inv: Inventory) -> Equivalent:
    """The every-host services' state on each host of `inv` (whose hosts have no roles), from deploykit.

    The mesh's facts as the lab has them: every host's public key (a marker here), and no WireGuard in the
    kernel (the lab's containers run wireguard-go, so the mesh's packages include it)."""
    if any(h.roles for h in inv.hosts):
        raise ValueError("the peers' equivalent covers hosts without roles only (base and mesh)")
    facts = {h.name: {PUBLIC_KEY: KEY_MARK.format(name=h.name), KERNEL: "userspace"} for h in inv.hosts}
    states = desired_states(inv, plan_placement(inv), _no_secret, facts=facts)
    names = [h.name for h in inv.hosts]
    first = states[names[0]]
    roles = []
    for i, state in enumerate(first):
        per_host = {n: states[n][i] for n in names}
        roles.append(_peer_role(state, per_host))
    contents = {n: {f.path: f.content for s in states[n] for f in s.files} for n in names}
    eq = Equivalent(inv, tuple(roles), contents, ENSURE_PUBLIC_KEY)
    # Ansible templates every task argument and variable it uses: a command must come through unchanged.
    texts = [eq.key_command, *(v for c in eq.commands() for v in c.by_host.values())]
    texts += [f.validate for r in eq.roles for f in r.files if f.validate]
    texts += [packages_script(r.packages) for r in eq.roles]
    if bad := [t for t in texts if any(d in t for d in JINJA_DELIMITERS)]:
        raise ValueError(f"a command holds template delimiters (Ansible would template it): {bad[0][:80]!r}")
    return eq


def _peer_role(state: RoleState, per_host: dict[str, RoleState]) -> PeerRole:
    role = state.role
    for name, s in per_host.items():
        if (s.role, s.packages, [f.path for f in s.files], s.services, len(s.waits)) != (
                role, state.packages, [f.path for f in state.files], state.services, len(state.waits)):
            raise ValueError(f"{role} differs on {name} beyond file contents and commands: not supported here")
        if s.directories or s.masked or s.once or s.prepare or s.retiring:
            raise ValueError(f"{role} on {name} has directories, masks, run-once or prepare commands: "
                             "bench/scale_peers.py does not translate those yet")
    files = []
    for j, f in enumerate(state.files, 1):
        if f.seed or f.before_install:
            raise ValueError(f"{f.path}: seed and before-install files are not translated here")
        same = {(g.path, g.mode, g.owner, g.group, g.validate, g.notify) for s in per_host.values()
                for g in s.files[j - 1:j]}
        if len(same) != 1:
            raise ValueError(f"{f.path}: mode, owner, check or notified units differ between hosts")
        after = None
        if f.after_change is not None:
            by_host = {n: s.files[j - 1].after_change or "" for n, s in per_host.items()}
            after = Cmd(f"dk_{_ident(role)}_after_{j}", by_host)
        templated = any(KEY_MARK_RE.search(s.files[j - 1].content) for s in per_host.values())
        if templated:
            for s in per_host.values():
                bare = KEY_MARK_RE.sub("", s.files[j - 1].content)
                if any(d in bare for d in JINJA_DELIMITERS):
                    raise ValueError(f"{f.path}: holds template delimiters of its own; cannot be a peer template")
        files.append(PeerFile(f.path, f.mode, f.owner, f.group, f.validate, after, f.notify, templated))
    waits = []
    for k in range(len(state.waits)):
        by_host = {n: wait_command(s.waits[k].command, s.waits[k].timeout_s) for n, s in per_host.items()}
        # e.g. "mesh interface mesh0 up with <the host's mesh address>": named by what the hosts share
        described = os.path.commonprefix([s.waits[k].description + " " for s in per_host.values()])
        described = described[:described.rfind(" ") + 1].strip()
        waits.append((described or f"wait {k + 1}", Cmd(f"dk_{_ident(role)}_wait_{k + 1}", by_host)))
    return PeerRole(role, state.packages, tuple(files), state.services, tuple(waits))


def _ident(text: str) -> str:
    return re.sub(r"\W", "_", text)


def write_contents(eq: Equivalent, files_dir: Path, key_ref: str) -> None:
    """Each host's files under files_dir/<host>/<path>; a templated file as <path>.j2, each key marker replaced
    by `key_ref` (a template expression, `{name}`: the host whose key it is)."""
    templated_paths = {f.path for r in eq.roles for f in r.files if f.templated}
    for host, files in eq.contents.items():
        for path, content in files.items():
            templated = path in templated_paths
            target = files_dir / host / (path.lstrip("/") + (".j2" if templated else ""))
            target.parent.mkdir(parents=True, exist_ok=True)
            if templated:
                content = KEY_MARK_RE.sub(lambda m: key_ref.format(name=m.group(1)), content)
            target.write_text(content)


# pyinfra ------------------------------------------------------------------------------------------------------
PYINFRA_KEYS_MODULE = '''\
"""Every lab host's mesh public key, read from all hosts at once the first time a host's deploy code asks:
each host's mesh config names every other host's key. Generated by bench/apply_scale.py.

pyinfra loads the deploy file for every host at once, each in a greenlet of its pool (as large as --parallel):
the first to ask reads the keys, in greenlets of its own (the pool is full), while the others wait for it.
"""

import gevent
from gevent.lock import Semaphore
from pyinfra.api import FactBase
from pyinfra.context import ctx_config, ctx_host, ctx_state

KEY_COMMAND = {key_command!r}


class MeshPublicKey(FactBase):
    """The host's WireGuard public key; its key pair is made on the host first if it has none (deploykit's probe
    runs the same command)."""

    def command(self):
        return KEY_COMMAND

    def process(self, output):
        return output[0].strip() if output else None


_keys = None
_lock = Semaphore()


def _read(host, config):
    with ctx_config.use(config), ctx_host.use(host):
        return host.name, host.get_fact(MeshPublicKey)


def mesh_public_keys():
    global _keys
    with _lock:
        if _keys is None:
            hosts = ctx_state.get().inventory.get_active_hosts()
            config = ctx_config.get()
            done = gevent.joinall([gevent.spawn(_read, host, config) for host in hosts], raise_error=True)
            _keys = {{name: key for name, key in (g.value for g in done) if key}}
    return _keys
'''


def write_pyinfra(eq: Equivalent, out: Path) -> None:
    """out/inventory.py, out/deploy.py, out/dkbench_mesh.py and out/files/; run from `out`:
    `pyinfra inventory.py deploy.py -y --parallel N`."""
    out.mkdir(parents=True, exist_ok=True)
    write_contents(eq, out / "files", "{{{{ keys[{name!r}] }}}}")
    (out / "dkbench_mesh.py").write_text(PYINFRA_KEYS_MODULE.format(key_command=eq.key_command))
    ssh = eq.inv.hosts[0].ssh
    shared = {"ssh_user": ssh.user, "ssh_port": ssh.port, "ssh_key": str(ssh.identity_file),
              "ssh_known_hosts_file": str(ssh.known_hosts), "ssh_strict_host_key_checking": "yes",
              "ssh_config_file": "/dev/null", "ssh_allow_agent": False, "ssh_look_for_keys": False}
    lines = ['"""The lab hosts (generated by bench/apply_scale.py; every address in 10.77.0.0/16)."""', "",
             "lab = (", "    ["]
    for h in eq.inv.hosts:
        data = {"ssh_hostname": str(h.address), **eq.host_vars(h.name)}
        lines.append(f"        ({h.name!r}, {data!r}),")
    lines += ["    ],", f"    {shared!r},", ")", ""]
    (out / "inventory.py").write_text("\n".join(lines))
    (out / "deploy.py").write_text(pyinfra_deploy(eq))


def pyinfra_deploy(eq: Equivalent) -> str:
    lines = [
        '"""deploykit\'s apply of its every-host services (base, mesh) as a pyinfra 3 deploy: generated by',
        "bench/apply_scale.py from deploykit's desired state. pyinfra's files.put has no check-before-replace: a",
        'file\'s check runs after it is in place, only when it changed."""',
        "",
        "from pyinfra import host",
        "from pyinfra.operations import apt, files, server, systemd",
        "from pyinfra.operations.util import any_changed",
        "",
        "from dkbench_mesh import mesh_public_keys",
        "",
        'FILES = f"files/{host.name}"',
        "KEYS = mesh_public_keys()  # every host's (made on the host if missing), read from all hosts at once",
    ]

    def cmd(c: Cmd) -> str:
        return repr(c.shared) if c.shared is not None else f"host.data.get({c.var!r})"

    for role in eq.roles:
        p = _ident(role.role)
        ops = [f"{p}_packages"]
        lines += ["", f"# {role.role}",
                  f"{p}_packages = apt.packages(name={role.role + ': packages'!r}, "
                  f"packages={list(role.packages)!r}, no_recommends=True)"]
        for j, f in enumerate(role.files, 1):
            v = f"{p}_file_{j}"
            ops.append(v)
            common = f"dest={f.path!r}, user={f.owner!r}, group={f.group!r}, mode={f.mode!r}"
            if f.templated:
                lines.append(f'{v} = files.template(name={role.role + ": " + f.path!r}, '
                             f'src=f"{{FILES}}{f.path}.j2", {common}, keys=KEYS)')
            else:
                lines.append(f'{v} = files.put(name={role.role + ": " + f.path!r}, src=f"{{FILES}}{f.path}", {common})')
            if f.validate:
                check = f.validate.format(path=shlex.quote(f.path))
                lines.append(f"server.shell(name={role.role + ': check ' + f.path!r}, commands=[{check!r}], "
                             f"_if={v}.did_change)")
        for j, f in enumerate(role.files, 1):
            if f.after_change is not None:
                lines.append(f"server.shell(name={role.role + ': apply ' + f.path!r}, "
                             f"commands=[{cmd(f.after_change)}], _if={p}_file_{j}.did_change)")
        unit_files = [f"{p}_file_{j}" for j, f in enumerate(role.files, 1) if f.path.startswith(SYSTEMD_DIRS)]
        if unit_files:
            lines.append(f"systemd.daemon_reload(name={role.role + ': daemon-reload'!r}, "
                         f"_if=any_changed({', '.join(unit_files)}))")
        for k, u in enumerate(role.units, 1):
            v = f"{p}_unit_{k}"
            ops.append(v)
            lines.append(f"{v} = systemd.service(name={role.role + ': ' + u.name!r}, service={u.name!r}, "
                         f"running={u.running!r}, enabled={u.enabled!r})")
            notified = [f"{p}_file_{j}" for j, f in enumerate(role.files, 1) if u.name in f.notify]
            if notified and u.running:
                action = "reload" if u.reload else "restart"
                lines.append(f"systemd.service(name={role.role + ': ' + action + ' ' + u.name!r}, "
                             f"service={u.name!r}, running=True, {action}ed=True, "
                             f"_if=[any_changed({', '.join(notified)}), {v}.did_not_change])")
        for description, c in role.waits:
            lines.append(f"server.shell(name={role.role + ': wait: ' + description!r}, commands=[{cmd(c)}], "
                         f"_if=any_changed({', '.join(ops)}))")
    return "\n".join(lines) + "\n"


# Ansible ------------------------------------------------------------------------------------------------------
class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: object) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000, default_flow_style=False)


def packages_script(packages: tuple[str, ...]) -> str:
    """ansible.builtin.apt needs python3-apt on the host and installs it from the network when missing: the lab's
    servers have neither. The same check without it: dpkg's status, apt-get only for what is missing (prints
    what it installed: the task's `changed`)."""
    return ("missing=\n"
            f"for p in {' '.join(shlex.quote(p) for p in packages)}; do\n"
            "  dpkg-query -W -f='${db:Status-Abbrev}' \"$p\" 2>/dev/null | grep -q '^ii' || missing=\"$missing $p\"\n"
            "done\n"
            '[ -z "$missing" ] && exit 0\n'
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null"
            ' && echo "installed:$missing"\n')


def ansible_validate(validate: str) -> str:
    """deploykit's check as an Ansible `validate` (run without a shell, `%s`: the candidate file)."""
    script = validate.format(path='"$1"')
    return f"sh -c {shlex.quote(script).replace('%', '%%')} sh %s"


def ansible_playbook(eq: Equivalent) -> list[dict[str, object]]:
    def cmd(c: Cmd) -> str:
        return c.shared if c.shared is not None else "{{ " + c.var + " }}"

    def files_src(path: str) -> str:
        return "{{ playbook_dir }}/files/{{ inventory_hostname }}" + path

    tasks: list[dict[str, object]] = [{
        "name": "mesh: public key (the key pair made on the host if it has none, as deploykit's probe does)",
        "ansible.builtin.shell": eq.key_command, "register": "mesh_key", "changed_when": False,
    }]
    for role in eq.roles:
        p = _ident(role.role)
        registered = [f"{p}_packages"]
        tasks.append({"name": f"{role.role}: packages", "ansible.builtin.shell": packages_script(role.packages),
                      "register": f"{p}_packages", "changed_when": f"{p}_packages.stdout != ''"})
        if dirs := sorted({posixpath.dirname(f.path) for f in role.files} - PRESENT_DIRS):
            tasks.append({"name": f"{role.role}: directories", "ansible.builtin.file":
                          {"path": "{{ item }}", "state": "directory"}, "loop": dirs})
        for j, f in enumerate(role.files, 1):
            args: dict[str, object] = {"src": files_src(f.path) + (".j2" if f.templated else ""), "dest": f.path,
                                       "owner": f.owner, "group": f.group, "mode": f.mode}
            if f.validate:
                args["validate"] = ansible_validate(f.validate)
            module = "ansible.builtin.template" if f.templated else "ansible.builtin.copy"
            tasks.append({"name": f"{role.role}: {f.path}", module: args, "register": f"{p}_file_{j}"})
            registered.append(f"{p}_file_{j}")
        for j, f in enumerate(role.files, 1):
            if f.after_change is not None:
                tasks.append({"name": f"{role.role}: apply {f.path}", "ansible.builtin.shell": cmd(f.after_change),
                              "when": f"{p}_file_{j} is changed"})
        unit_files = [f"{p}_file_{j}" for j, f in enumerate(role.files, 1) if f.path.startswith(SYSTEMD_DIRS)]
        if unit_files:
            tasks.append({"name": f"{role.role}: daemon-reload", "ansible.builtin.systemd_service":
                          {"daemon_reload": True}, "when": " or ".join(f"{v} is changed" for v in unit_files)})
        for k, u in enumerate(role.units, 1):
            v = f"{p}_unit_{k}"
            registered.append(v)
            tasks.append({"name": f"{role.role}: {u.name}", "ansible.builtin.systemd_service":
                          {"name": u.name, "enabled": u.enabled, "state": "started" if u.running else "stopped"},
                          "register": v})
            notified = [f"{p}_file_{j}" for j, f in enumerate(role.files, 1) if u.name in f.notify]
            if notified and u.running:
                action = "reloaded" if u.reload else "restarted"
                when = " or ".join(f"{n} is changed" for n in notified)
                tasks.append({"name": f"{role.role}: {action} {u.name}", "ansible.builtin.systemd_service":
                              {"name": u.name, "state": action}, "when": f"({when}) and {v} is not changed"})
        for description, c in role.waits:
            tasks.append({"name": f"{role.role}: wait: {description}", "ansible.builtin.shell": cmd(c),
                          "changed_when": False, "when": " or ".join(f"{r} is changed" for r in registered)})
    return [{"name": "deploykit's every-host services (base, mesh), generated by bench/apply_scale.py",
             "hosts": "all", "gather_facts": False, "tasks": tasks}]


def write_ansible(eq: Equivalent, out: Path, forks: int) -> None:
    """out/ansible.cfg, out/inventory.yml, out/playbook.yml and out/files/; run with ANSIBLE_CONFIG=out/ansible.cfg:
    `ansible-playbook -i inventory.yml playbook.yml`."""
    out.mkdir(parents=True, exist_ok=True)
    write_contents(eq, out / "files", "{{{{ hostvars[{name!r}].mesh_key.stdout }}}}")
    ssh = eq.inv.hosts[0].ssh
    hosts = {h.name: {"ansible_host": str(h.address), **eq.host_vars(h.name)} for h in eq.inv.hosts}
    inventory = {"all": {"vars": {"ansible_user": ssh.user, "ansible_port": ssh.port,
                                  "ansible_ssh_private_key_file": str(ssh.identity_file),
                                  "ansible_python_interpreter": "/usr/bin/python3"},
                         "hosts": hosts}}
    (out / "inventory.yml").write_text("# The lab hosts (generated by bench/apply_scale.py; every address in "
                                       "10.77.0.0/16).\n" + _dump(inventory))
    (out / "playbook.yml").write_text(_dump(ansible_playbook(eq)))
    ssh_args = " ".join([
        "-F /dev/null -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes -o BatchMode=yes",
        "-o LogLevel=ERROR",
        f"-o UserKnownHostsFile={ssh.known_hosts} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes",
    ])
    (out / "ansible.cfg").write_text(
        "# Generated by bench/apply_scale.py.\n[defaults]\n"
        f"forks = {forks}\nhost_key_checking = True\ngathering = explicit\n"
        "interpreter_python = /usr/bin/python3\nretry_files_enabled = False\ntimeout = 10\n\n"
        f"[ssh_connection]\npipelining = True\nssh_args = {ssh_args}\n"
    )
