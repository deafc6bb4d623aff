"""The one jinja2 environment every role renders its templates with (templates/<service>/*.j2).

Templates only format what the plan computed: `StrictUndefined` turns a missing value into an error instead
of an empty string in a live config file. The filters quote values for the file formats the templates write.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def yaml_string(value: object) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is a subset of YAML's)."""
    return json.dumps(str(value))


def sql_literal(value: object) -> str:
    """A standard-conforming SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
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
    """Render `templates/<template>` (e.g. "etcd/etcd.env.j2") with exactly the given context."""
    return environment().get_template(template).render(**context)
