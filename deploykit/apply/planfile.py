"""Saved plans (`plan --out FILE`, `apply FILE`): what was planned, and proof it is still current.

A saved plan holds no secret and no file content: only diffs (redacted), the inventory's hash, and per
host the hash of the desired state and of everything probed. `apply FILE` recomputes both and refuses
a stale plan.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.apply.planner import OnlinePlan
from deploykit.apply.render import plan_data
from deploykit.errors import DeploykitError

FORMAT = "deploykit.saved-plan/v1"


class StalePlanError(DeploykitError):
    pass


@dataclass(frozen=True)
class SavedPlan:
    inventory: Path
    inventory_sha256: str
    limit: tuple[str, ...]
    hosts: dict[str, dict[str, str]]  # name -> {"fingerprint", "desired_hash"}


def save_plan(plan: OnlinePlan, path: Path) -> None:
    data = plan_data(plan)
    data.update({
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inventory": str(plan.inv.path),
        "inventory_sha256": plan.inventory_sha256,
        "limit": list(plan.limit),
        "state": {n: {"fingerprint": hp.fingerprint, "desired_hash": hp.desired_hash}
                  for n, hp in plan.hosts.items()},
    })
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def load_plan(path: Path) -> SavedPlan:
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DeploykitError(f"{path}: no such plan file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeploykitError(f"{path}: not a deploykit plan file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DeploykitError(f"{path}: not a deploykit saved plan (expected format {FORMAT}); "
                             "make one with `deploykit plan INVENTORY --out FILE`")
    try:
        return SavedPlan(Path(data["inventory"]), str(data["inventory_sha256"]), tuple(data.get("limit", [])),
                         {str(k): {"fingerprint": str(v["fingerprint"]), "desired_hash": str(v["desired_hash"])}
                          for k, v in data.get("state", {}).items()})
    except (KeyError, TypeError, AttributeError) as exc:  # hand-edited or truncated: say so, not a traceback
        what = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise DeploykitError(f"{path}: damaged deploykit saved plan ({what}); make a new one with "
                             "`deploykit plan INVENTORY --out FILE`") from exc


def check_current(saved: SavedPlan, fresh: OnlinePlan) -> None:
    """Raise StalePlanError unless `fresh` (re-planned now) is exactly what was saved."""
    if fresh.inventory_sha256 != saved.inventory_sha256:
        raise StalePlanError(f"stale plan: {saved.inventory} changed since the plan was made; run plan again")
    if fresh.unreachable or fresh.probe_failed:
        bad = ", ".join(sorted({*fresh.unreachable, *fresh.probe_failed}))
        raise StalePlanError(f"cannot verify the plan: hosts not reachable now: {bad}")
    if set(fresh.hosts) != set(saved.hosts):
        missing, extra = sorted(set(saved.hosts) - set(fresh.hosts)), sorted(set(fresh.hosts) - set(saved.hosts))
        which = "; ".join([*([f"not planned now: {', '.join(missing)}"] if missing else []),
                           *([f"not in the saved plan: {', '.join(extra)}"] if extra else [])])
        raise StalePlanError(f"stale plan: the set of hosts differs from the saved plan's ({which}); run plan again")
    changed = [n for n, hp in fresh.hosts.items()
               if (hp.fingerprint, hp.desired_hash) != (saved.hosts[n]["fingerprint"], saved.hosts[n]["desired_hash"])]
    if changed:
        raise StalePlanError(f"stale plan: the state of {', '.join(sorted(changed))} changed since the plan was "
                             "made (someone applied or edited something); run plan again")
