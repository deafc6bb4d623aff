"""Every host: sshd hardening, the default-deny nftables firewall, kernel settings, /etc/hosts."""

from __future__ import annotations

import shlex

from deploykit.plan.desired import ManagedFile, RoleState, Unit
from deploykit.services.base.config import BaseHostConfig, Sysctl
from deploykit.services.render import render

# sshd keeps the first value it reads for each keyword and includes sshd_config.d/*.conf in name order at the
# top of Debian's sshd_config, so a drop-in named 60-* would lose to e.g. a cloud image's
# 50-cloud-init.conf ("PasswordAuthentication yes"). 05- sorts before the usual ones.
SSHD_DROPIN = "/etc/ssh/sshd_config.d/05-deploykit.conf"

# `sshd -t` checks a whole configuration, not a fragment, and checking the live one after the file is in
# place would leave a broken sshd_config behind on failure. So the check builds a throw-away main config that
# includes the candidate first and then the live /etc/ssh/sshd_config (which includes the other drop-ins),
# i.e. exactly what sshd will read once the candidate replaces the live drop-in, and tests that.
SSHD_VALIDATE = (
    'd=$(mktemp -d) && printf "Include %s\\nInclude /etc/ssh/sshd_config\\n" {path} > "$d/sshd_config"'
    ' && sshd -t -f "$d/sshd_config"; rc=$?; rm -rf "$d"; exit $rc'
)

NFTABLES_CONF = "/etc/nftables.conf"
# netbase: /etc/protocols, which nft reads for `ip protocol vrrp` and `meta l4proto ipv6-icmp` (a minimal
# Debian may lack it: seen on the bare lab, where `nft -c` refused the ruleset)
PACKAGES = ("nftables", "netbase", "openssh-server", "procps")


def apply_sysctls(sysctls: tuple[Sysctl, ...]) -> str:
    """Set each key now (the file is read at boot). A key whose /proc/sys entry cannot be written here (the
    lab's containers mount /proc/sys read-only except net.*) is reported and skipped; any other failure of
    `sysctl -w` fails the command."""
    steps = []
    for s in sysctls:
        kv = shlex.quote(f"{s.key}={s.value}")
        steps.append(
            f"if [ -w {s.proc_path} ]; then sysctl -q -w {kv}; else echo 'skipped {s.key}: read-only here'; fi"
        )
    return " && ".join(steps)


def desired(cfg: BaseHostConfig) -> RoleState:
    ctx = {"host": cfg.host}
    files = (
        ManagedFile(SSHD_DROPIN, render("base/sshd.conf.j2", **ctx), validate=SSHD_VALIDATE, notify=("ssh",)),
        ManagedFile(
            NFTABLES_CONF,
            render("base/nftables.conf.j2", firewall=cfg.firewall, **ctx),
            mode="0755",
            validate="nft -c -f {path}",
            # Loaded directly rather than by restarting nftables.service: its ExecStop flushes the whole
            # ruleset, so a restart would open the host for a moment and drop other tables' rules.
            after_change=f"nft -f {NFTABLES_CONF}",
        ),
        ManagedFile(
            "/etc/sysctl.d/60-deploykit.conf",
            render("base/sysctl.conf.j2", sysctls=cfg.sysctls, **ctx),
            after_change=apply_sysctls(cfg.sysctls),
        ),
        ManagedFile("/etc/hosts", render("base/hosts.j2", hosts_entries=cfg.hosts_entries, **ctx)),
    )
    services = (
        Unit("ssh", enabled=True, running=True, reload=True),
        # nftables.service is a oneshot with RemainAfterExit=yes: enabled loads /etc/nftables.conf at boot;
        # running=True means "active (exited)", i.e. the file was loaded. Never running=False: stopping the
        # unit runs its ExecStop, `nft flush ruleset`, which would remove the firewall.
        Unit("nftables", enabled=True, running=True),
    )
    return RoleState(role="base", packages=PACKAGES, files=files, services=services)
