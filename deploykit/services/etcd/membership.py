"""etcd membership changes, as an operator makes them: through the members API, one member at a time.

A cluster is bootstrapped once, by every first member together (`initial-cluster-state=new`). After that:

- **Adding a member** (a host newly given the etcd role, or one that came back with an empty disk): before it
  starts, the host itself adds itself through the members API of the running cluster, over the mesh, as a
  *learner* (`etcdctl member add --learner`: it receives the log but does not vote, so quorum does not change
  while it catches up); it then starts with `initial-cluster-state=existing` and the member list the API
  returned; the apply's wait promotes it to a voting member once it has caught up (etcd refuses the promotion
  until then). etcd 3.4 allows one learner at a time, so parallel joiners take turns (the join retries, as it
  does when the cluster answers too late: an add that landed anyway is found by its peer URL and replaced).
  A member of the same name with no data behind it (the host was wiped) is removed first.
- **Removing a member** (a host that lost the etcd role or left the inventory): one surviving member removes it
  through the members API; removal never restarts the others. The Patroni endpoint lists follow the
  inventory (the db service's config).
- **Running members are never restarted for a membership change**: the bootstrap settings that name every
  member live in a file of their own that etcd reads only on its first start (and no restart follows a change
  of it); the settings that do need a restart (addresses, timing) stay in /etc/default/etcd.

Which case applies is decided in the plan from what the hosts report (facts): whether a cluster is running
(any member answers `member list`), and which hosts have data.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

MEMBERS_FACT = "etcd-members"  # the cluster's member list as the host's local etcd reports it (a moment)
DATA_FACT = "etcd-data"  # the data directories with a member in them

READ_MEMBERS = ("ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=3s member list -w json "
                "2>/dev/null | tr -d '\\n'; true")
# "dirs:" then the data directories with a member in them ("dirs:" alone: none; nothing at all: not read)
READ_DATA = ("printf 'dirs:'; for d in /var/lib/etcd/*/member; do [ -d \"$d\" ] && printf ' %s' \"${d%/member}\"; "
             "done; true")

JOIN_SCRIPT = "/usr/local/lib/deploykit/etcd-join"
JOIN_ENV = "/var/lib/deploykit/etcd-join.env"  # written by the join script: what `member add` answered
BOOTSTRAP_ENV = "/etc/deploykit/etcd-bootstrap.env"
MEMBERS_FILE = "/etc/deploykit/etcd-members"
REMOVE_SCRIPT = "/usr/local/lib/deploykit/etcd-remove-others"


@dataclass(frozen=True, slots=True)
class RunningMember:
    id: str  # hexadecimal, as etcdctl takes it
    name: str
    learner: bool


def parse_members(value: str | None) -> tuple[RunningMember, ...] | None:
    """The member list of `etcdctl member list -w json`, or None when nothing (valid) was reported."""
    if not value:
        return None
    try:
        data = json.loads(value)
        return tuple(RunningMember(format(int(m["ID"]), "x"), str(m.get("name", "")), bool(m.get("isLearner")))
                     for m in data["members"])
    except (ValueError, KeyError, TypeError):
        return None


def has_data(value: str | None, data_dir: str) -> bool | None:
    """Whether `data_dir` holds a member, from the DATA_FACT (None: not known)."""
    if value is None or not value.startswith("dirs:"):
        return None
    return data_dir in value[len("dirs:"):].split()


def etcdctl(endpoints: str) -> str:
    return f"ETCDCTL_API=3 etcdctl --endpoints={endpoints} --command-timeout=10s"


def join_script(name: str, peer_url: str, endpoints: str, data_dir: str) -> str:
    """Run on a joining host before its etcd starts: add it as a learner (after removing a stale member of its
    name) and write the environment `member add` answered for its first start. Idempotent: a host that has
    data or is already listed as started does nothing."""
    q = shlex.quote
    ctl = etcdctl(endpoints)
    return f"""#!/bin/sh
# Managed by deploykit (service etcd): joins {name} to the running cluster (see membership.py).
set -eu
[ -d {q(data_dir)}/member ] && exit 0
deadline=$(( $(date +%s) + 300 ))
# Worth another try: another host joins right now (one learner at a time; a member added but not started yet
# makes etcd refuse more changes as "unhealthy cluster"), or the cluster did not answer in time (an election, a
# busy leader, a mesh tunnel not handshaken yet). A timed-out `member add` may still have landed: the next round
# finds it by its peer URL and removes it before adding again.
again() {{
  case "$1" in
    *"too many learner"*|*"unhealthy cluster"*|*"deadline exceeded"*|*"request timed out"*|*"leader changed"*|\
    *"no leader"*|*"connection refused"*|*"i/o timeout"*|*"no route to host"*|*"connection reset"*|\
    *"transport is closing"*)
      [ "$(date +%s)" -lt "$deadline" ] || {{ echo "$1" >&2; exit 1; }}; sleep 2 ;;
    *) echo "$1" >&2; exit 1 ;;
  esac
}}
while :; do
  list=$({ctl} member list -w simple 2>&1) || {{ again "$list"; continue; }}
  line=$(printf '%s\\n' "$list" | awk -F', ' -v n={q(name)} -v u={q(peer_url)} '$3 == n || $4 == u')
  if [ -n "$line" ]; then
    # a member of this name with no data here: this host was wiped (or an earlier join stopped half-way)
    out=$({ctl} member remove "$(printf '%s' "$line" | cut -d, -f1)" 2>&1) || {{ again "$out"; continue; }}
  fi
  if out=$({ctl} member add {q(name)} --peer-urls={q(peer_url)} --learner 2>&1); then break; fi
  again "$out"
done
mkdir -p {q(JOIN_ENV.rsplit('/', 1)[0])}
printf '%s\\n' "$out" | grep -E '^ETCD_INITIAL_CLUSTER(_STATE)?=' | tr -d '"' > {q(JOIN_ENV)}.new
mv {q(JOIN_ENV)}.new {q(JOIN_ENV)}
"""


def promote_command(name: str, voters: str, local: str) -> str:
    """The wait of a joining host: promote it once it caught up (etcd refuses until then), then healthy. The
    members API is asked of the voting members: a learner answers none of it."""
    ctl = etcdctl(voters)
    return (f"line=$({ctl} member list -w simple | awk -F', ' -v n={shlex.quote(name)} '$3 == n'); "
            f"[ -n \"$line\" ] || exit 1; "
            f"if [ \"$(printf '%s' \"$line\" | awk -F', ' '{{print $6}}')\" = true ]; then "
            f"{ctl} member promote \"$(printf '%s' \"$line\" | cut -d, -f1)\" || exit 1; fi; "
            f"{etcdctl(local)} endpoint health")


def remove_others_script(local: str) -> str:
    """Run on one surviving member when the member list changed: remove every member not listed in
    MEMBERS_FILE, one at a time (never itself)."""
    ctl = etcdctl(local)
    return f"""#!/bin/sh
# Managed by deploykit (service etcd): removes the members the inventory no longer has (see membership.py).
set -eu
{ctl} member list -w simple | while IFS= read -r line; do
  id=$(printf '%s' "$line" | cut -d, -f1)
  name=$(printf '%s' "$line" | awk -F', ' '{{print $3}}')
  # a member added but not started yet (a host joining right now) has no name: never removed here
  if [ -n "$name" ] && ! grep -qxF "$name" {MEMBERS_FILE}; then
    echo "removing etcd member $name ($id): no longer in the inventory"
    {ctl} member remove "$id"
  fi
done
"""


def leave_script(name: str, local: str, data_dir: str) -> str:
    """Run on a host leaving the etcd role, before its etcd stops (Service.handover): the member removes itself
    through the members API while quorum still counts it, stops, and its data directory is set aside (a removed
    member can never start from it again; a later join starts empty). Another member leaving at the same time
    can make etcd refuse for a moment ("unhealthy cluster"): retried for up to 60 s. Idempotent: a member no
    longer listed, or an etcd not running, only has its data set aside (the survivors' remover cleans the list)."""
    q = shlex.quote
    ctl = etcdctl(local)
    return f"""set -u
deadline=$(( $(date +%s) + 60 ))
while line=$({ctl} member list -w simple 2>/dev/null | awk -F', ' -v n={q(name)} '$3 == n') && [ -n "$line" ]; do
  echo "removing etcd member {name}: it leaves the role"
  {ctl} member remove "$(printf '%s' "$line" | cut -d, -f1)" && break
  [ "$(date +%s)" -lt "$deadline" ] || exit 1
  sleep 2
done
systemctl stop etcd
if [ -d {q(data_dir)} ]; then mv {q(data_dir)} {q(data_dir)}.removed-$(date +%Y%m%d%H%M%S); fi
rm -f {q(JOIN_ENV)} {q(JOIN_SCRIPT)}
"""
