"""YAML text -> data with the line of every key: duplicate keys, anchors, merge keys, syntax errors."""

from __future__ import annotations

import textwrap

import pytest

from deploykit.errors import Problem
from deploykit.inventory.yamlsource import Source, parse_yaml, render_path


def parse(text: str) -> Source:
    return parse_yaml(textwrap.dedent(text), "inv.yml")


def rendered(src: Source) -> list[str]:
    return [p.render() for p in src.problems]


def test_plain_mapping_and_lines() -> None:
    src = parse("""\
        version: 1
        hosts:
          web-1:
            roles:
              - lb
              - app
        """)
    assert src.problems == []
    assert src.data == {"version": 1, "hosts": {"web-1": {"roles": ["lb", "app"]}}}
    assert src.lines[()] == 1
    assert src.lines[("version",)] == 1
    assert src.lines[("hosts",)] == 2
    assert src.lines[("hosts", "web-1")] == 3
    assert src.lines[("hosts", "web-1", "roles")] == 4
    assert src.lines[("hosts", "web-1", "roles", 0)] == 5
    assert src.lines[("hosts", "web-1", "roles", 1)] == 6


def test_line_of_falls_back_to_the_nearest_ancestor() -> None:
    src = parse("""\
        # comment
        services:
          db: {port: 5432}
        """)
    assert src.line_of(("services", "db", "port")) == 3
    assert src.line_of(("services", "db", "synchronous")) == 3
    assert src.line_of(("services", "app", "port")) == 2
    assert src.line_of(("nothing", "here")) == 2  # the document's first line


def test_error_and_warn_render_file_line_path() -> None:
    src = parse("a:\n  b: 1\n")
    src.error(("a", "b"), "bad b")
    src.warn(("a",), "odd a")
    assert rendered(src) == ["inv.yml:2: a/b: bad b", "inv.yml:1: a: warning: odd a"]
    assert [p.severity for p in src.problems] == ["error", "warning"]


def test_render_path() -> None:
    assert render_path(("hosts", "web-1", "roles", 0)) == "hosts/web-1/roles/0"
    assert render_path(()) == ""


def test_problem_render_without_line_or_path() -> None:
    assert Problem("f.yml", None, "", "boom").render() == "f.yml: boom"
    assert Problem("f.yml", 3, "", "boom").render() == "f.yml:3: boom"
    assert Problem("f.yml", None, "a/b", "boom", "warning").render() == "f.yml: a/b: warning: boom"


# --- duplicate keys -----------------------------------------------------------------------------------------


def test_duplicate_top_level_key_names_both_lines() -> None:
    src = parse("""\
        version: 1
        name: a
        name: b
        """)
    assert rendered(src) == [
        "inv.yml:3: name: duplicate key 'name' (first at line 2); YAML would silently keep only the last one: "
        "remove or rename one of them"
    ]
    assert src.data == {"version": 1, "name": "b"}


def test_duplicate_nested_key_names_both_lines_and_full_path() -> None:
    src = parse("""\
        hosts:
          web-1:
            address: 10.0.0.1
            roles: [app]
            address: 10.0.0.2
        """)
    assert len(src.problems) == 1
    p = src.problems[0]
    assert (p.line, p.path) == (5, "hosts/web-1/address")
    assert p.message.startswith("duplicate key 'address' (first at line 3)")


def test_duplicate_key_in_flow_mapping() -> None:
    src = parse("hosts:\n  h: {site: a, roles: [app], site: b}\n")
    assert [(p.line, p.path) for p in src.problems] == [(2, "hosts/h/site")]
    assert "duplicate key 'site' (first at line 2)" in src.problems[0].message


def test_duplicate_host_entries() -> None:
    src = parse("""\
        hosts:
          web-1: {address: 10.0.0.1}
          web-2: {address: 10.0.0.2}
          web-1: {address: 10.0.0.3}
        """)
    assert [(p.line, p.path) for p in src.problems] == [(4, "hosts/web-1")]
    assert "(first at line 2)" in src.problems[0].message


def test_every_duplicate_is_reported() -> None:
    src = parse("""\
        a: 1
        a: 2
        b: {c: 1, c: 2}
        a: 3
        """)
    # a mapping's own duplicates first, then those of the mappings inside it
    assert [(p.line, p.path) for p in src.problems] == [(2, "a"), (4, "a"), (3, "b/c")]
    assert all("(first at line" in p.message for p in src.problems)


# --- anchors, aliases, merge keys ----------------------------------------------------------------------------


def test_alias_of_a_list() -> None:
    src = parse("""\
        x-web: &web [lb, app]
        hosts:
          a: {roles: *web}
          b: {roles: *web}
        """)
    assert src.problems == []
    assert src.data["hosts"] == {"a": {"roles": ["lb", "app"]}, "b": {"roles": ["lb", "app"]}}


def test_merge_key_brings_in_the_anchor() -> None:
    src = parse("""\
        x-host: &host {site: fra1, roles: [app]}
        hosts:
          a: {<<: *host, address: 10.0.0.1}
        """)
    assert src.problems == []
    assert src.data["hosts"]["a"] == {"site": "fra1", "roles": ["app"], "address": "10.0.0.1"}


def test_explicit_key_overriding_a_merged_one_is_not_a_duplicate() -> None:
    src = parse("""\
        x-host: &host {site: fra1, roles: [app]}
        hosts:
          a:
            <<: *host
            site: rbx1
        """)
    assert src.problems == []
    assert src.data["hosts"]["a"] == {"site": "rbx1", "roles": ["app"]}


def test_merge_of_a_list_of_anchors() -> None:
    src = parse("""\
        x-a: &a {site: fra1}
        x-b: &b {roles: [app]}
        h: {<<: [*a, *b], address: 10.0.0.1}
        """)
    assert src.problems == []
    assert src.data["h"] == {"site": "fra1", "roles": ["app"], "address": "10.0.0.1"}


def test_duplicate_inside_an_anchored_mapping_is_reported_where_it_is_written() -> None:
    src = parse("""\
        x-host: &host
          site: fra1
          site: rbx1
        hosts:
          a: {<<: *host}
        """)
    assert [(p.line, p.path) for p in src.problems] == [(3, "x-host/site")]
    assert "(first at line 2)" in src.problems[0].message


def test_merge_of_a_scalar_is_a_syntax_error_with_its_line() -> None:
    src = parse("version: 1\n<<: 5\n")
    assert rendered(src) == [
        "inv.yml:2: YAML syntax error: expected a mapping or list of mappings for merging, but found scalar"
    ]
    assert src.data is None


def test_undefined_alias() -> None:
    src = parse("a: 1\nb: *nope\n")
    assert len(src.problems) == 1
    assert src.problems[0].line == 2
    assert "YAML syntax error: found undefined alias" in src.problems[0].message


def test_recursive_alias_is_a_problem_not_a_crash() -> None:
    src = parse("a: &a [*a]\n")
    assert rendered(src) == ["inv.yml: YAML nesting is too deep (recursive alias?)"]


# --- keys that are not text ---------------------------------------------------------------------------------


def test_number_key_must_be_quoted() -> None:
    src = parse("a: 1\n22: x\n")
    assert rendered(src) == ['inv.yml:2: 22: key 22 must be text; quote it ("22")']
    assert src.data == {"a": 1, "22": "x"}


def test_complex_key_is_rejected() -> None:
    src = parse("a: 1\n[x, y]: 2\n")
    assert rendered(src) == ["inv.yml:2: a key must be plain text, not a list or mapping"]
    assert src.data == {"a": 1}


# --- syntax errors and document shape -----------------------------------------------------------------------


def test_syntax_error_has_its_line() -> None:
    src = parse("""\
        version: 1
        name: chirp
        hosts: [a, b
        sites: {}
        """)
    assert len(src.problems) == 1
    p = src.problems[0]
    assert p.line == 4
    assert p.message == "YAML syntax error: did not find expected ',' or ']'"
    assert src.data is None


def test_tab_indentation_is_a_syntax_error() -> None:
    src = parse_yaml("version: 1\n\tname: a\n", "inv.yml")
    assert rendered(src) == ["inv.yml:2: YAML syntax error: found a tab character that violates indentation"]


def test_bad_indentation() -> None:
    src = parse_yaml("a:\n  b: 1\n c: 2\n", "inv.yml")
    assert len(src.problems) == 1
    assert src.problems[0].line == 3
    assert src.problems[0].message.startswith("YAML syntax error: ")


def test_more_than_one_document() -> None:
    src = parse_yaml("version: 1\n---\nversion: 2\n", "inv.yml")
    assert rendered(src) == [
        "inv.yml:2: YAML syntax error: holds more than one YAML document (a second '---'); "
        "an inventory is one document"
    ]


def test_leading_document_marker_is_fine() -> None:
    src = parse_yaml("---\nversion: 1\n", "inv.yml")
    assert src.problems == []
    assert src.data == {"version": 1}
    assert src.lines[("version",)] == 2


@pytest.mark.parametrize("text", ["", "\n\n", "   \n", "# only a comment\n", "# a\n\n  # b\n"])
def test_empty_document(text: str) -> None:
    src = parse_yaml(text, "inv.yml")
    assert rendered(src) == ["inv.yml: the inventory is empty; start from inventories/example.yml"]
    assert src.data is None


def test_control_character_is_a_problem_not_a_crash() -> None:
    src = parse_yaml("version: 1\x07\n", "inv.yml")
    assert len(src.problems) == 1
    assert src.problems[0].message == "character #x0007 is not allowed in YAML; remove it"


def test_control_character_problem_has_a_line_and_is_one_line() -> None:
    src = parse_yaml("version: 1\nname: a\x07\n", "inv.yml")
    assert len(src.problems) == 1
    assert src.problems[0].line == 2
    assert "\n" not in src.problems[0].render()


def test_explicit_key_overriding_a_merged_one_has_its_own_line() -> None:
    src = parse("""\
        x-app: &app {port: 8000}
        services:
          app:
            <<: *app
            port: 8001
        """)
    assert src.data["services"]["app"] == {"port": 8001}
    assert src.lines[("services", "app", "port")] == 5


def test_alias_fan_out_is_not_expanded_exponentially() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 5)]
    src = parse_yaml("\n".join(lines) + "\n", "inv.yml")  # 5 levels of 10: 100,000 leaves if expanded
    assert len(src.lines) < 1_000
