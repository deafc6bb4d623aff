"""The lab's nftables rules, as text for `nft -f -` (pure; the machine applies them in network.py).

Two tables per lab, replaced together in one atomic `nft -f`:
- `inet dklab_<lab>`: routing only between the lab's own bridges (no packet from a lab server goes to the
  uplink or to the machine's other addresses).
- `bridge dklab_<lab>`: partitions. A partitioned group of servers (a host, a site, a provider) keeps talking
  within itself and, if asked, with the controller (the machine's address on the segment); every other
  frame to or from the group's ports is dropped, switched within a segment or routed between segments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deploykit.lab.layout import BRIDGE_PREFIX, LAB_RANGE


@dataclass(frozen=True, slots=True)
class PartitionRules:
    ports: tuple[str, ...]  # host-side veths of the group's servers
    allowed: tuple[str, ...]  # addresses the group may still exchange IP packets with (itself [+ controller])


def table_name(lab: str) -> str:
    return "dklab_" + re.sub(r"[^A-Za-z0-9]", "_", lab)


def render_ruleset(lab: str, partitions: Sequence[PartitionRules]) -> str:
    name = table_name(lab)
    bridges = f'"{BRIDGE_PREFIX}*"'
    lines = [
        f"table inet {name} {{}}",
        f"delete table inet {name}",
        f"table inet {name} {{",
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
        f"    iifname {bridges} oifname {bridges} ip saddr {LAB_RANGE} ip daddr {LAB_RANGE} accept",
        f"    iifname {bridges} drop",
        f"    oifname {bridges} drop",
        "  }",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        f"    iifname {bridges} ip daddr {LAB_RANGE} accept",
        f"    iifname {bridges} drop",
        "  }",
        "}",
        f"table bridge {name} {{}}",
        f"delete table bridge {name}",
        f"table bridge {name} {{",
    ]
    for i, p in enumerate(partitions):
        ports = ", ".join(f'"{x}"' for x in p.ports)
        lines += [
            f"  set p{i}_ports {{ type ifname; elements = {{ {ports} }}; }}",
            f"  set p{i}_allowed {{ type ipv4_addr; elements = {{ {', '.join(p.allowed)} }}; }}",
        ]
    chains: dict[str, list[str]] = {"forward": [], "input": [], "output": []}
    for i, _ in enumerate(partitions):
        chains["forward"] += [
            f"iifname @p{i}_ports oifname != @p{i}_ports drop",
            f"oifname @p{i}_ports iifname != @p{i}_ports drop",
        ]
        chains["input"] += [
            f"iifname @p{i}_ports ip daddr != @p{i}_allowed drop",
            f"iifname @p{i}_ports meta protocol != {{ ip, arp }} drop",
        ]
        chains["output"] += [
            f"oifname @p{i}_ports ip saddr != @p{i}_allowed drop",
            f"oifname @p{i}_ports meta protocol != {{ ip, arp }} drop",
        ]
    for hook, rules in chains.items():
        lines += [f"  chain {hook} {{", f"    type filter hook {hook} priority 0; policy accept;"]
        lines += [f"    {r}" for r in rules]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_removal(lab: str) -> str:
    """Text that removes both tables, whether or not they exist."""
    name = table_name(lab)
    return "".join(f"table {family} {name} {{}}\ndelete table {family} {name}\n" for family in ("inet", "bridge"))
