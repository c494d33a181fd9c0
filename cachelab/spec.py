"""Turn what a user names as a policy (a name, config, dict, YAML/JSON file or list) into a policy object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from cachelab.errors import PolicyError
from cachelab.policies import Composite, Policy, list_policies, policy_class
from cachelab.policies.base import PolicyConfig, deep_merge

PolicySpec = Any  # str | Policy | PolicyConfig | dict | list | Path


def resolve_policy(spec: PolicySpec, **params: Any) -> Policy:
    """Build a policy from any accepted form.

    - ``"pab"``: a registered name; ``params`` are its parameters.
    - a :class:`Policy` or :class:`PolicyConfig` instance.
    - ``{"policy": "pab", "spatial_interval": 3}`` or ``{"policy": "pab", "params": {...}}``;
      ``{"policies": [spec, ...]}`` for a composition.
    - a path to a ``.yaml``/``.yml``/``.json`` file holding such a mapping.
    - a list of specs: the composition of them.
    """
    if isinstance(spec, Policy):
        if params:
            return type(spec)(spec.config, **params)
        return spec.fresh()
    if isinstance(spec, PolicyConfig):
        return _class_for_config(spec)(spec, **params)
    if isinstance(spec, (list, tuple)):
        if params:
            raise PolicyError("parameters cannot be given beside a list of policies; put them in each list item")
        return Composite([resolve_policy(s) for s in spec])
    if isinstance(spec, Path) or (isinstance(spec, str) and _looks_like_file(spec)):
        return resolve_policy(load_policy_file(spec), **params)
    if isinstance(spec, dict):
        return _from_mapping(spec, params)
    if isinstance(spec, str):
        return policy_class(spec)(**params)
    raise PolicyError(
        f"cannot build a policy from a {type(spec).__name__}; give a policy name ({', '.join(list_policies())}), "
        "a config object, a dict, a YAML/JSON file path, or a list of these"
    )


def _looks_like_file(text: str) -> bool:
    return text.endswith((".yaml", ".yml", ".json")) or "/" in text


def read_data_file(path: str | Path, what: str, error: type[Exception] = PolicyError) -> Any:
    """What a YAML (or, by its suffix, JSON) file holds; ``error`` names ``what`` it should be when the file is
    missing or does not parse."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise error(f"{what} {str(path)!r} is not valid {kind}: {exc}") from None


def load_policy_file(path: str | Path) -> dict:
    data = read_data_file(path, "policy file")
    if not isinstance(data, dict):
        raise PolicyError(f"policy file {str(path)!r} must hold a mapping with a 'policy' or 'policies' key")
    return data


def _from_mapping(data: dict, params: dict) -> Policy:
    if "policies" in data:
        extra = set(data) - {"policies"}
        if extra:
            raise PolicyError(f"a composition mapping takes only 'policies'; unexpected keys: {sorted(extra)}")
        return resolve_policy(list(data["policies"]), **params)
    if "policy" not in data:
        raise PolicyError(f"a policy mapping needs a 'policy' key naming one of: {', '.join(list_policies())}")
    rest = {k: v for k, v in data.items() if k not in ("policy", "params")}
    nested = data.get("params") or {}
    if not isinstance(nested, dict):
        raise PolicyError(f"'params' must be a mapping of parameter names to values; got {nested!r}")
    return policy_class(data["policy"])(**deep_merge(deep_merge(nested, rest), params))


def _class_for_config(config: BaseModel) -> type[Policy]:
    for name in list_policies():
        cls = policy_class(name)
        if type(config) is cls.Config:
            return cls
    raise PolicyError(f"no registered policy takes a {type(config).__name__}")


def policy_to_dict(policy: Policy) -> dict:
    """The mapping form of a policy, which :func:`resolve_policy` reads back (for YAML files)."""
    if type(policy) is Composite:
        return {"policies": [policy_to_dict(m) for m in policy.members]}
    return {"policy": policy.name, "params": policy.config.model_dump(mode="json")}


def save_policy_file(policy: Policy, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(policy_to_dict(policy), sort_keys=False))
