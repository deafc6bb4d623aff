"""Issue 5 end to end: chirp behind HAProxy + keepalived per site on the lab, under real failures.

Runs after test_stack_data.py (same lab session; applies the whole stack itself if needed).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.lab.smoke import client_context, http, request
from deploykit.services.app.config import BUNDLED_APP
from deploykit.services.pooler.config import SOCKET_DIR, console_command
from tests.e2e.conftest import LAB_INVENTORY, deploykit

pytestmark = pytest.mark.e2e

INV = str(LAB_INVENTORY)
VIP = {"fra1": "10.77.1.100", "rbx1": "10.77.2.100", "ams1": "10.77.3.100"}


@cache
def lab_tls() -> ssl.SSLContext:
    """Trusting deploykit's CA for the lab (in its secrets store since the first apply): its edge certificate
    names the VIPs too, so https://<VIP>/ verifies."""
    return client_context(load_inventory(LAB_INVENTORY))


def https(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> tuple[int, Any]:
    """`http` trusting the lab's CA."""
    return http(method, url, body, timeout, context=lab_tls())


def https_url(address: str, path: str) -> str:
    return f"https://{address}{path}"


@dataclass
class Loop:
    """A steady request loop against one https:// URL (every `every` seconds), recording every answer."""

    url: str
    every: float = 0.05
    method: str = "GET"
    body: dict[str, Any] | None = None
    results: list[tuple[float, int]] = field(default_factory=list)
    releases: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Loop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            code, answer = https(self.method, self.url, self.body, timeout=2)
            self.results.append((time.monotonic(), code))
            if answer and isinstance(answer, dict) and answer.get("release"):
                self.releases.add(str(answer["release"]))
            time.sleep(self.every)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def failed(self) -> list[tuple[float, int]]:
        return [r for r in self.results if r[1] != 200]


@pytest.fixture(scope="module")
def stack(lab: Lab) -> Lab:
    r = deploykit("apply", INV, "--yes", "--no-diff")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for vip in VIP.values():
        deadline = time.monotonic() + 60
        while https("GET", f"https://{vip}/healthz")[0] != 200:
            assert time.monotonic() < deadline, f"{vip} never became healthy"
            time.sleep(0.5)
        moved = request("GET", f"http://{vip}/healthz")  # plain HTTP: a redirect to HTTPS, nothing served
        assert moved.status == 308 and moved.location == https_url(vip, "/healthz"), moved
        # the certificate names the domain (TLS server name and Host: the domain, connected to the VIP)
        assert http("GET", "https://chirp.lab/healthz", context=lab_tls(), connect_to=vip)[0] == 200
    return lab


def vip_holder(lab: Lab, site: str) -> str | None:
    for host in (f"{site}-web-1", f"{site}-web-2"):
        r = lab.ssh(host, "ip -4 -o addr show dev host0", timeout=10)
        if r.returncode == 0 and f" {VIP[site]}/" in r.stdout:
            return host
    return None


def test_a_post_written_through_one_vip_is_read_back_through_another(stack: Lab) -> None:
    assert https("POST", f"https://{VIP['fra1']}/api/users", {"name": "e2e-writer"})[0] in (201, 409)
    code, post = https("POST", f"https://{VIP['fra1']}/api/posts",
                       {"author": "e2e-writer", "text": "across sites"})
    assert code == 201 and post is not None
    for site in ("rbx1", "ams1"):
        code, back = https("GET", f"https://{VIP[site]}/api/posts/{post['id']}")
        assert code == 200 and back is not None and back["text"] == "across sites"
    assert https("POST", f"https://{VIP['ams1']}/api/users", {"name": "e2e-reader"})[0] in (201, 409)
    followed = https("POST", f"https://{VIP['ams1']}/api/follow", {"follower": "e2e-reader", "followee": "e2e-writer"})
    assert followed[0] in (200, 201)
    code, timeline = https("GET", f"https://{VIP['rbx1']}/api/timeline/e2e-reader")
    assert code == 200 and timeline is not None
    assert any(p["id"] == post["id"] for p in timeline["posts"])


def test_killing_the_vip_holder_moves_the_vip_to_its_peer(stack: Lab, measure) -> None:
    holder = vip_holder(stack, "fra1")
    assert holder is not None, "no fra1 lb holds the VIP"
    peer = "fra1-web-2" if holder == "fra1-web-1" else "fra1-web-1"
    with Loop(f"https://{VIP['fra1']}/healthz") as loop:
        time.sleep(1)
        t_kill = time.monotonic()
        stack.kill([holder])
        deadline = t_kill + 30
        while vip_holder(stack, "fra1") != peer:
            assert time.monotonic() < deadline, "the VIP did not move to the peer within 30 s"
            time.sleep(0.1)
        moved = time.monotonic() - t_kill
        while not any(t > t_kill and code == 200 for t, code in loop.results[-3:]):
            assert time.monotonic() < deadline, "requests through the VIP did not succeed again within 30 s"
            time.sleep(0.1)
        time.sleep(1)
    after = [(t, code) for t, code in loop.results if t > t_kill]
    failures = [t for t, code in after if code != 200]
    recovered = next(t for t, code in after if code == 200 and (not failures or t > failures[-1]))
    back = recovered - t_kill
    measure("keepalived: VIP on the peer after its holder was killed", f"{moved:.1f} s ({holder} -> {peer})")
    measure("keepalived: requests through the VIP succeed again after the kill", f"{back:.1f} s "
            f"({len(loop.failed)} of {len(loop.results)} requests failed in between)")
    assert back < 15
    stack.start([holder])
    time.sleep(2)
    assert vip_holder(stack, "fra1") == peer  # nopreempt: the recovered holder does not take it back


def test_killing_an_app_host_drops_it_from_haproxy(stack: Lab, measure) -> None:
    holder = vip_holder(stack, "rbx1")
    victim = "rbx1-web-2" if holder == "rbx1-web-1" else "rbx1-web-1"
    with Loop(f"https://{VIP['rbx1']}/api/posts/1") as loop:
        time.sleep(1)
        t_kill = time.monotonic()
        stack.kill([victim])
        time.sleep(6)
    after = [(t, c) for t, c in loop.results if t >= t_kill]
    failed = [r for r in after if r[1] != 200]
    window = (failed[-1][0] - t_kill) if failed else 0.0
    measure("HAProxy: failed requests after an app host was killed",
            f"{len(failed)} of {len(after)} ({window:.1f} s window; checks every 1 s, fall 2)")
    stack.start([victim])
    assert len(after) > 20
    assert window <= 3.0, f"requests kept failing {window:.1f} s after the kill"
    r = stack.ssh(holder, "echo 'show stat' | socat stdio /run/haproxy/admin.sock | grep '^app,'", timeout=10)
    assert r.returncode == 0


def release_journals(lab: Lab) -> str:
    """For a failed release: what the release command said on each app host, and the pools of every db host's
    PgBouncer (the release's migration takes a session-pool connection)."""
    out = []
    inv = load_inventory(LAB_INVENTORY)
    for h in (h.name for h in inv.hosts if h.has("app")):
        r = lab.ssh(h, "journalctl -u chirp-release -n 12 --no-pager -o cat", timeout=20)
        out.append(f"\n--- {h}: chirp-release\n{r.stdout[-1500:]}")
    console = console_command(SOCKET_DIR, inv.services.pooler.port)
    for h in (h.name for h in inv.hosts if h.has("db")):
        r = lab.ssh(h, f"runuser -u postgres -- {console} -c 'SHOW POOLS'", timeout=20)
        out.append(f"\n--- {h}: SHOW POOLS\n{r.stdout[-1500:]}{r.stderr[-300:]}")
    return "".join(out)


def test_a_new_release_rolls_out_with_zero_failed_requests(stack: Lab, tmp_path: Path, measure) -> None:
    src = tmp_path / "chirp"
    shutil.copytree(BUNDLED_APP, src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "RELEASE").write_text("e2e release\n")
    inv = LAB_INVENTORY.with_name("lab-release-e2e.yml")
    text = LAB_INVENTORY.read_text().replace("  app: {port: 8000, health: /healthz, min_capacity: 0.5}",
                                               f"  app: {{port: 8000, health: /healthz, min_capacity: 0.5, "
                                               f"source: {src}}}")
    assert f"source: {src}" in text
    inv.write_text(text)
    try:
        _, before = https("GET", f"https://{VIP['ams1']}/healthz")
        assert before is not None
        with Loop(f"https://{VIP['ams1']}/healthz", every=0.02) as loop:
            t0 = time.monotonic()
            r = deploykit("apply", str(inv), "--yes", "--no-diff")
            took = time.monotonic() - t0
            time.sleep(1)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + release_journals(stack)
        _, after = https("GET", f"https://{VIP['ams1']}/healthz")
        assert after is not None and after["release"] != before["release"]
        measure("rolling release of 6 app hosts", f"{took:.1f} s, {len(loop.failed)} failed of "
                f"{len(loop.results)} requests; releases seen: {len(loop.releases)}")
        assert len(loop.results) > 100
        assert loop.failed == [], f"{len(loop.failed)} requests failed during the rolling release"
        assert {before["release"], after["release"]} <= loop.releases
    finally:
        inv.unlink()
        r = deploykit("apply", INV, "--yes", "--no-diff")  # back to the bundled release
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_a_second_apply_of_the_whole_stack_changes_nothing(stack: Lab) -> None:
    r = deploykit("apply", INV, "--yes")
    assert r.returncode == 0 and "9 hosts: 0 to change, 9 unchanged. No changes." in r.stdout, r.stdout + r.stderr


def test_curl_trusting_the_printed_ca_gets_https_from_every_site(stack: Lab, tmp_path: Path) -> None:
    """As a user would check it: `deploykit secrets ca` prints the CA; curl trusts only it, asks for the domain
    at each site's VIP, and verifies the certificate's name; plain HTTP is a redirect."""
    r = deploykit("secrets", "ca", INV)
    assert r.returncode == 0 and "BEGIN CERTIFICATE" in r.stdout and "PRIVATE KEY" not in r.stdout, r.stderr
    ca = tmp_path / "ca.pem"
    ca.write_text(r.stdout)
    for site, vip in VIP.items():
        got = subprocess.run(["curl", "-sS", "--cacert", str(ca), "--resolve", f"chirp.lab:443:{vip}",
                              "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}",
                              "https://chirp.lab/healthz"], capture_output=True, text=True, timeout=30)
        assert got.stdout == "200 0", f"{site}: {got.stdout} {got.stderr}"
        plain = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                                f"http://{vip}/healthz"], capture_output=True, text=True, timeout=30)
        assert plain.stdout == f"308 https://{vip}/healthz", f"{site}: {plain.stdout} {plain.stderr}"
