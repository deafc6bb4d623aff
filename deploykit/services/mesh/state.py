"""The mesh on one host: WireGuard (Debian's wireguard-tools; wireguard-go where the kernel has no WireGuard)
run by Debian's wg-quick@ unit, reloaded with `wg syncconf` so that peer changes never restart a tunnel."""

from __future__ import annotations

from deploykit.plan.desired import ManagedFile, RoleState, Unit, Wait
from deploykit.services.mesh.config import MeshHostConfig
from deploykit.services.render import render

PACKAGES = ("wireguard-tools",)
USERSPACE_PACKAGES = ("wireguard-go",)
RELOAD_SCRIPT = "/usr/local/lib/deploykit/mesh-reload"


def validate_command(cfg: MeshHostConfig) -> str:
    """wg-quick's own parser on the candidate, under the interface's name (wg-quick takes the interface name
    from the file's)."""
    return (f'd=$(mktemp -d) && cp {{path}} "$d/{cfg.interface}.conf" && '
            f'wg-quick strip "$d/{cfg.interface}.conf" > /dev/null; rc=$?; rm -rf "$d"; exit $rc')


def desired(cfg: MeshHostConfig) -> RoleState:
    unit = cfg.unit
    return RoleState(
        role="mesh",
        packages=PACKAGES + (USERSPACE_PACKAGES if cfg.userspace else ()),
        files=(
            ManagedFile(RELOAD_SCRIPT, render("mesh/mesh-reload.sh.j2"), mode="0755"),
            ManagedFile(f"/etc/systemd/system/wg-quick@{cfg.interface}.service.d/deploykit.conf",
                        render("mesh/reload.conf.j2", cfg=cfg, reload_script=RELOAD_SCRIPT)),
            # Holds no secret (the private key has its own file), but like every WireGuard config 0600.
            ManagedFile(cfg.conf_file, render("mesh/mesh.conf.j2", cfg=cfg), mode="0600",
                        validate=validate_command(cfg), notify=(unit,)),
        ),
        services=(Unit(unit, enabled=True, running=True, reload=True),),
        waits=(Wait(f"mesh interface {cfg.interface} up with {cfg.address}",
                    f"ip -o -4 addr show dev {cfg.interface} | grep -q ' {cfg.address}/'", timeout_s=30),),
    )
