"""Run the pydantic models of `schema.py` on parts of the YAML data; turn their errors into Problems.

Each section (and each site and host entry) is validated on its own, so one broken entry does not
hide the errors of the others, and the valid parts can still be cross-checked.
"""

from __future__ import annotations

import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from deploykit.inventory.suggest import did_you_mean
from deploykit.inventory.yamlsource import KeyPath, Source

M = TypeVar("M", bound=BaseModel)

_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "a mapping (key: value pairs)",
    "model_type": "a mapping (key: value pairs)",
    "model_attributes_type": "a mapping (key: value pairs)",
}


def describe(value: Any) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return f"the text '{value}'" if len(value) < 60 else "a long text"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def validate_part(src: Source, model: type[M], data: Any, path: KeyPath) -> M | None:
    """`model` built from `data`, or None after recording every error under `path`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            _record(src, model, path, loc, err)
        return None


def _record(src: Source, model: type[BaseModel], path: KeyPath, loc: KeyPath, err: Any) -> None:
    kind = err["type"]
    full = path + loc
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(model, loc[:-1])
        src.error(full, f"unknown key '{key}'{did_you_mean(key, allowed)}")
    elif kind == "missing":
        src.error(full, f"required key '{loc[-1]}' is missing")
    elif kind in _EXPECTED:
        src.error(full, f"expected {_EXPECTED[kind]}, got {describe(err.get('input'))}")
    elif kind in ("too_short", "string_too_short") and isinstance(err.get("input"), str):
        src.error(full, "must not be empty")
    else:
        msg = str(err["msg"])
        msg = msg[0].lower() + msg[1:] if msg else kind
        src.error(full, f"{msg}, got {describe(err.get('input'))}")


def _fields_at(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The allowed keys of the mapping at `loc` inside `model` (for 'did you mean')."""
    ann: Any = model
    for part in loc:
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(str(part))
            if field is None:
                return []
            ann = field.annotation
        else:
            args = typing.get_args(ann)
            ann = args[-1] if args else None
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return []


def _unwrap(ann: Any) -> Any:
    """`X | None` -> X; Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = args[0] if len(args) == 1 else ann
            if len(args) != 1:
                return ann
        else:
            return ann
