"""The policy interface. A policy owns some sites and decides, per site and step, compute or reuse.

The smallest policy sets ``Config``, picks its sites in :meth:`Policy.select`, says when to compute in
:meth:`Policy.compute_at` and builds the reused value in :meth:`Policy.reuse`; see ``vanilla.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cachelab.errors import PolicyError
from cachelab.hooks.context import StepContext
from cachelab.hooks.engine import Call
from cachelab.hooks.sites import Site, SiteSet
from cachelab.policies.schedule import Window


class PolicyConfig(BaseModel):
    """Base of every policy's parameters: unknown keys are errors, values are validated on creation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def windows_of(config: BaseModel) -> list[Window]:
    found = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, Window):
            found.append(value)
        elif isinstance(value, BaseModel):
            found += windows_of(value)
    return found


class Policy:
    """Base class of cache policies.

    Attributes:
        name: registry name, set by :func:`cachelab.policies.register_policy`.
        Config: the pydantic model of the policy's parameters.
        history: computed values kept per site and CFG branch (1 = last output, 2 = last two, ...).
        static: whether :meth:`compute_at` depends on the step context only (plans are then built ahead).
        steps_bound: whether the policy's values hold for one number of steps (a calibration per step count), so
            a warm-up generation must run the real number of steps.
        reads_inputs: whether :meth:`reuse` or :meth:`remember` read the call's inputs. Under ``torch.compile`` the
            engine decides the calls of a static policy that does not at the denoiser's entry, so compiled regions
            need no graph break at its sites.
        reduces_across_ranks: whether a data-dependent policy (``static`` False) reads its data through
            ``call.runtime.reduce_sum`` (or :func:`~cachelab.policies.streams.mean_abs`), so that it decides alike on
            every rank under context parallelism; without it such a policy is refused on a sharded model.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[PolicyConfig]] = PolicyConfig
    history: int = 1
    static: bool = True
    steps_bound: bool = False
    reads_inputs: bool = False
    reduces_across_ranks: bool = False

    def __init__(self, config: PolicyConfig | dict | None = None, **params: Any):
        self.config = self.make_config(config, **params)

    @classmethod
    def make_config(cls, config: PolicyConfig | dict | None = None, **params: Any) -> PolicyConfig:
        """Validate parameters into this policy's config; errors name the policy, field, value and rule."""
        if isinstance(config, cls.Config) and not params:
            return config
        if isinstance(config, BaseModel) and not isinstance(config, cls.Config):
            raise PolicyError(f"policy {cls.name!r} takes a {cls.Config.__name__}, not a {type(config).__name__}")
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
        try:
            return cls.Config.model_validate(deep_merge(data, params))
        except ValidationError as exc:
            raise PolicyError(format_validation_error(cls.name, cls.Config, exc)) from None

    # -- what subclasses implement ----------------------------------------------------------------------------
    def select(self, sites: SiteSet) -> list[Site]:
        """The sites this policy owns. Default: the sites whose role is in ``config.roles``."""
        roles = getattr(self.config, "roles", None)
        if roles is None:
            raise NotImplementedError(f"{type(self).__name__} must define select() or a `roles` parameter")
        return require_sites(self, sites, tuple(roles))

    def compute_at(self, site: Site, ctx: StepContext) -> bool:
        """True to run the site at this step, False to reuse. Must depend only on ``ctx`` when ``static``."""
        return True

    def remember(self, site: Site, call: Call, output: Any) -> Any:
        """What to store from a computed call (default: its output)."""
        return output

    def reuse(self, site: Site, call: Call, cached: list[Any]) -> Any:
        """The value returned instead of running the site; ``cached`` holds ``history`` values, newest first."""
        return cached[0]

    def forward(self, site: Site, call: Call) -> Any:
        """Full control over one call; the default follows the plan and the methods above.

        Computing through ``call.defer(then=...)`` rather than ``call.run()`` lets the runtime run the site inside
        a compiled graph; ``call.run()`` is simpler and gives the same values."""
        if call.should_compute():
            if call.should_store():
                return call.defer(then=lambda output: self._keep(site, call, output))
            return call.defer()
        return self.reuse(site, call, call.cached())

    def _keep(self, site: Site, call: Call, output: Any) -> Any:
        call.store(self.remember(site, call, output))
        return output

    # -- shared behaviour --------------------------------------------------------------------------------------
    @property
    def full_control(self) -> bool:
        """Whether this policy overrides :meth:`forward`. The engine then asks it at every call, where a planned
        compute step of a policy that only says when to compute runs without a :class:`Call`; either way a compute
        returned as ``call.defer(...)`` runs inside a compiled graph, and one made with ``call.run()`` eagerly."""
        return type(self).forward is not Policy.forward

    @property
    def needs_timesteps(self) -> bool:
        """Whether plans need the real timestep schedule (some window is in timesteps)."""
        return any(w.unit == "timestep" for w in windows_of(self.config))

    @property
    def policies(self) -> list["Policy"]:
        return [self]

    def controller_for(self, site: Site) -> "Policy":
        """The policy that decides at ``site`` (a composite answers with its member)."""
        return self

    def fresh(self) -> "Policy":
        """A new instance with the same config (a policy instance binds to one model when applied)."""
        return type(self)(self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def require_sites(policy: Policy, sites: SiteSet, roles: tuple[str, ...]) -> list[Site]:
    chosen = sites.by_role(*roles)
    if not chosen:
        have = ", ".join(f"{role} x{n}" for role, n in sites.roles().items())
        raise PolicyError(
            f"policy {policy.name!r} works on sites with roles {list(roles)}, but the model has none "
            f"(it has: {have}). Choose other roles with roles=[...] where the policy allows it, or name the sites "
            "with sites={role: regex}."
        )
    return chosen




def deep_merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``, merging nested mappings (so ``dynamic={'interval': 3}`` keeps other keys)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def format_validation_error(policy: str, config_cls: type[BaseModel], exc: ValidationError,
                            header: str | None = None) -> str:
    lines = [header or f"invalid parameters for policy {policy!r}:"]
    known = ", ".join(config_cls.model_fields)
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown parameter (value {value!r}); {policy!r} takes: {known}")
        else:
            lines.append(f"  {field}: {err['msg']} (got {value!r})")
    return "\n".join(lines)
