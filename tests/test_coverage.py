"""Every diffusers transformer class x every seed policy: attaches, skips FLOPs, removes bit-identically, or
refuses with a reason. The README's coverage table is generated from the same checks
(``scripts/coverage_table.py``)."""

import functools
import re
from pathlib import Path

import pytest

from configs import SEED_POLICIES
from coverage_checks import cell, check, readme_not_covered, readme_table
from tiny_transformers import NOT_COVERED, TINY_TRANSFORMERS, exported_transformer_classes

#: learned-variance outputs (twice the input's channels), image conditioning concatenated to the input, and an
#: output over the joint text+image sequence (Qwen-Image 2.1: its pipeline keeps the image tokens)
EASYCACHE_REFUSES = ("dit", "hunyuandit", "latte", "pixart", "qwenimage21", "transformer2d", "wan-animate")

#: (tiny model, policy) pairs that must refuse, with what the refusal must say
REFUSALS = {
    # Lumina2's joint sequence is padded to the longest prompt of the call (its pipeline runs CFG as two calls)
    ("lumina2", "fastercache"): r"CFG batched in one call: its main layers run on one joint text\+image sequence",
    # the main layers' gist tokens follow the longest prompt of the call (its pipeline runs CFG as two calls)
    ("bria-fibo2", "fastercache"): r"CFG batched in one call: its main layers run on the image tokens joined to one",
    # a call of one sample crops the text to its valid tokens (its pipeline runs CFG as two calls)
    ("hunyuanvideo-framepack", "fastercache"): r"CFG batched in one call: a call of one sample crops the text",
    # First-Block Cache adds the residual from the first block's output to the last one's: it needs both in one
    # token layout, which alternating spatial/temporal stacks (Latte) and text joined to the image tokens before
    # a single-stream stack (AuraFlow, Bria-FIBO, Chroma, Flux2, HiDream) break
    **{
        (name, policy): rf"{policy}: the last block \(\S+\) returns hidden_states of shape \([\d, ]+\) but the first"
        for name in ("auraflow", "bria-fibo", "chroma", "flux2", "hidream", "latte")
        for policy in ("fbcache", "dbcache")
    },
    # teacache and magcache add the whole stack's residual to the first block's input: text joined to the image
    # tokens before a single-stream stack leaves no residual of the first block's shape (Latte's folded stacks
    # are mapped through Site.folded)
    **{
        (name, policy): rf"{policy}: the last block \(\S+\) returns hidden_states of shape \([\d, ]+\) but the first"
        for name in ("auraflow", "bria-fibo", "chroma", "flux2", "hidream")
        for policy in ("teacache", "magcache")
    },
    # a denoiser that predicts several samples in one call (LTX-2's, Kandinsky 6's and MiniMax-H3's video and audio):
    # CFG-Cache rebuilds, and EasyCache reuses, one sample only, and would return stale values for the others
    **{
        (name, policy): rf"{policy}: the denoiser returns 2 samples \(shapes [\d, ()]+\), and"
        for name in ("kandinsky6", "ltx2", "minimax-h3")
        for policy in ("cfg_cache", "easycache", "fastercache")
    },
    # EasyCache reuses the transformation output - input: the output must have the input's shape
    **{
        (name, "easycache"): r"easycache: the denoiser returns a sample of shape \([\d, ]+\) for an input of shape"
        for name in EASYCACHE_REFUSES
    },
}

#: pairs that fail, with what is known; strict, so a fix shows up
ENGINE_XFAILS: dict[tuple[str, str], str] = {
    # randomly built, the first block is the identity (adaLN-zero gates start at 0): its residual is 0 at every
    # step, a zero reference never skips in fbcache and dbcache (diffusers' hook gets 0/0 = NaN there, and skips)
    ("ernie-image", "fbcache"): "the tiny model's first block is the identity: a zero residual never skips",
    ("prx", "fbcache"): "the tiny model's first block is the identity: a zero residual never skips",
    ("ernie-image", "dbcache"): "the tiny model's first block is the identity: a zero residual never skips",
    ("prx", "dbcache"): "the tiny model's first block is the identity: a zero residual never skips",
    # its final projection starts at zero: every output is 0, so EasyCache's relative change is 0/0
    ("ernie-image", "easycache"): "the tiny model's output is zero: a relative output change of 0/0 never skips",
}


def test_every_exported_transformer_has_a_tiny_config_or_a_reason():
    covered = {spec.model_class for spec in TINY_TRANSFORMERS.values()}
    missing = [name for name in exported_transformer_classes() if name not in covered and name not in NOT_COVERED]
    assert not missing, f"no tiny config and no recorded reason for: {missing}"
    assert not covered & set(NOT_COVERED), "a class with a tiny config is also listed as not covered"


README = Path(__file__).resolve().parents[1] / "README.md"


@functools.cache
def readme() -> dict[str, dict[str, str]]:
    return readme_table(README.read_text())


def test_readme_lists_exactly_the_covered_and_uncovered_classes():
    """The README's table is generated by scripts/coverage_table.py; rerun it when a row is added or removed."""
    text = README.read_text()
    assert sorted(readme()) == sorted(spec.model_class for spec in TINY_TRANSFORMERS.values())
    assert all(list(row) == SEED_POLICIES for row in readme().values())
    assert sorted(readme_not_covered(text)) == sorted(NOT_COVERED)


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
    shown = readme().get(TINY_TRANSFORMERS[name].model_class, {}).get(policy)
    expected = REFUSALS.get((name, policy))
    if expected is None:
        assert outcome.refusal is None, f"{policy} refused {name}: {outcome.refusal}"
        assert outcome.skipped > 0
    else:
        assert outcome.refusal is not None, f"{policy} was expected to refuse {name} ({expected})"
        assert re.search(expected, outcome.refusal), outcome.refusal
        assert policy in outcome.refusal, "a refusal names the policy"
    assert shown == cell(outcome), "the README's coverage table is stale: rerun scripts/coverage_table.py"

