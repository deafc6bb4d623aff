"""Changes to a running Redis/Sentinel group, made against the master as the sentinels see it.

After the first start the sentinels own the replication topology: a failover moves the master, and Redis and
Sentinel record it in their own config files (seeds, written only when absent: state.py). So deploykit never
re-seeds toward the inventory's first cache host. Instead:

- **Who is master** is asked of the sentinels: every cache host's probe reads its sentinel's
  `get-master-addr-by-name` (a moment fact, MASTER_FACT); the answer most of them give, if it is a cache member
  of the inventory, is the current master (`current_master`). A host seeded now (new, or wiped) replicates from
  it, and its sentinel monitors it. Before any sentinel runs, the placement's first cache host starts as master.
- **Settings and membership** (quorum, timing, which hosts are members) live in a file of their own
  (SETTINGS_FILE). Its change runs `sync_script` on each host in turn: `SENTINEL SET` for the tunables, and
  `SENTINEL RESET` when the sentinel still knows a replica or sentinel that is no longer a member (a host that
  left), followed by a wait until it again knows the master and enough other sentinels for a failover.
- **Restarts go replicas first, the master last** (its `rollout_order`), and a master's restart, or its leaving
  the role, is preceded by a `SENTINEL FAILOVER` that moves the master to a replica (`failover_script`); the
  old master then restarts as a replica.

- **Password rotation** (`deploykit secrets rotate`) in two applies. While it is under way, every server and
  sentinel accepts the new and the previous password (ACL default user with both SHA-256 hashes, applied at
  run time by `auth_script`), but the group still authenticates to itself with the previous one (masterauth,
  Sentinel's auth-pass and sentinel-pass): a server not yet changed, the master last of all, would refuse the
  new one, and sentinels that cannot log in to the master fail it over. Clients (the app, HAProxy's check)
  switch to the new one in their later phases. The second apply, once the previous value is forgotten, makes
  the group use the new password and then accept only it, the master last again.

Passwords never appear in a command line: LOGIN (a script installed on the host) hands redis-cli whichever of
the two password files the server takes, through REDISCLI_AUTH; ACL rules get SHA-256 hashes only.
"""

from __future__ import annotations

import hashlib
import shlex
from collections import Counter
from ipaddress import IPv4Address

from deploykit.inventory.names import natural_key
from deploykit.services.contract import ConfigContext

MASTER_FACT = "cache-master"
SETTINGS_FILE = "/etc/deploykit/cache-sentinel"
CLI_AUTH = "/etc/redis/deploykit.auth"  # the password (0600 root)
PREVIOUS_AUTH = "/etc/redis/deploykit.auth.previous"  # the one before an unfinished rotation (empty: none)
AUTH_CONF = "/etc/redis/deploykit-auth.conf"  # the aclfile and masterauth Redis starts with (included)
ACL_FILE = "/etc/redis/deploykit-users.acl"  # the default user and the password hashes it accepts
LOGIN = "/usr/local/lib/deploykit/redis-cli-login"  # `LOGIN PORT ARGS...`: redis-cli with a password it takes
SENTINEL_CONF = "/etc/redis/sentinel.conf"
FAILOVER_TIMEOUT_S = 60
RESET_TIMEOUT_S = 60

# The local sentinel's answer: its port and the group's name from its own config, so the script is the same on
# every host. Prints the master's address, or nothing when no sentinel answers.
READ_MASTER = (
    f"[ -r {SENTINEL_CONF} ] || exit 0; "
    f"p=$(awk '$1 == \"port\" {{print $2; exit}}' {SENTINEL_CONF}); "
    f"n=$(awk '$1 == \"sentinel\" && $2 == \"monitor\" {{print $3; exit}}' {SENTINEL_CONF}); "
    "[ -n \"$p\" ] && [ -n \"$n\" ] || exit 0; "
    f"if [ -x {LOGIN} ]; then c={LOGIN}; else c=\"env REDISCLI_AUTH=$(cat {CLI_AUTH} 2>/dev/null) redis-cli "
    "--no-auth-warning -h 127.0.0.1 -p\"; fi; "
    "timeout 5 $c \"$p\" sentinel get-master-addr-by-name \"$n\" 2>/dev/null | head -n 1; true"
)


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def login_script() -> str:
    """LOGIN: redis-cli against the local server or sentinel on port $1, logged in with the new password if
    it takes it, else with the previous one (a rotation under way); fails saying so when it takes neither."""
    return f"""#!/bin/sh
# Managed by deploykit (service cache): redis-cli on 127.0.0.1:$1 with a password that server takes.
port=$1; shift
for f in {CLI_AUTH} {PREVIOUS_AUTH}; do
  [ -s "$f" ] || continue
  if REDISCLI_AUTH="$(cat "$f")" redis-cli --no-auth-warning -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -qx PONG
  then
    REDISCLI_AUTH="$(cat "$f")" exec redis-cli --no-auth-warning -h 127.0.0.1 -p "$port" "$@"
  fi
done
echo "redis on port $port takes neither {CLI_AUTH} nor {PREVIOUS_AUTH}" >&2
exit 1
"""


def using_password_file(rotating: bool) -> str:
    """The file holding the password the group authenticates to itself with (see the module's docstring)."""
    return PREVIOUS_AUTH if rotating else CLI_AUTH


def acl_rule(hashes: tuple[str, ...]) -> str:
    return "default on resetpass " + " ".join(f"'#{h}'" for h in hashes) + " '~*' '&*' '+@all'"


def auth_script(port: int, hashes: tuple[str, ...]) -> str:
    """Apply AUTH_CONF to the running server: the ACL accepts `hashes`; masterauth is the password the group
    uses. Nothing when the server does not run (it reads the file when it starts)."""
    r = f"{LOGIN} {port}"
    using = using_password_file(len(hashes) > 1)
    return f"""set -u
systemctl is-active -q redis-server || exit 0
{r} acl setuser {acl_rule(hashes)} | grep -qx OK || {{ echo "redis refused the new ACL" >&2; exit 1; }}
printf '%s' "$(cat {using})" | {r} -x config set masterauth | grep -qx OK || exit 1
"""


def reported_master(value: str | None) -> IPv4Address | None:
    try:
        return IPv4Address((value or "").strip())
    except ValueError:
        return None


def current_master(ctx: ConfigContext, members: tuple[str, ...], initial: str) -> tuple[str, bool]:
    """The member most sentinels report as master (ties: the first by name), and True; `initial` and False
    when none reports a member (the first deploy, or every sentinel down)."""
    by_address = {ctx.inv.host(n).mesh_address: n for n in members}
    votes = Counter(by_address[a] for n in members
                    if (a := reported_master(ctx.fact(n, MASTER_FACT))) is not None and a in by_address)
    if not votes:
        return initial, False
    top = max(votes.values())
    return min((n for n, v in votes.items() if v == top), key=natural_key), True


def failover_script(port: int, sentinel_port: int, master_name: str) -> str:
    """If the local Redis is the master and has a replica: ask the local sentinel for a failover and wait until
    this server is a replica. Otherwise nothing. Fails (stopping the rollout) when no failover happens."""
    redis, sentinel = f"{LOGIN} {port}", f"{LOGIN} {sentinel_port}"
    name = shlex.quote(master_name)
    return f"""set -u
info=$({redis} info replication 2>/dev/null) || exit 0
printf '%s\\n' "$info" | grep -q '^role:master' || exit 0
[ "$(printf '%s\\n' "$info" | tr -d '\\r' | awk -F: '$1 == "connected_slaves" {{print $2}}')" -gt 0 ] || exit 0
echo "this Redis is the master: failing over to a replica first"
{sentinel} sentinel failover {name}
deadline=$(( $(date +%s) + {FAILOVER_TIMEOUT_S} ))
until {redis} info replication | grep -q '^role:slave'; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "still the master {FAILOVER_TIMEOUT_S} s after the failover" >&2; exit 1
  fi
  sleep 1
done
"""


def sync_script(sentinel_port: int, master_name: str, settings: tuple[tuple[str, str], ...],
                members: tuple[IPv4Address, ...], quorum: int, hashes: tuple[str, ...]) -> str:
    """Apply the settings to the running local sentinel (nothing when it does not run yet: its seed has them):
    the passwords it accepts (`hashes`) and uses, the tunables; reset it when it knows a server or sentinel
    outside `members`; then wait until it knows the master and at least `quorum - 1` other sentinels."""
    sentinel = f"{LOGIN} {sentinel_port}"
    name = shlex.quote(master_name)
    pairs = " ".join(f"{k} {shlex.quote(v)}" for k, v in settings)
    allowed = " ".join(str(a) for a in members)
    addresses = "awk 'prev == \"ip\" {print} {prev = $0}'"
    using = using_password_file(len(hashes) > 1)
    return f"""set -u
systemctl is-active -q redis-sentinel || exit 0
{sentinel} acl setuser {acl_rule(hashes)} | grep -qx OK || {{ echo "sentinel refused the new ACL" >&2; exit 1; }}
printf '%s' "$(cat {using})" | {sentinel} -x sentinel set {name} auth-pass | grep -qx OK || exit 1
printf '%s' "$(cat {using})" | {sentinel} -x sentinel config set sentinel-pass | grep -qx OK || exit 1
{sentinel} sentinel set {name} {pairs} | grep -qx OK || {{ echo "sentinel refused: set {pairs}" >&2; exit 1; }}
stale=""
for a in $({{ {sentinel} sentinel replicas {name}; {sentinel} sentinel sentinels {name}; }} | {addresses}); do
  case " {allowed} " in *" $a "*) ;; *) stale="$stale $a" ;; esac
done
if [ -n "$stale" ]; then
  echo "sentinel forgets what left the group:$stale"
  {sentinel} sentinel reset {name} >/dev/null
fi
deadline=$(( $(date +%s) + {RESET_TIMEOUT_S} ))
until {sentinel} sentinel get-master-addr-by-name {name} | grep -Eq '^[0-9]+[.]' && \\
  [ "$({sentinel} sentinel sentinels {name} | grep -cx ip)" -ge {quorum - 1} ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "sentinel does not know the master and {quorum - 1} other sentinel(s)" >&2; exit 1
  fi
  sleep 1
done
{sentinel} sentinel flushconfig >/dev/null
"""
