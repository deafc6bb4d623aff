"""The load balancers' placement for people: each site's VIP and VRRP members, and the frontends."""

from __future__ import annotations

from deploykit.inventory.model import LbService
from deploykit.services.contract import Section, listed
from deploykit.services.lb.placement import SiteLbPlan


def describe_lb(sites: tuple[SiteLbPlan, ...], lb: LbService | None = None) -> tuple[Section, ...]:
    if not sites:
        return ()
    rows = []
    for s in sites:
        http = next((f for f in s.frontends if f.mode == "http"), None)
        local = [b.name for b in http.backends if not b.backup] if http else []
        backup = [b.name for b in http.backends if b.backup] if http else []
        rows.append((f"{s.site} ({s.provider})", str(s.vip), str(s.router_id),
                     listed([f"{m.name} ({m.priority})" for m in s.members]) if s.members else "no lb hosts",
                     f"{len(local)} local" + (f", {len(backup)} backup in other sites" if backup else "")))
    web = Section("Load balancers per site (keepalived holds the VIP, HAProxy serves it)",
                  ("site", "VIP", "VRRP id", "lb hosts (priority)", "app backends"), tuple(rows))
    fronts = []
    for f in sites[0].frontends:
        backends = ("the site's app hosts first, the others as backup" if any(b.backup for b in f.backends)
                    or f.mode == "http" else listed([b.name for b in f.backends]))
        port = f"{lb.https_port} (HTTPS), {f.port} (redirect)" if f.mode == "http" and lb is not None else str(f.port)
        fronts.append((port, f.name, f.check, backends))
    title = "HAProxy frontends on every lb host"
    if lb is not None:
        own = lb.tls.certificate
        issuer = f"the certificate in {own}" if own else "a certificate from deploykit's CA"
        title += f" (HTTPS with {issuer}; the others on the mesh only)"
    return web, Section(title, ("port", "frontend", "health check", "backends"), tuple(fronts))
