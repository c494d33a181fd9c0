"""Search spaces: which parameters of a policy a search tunes, over which ranges or choices.

A policy declares its tunable parameters on its pydantic fields, in the unit of the field's default::

    interval: int = Field(2, ge=1, le=50, json_schema_extra={"search": {"low": 1, "high": 6}})
    window: Window = Field(Window(start=0.32, end=1.0),
                           json_schema_extra={"search": {"start": {"low": 0.1, "high": 0.6},
                                                         "end": {"low": 0.7, "high": 1.0}}})

A range is ``{low, high[, step][, log]}`` (whole numbers for ``int`` fields), a choice ``{choices: [...]}``.
A space file (YAML) or mapping can fix any parameter, override a range, or search a parameter the policy does not
declare; names are dotted paths into the config (``dynamic.window.start``), written flat or nested::

    dynamic.interval: 3                         # fixed
    dynamic.weight: {low: 0.1, high: 0.6}       # another range
    cfg_cache.interval: {choices: [3, 5, 7]}    # choices
    dynamic.window: [0.3, 1.0]                  # a whole window, fixed (unit: the default window's)

Composed policies search the union of their members' spaces: ``fastercache`` through its nested configs
(``dynamic.*``, ``cfg_cache.*``), a list such as ``["pab", "cfg_cache"]`` with each member's name as prefix
(``pab.spatial_interval``). A single policy also accepts its own name as prefix (``dynamic.interval``).

Windows stay valid: the end of a window is sampled after its start, from the part of its range that keeps
``start < end`` (progress, step; at least :data:`MIN_PROGRESS_SPAN` of progress) or ``start >= end`` (timesteps).
Ranges that leave some start without a valid end are an error when the space is built.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel

from cachelab.describe import describe_config
from cachelab.errors import PolicyError
from cachelab.policies import Window, policy_class
from cachelab.search.errors import SearchSpaceError
from cachelab.spec import read_data_file

__all__ = ["MIN_PROGRESS_SPAN", "Param", "SearchSpace", "build_space", "load_space_file"]

#: The shortest progress window a search samples (a window of 0 steps would reuse nothing).
MIN_PROGRESS_SPAN = 0.05
_RANGE_KEYS = {"low", "high", "step", "log"}
_UNITS = ("progress", "timestep", "step")
_PRIMITIVE = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One searched parameter: a range (``int`` / ``float``) or a set of choices.

    ``window`` names the window a ``start``/``end`` parameter belongs to, ``unit`` is that window's unit.
    """

    name: str
    kind: Literal["int", "float", "choice"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()
    default: Any = None
    window: str | None = None
    unit: str | None = None

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(json.dumps(c) for c in self.choices) + "}"
        text = f"[{self.low:g}, {self.high:g}]"
        if self.step is not None:
            text += f" step {self.step:g}"
        if self.log:
            text += " log"
        if self.unit is not None:
            text += f" {self.unit}"
        return text

    def to_dict(self) -> dict:
        out = asdict(self)
        out["choices"] = list(self.choices)
        return out


@dataclass
class SearchSpace:
    """The parameters a search samples and the ones it keeps fixed, for one policy or a composition.

    Plain data (picklable): ``paths`` maps every known parameter to ``(member index, path in its config)``.
    """

    policies: tuple[str, ...]
    params: dict[str, Param]
    fixed: dict[str, Any]
    defaults: list[dict] = field(repr=False)
    paths: dict[str, tuple[int, tuple[str, ...]]] = field(repr=False)

    @property
    def label(self) -> str:
        return "+".join(self.policies)

    def suggest(self, trial) -> dict[str, Any]:
        """Sample every parameter with an Optuna trial; window ends are sampled after their starts."""
        values: dict[str, Any] = {}
        for p in self.params.values():
            if p.kind == "choice":
                values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
                continue
            low, high = p.low, p.high
            if p.window is not None and p.name.endswith(".end"):
                start_name = p.window + ".start"
                start = values.get(start_name, self.fixed.get(start_name))
                low, high = end_bounds(p.unit, start, low, high)
            if p.kind == "int":
                step = int(p.step) if p.step is not None else 1
                values[p.name] = trial.suggest_int(p.name, math.ceil(low), math.floor(high), step=step, log=p.log)
            else:
                values[p.name] = trial.suggest_float(p.name, float(low), float(high), step=p.step, log=p.log)
        return values

    def default_values(self) -> dict[str, Any] | None:
        """The searched parameters at the policy's defaults (a trial to enqueue), or None when a default lies
        outside its searched range or choices; fixed values stay fixed."""
        values = {}
        for name, p in self.params.items():
            inside = p.default in p.choices if p.kind == "choice" else (
                p.default is not None and p.low <= p.default <= p.high
            )
            if not inside:
                return None
            values[name] = p.default
        return values

    def policy_spec(self, values: dict[str, Any] | None = None) -> dict:
        """The policy mapping (``resolve_policy`` form) of the fixed values and ``values``; defaults elsewhere."""
        params = copy.deepcopy(self.defaults)
        for name, value in {**self.fixed, **(values or {})}.items():
            member, path = self.paths[name]
            _set_path(params[member], path, value)
        specs = [{"policy": name, "params": p} for name, p in zip(self.policies, params)]
        return specs[0] if len(specs) == 1 else {"policies": specs}

    def to_dict(self) -> dict:
        return {
            "policies": list(self.policies),
            "params": [p.to_dict() for p in self.params.values()],
            "fixed": self.fixed,
            "defaults": self.defaults,
        }

    def fingerprint(self) -> str:
        """A hash of the policy, every searched range, every fixed value and the policy's defaults (which the
        parameters that are neither searched nor fixed keep); stored with a study."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def rows(self) -> list[tuple[str, str, str]]:
        """``(name, searched range or fixed value, default)`` per parameter, for tables."""
        out = [(p.name, p.describe(), json.dumps(p.default)) for p in self.params.values()]
        out += [(name, f"fixed {json.dumps(v)}", "") for name, v in self.fixed.items()]
        return out


def end_bounds(unit: str | None, start: float, low: float, high: float) -> tuple[float, float]:
    """The part of a window end's range ``[low, high]`` that makes a valid window with ``start``."""
    if unit == "progress":
        return max(low, start + MIN_PROGRESS_SPAN), high
    if unit == "step":
        return max(low, start + 1), high
    return low, min(high, start)


# ---------------------------------------------------------------------------------------------------- building


@dataclass
class _Leaf:
    name: str
    member: int
    path: tuple[str, ...]
    annotation: Any
    default: Any
    declared: Any
    allowed: str
    window: str | None = None
    part: str | None = None
    unit_field: str | None = None


@dataclass
class _Member:
    name: str
    label: str
    cls: type


def build_space(policy: str | list[str] | tuple[str, ...], space: str | Path | dict | None = None) -> SearchSpace:
    """The search space of ``policy`` (a registered name or a list of names), with ``space`` (a YAML file path
    or a mapping) fixing or overriding parameters. Raises :class:`SearchSpaceError` naming what is wrong."""
    members = _members(policy)
    leaves: dict[str, _Leaf] = {}
    windows: dict[str, tuple[int, tuple[str, ...], Window]] = {}
    for index, member in enumerate(members):
        allowed = {row.name: row.allowed for row in describe_config(member.cls.Config)}
        _collect(member.cls.Config, member.cls.Config(), member.label, (), index, allowed, leaves, windows)
    overrides = _flatten(_read_space(space, members), leaves, windows, members)
    return _Builder(members, leaves, windows, overrides).build()


def _members(policy) -> list[_Member]:
    if isinstance(policy, str):
        names = [n.strip() for n in policy.replace(",", "+").split("+") if n.strip()]
    elif isinstance(policy, (list, tuple)) and all(isinstance(n, str) for n in policy):
        names = list(policy)
    else:
        raise SearchSpaceError(
            f"policy={policy!r}: name a registered policy (e.g. 'fastercache') or a list of names "
            "(['pab', 'cfg_cache'])"
        )
    if not names:
        raise SearchSpaceError("no policy named: give a registered policy name or a list of names")
    members, seen = [], {}
    for name in names:
        cls = policy_class(name)  # PolicyError for unknown names, listing the known ones
        seen[name] = seen.get(name, 0) + 1
        label = "" if len(names) == 1 else (f"{name}." if seen[name] == 1 else f"{name}_{seen[name]}.")
        members.append(_Member(name, label, cls))
    return members


def _collect(config_cls, default, prefix, path, member, allowed, leaves, windows) -> None:
    for fname, finfo in config_cls.model_fields.items():
        value = getattr(default, fname)
        name, here = prefix + fname, path + (fname,)
        extra = finfo.json_schema_extra if isinstance(finfo.json_schema_extra, dict) else {}
        declared = extra.get("search")
        local = ".".join(here)
        if isinstance(value, Window):
            windows[name] = (member, here, value)
            parts = declared if isinstance(declared, dict) else {}
            for part in ("start", "end", "unit"):
                leaves[f"{name}.{part}"] = _Leaf(
                    f"{name}.{part}",
                    member,
                    here + (part,),
                    Window.model_fields[part].annotation,
                    getattr(value, part),
                    parts.get(part) if part != "unit" else None,
                    allowed.get(f"{local}.{part}", ""),
                    window=name,
                    part=part,
                )
        elif isinstance(value, BaseModel):
            _collect(type(value), value, name + ".", here, member, allowed, leaves, windows)
        else:
            unit_field = None
            if isinstance(declared, dict) and "unit_field" in declared:
                declared = dict(declared)
                unit_field = prefix + declared.pop("unit_field")
            leaves[name] = _Leaf(name, member, here, finfo.annotation, value, declared, allowed.get(local, ""),
                                 unit_field=unit_field)


def load_space_file(path: str | Path) -> dict:
    """The mapping a YAML space file holds (an empty file is an empty mapping)."""
    path = Path(path)
    data = read_data_file(path, "search space file", SearchSpaceError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SearchSpaceError(
            f"search space file {str(path)!r} must hold a mapping of parameter names to values, ranges or choices"
        )
    return data


def _read_space(space, members: list[_Member]) -> dict:
    if space is None:
        return {}
    if isinstance(space, (str, Path)):
        data, where = load_space_file(space), f"search space file {str(space)!r}"
    else:
        data, where = space, "search space"
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{where} must be a mapping of parameter names to values, ranges or choices")
    data = dict(data)
    named = data.pop("policy", None)
    if named is not None:
        want = "+".join(m.name for m in members)
        got = named if isinstance(named, str) else "+".join(map(str, named))
        if got.replace(",", "+").replace(" ", "") != want:
            raise SearchSpaceError(f"{where} is for policy {got!r}, but the search tunes {want!r}")
    return data


def _flatten(mapping: dict, leaves, windows, members, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}

    def put(name, value):
        if name in out:
            raise SearchSpaceError(f"search space: {name} is given twice")
        out[name] = value

    for key, value in mapping.items():
        name = _canonical(prefix + str(key), leaves, windows, members)
        if name in leaves:
            put(name, value)
        elif name in windows:
            default_unit = windows[name][2].unit
            if isinstance(value, (list, tuple)) and len(value) in (2, 3):
                parts = dict(zip(("start", "end", "unit"), value))
                parts.setdefault("unit", default_unit)
            elif isinstance(value, dict) and value and set(value) <= {"start", "end", "unit"}:
                parts = value
            else:
                raise SearchSpaceError(
                    f"search space: {name}: {value!r} is not a window; fix it as [start, end] or [start, end, unit], "
                    f"or give {name}.start / {name}.end values or ranges"
                )
            for part, v in parts.items():
                put(f"{name}.{part}", v)
        elif isinstance(value, dict) and any(n.startswith(name + ".") for n in leaves):
            for k, v in _flatten(value, leaves, windows, members, prefix=name + ".").items():
                put(k, v)
        else:
            known = ", ".join(n for n in leaves if not n.endswith(".unit"))
            raise SearchSpaceError(
                f"search space: unknown parameter {name!r} (value {value!r}); "
                f"{'+'.join(m.name for m in members)} takes: {known}"
            )
    return out


def _canonical(name: str, leaves, windows, members) -> str:
    def known(n):
        return n in leaves or n in windows or any(k.startswith(n + ".") for k in leaves)

    if known(name) or len(members) != 1:
        return name
    own = members[0].name + "."
    if name.startswith(own) and known(name[len(own):]):
        return name[len(own):]
    return name


class _Builder:
    def __init__(self, members, leaves, windows, overrides):
        self.members, self.leaves, self.windows, self.overrides = members, leaves, windows, overrides
        self.params: dict[str, Param] = {}
        self.fixed: dict[str, Any] = {}

    def build(self) -> SearchSpace:
        window_done = set()
        for leaf in self.leaves.values():
            if leaf.window is not None:
                if leaf.window not in window_done:
                    window_done.add(leaf.window)
                    self._window(leaf.window)
                continue
            self._scalar(leaf)
        if not self.params:
            self._empty()
        return SearchSpace(
            policies=tuple(m.name for m in self.members),
            params=self.params,
            fixed=self.fixed,
            defaults=[m.cls.Config().model_dump(mode="json") for m in self.members],
            paths={n: (leaf.member, leaf.path) for n, leaf in self.leaves.items()},
        )

    # -- one scalar field ------------------------------------------------------------------------------------
    def _spec(self, leaf: _Leaf) -> tuple[str, Any, bool] | None:
        """``(form, value, declared)`` with form ``fixed``/``range``/``choices``, or None (not searched)."""
        if leaf.name in self.overrides:
            value, declared = self.overrides[leaf.name], False
        elif leaf.declared is not None:
            value, declared = leaf.declared, True
        else:
            return None
        where = f"{leaf.name} (declared in {self.members[leaf.member].cls.Config.__name__})" if declared else leaf.name
        if isinstance(value, dict):
            keys = set(value)
            if "choices" in keys:
                choices = value["choices"]
                if keys != {"choices"} or not isinstance(choices, (list, tuple)) or not choices:
                    raise SearchSpaceError(
                        f"search space: {where}: choices must be a non-empty list, alone; got {value!r}"
                    )
                bad = [c for c in choices if not isinstance(c, _PRIMITIVE)]
                if bad:
                    raise SearchSpaceError(
                        f"search space: {where}: choice {bad[0]!r} cannot be searched; choices must be numbers, "
                        "strings, booleans or null (a list-valued parameter can only be fixed)"
                    )
                if len(set(map(json.dumps, choices))) != len(choices):
                    raise SearchSpaceError(f"search space: {where}: choices {list(choices)!r} repeat a value")
                return "choices", list(choices), declared
            if keys <= _RANGE_KEYS and {"low", "high"} <= keys:
                self._check_range(where, value)
                return "range", value, declared
            raise SearchSpaceError(
                f"search space: {where}: {value!r} is neither a value, a range {{low: .., high: ..[, step: ..]"
                "[, log: true]} nor {choices: [..]}"
            )
        return "fixed", value, declared

    @staticmethod
    def _check_range(where: str, r: dict) -> None:
        low, high, step, log = r["low"], r["high"], r.get("step"), r.get("log", False)
        for key, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SearchSpaceError(f"search space: {where}: {key}={v!r} is not a finite number")
        if low > high:
            raise SearchSpaceError(f"search space: {where}: low={low!r} is above high={high!r}; give low <= high")
        if not isinstance(log, bool):
            raise SearchSpaceError(f"search space: {where}: log={log!r}; give true or false")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
            raise SearchSpaceError(f"search space: {where}: step={step!r}; give a positive number")
        if log and step is not None:
            raise SearchSpaceError(f"search space: {where}: a range takes step or log, not both")
        if log and low <= 0:
            raise SearchSpaceError(f"search space: {where}: a log range needs low > 0; got low={low!r}")

    def _scalar(self, leaf: _Leaf) -> None:
        spec = self._spec(leaf)
        if spec is None:
            return
        form, value, declared = spec
        if form == "fixed":
            self._check_value(leaf, value, "value")
            self.fixed[leaf.name] = value
            return
        if declared and leaf.unit_field is not None:
            unit = self.overrides.get(leaf.unit_field)
            default_unit = self.leaves[leaf.unit_field].default
            if unit is not None and unit != default_unit:
                raise SearchSpaceError(
                    f"search space: {leaf.name}: its declared range [{value['low']}, {value['high']}] is in "
                    f"{default_unit}, but {leaf.unit_field} is fixed to {unit!r}; give {leaf.name} a range or value "
                    f"in {unit}"
                )
        if form == "choices":
            for choice in value:
                self._check_value(leaf, choice, "choice")
            self.params[leaf.name] = Param(leaf.name, "choice", choices=tuple(value), default=leaf.default)
            return
        kind = _range_kind(leaf, value)
        self._check_value(leaf, value["low"], "low")
        self._check_value(leaf, value["high"], "high")
        self.params[leaf.name] = Param(
            leaf.name, kind, value["low"], value["high"], value.get("step"), value.get("log", False),
            default=leaf.default,
        )

    def _check_value(self, leaf: _Leaf, value: Any, what: str) -> None:
        member = self.members[leaf.member]
        try:
            member.cls.make_config(_set_path({}, leaf.path, value))
        except PolicyError as exc:
            detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:]) or str(exc)
            allowed = f" (allowed: {leaf.allowed})" if leaf.allowed else ""
            raise SearchSpaceError(
                f"search space: {leaf.name}: {what} {value!r} is not allowed{allowed}: {detail}"
            ) from None

    # -- one window ------------------------------------------------------------------------------------------
    def _window(self, wname: str) -> None:
        _, _, default = self.windows[wname]
        unit_leaf = self.leaves[f"{wname}.unit"]
        unit_spec = self._spec(unit_leaf)
        unit = default.unit
        if unit_spec is not None:
            form, value, _ = unit_spec
            if form != "fixed":
                raise SearchSpaceError(
                    f"search space: {wname}.unit cannot be searched; fix it to one of {', '.join(_UNITS)} and give "
                    f"{wname}.start / {wname}.end ranges in that unit"
                )
            if value not in _UNITS:
                raise SearchSpaceError(f"search space: {wname}.unit={value!r}; choose one of {', '.join(_UNITS)}")
            unit = value
            if unit != default.unit:
                self.fixed[unit_leaf.name] = unit
        ranges: dict[str, tuple[str, Any]] = {}
        for part in ("start", "end"):
            leaf = self.leaves[f"{wname}.{part}"]
            spec = self._spec(leaf)
            if spec is None or (spec[2] and unit != default.unit):
                if unit != default.unit:
                    how = "searched over a range" if spec else "left at its default"
                    raise SearchSpaceError(
                        f"search space: {leaf.name}: {wname}.unit is fixed to {unit!r}, but {leaf.name} is {how} in "
                        f"{default.unit}; give {leaf.name} a value or range in {unit}"
                    )
                spec = spec or ("fixed", leaf.default, True)
            form, value, _ = spec
            values = [value] if form == "fixed" else value if form == "choices" else [value["low"], value["high"]]
            for v in values:
                _check_window_value(leaf.name, v, unit)
            ranges[part] = (form, value)
        self._check_window_feasible(wname, unit, ranges)
        searched = any(form != "fixed" for form, _ in ranges.values())
        for part in ("start", "end"):
            name = f"{wname}.{part}"
            form, value = ranges[part]
            leaf = self.leaves[name]
            if form == "fixed":
                if name in self.overrides or searched:  # explicit: a sampled end is conditioned on a fixed start
                    self.fixed[name] = value
            elif form == "choices":
                self.params[name] = Param(name, "choice", choices=tuple(value), default=leaf.default, window=wname,
                                          unit=unit)
            else:
                ints = all(isinstance(value[k], int) for k in ("low", "high")) and unit != "progress"
                self.params[name] = Param(
                    name, "int" if ints else "float", value["low"], value["high"], value.get("step"),
                    value.get("log", False), default=leaf.default, window=wname, unit=unit,
                )
        if any(f"{wname}.{p}" in self.params for p in ("start", "end")) and f"{wname}.unit" not in self.fixed:
            self.fixed[f"{wname}.unit"] = unit  # explicit, so a sampled window never falls back to another unit

    def _check_window_feasible(self, wname: str, unit: str, ranges) -> None:
        def span(form, value):
            if form == "fixed":
                return value, value
            if form == "choices":
                return min(value), max(value)
            return value["low"], value["high"]

        (s_form, s_val), (e_form, e_val) = ranges["start"], ranges["end"]
        s_lo, s_hi = span(s_form, s_val)
        e_lo, e_hi = span(e_form, e_val)
        end_conditioned = e_form == "range"
        if unit in ("progress", "step"):
            gap = MIN_PROGRESS_SPAN if unit == "progress" else 1
            ok = (s_hi + gap <= e_hi) if end_conditioned else (s_hi < e_lo)
            example = (s_hi, e_hi if end_conditioned else e_lo)
            rule = f"start < end (by at least {gap:g})" if end_conditioned else "every start before every end"
        else:
            ok = (s_lo >= e_lo) if end_conditioned else (s_lo >= e_hi)
            example = (s_lo, e_lo if end_conditioned else e_hi)
            rule = "start >= end (timesteps fall during sampling)"
        if not ok:
            raise SearchSpaceError(
                f"search space: {wname}: start {_describe(s_form, s_val)} and end {_describe(e_form, e_val)} allow "
                f"windows that are not valid in {unit} (e.g. start={example[0]}, end={example[1]}); {unit} windows "
                f"need {rule}"
            )

    def _empty(self) -> None:
        label = "+".join(m.name for m in self.members)
        example = next((n for n, leaf in self.leaves.items() if leaf.annotation is int), "interval")
        if any(leaf.declared is not None for leaf in self.leaves.values()):
            why = "the space file fixes every parameter the policy declares"
        else:
            why = f"{label} declares no searchable parameters and the space file gives no ranges"
        raise SearchSpaceError(
            f"the search space of {label} is empty: {why}; give ranges or choices in a space file, "
            f"e.g. '{example}: {{low: 1, high: 4}}'"
        )


def _describe(form: str, value: Any) -> str:
    if form == "fixed":
        return f"{value!r}"
    if form == "choices":
        return "{" + ", ".join(map(repr, value)) + "}"
    return f"[{value['low']}, {value['high']}]"


def _check_window_value(name: str, value: Any, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchSpaceError(f"search space: {name}: {value!r} is not a finite number")
    if unit == "progress" and not 0.0 <= value <= 1.0:
        raise SearchSpaceError(f"search space: {name}: {value!r} is outside [0, 1], where progress windows lie")
    if unit == "step" and value < 0:
        raise SearchSpaceError(f"search space: {name}: {value!r} is negative; step windows take step indices >= 0")


def _range_kind(leaf: _Leaf, r: dict) -> str:
    annotation = leaf.annotation
    origin = typing.get_origin(annotation)
    args = set(typing.get_args(annotation)) if origin in (Union, types.UnionType) else {annotation}
    args.discard(type(None))
    if not args or not args <= {int, float}:
        raise SearchSpaceError(
            f"search space: {leaf.name} takes {_type_text(annotation)}; it can be fixed or given choices, not a range"
        )
    both_int = all(isinstance(r[k], int) for k in ("low", "high"))
    if args == {int}:
        if not both_int or (r.get("step") is not None and not isinstance(r["step"], int)):
            raise SearchSpaceError(
                f"search space: {leaf.name} takes whole numbers; got range [{r['low']}, {r['high']}]"
                + (f" step {r['step']}" if r.get("step") is not None else "")
            )
        return "int"
    if args == {float}:
        return "float"
    return "int" if both_int and (r.get("step") is None or isinstance(r["step"], int)) else "float"


def _type_text(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", str(annotation))


def _set_path(data: dict, path: tuple[str, ...], value: Any) -> dict:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data
