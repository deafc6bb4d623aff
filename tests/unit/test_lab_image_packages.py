"""The lab's servers cannot download anything: every package a role wants must be in the base image."""

from __future__ import annotations

from pathlib import Path

from deploykit.apply.phases import desired_states
from deploykit.inventory import load_inventory
from deploykit.lab.image import PACKAGES
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services import SERVICES

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"


def test_every_role_package_is_preinstalled_in_the_lab_image() -> None:
    inv = load_inventory(LAB)
    states = desired_states(inv, plan_placement(inv), lambda name: Secret(name, "s3cr3t" + name.replace("-", "")))
    wanted = {p for per_host in states.values() for s in per_host for p in s.packages}
    assert wanted <= {p for s in SERVICES for p in s.packages}  # each service declares what it installs
    assert wanted, "the roles asked for no package at all"
    assert sorted(wanted - set(PACKAGES)) == []
