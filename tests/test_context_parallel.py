"""cachelab on diffusers' context parallelism: two CPU processes over gloo, Ulysses attention, tiny Wan
(``WanPipeline``, two-call CFG; diffusers splits inside the model, at the first block and the RoPE table) and tiny
LTX-Video (batched CFG; diffusers splits the denoiser's inputs). The rank side is in tests/cp_ranks.py, which also
says what cannot run on the CPU (Ring attention; LTXPipeline's text mask under Ulysses): the GPU benchmark
(benchmarks/context_parallel.py) runs Ulysses and Ring on CUDA.

Tolerance: measured, the context-parallel outputs equal the single-process cached outputs bit for bit in float32 on
the CPU (Ulysses moves whole heads, and the linear layers compute each token's row alone), so the tests ask for
equality; on GPUs bf16 kernels chosen per shape may round differently.
"""

from __future__ import annotations

import pytest
import torch

import cp_ranks

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """Everything the tests read from two ranks, from one spawn."""
    return cp_ranks.spawn("everything", tmp_path_factory.mktemp("cp"))


@pytest.fixture(scope="module")
def ranks(spawned):
    """Every policy on both models, per rank."""
    return [rank["policies"] for rank in spawned]


@pytest.fixture(scope="module")
def single():
    """The same runs in this process, without parallelism."""
    torch.manual_seed(0)
    return {model: cp_ranks.run_all(model, None) for model in ("wan", "ltx")}


@pytest.mark.parametrize("model", ["wan", "ltx"])
def test_blocks_see_the_local_shard(ranks, single, model):
    assert ranks[0][model]["tokens"][0] * 2 == single[model]["tokens"][0]
    assert ranks[1][model]["tokens"] == ranks[0][model]["tokens"]


@pytest.mark.parametrize("model", ["wan", "ltx"])
@pytest.mark.parametrize("policy", ["uncached", *cp_ranks.POLICIES])
def test_ranks_decide_alike_and_match_one_process(ranks, single, model, policy):
    (latents0, events0), (latents1, events1) = ranks[0][model][policy], ranks[1][model][policy]
    reference, reference_events = single[model][policy]
    assert events0 == events1  # the same compute/reuse at every site and step on both ranks
    assert events0 == reference_events  # and the same as without parallelism
    if events0 is not None:
        assert any(row[1] for row in events0.values()), f"{policy} reused nothing: the check would be empty"
    assert torch.equal(latents0, latents1)
    assert torch.equal(latents0, reference)


def test_applying_before_enable_parallelism_works_alike(spawned, single):
    reference, reference_events = single["wan"]["fbcache"]
    for rank in spawned:
        frames, events, _ = rank["applied_first"]
        assert events == reference_events
        assert torch.equal(frames, reference)


def test_removed_hooks_leave_the_parallel_model_as_it_was(spawned, single):
    for rank in spawned:
        *_, after_removal = rank["applied_first"]
        assert torch.equal(after_removal, single["wan"]["uncached"][0])


@pytest.fixture(scope="module")
def metrics(spawned):
    return [rank["metrics"] for rank in spawned]


def test_a_metric_that_differs_per_rank_is_reduced_before_deciding(metrics):
    first, second = metrics
    local0 = [local for local, _ in first["metrics"]]
    local1 = [local for local, _ in second["metrics"]]
    assert local0 != local1  # each rank's shard moves by a different amount
    assert [whole for _, whole in first["metrics"]] == [whole for _, whole in second["metrics"]]
    assert first["events"] == second["events"]
    # with the threshold between the two ranks' local metrics, deciding locally would split them at some step
    threshold = first["threshold"]
    split0 = [local for local, _ in first["metrics_split"]]
    split1 = [local for local, _ in second["metrics_split"]]
    assert any((a < threshold) != (b < threshold) for a, b in zip(split0, split1))
    assert first["events_split"] == second["events_split"]
    assert any(row[1] for row in first["events_split"].values())


@pytest.fixture(scope="module")
def errors(spawned):
    return [rank["errors"] for rank in spawned]


def test_a_world_size_that_does_not_divide_the_sequence_is_refused_before_any_step(errors):
    for rank in errors:
        kind, message, events = rank["indivisible"]
        assert kind == "ParallelError"
        assert "splits 49 tokens" in message and "2 ranks" in message and "World sizes that divide it: 7" in message
        assert "hidden_states" in message
        assert not events  # no site ran


def test_a_sequence_split_inside_the_model_names_the_module_and_the_length(errors):
    for rank in errors:
        kind, message = rank["indivisible_inside"]
        assert kind == "ParallelError"
        assert "splits 9 tokens" in message and "at rope" in message and "World sizes that divide it: 3, 9" in message


def test_a_policy_that_cannot_run_sharded_is_refused_before_any_step(errors):
    for rank in errors:
        kind, message, attention_calls = rank["unsharded_policy"]
        assert kind == "PolicyError"
        assert "'local_threshold' cannot run sharded" in message and "over 2 ranks" in message
        assert "reduces_across_ranks" in message
        assert attention_calls == 0
