"""Patroni membership changes, as an operator makes them.

- **Joining**: a host given the db role starts Patroni against the existing cluster (the initialize key is in
  etcd), so it never bootstraps: it clones from the current leader (pg_basebackup) and streams as a replica.
  Only before the cluster exists does the first member by name initialise it (db placement's `bootstrap`).
- **Leaving** (a host whose db role the inventory took away, still running Patroni): `leave_script` runs on it
  before its Patroni stops (Service.handover). A leader first hands its role over with a switchover to a
  healthy replica (Patroni picks the synchronous standby), then stops; its member key lives on a lease of
  `ttl` seconds in etcd and is waited for to go, and the leader then drops its replication slot by itself.
  A replica just stops: no leader moves.
- **Synchronous settings** never require more than exist: `synchronous_node_count` is at most the members
  minus one of the inventory (db placement), and Patroni 3.0 lists as many standbys as are streaming, up to
  it, while `synchronous_mode_strict` stays off: a cluster growing from 3 to 5 members, or shrinking back, keeps
  committing at every step.
"""

from __future__ import annotations

import shlex

from deploykit.services.db.config import CONFIG_PATH

LEAVE_TIMEOUT_S = 120


def leave_script(name: str, rest: str, ttl: int) -> str:
    """Hand the leader role over if `name` holds it (asked of its own REST API at `rest`), stop Patroni, and
    wait until the cluster no longer lists `name` (its member key expires with its lease: `ttl`)."""
    q = shlex.quote
    ctl = f"patronictl -c {CONFIG_PATH}"
    listed = (f"{ctl} list -f json 2>/dev/null | python3 -c \"import json, sys; "
              f"sys.exit(0 if any(m['Member'] == sys.argv[1] for m in json.load(sys.stdin)) else 1)\" {q(name)}")
    return f"""set -u
deadline=$(( $(date +%s) + {LEAVE_TIMEOUT_S} ))
if curl -fsS -o /dev/null http://{rest}/primary; then
  echo "{name} leads the cluster and leaves the db role: switching over first"
  {ctl} switchover --force || exit 1
  while curl -fsS -o /dev/null http://{rest}/primary; do
    [ "$(date +%s)" -lt "$deadline" ] || {{ echo "{name} still leads after the switchover" >&2; exit 1; }}
    sleep 1
  done
fi
systemctl stop patroni
deadline=$(( $(date +%s) + {ttl} * 2 + 30 ))
while {listed}; do
  [ "$(date +%s)" -lt "$deadline" ] || {{ echo "the cluster still lists {name}" >&2; exit 1; }}
  sleep 2
done
"""
