"""The training script's tiny CPU mode: trains, logs, checkpoints, resumes and exports a loadable pipeline."""

import json

import pytest
import torch

from cachelab.zoo import bundled
from cachelab.zoo.evaluate import generate_frames
from cachelab.models.pipeline import load_pipeline
from cachelab.zoo.training import main


def test_tiny_training_resumes_and_exports(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    main(["--model", "cogvideox", "--tiny", "--out", str(first), "--max-steps", "3", "--batch", "4", "--seed", "1"])
    log = [json.loads(line) for line in (first / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert all(r["loss"] > 0 and {"sens_colour", "sens_shape", "sens_direction"} <= set(r) for r in log if "loss" in r)
    assert log[-1]["done"] and log[-1]["step"] == 3
    main(["--model", "cogvideox", "--tiny", "--out", str(second), "--max-steps", "2", "--batch", "4", "--resume", str(first)])
    resumed = [json.loads(line) for line in (second / "log.jsonl").read_text().splitlines()]
    assert resumed[-1]["step"] == 5  # 3 steps from the first job + 2

    pipe = load_pipeline(second / "pipeline", dtype=torch.float32)
    assert pipe.transformer.dtype == torch.float32 and type(pipe).__name__ == "CogVideoXPipeline"
    videos = generate_frames(pipe, "cogvideox", ["a red circle moving left"], [0], steps=2, guidance=2.0)
    assert videos.shape == (1, 4, 3, 8, 8) and torch.isfinite(videos).all()


def test_training_is_seeded(tmp_path):
    for run in ("a", "b"):
        main(["--model", "latte", "--tiny", "--out", str(tmp_path / run), "--max-steps", "2", "--batch", "4"])
    losses = [
        [json.loads(line).get("loss") for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        for run in ("a", "b")
    ]
    assert losses[0] == losses[1]


def test_bundled_pipelines_condition_on_the_prompt():
    pipe = load_pipeline(bundled.WEIGHTS_DIR / "tiny-cogvideox", dtype=torch.float32)
    cond, uncond = bundled.prompt_embeddings(pipe, "cogvideox", ["a red circle moving left", "a blue circle moving left"])
    assert cond.shape == (2, bundled.TEXT_LEN, bundled.TEXT_DIM)
    assert not torch.allclose(cond[0], cond[1]) and not torch.allclose(cond[0], uncond)


def test_training_starts_from_a_saved_pipeline(tmp_path):
    """--init-from: a saved (bf16) pipeline's transformer, upcast to fp32, starts the job; its training-log.jsonl
    gives the steps and minutes already trained, so the LR schedule and the log continue from there."""
    from safetensors.torch import load_file

    first = tmp_path / "first"
    main(["--model", "latte", "--tiny", "--out", str(first), "--max-steps", "3", "--batch", "4"])
    shipped = first / "pipeline"  # laid out like cachelab/zoo/weights/<model>: the pipeline and its training log
    (shipped / "training-log.jsonl").write_text((first / "log.jsonl").read_text())
    untouched = tmp_path / "untouched"
    main(["--model", "latte", "--tiny", "--out", str(untouched), "--max-steps", "0", "--init-from", str(shipped)])
    saved = load_file(shipped / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in saved.values()} == {torch.bfloat16}
    start = load_file(untouched / "ema-00.safetensors")
    assert start.keys() == saved.keys()
    assert all(start[k].dtype == torch.float32 and torch.equal(start[k], saved[k].float()) for k in saved)
    log = [json.loads(line) for line in (untouched / "log.jsonl").read_text().splitlines()]
    assert log[-1]["done"] and log[-1]["step"] == 3

    more = tmp_path / "more"
    main(["--model", "latte", "--tiny", "--out", str(more), "--max-steps", "2", "--batch", "4", "--init-from", str(shipped)])
    assert [json.loads(line)["step"] for line in (more / "log.jsonl").read_text().splitlines()] == [4, 5, 5]


def test_init_from_refuses_what_it_cannot_continue(tmp_path):
    main(["--model", "cogvideox", "--tiny", "--out", str(tmp_path / "cog"), "--max-steps", "1", "--batch", "4"])
    with pytest.raises(ValueError, match="holds a CogVideoXTransformer3DModel; --model latte needs a LatteTransformer3DModel"):
        main(["--model", "latte", "--tiny", "--out", str(tmp_path / "x"), "--max-steps", "0",
              "--init-from", str(tmp_path / "cog" / "pipeline")])
    with pytest.raises(FileNotFoundError, match="no transformer/config.json"):
        main(["--model", "latte", "--tiny", "--out", str(tmp_path / "x"), "--init-from", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--model", "latte", "--tiny", "--out", str(tmp_path / "x"), "--init-from", str(tmp_path),
              "--resume", str(tmp_path)])


def test_input_perturbation_noises_the_input_but_not_the_target(monkeypatch, tmp_path):
    """--input-perturbation: x_t = sqrt(a) x0 + sqrt(1-a) (noise + gamma * extra), target v from the noise alone."""
    from cachelab.zoo.training import Trainer, parse_args

    seen = {}
    for gamma in (0.0, 0.5):
        trainer = Trainer(parse_args(["--model", "latte", "--tiny", "--out", str(tmp_path / str(gamma)),
                                      "--input-perturbation", str(gamma), "--no-compile"]))
        captured = {}

        def forward(hidden_states, encoder_hidden_states, timestep, return_dict):
            captured.update(xt=hidden_states, t=timestep)
            return (torch.zeros_like(hidden_states).repeat(1, 2, 1, 1, 1),)

        trainer.forward = forward
        x0, emb = trainer.batch()
        loss = trainer.loss(x0, emb)
        gen = torch.Generator().manual_seed(trainer.args.seed + 1)  # the device generator's seed (CPU, step 0)
        t = torch.randint(0, len(trainer.alphas), (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        extra = torch.randn(x0.shape, generator=gen) if gamma else torch.zeros_like(x0)
        a = trainer.alphas[t].view(-1, 1, 1, 1, 1)
        assert torch.equal(captured["t"], t)
        torch.testing.assert_close(captured["xt"], a.sqrt() * x0 + (1 - a).sqrt() * (noise + gamma * extra))
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # a zero prediction's loss is the target's mean square
        torch.testing.assert_close(loss, target.pow(2).mean())
        seen[gamma] = captured["xt"]
    assert not torch.allclose(seen[0.0], seen[0.5])


def test_a_larger_model_keeps_its_architecture_through_resume_and_init_from(tmp_path):
    """--config shapes a new model; the checkpoint records it, so --resume and --init-from rebuild that model
    (not the bundled size) and the exported pipeline loads as it was trained."""
    first, resumed, started = tmp_path / "first", tmp_path / "resumed", tmp_path / "started"
    main(["--model", "latte", "--tiny", "--out", str(first), "--max-steps", "1", "--batch", "4",
          "--config", '{"num_layers": 3}'])
    main(["--model", "latte", "--tiny", "--out", str(resumed), "--max-steps", "1", "--batch", "4", "--resume", str(first)])
    main(["--model", "latte", "--tiny", "--out", str(started), "--max-steps", "1", "--batch", "4",
          "--init-from", str(resumed / "pipeline")])
    for run in (first, resumed, started):
        pipe = load_pipeline(run / "pipeline", dtype=torch.float32)
        assert len(pipe.transformer.transformer_blocks) == 3
        assert len(pipe.transformer.temporal_transformer_blocks) == 3
    assert [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()][-1] == 2


@pytest.mark.parametrize("config,message", [
    ('{"num_layer": 12}', r"\['num_layer'\] are not config parameters of the latte transformer"),
    ("[12]", "expected a JSON object"),
    ("{num_layers: 12}", "not JSON"),
])
def test_config_overrides_are_checked(tmp_path, capsys, config, message):
    with pytest.raises(SystemExit):
        main(["--model", "latte", "--tiny", "--out", str(tmp_path / "x"), "--config", config])
    assert __import__("re").search(message, capsys.readouterr().err)


def test_config_is_refused_when_a_checkpoint_sets_the_architecture(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", "latte", "--tiny", "--out", str(tmp_path / "x"), "--config", '{"num_layers": 3}',
              "--init-from", str(tmp_path)])
    assert "continue the architecture their checkpoint holds" in capsys.readouterr().err


def test_exported_transformer_is_sharded_under_16_mb(tmp_path):
    """A GPU job returns files under 16 MiB each: a transformer larger than that is exported in shards."""
    main(["--model", "latte", "--tiny", "--out", str(tmp_path), "--max-steps", "0",
          "--config", '{"num_attention_heads": 16, "attention_head_dim": 64, "cross_attention_dim": 1024}'])
    files = list((tmp_path / "pipeline" / "transformer").glob("*.safetensors"))
    assert len(files) > 1 and all(f.stat().st_size < 16 * 2**20 for f in files)
    assert load_pipeline(tmp_path / "pipeline", dtype=torch.float32).transformer.config.num_attention_heads == 16
