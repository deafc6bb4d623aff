"""YAML inventory -> frozen, validated model. Pure: no SSH, no pyinfra."""

from deploykit.inventory.load import check_inventory, load_inventory
from deploykit.inventory.model import LEVELS, Host, Inventory, Services, Site, SshSettings

__all__ = ["LEVELS", "Host", "Inventory", "Services", "Site", "SshSettings", "check_inventory",
           "load_inventory"]
