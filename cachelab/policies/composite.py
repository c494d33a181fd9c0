"""A list of policies is itself a policy: each member owns its own sites."""

from __future__ import annotations

from cachelab.errors import PolicyError
from cachelab.policies.base import Policy


class Composite(Policy):
    """Several policies on one model; a site may belong to one member only."""

    name = "composite"

    def __init__(self, members: list[Policy]):
        if not members:
            raise PolicyError("an empty list of policies was given; name at least one policy")
        self.members = list(members)
        self.config = None
        self.owner: dict[int, Policy] = {}

    @property
    def policies(self) -> list[Policy]:
        return [p for m in self.members for p in m.policies]

    def select(self, sites):
        chosen = []
        for member in self.members:
            for site in member.select(sites):
                other = self.owner.get(id(site))
                if other is not None:
                    raise PolicyError(
                        f"policies {other.name!r} and {member.name!r} both claim site {site.key} ({site.role}); "
                        "give them disjoint roles (e.g. roles=[...]) so each site has one owner"
                    )
                self.owner[id(site)] = member
                chosen.append(site)
        return chosen

    def controller_for(self, site) -> Policy:
        member = self.owner[id(site)]
        return member.controller_for(site) if isinstance(member, Composite) else member

    def fresh(self) -> "Composite":
        if type(self) is Composite:
            return Composite([m.fresh() for m in self.members])
        return type(self)(self.config)

    @property
    def needs_timesteps(self) -> bool:
        return any(m.needs_timesteps for m in self.members)

    def __repr__(self) -> str:
        return f"Composite({self.members!r})"
