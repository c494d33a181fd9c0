"""Describe a policy's parameters from its pydantic config: name, type, default, allowed values, meaning."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class ParamInfo:
    name: str  # dotted for nested configs: window.start, dynamic.interval
    type: str
    default: Any
    allowed: str
    meaning: str


def describe_config(config_cls: type[BaseModel], prefix: str = "") -> list[ParamInfo]:
    rows: list[ParamInfo] = []
    defaults = config_cls()
    for name, field in config_cls.model_fields.items():
        rows += _describe_field(prefix + name, field, getattr(defaults, name))
    return rows


def _describe_field(name: str, field: FieldInfo, default: Any) -> list[ParamInfo]:
    annotation = field.annotation
    if isinstance(default, BaseModel):
        # a nested model: one row per leaf; its own defaults come from the parent's default instance
        rows = []
        for sub, subfield in type(default).model_fields.items():
            subrows = _describe_field(f"{name}.{sub}", subfield, getattr(default, sub))
            if subfield.description and field.description and len(subrows) == 1 and sub in ("start", "end", "unit"):
                subrows = [
                    ParamInfo(r.name, r.type, r.default, r.allowed, f"{field.description}: {subfield.description}")
                    for r in subrows
                ]
            rows += subrows
        return rows
    return [ParamInfo(name, _type_name(annotation), default, _allowed(annotation, field), field.description or "")]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice"
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return "list"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _allowed(annotation: Any, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "allowed" in extra:
        return str(extra["allowed"])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return ", ".join(map(str, args))
    if origin is list and args and typing.get_origin(args[0]) is Literal:
        return "any of: " + ", ".join(map(str, typing.get_args(args[0])))
    if annotation is bool:
        return "true, false"
    low = high = None
    low_open = high_open = False
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            low, low_open = meta.gt, True
        elif isinstance(meta, annotated_types.Le):
            high = meta.le
        elif isinstance(meta, annotated_types.Lt):
            high, high_open = meta.lt, True
    if low is not None or high is not None:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    if origin in (Union, types.UnionType) and type(None) in args:
        return "null or a value"
    return "see meaning"
