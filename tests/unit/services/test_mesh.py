"""Service mesh: peers from the inventory and the hosts' public keys, the key scripts run for real, the
handshake check, and golden files for a lab host.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services.base.config import firewall_rules
from deploykit.services.contract import ConfigContext
from deploykit.services.mesh import SERVICE, keys
from deploykit.services.mesh.config import HANDSHAKES, KERNEL, PUBLIC_KEY, STALE_HANDSHAKE_S, mesh_config

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "mesh"
INV = load_inventory(REPO / "inventories" / "lab.yml")
PLACEMENT = plan_placement(INV)
NAMES = [h.name for h in INV.hosts]


def fake_key(name: str) -> str:
    return base64.b64encode(name.encode().ljust(32, b"k")[:32]).decode()


def context(facts: dict[str, dict[str, str]] | None = None) -> ConfigContext:
    if facts is None:
        facts = {n: {PUBLIC_KEY: fake_key(n), KERNEL: "userspace"} for n in NAMES}
    return ConfigContext(INV, PLACEMENT, lambda s: Secret(s, "x"), facts=facts)


def test_every_other_host_is_a_peer_at_its_public_address_allowed_only_its_mesh_address() -> None:
    cfg = mesh_config(context(), INV.host("fra1-web-1"))
    assert cfg.address == INV.host("fra1-web-1").mesh_address and cfg.prefixlen == 17
    assert [p.name for p in cfg.peers] == [n for n in NAMES if n != "fra1-web-1"]
    peer = next(p for p in cfg.peers if p.name == "rbx1-data-1")
    assert peer.endpoint == "10.77.2.21:51820"
    assert peer.mesh_address == INV.host("rbx1-data-1").mesh_address
    assert peer.public_key == fake_key("rbx1-data-1")
    assert cfg.unknown_keys == () and cfg.userspace


def test_mesh_addresses_of_the_lab_are_distinct_and_inside_its_mesh_network() -> None:
    addresses = [h.mesh_address for h in INV.hosts]
    assert len(set(addresses)) == len(addresses)
    assert all(a in INV.mesh.network and a.is_private for a in addresses)
    assert str(INV.mesh.network) == "10.77.128.0/17"


def test_a_host_whose_key_is_unknown_is_left_out_and_named() -> None:
    facts = {n: {PUBLIC_KEY: fake_key(n)} for n in NAMES if n != "ams1-web-2"}
    cfg = mesh_config(context(facts), INV.host("fra1-web-1"))
    assert "ams1-web-2" not in [p.name for p in cfg.peers]
    assert cfg.unknown_keys == ("ams1-web-2",)
    conf = next(f for f in SERVICE.desired(cfg).files if f.path == "/etc/wireguard/mesh0.conf")
    assert "# ams1-web-2: left out until its public key is known" in conf.content


def test_wireguard_go_only_where_the_kernel_has_no_wireguard() -> None:
    kernel = context({n: {PUBLIC_KEY: fake_key(n), KERNEL: "kernel"} for n in NAMES})
    assert SERVICE.state(kernel, INV.host("fra1-web-1")).packages == ("wireguard-tools",)
    assert SERVICE.state(context(), INV.host("fra1-web-1")).packages == ("wireguard-tools", "wireguard-go")
    assert SERVICE.state(context({}), INV.host("fra1-web-1")).packages == ("wireguard-tools",)  # offline: unknown


def test_the_wireguard_port_is_open_only_to_the_other_hosts_public_addresses() -> None:
    ctx = context()
    rules = [r for r in firewall_rules(ctx, INV.host("fra1-web-1")) if r.protocol == "udp"]
    assert len(rules) == 1 and rules[0].port == 51820 and rules[0].interface is None
    assert sorted(rules[0].sources or ()) == sorted(h.address for h in INV.hosts if h.name != "fra1-web-1")


def test_the_config_changes_by_reload_never_by_restart_and_keeps_the_key_out() -> None:
    state = SERVICE.state(context(), INV.host("fra1-web-1"))
    (unit,) = state.services
    assert unit.name == "wg-quick@mesh0" and unit.reload
    conf = next(f for f in state.files if f.path == "/etc/wireguard/mesh0.conf")
    assert conf.mode == "0600" and conf.notify == ("wg-quick@mesh0",)
    assert "PrivateKey" not in conf.content
    assert "PostUp = wg set %i private-key /etc/wireguard/mesh0.key" in conf.content
    dropin = next(f for f in state.files if f.path.endswith("wg-quick@mesh0.service.d/deploykit.conf"))
    assert "ExecReload=\nExecReload=/usr/local/lib/deploykit/mesh-reload %i" in dropin.content


@pytest.mark.parametrize("path", ["/etc/wireguard/mesh0.conf", "/usr/local/lib/deploykit/mesh-reload",
                                  "/etc/systemd/system/wg-quick@mesh0.service.d/deploykit.conf"])
def test_golden(path: str, matches_golden) -> None:
    state = SERVICE.state(context(), INV.host("fra1-web-1"))
    (f,) = [f for f in state.files if f.path == path]
    matches_golden(GOLDEN / ("fra1-web-1" + path.replace("/", "_")), f.content)


# --- the key scripts, run for real ------------------------------------------------------------------------------

def run(script: str, key_dir: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    script = script.replace(keys.KEY_DIR, str(key_dir))
    env = {**os.environ, "PATH": path} if path else None
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, check=False)


def only(tmp_path: Path, *tools: str) -> str:
    """A PATH with only these tools (and what every sh script needs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in (*tools, "mkdir", "mv", "base64", "tail", "printf", "cat"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_a_key_is_made_on_the_host_once_and_its_public_key_read_without_wg(tmp_path: Path) -> None:
    path = only(tmp_path, "openssl")
    assert run(keys.READ_PUBLIC_KEY, tmp_path, path).stdout == ""  # no key yet: nothing, and nothing made
    assert not (tmp_path / "mesh0.key").exists()
    made = run(keys.ENSURE_PUBLIC_KEY, tmp_path, path)
    assert made.returncode == 0, made.stderr
    key = (tmp_path / "mesh0.key")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert len(base64.b64decode(key.read_text())) == 32
    public = made.stdout.strip()
    private = key.read_text().strip()
    # what the probe sends back is the public key only: the private one never leaves the host
    assert len(base64.b64decode(public)) == 32 and private not in made.stdout + made.stderr
    again = run(keys.ENSURE_PUBLIC_KEY, tmp_path, path)
    assert again.stdout.strip() == public  # kept, not made again
    assert run(keys.READ_PUBLIC_KEY, tmp_path, path).stdout.strip() == public


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("wg") is None, reason="needs openssl and wg")
def test_openssl_and_wg_agree_on_the_public_key(tmp_path: Path) -> None:
    made = run(keys.ENSURE_PUBLIC_KEY, tmp_path, only(tmp_path, "openssl"))
    by_wg = subprocess.run(["wg", "pubkey"], input=(tmp_path / "mesh0.key").read_text(), capture_output=True,
                           text=True, check=True).stdout
    assert made.stdout.strip() == by_wg.strip()


def test_without_wg_or_openssl_the_failure_says_what_to_install(tmp_path: Path) -> None:
    failed = run(keys.ENSURE_PUBLIC_KEY, tmp_path, only(tmp_path))
    assert failed.returncode != 0
    assert "install wireguard-tools or openssl" in failed.stderr


# --- the handshake check ------------------------------------------------------------------------------------------

def test_tunnels_without_a_recent_handshake_are_reported_by_name() -> None:
    now = 1_800_000_000
    ages = {n: 30 for n in NAMES}
    ages["ams1-data-1"] = STALE_HANDSHAKE_S + 60
    seen = " ".join(f"{fake_key(n)}={now - a}" for n, a in ages.items() if n not in ("fra1-web-1", "rbx1-web-2"))
    seen += f" {fake_key('rbx1-web-2')}=0"  # never
    facts = {n: {PUBLIC_KEY: fake_key(n)} for n in NAMES}
    facts["fra1-web-1"][HANDSHAKES] = f"{now} {seen}"
    assert SERVICE.check(context(facts), INV.host("fra1-web-1")) == (
        f"no WireGuard handshake with ams1-data-1, rbx1-web-2 in the last {STALE_HANDSHAKE_S} s",)
    facts["fra1-web-1"][HANDSHAKES] = f"{now} " + " ".join(f"{fake_key(n)}={now - 5}" for n in NAMES)
    assert SERVICE.check(context(facts), INV.host("fra1-web-1")) == ()
    assert SERVICE.check(context({}), INV.host("fra1-web-1")) == ()  # nothing read (interface down): no claim


def test_the_offline_plan_lists_every_hosts_mesh_address() -> None:
    (section,) = SERVICE.describe(INV, PLACEMENT)
    assert section.columns == ("host", "public address", "mesh address")
    assert ("fra1-web-1", "10.77.1.11", str(INV.host("fra1-web-1").mesh_address)) in section.rows
    assert all(IPv4Address(r[2]) in INV.mesh.network for r in section.rows)
