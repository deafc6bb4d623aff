"""The host facts the mesh reads: the host's public key (its private key is made on the host and never
leaves it), whether its kernel has WireGuard, and the age of each tunnel's last handshake.

Commands as data: each is a POSIX sh script the probe runs (see `HostFact`); the unit tests run them with a
real `sh`, `openssl` and `wg` where present.
"""

from __future__ import annotations

from deploykit.inventory.model import MESH_INTERFACE

KEY_DIR = "/etc/wireguard"
KEY_FILE = f"{KEY_DIR}/{MESH_INTERFACE}.key"

# A WireGuard private key is 32 random bytes (base64); its public key is X25519 of it. `wg` makes and derives
# both, but a first deploy reads the key before any package is installed, so without `wg` OpenSSL (there
# with ca-certificates on every Debian server image) does it: a raw key wrapped in the fixed PKCS#8 DER header
# of an X25519 key, and the last 32 bytes of the DER public key.
_PKCS8_X25519 = r"\060\056\002\001\000\060\005\006\003\053\145\156\004\042\004\040"
PUBLIC_KEY = (
    f"if command -v wg >/dev/null 2>&1; then wg pubkey < {KEY_FILE}; else "
    f"{{ printf '{_PKCS8_X25519}'; base64 -d < {KEY_FILE}; }} | openssl pkey -inform DER -pubout -outform DER"
    " | tail -c 32 | base64; fi"
)
MAKE_KEY = (
    f"umask 077 && mkdir -p {KEY_DIR} && "
    f"if command -v wg >/dev/null 2>&1; then wg genkey > {KEY_FILE}.new; "
    f"elif command -v openssl >/dev/null 2>&1; then "
    f"openssl genpkey -algorithm X25519 -outform DER | tail -c 32 | base64 > {KEY_FILE}.new; "
    "else echo 'neither wg nor openssl is installed: install wireguard-tools or openssl' >&2; exit 1; fi && "
    f"mv {KEY_FILE}.new {KEY_FILE}"
)
# The value is the public key, or nothing when the host has no key yet.
READ_PUBLIC_KEY = f"if [ -s {KEY_FILE} ]; then {PUBLIC_KEY}; fi"
ENSURE_PUBLIC_KEY = f"if [ ! -s {KEY_FILE} ]; then {MAKE_KEY}; fi && {PUBLIC_KEY}"

# "kernel" where the kernel has (or can load) WireGuard, else "userspace" (wireguard-go, e.g. in a container
# on a kernel without the module, like the lab's).
KERNEL_SUPPORT = (
    "if [ -d /sys/module/wireguard ] || modinfo wireguard >/dev/null 2>&1; then echo kernel; else echo userspace; fi"
)

# "<now> <public key>=<epoch of the last handshake> ..." (0: never); nothing while the interface is down.
HANDSHAKES = (
    f"if command -v wg >/dev/null 2>&1 && wg show {MESH_INTERFACE} latest-handshakes >/dev/null 2>&1; then "
    f"echo \"$(date +%s) $(wg show {MESH_INTERFACE} latest-handshakes | tr '\\t' '=' | tr '\\n' ' ')\"; fi"
)


def parse_handshakes(value: str | None) -> tuple[int, dict[str, int]] | None:
    """(now, public key -> seconds since its last handshake, -1: never) from the HANDSHAKES fact."""
    if not value:
        return None
    now_text, *pairs = value.split()
    try:
        now = int(now_text)
        out = {}
        for pair in pairs:
            key, _, when = pair.rpartition("=")
            out[key] = -1 if int(when) == 0 else max(0, now - int(when))
    except ValueError:
        return None
    return now, out
