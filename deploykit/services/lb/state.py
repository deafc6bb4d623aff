"""HAProxy in front of every tier and keepalived holding the site's VIP (Debian's haproxy 2.6, keepalived 2.2).

Both configs are checked by the daemon itself before they replace the live file and are applied with a
reload: HAProxy's (Debian's ExecReload: check, then USR2 to the master) hands listening sockets to the new
workers without dropping a connection; keepalived's (SIGHUP) keeps each VRRP instance's state, so the VIP
does not move because the config changed.

The edge certificate (certificate, chain and private key in one PEM, HAProxy's format) is a file of its own,
0600 root (HAProxy's master reads it as root, before the workers drop privileges and chroot). It comes before
haproxy.cfg in the role's files: files go live one after the other, each once its own check passed, so the
certificate is in place when `haproxy -c` checks a haproxy.cfg that names it. Its own check loads it in a
throw-away HAProxy configuration: a certificate and key that do not belong together, or a damaged file, never
replace the live one (a renewal alone changes no haproxy.cfg, whose check would not run).
"""

from __future__ import annotations

import re

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.secret import Secret
from deploykit.services.lb.config import ACME_CHALLENGE_PATH, REDIRECT_CODE, LbHostConfig, vrrp_auth_pass
from deploykit.services.lb.tls import CERT_DIR
from deploykit.services.lb.traffic import ADMIN_SOCKET
from deploykit.services.render import render

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
# socat: the rolling release drains app hosts through the admin socket (see traffic.py)
PACKAGES = ("haproxy", "keepalived", "curl", "socat")
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
KEEPALIVED_DROPIN = "/etc/systemd/system/keepalived.service.d/deploykit.conf"

# keepalived 2.2.7: `-t`/`--config-test` checks the file given with `-f` and exits non-zero on an error.
HAPROXY_VALIDATE = "haproxy -c -q -f {path}"
KEEPALIVED_VALIDATE = "keepalived -t -f {path}"
# The candidate certificate `{path}` served by a minimal HAProxy configuration, checked (nothing listens);
# without -q: HAProxy's reason (e.g. "inconsistencies between private key and certificate") is the error.
CERT_VALIDATE = ('f=$(mktemp) && printf "frontend check\\n    mode http\\n    timeout client 1s\\n'
                 '    bind 127.0.0.1:1 ssl crt %s\\n" {path} > "$f" && haproxy -c -f "$f"; rc=$?; rm -f "$f"; exit $rc')

# Whether HAProxy runs, as keepalived's tracking script sees it: systemctl is on every systemd host, whereas
# pidof (sysvinit-utils) and killall (psmisc) are not guaranteed on a minimal Debian.
HAPROXY_RUNNING = "/usr/bin/systemctl is-active --quiet haproxy.service"

# Passwords HAProxy's parser takes inside single quotes (no escapes, no variable expansion there).
SAFE_SECRET = re.compile(r"[A-Za-z0-9._~+/=-]+")


def haproxy_secret_word(prefix: str, secret: Secret, suffix: str = "") -> str:
    """`prefix` + the secret single-quoted as one HAProxy config word, then `suffix` unquoted (where escapes
    such as \\r\\n apply)."""
    value = secret.reveal()
    if not SAFE_SECRET.fullmatch(value):
        raise ValueError(f"{secret.name} must consist of letters, digits and . _ ~ + / = - only")
    return f"'{prefix}{value}'{suffix}"


def desired(cfg: LbHostConfig) -> RoleState:
    auth_words = {t.name: haproxy_secret_word("AUTH ", t.check_secret, "\\r\\n")
                  for t in cfg.listens if t.check_secret is not None}
    haproxy_cfg = render(
        "lb/haproxy.cfg.j2",
        host=cfg.host,
        site=cfg.site,
        address=cfg.address,
        stats_port=cfg.stats_port,
        stats_auth=haproxy_secret_word(f"{cfg.stats_user}:", cfg.stats_password),
        check_interval_ms=cfg.check_interval_ms,
        app=cfg.app,
        acme_path=ACME_CHALLENGE_PATH,
        redirect_code=REDIRECT_CODE,
        listens=cfg.listens,
        internal_binds=cfg.internal_binds,
        auth_words=auth_words,
        admin_socket=ADMIN_SOCKET,
    )
    keepalived_conf = render(
        "lb/keepalived.conf.j2",
        host=cfg.host,
        site=cfg.site,
        vrrp=cfg.vrrp,
        auth_pass=vrrp_auth_pass(cfg.vrrp.password),
        check_script=HAPROXY_RUNNING,
    )
    certs: tuple[ManagedFile, ...] = ()
    if cfg.app is not None:  # the certificate is served by the HTTP frontend only
        https = cfg.app.https
        certs = (ManagedFile(https.cert_file, https.certificate.pem(), mode="0600", validate=CERT_VALIDATE,
                             notify=("haproxy",)),)
    ordering: tuple[ManagedFile, ...] = ()
    if cfg.vrrp.interface != cfg.vrrp.vip_interface:
        # VRRP on the mesh: keepalived starts once the mesh interface exists. keepalived 2.2.7 started before
        # it (at boot: `dynamic_interfaces` lets it wait for the interface) stayed BACKUP for good on both of a
        # site's load balancers, and the VIP was nowhere (seen on the lab after a whole site was powered off).
        ordering = (ManagedFile(KEEPALIVED_DROPIN, render("lb/keepalived-order.conf.j2", host=cfg.host,
                                                          mesh_unit=f"wg-quick@{cfg.vrrp.interface}.service")),)
    return RoleState(
        role="lb",
        packages=PACKAGES,
        directories=(Directory(CERT_DIR, mode="0700"),) if certs else (),
        files=(
            *certs,  # before haproxy.cfg: its check reads the certificate
            # 0640 root:haproxy: it holds the stats and cache passwords; HAProxy reads it before dropping
            # privileges, but `haproxy -c` run by an operator in the haproxy group works too.
            ManagedFile(
                HAPROXY_CFG, haproxy_cfg, mode="0640", group="haproxy", validate=HAPROXY_VALIDATE, notify=("haproxy",)
            ),
            *ordering,
            ManagedFile(
                KEEPALIVED_CONF, keepalived_conf, mode="0640", validate=KEEPALIVED_VALIDATE, notify=("keepalived",)
            ),
        ),
        services=(Unit("haproxy", reload=True), Unit("keepalived", reload=True)),
        waits=(
            # Unauthenticated on purpose: a 401 from the stats listener proves HAProxy serves, and no password
            # ends up in a command line.
            Wait(
                "haproxy answers on its stats port",
                f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{cfg.stats_port}/ | grep -qx 401",
            ),
        ),
    )
