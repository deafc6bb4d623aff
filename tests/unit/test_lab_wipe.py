"""`lab wipe`: a server again as `lab up` made it (empty disk, new host key, same name and address), known_hosts
updated for just that server, unknown hosts refused before anything changes."""

from __future__ import annotations

import base64
import shutil
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from deploykit import cli
from deploykit.errors import LabError
from deploykit.lab import lab as lab_module
from deploykit.lab import state as state_module
from deploykit.lab.keys import fingerprint, known_hosts_line, replace_known_hosts_lines
from deploykit.lab.lab import Lab, Progress
from deploykit.lab.layout import Layout, Segment, Server
from deploykit.lab.machine import Machine
from deploykit.lab.processes import Process
from deploykit.lab.state import LabState

SEG = Segment(site="a", provider="p", network=IPv4Network("10.77.1.0/24"))
SERVERS = (
    Server("a-1", IPv4Address("10.77.1.11"), "a", "p", SEG),
    Server("a-2", IPv4Address("10.77.1.12"), "a", "p", SEG),
)


def key(text: str) -> str:
    return f"ssh-ed25519 {base64.b64encode(text.encode()).decode()} root@x"


# --- known_hosts ---------------------------------------------------------------------------------------------


def test_known_hosts_lines_of_just_that_host_are_replaced() -> None:
    current = [
        "# made by deploykit lab",
        "10.77.1.11,a-1 ssh-ed25519 OLD1",
        "10.77.1.12,a-2 ssh-ed25519 OLD2",
        "10.77.1.11 ssh-rsa OLDRSA",  # another line naming a-1's address: dropped
        "@cert-authority *.lab ssh-ed25519 CA",
    ]
    assert replace_known_hosts_lines(current, ["10.77.1.11,a-1 ssh-ed25519 NEW1"]) == [
        "# made by deploykit lab",
        "10.77.1.11,a-1 ssh-ed25519 NEW1",
        "10.77.1.12,a-2 ssh-ed25519 OLD2",
        "@cert-authority *.lab ssh-ed25519 CA",
    ]


def test_known_hosts_off_port_22_and_a_host_not_listed_yet() -> None:
    current = ["[10.77.1.11]:2222,[a-1]:2222 ssh-ed25519 OLD1", "10.77.1.11,a-1 ssh-ed25519 PORT22"]
    new = ["[10.77.1.11]:2222,[a-1]:2222 ssh-ed25519 NEW1", "[10.77.1.13]:2222,[a-3]:2222 ssh-ed25519 NEW3"]
    assert replace_known_hosts_lines(current, new) == [
        "[10.77.1.11]:2222,[a-1]:2222 ssh-ed25519 NEW1",
        "10.77.1.11,a-1 ssh-ed25519 PORT22",  # port 22's entry is another host for ssh: left alone
        "[10.77.1.13]:2222,[a-3]:2222 ssh-ed25519 NEW3",
    ]


def test_fingerprint_as_ssh_keygen_prints_it() -> None:
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJT8ou9PajuK23GWldFJvIsCbBrdyAzvotQJMdNBlHqF root@a-1"
    assert fingerprint(public) == "SHA256:ACaZxQ68Y+mwgm3Xs5irW93bgstIzXDZOUlbd1rHf4I"  # from `ssh-keygen -lf`


# --- Lab.wipe over fake machines -----------------------------------------------------------------------------


class FakeMachine(Machine):
    """A server's files in tmp_path, no mount and no process: the disk (`root`) is the upper layer itself."""

    removed: list[str] = []

    def __init__(self, lab: str, server: Server, directory: Path, binds: tuple[tuple[Path, str], ...] = ()) -> None:
        super().__init__(lab, server, directory, binds)
        self.root = self.upper

    def mount(self, base: Path) -> None:
        self.upper.mkdir(parents=True, exist_ok=True)

    def remove(self, *, veth: bool = True) -> list[Process]:
        FakeMachine.removed.append(self.server.name)
        shutil.rmtree(self.directory)
        return [Process(pid=4242, ppid=1, state="Z", start=7, comm="systemd-nspawn")]


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    """A lab of two servers with used disks (config, data, a host key), known_hosts listing both."""
    monkeypatch.setattr(state_module, "STATE_ROOT", tmp_path / "state")
    monkeypatch.setattr(Lab, "machine", lambda self, s: FakeMachine(self.name, s, self.state.server_dir(s.name)))
    monkeypatch.setattr(lab_module, "check_machine", lambda install=True: None)
    monkeypatch.setattr(lab_module, "ensure_client_key", lambda path: "ssh-ed25519 CLIENT deploykit-lab")
    FakeMachine.removed = []
    (tmp_path / "base").mkdir()
    state = LabState(
        layout=Layout(lab="l", segments=(SEG,), servers=SERVERS), inventory=Path("/i.yml"),
        identity_file=tmp_path / "id", known_hosts=tmp_path / "known_hosts", ssh_port=22, domain="l.lab",
        base=tmp_path / "base",
    )  # fmt: skip
    state.save()
    the_lab = Lab(state)
    for m in the_lab.machines():
        m.mount(state.base)
        m.write_file("etc/ssh/ssh_host_ed25519_key.pub", key(f"old-{m.server.name}") + "\n")
        m.write_file("etc/machine-id", "0" * 32 + "\n")
        m.write_file("etc/patroni/patroni.yml", "scope: chirp\n")
        m.write_file("var/lib/postgresql/15/main/PG_VERSION", "15\n")
        m.mark_ready()
    state.known_hosts.write_text("".join(f"{the_lab._known_hosts_line(m)}\n" for m in the_lab.machines()))
    return the_lab


def test_wipe_gives_the_server_an_empty_disk_and_a_new_host_key(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    booted: list[list[str]] = []
    waited: list[list[Process]] = []
    monkeypatch.setattr(Lab, "_boot", lambda self, ms, progress: booted.append([m.server.name for m in ms]))
    monkeypatch.setattr(Lab, "_wait_until_reaped", lambda self, killed, roots: waited.append(list(killed)))

    def make_host_key(etc_ssh: Path, name: str) -> str:
        etc_ssh.mkdir(parents=True, exist_ok=True)
        (etc_ssh / "ssh_host_ed25519_key.pub").write_text(key(f"new-{name}") + "\n")
        return key(f"new-{name}")

    monkeypatch.setattr(lab_module, "make_host_key", make_host_key)
    a1, a2 = lab.machines()

    wiped = lab.wipe(["a-1", "a-1"], Progress())

    assert FakeMachine.removed == ["a-1"]  # once, and only it
    assert waited == [[Process(pid=4242, ppid=1, state="Z", start=7, comm="systemd-nspawn")]]
    assert booted == [["a-1"]]
    files = sorted(str(p.relative_to(a1.upper)) for p in a1.upper.rglob("*") if p.is_file())
    # no patroni.yml, no PostgreSQL data: only what `up` writes before the first boot
    assert files == [
        "etc/hostname", "etc/hosts", "etc/machine-id", "etc/ssh/ssh_host_ed25519_key.pub",
        "etc/ssh/sshd_config.d/deploykit-lab-identity.conf", "etc/systemd/network/10-deploykit-lab.network",
        "root/.ssh/authorized_keys",
    ]  # fmt: skip
    assert (a1.root / "etc/hostname").read_text() == "a-1\n"
    assert (a1.root / "etc/machine-id").read_text() not in ("", "0" * 32 + "\n")  # a new machine too
    assert a1.is_created()
    assert (a2.root / "var/lib/postgresql/15/main/PG_VERSION").is_file()  # the other server is untouched
    assert lab.state.known_hosts.read_text() == (
        f"{known_hosts_line('10.77.1.11', 'a-1', 22, key('new-a-1'))}\n"
        f"{known_hosts_line('10.77.1.12', 'a-2', 22, key('old-a-2'))}\n"
    )
    assert [(w.name, w.address, w.host_key) for w in wiped] == [("a-1", "10.77.1.11", fingerprint(key("new-a-1")))]


def test_wipe_refuses_unknown_hosts_before_anything_changes(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_machine_check(install: bool = True) -> None:
        raise AssertionError("the machine is not checked for a bad command")

    monkeypatch.setattr(lab_module, "check_machine", no_machine_check)
    with pytest.raises(LabError, match=r"^no server 'a-9' in lab l \(servers: a-1, a-2\)$"):
        lab.wipe(["a-1", "a-9"])
    assert FakeMachine.removed == []


def test_wipe_keeps_the_disk_when_the_base_is_gone(lab: Lab) -> None:
    lab.state.base.rmdir()
    with pytest.raises(LabError, match=r"base is gone .* cannot make new disks for a-2"):
        lab.wipe(["a-2"])
    assert FakeMachine.removed == []
    assert (lab.machines(["a-2"])[0].root / "etc/patroni/patroni.yml").is_file()


def test_wipe_refuses_a_server_never_created(lab: Lab) -> None:
    (lab.machines(["a-2"])[0].ready_marker).unlink()
    with pytest.raises(LabError, match=r"^a-2 was never created: run `deploykit lab up /i.yml`$"):
        lab.wipe(["a-2"])


def test_cli_unknown_host_is_one_line_and_exit_1(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["lab", "wipe", "a-9"])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert "no server 'a-9' in lab l (servers: a-1, a-2)" in " ".join(err.split())
    assert "Traceback" not in err
