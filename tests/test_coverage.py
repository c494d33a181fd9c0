"""Every diffusers transformer class x every seed policy: attaches, skips FLOPs, removes bit-identically, or
refuses with a reason. The README's coverage table is generated from the same checks
(``scripts/coverage_table.py``)."""

import re

import pytest

from configs import SEED_POLICIES
from coverage_checks import check
from tiny_transformers import NOT_COVERED, TINY_TRANSFORMERS, exported_transformer_classes

#: (tiny model, policy) pairs that must refuse, with what the refusal must say
REFUSALS = {
    # Lumina2's joint sequence is padded to the longest prompt of the call (its pipeline runs CFG as two calls)
    ("lumina2", "fastercache"): r"CFG batched in one call: its main layers run on one joint text\+image sequence",
}

#: pairs that fail, with what is known; strict, so a fix shows up
ENGINE_XFAILS: dict[tuple[str, str], str] = {}


def test_every_exported_transformer_has_a_tiny_config_or_a_reason():
    covered = {spec.model_class for spec in TINY_TRANSFORMERS.values()}
    missing = [name for name in exported_transformer_classes() if name not in covered and name not in NOT_COVERED]
    assert not missing, f"no tiny config and no recorded reason for: {missing}"
    assert not covered & set(NOT_COVERED), "a class with a tiny config is also listed as not covered"


def _pairs():
    for name in sorted(TINY_TRANSFORMERS):
        for policy in SEED_POLICIES:
            marks = []
            if (name, policy) in ENGINE_XFAILS:
                marks.append(pytest.mark.xfail(strict=True, reason=ENGINE_XFAILS[(name, policy)]))
            yield pytest.param(name, policy, marks=marks, id=f"{name}-{policy}")


@pytest.mark.parametrize("name, policy", _pairs())
def test_policy_serves_or_refuses(name, policy):
    outcome = check(name, policy)
    expected = REFUSALS.get((name, policy))
    if expected is None:
        assert outcome.refusal is None, f"{policy} refused {name}: {outcome.refusal}"
        assert outcome.skipped > 0
    else:
        assert outcome.refusal is not None, f"{policy} was expected to refuse {name} ({expected})"
        assert re.search(expected, outcome.refusal), outcome.refusal
        assert policy in outcome.refusal, "a refusal names the policy"

