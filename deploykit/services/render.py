"""The one jinja2 environment every service renders its templates with.

A template is named `<service>/<file>` and lives in `deploykit/services/<service>/templates/<file>` (package
data: it is installed with deploykit). Templates only format what the config computed: `StrictUndefined`
turns a missing value into an error instead of an empty string in a live config file. The filters quote
values for the file formats the templates write.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jinja2 import Environment

SERVICES_DIR = Path(__file__).resolve().parent


def yaml_string(value: object) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's)."""
    return json.dumps(str(value))


def sql_literal(value: object) -> str:
    """A standard-conforming SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def template_dirs() -> dict[str, Path]:
    """Service name -> its templates directory, for every service package that has one."""
    return {d.name: d / "templates" for d in sorted(SERVICES_DIR.iterdir()) if (d / "templates").is_dir()}


@cache
def environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, PrefixLoader, StrictUndefined

    env = Environment(
        loader=PrefixLoader({name: FileSystemLoader(path) for name, path in template_dirs().items()}),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["yaml_string"] = yaml_string
    env.filters["sql_literal"] = sql_literal
    return env


def render(template: str, **context: object) -> str:
    """Render `<service>/<file>` (e.g. "etcd/etcd.env.j2") with exactly the given context."""
    return environment().get_template(template).render(**context)
