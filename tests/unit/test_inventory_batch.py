"""services.app.batch_size: a count of hosts or a percentage of the app hosts (issue 14)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("value", ["0%", "101%", "abc", "'25'", "0", "-1", "true", "2.5"])
def test_a_batch_size_that_is_neither_a_count_nor_a_percentage_is_an_error(value, make_inventory, check_text,
                                                                            find_line) -> None:
    text = make_inventory(services=f"services:\n  app: {{batch_size: {value}}}")
    error = check_text(text).only_error()
    line = find_line(text, "batch_size")
    assert error.startswith(f"inventory.yml:{line}: services/app/batch_size: ")
    assert "write a number of hosts (1 or more) or a percentage of the app hosts such as '25%'" in error


@pytest.mark.parametrize(("value", "expected"), [("25%", "25%"), ("100%", "100%"), ("3", 3), ("'10%'", "10%")])
def test_a_count_or_a_percentage_is_taken(value, expected, make_inventory, load_text) -> None:
    inv = load_text(make_inventory(services=f"services:\n  app: {{batch_size: {value}}}"))
    assert inv.services.app.batch_size == expected


def test_the_default_is_a_quarter_of_the_app_hosts(make_inventory, load_text) -> None:
    inv = load_text(make_inventory())
    assert inv.services.app.batch_size == "25%"
    assert inv.services.app.batch_count(6) == 1
