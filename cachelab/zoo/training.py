"""Training of the bundled video DiTs on procedurally generated moving-shape videos.

v-prediction on the cosine schedule of the shipped scheduler (the very ``alphas_cumprod`` sampling uses), text
embeddings computed by the shipped pipeline's own ``encode_prompt`` (so training and sampling condition alike),
10 % caption dropout to the empty prompt for classifier-free guidance, AdamW with warm-up and cosine decay over
the whole (multi-job) budget, bf16 autocast and compiled blocks on a GPU, EMA weights.

Resumable across jobs: a run writes its EMA weights (fp32, safetensors shards under 16 MB, progress in their
metadata) to ``--out``; ``--resume DIR`` starts the next job from them (the optimiser restarts with a short warm-up).
``--init-from PIPELINE_DIR`` starts from a saved pipeline's transformer instead (the shipped bf16 weights, upcast
to fp32), taking the steps and minutes already trained from that directory's ``training-log.jsonl``. A larger or
smaller model than the bundled one is ``--config '{"num_layers": 12}'`` (transformer config overrides); checkpoints
record it, so ``--resume`` and ``--init-from`` rebuild the architecture they hold. Every
``--probe-every`` steps it logs how much each prompt word moves the prediction (colour, shape, direction), so a
word the model learns to ignore shows up early. ``--input-perturbation GAMMA`` trains against exposure bias (a
model that denoises well in one step but drifts on its own sampling path).

Run ``python -m cachelab.zoo.training --help``; ``--tiny`` is a seconds-long CPU mode used by the tests.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cachelab.zoo import bundled, shapes

SHARD_BYTES = 15 * 2**20
TINY_OVERRIDES = {
    "latte": dict(num_layers=1, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, sample_size=8, video_length=4, patch_size=4),
    "cogvideox": dict(num_layers=1, num_attention_heads=2, attention_head_dim=8, time_embed_dim=16, sample_width=8, sample_height=8, sample_frames=4, patch_size=4),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cachelab.zoo.training", description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["latte", "cogvideox"], required=True)
    p.add_argument("--out", type=Path, required=True, help="directory for checkpoint, exported pipeline and logs")
    p.add_argument("--minutes", type=float, default=8.0, help="training time of this job (wall clock)")
    p.add_argument("--total-minutes", type=float, default=None, help="planned training time over all jobs (LR schedule)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in this job")
    p.add_argument("--resume", type=Path, default=None, help="a previous job's --out directory")
    p.add_argument("--init-from", type=Path, default=None, metavar="PIPELINE_DIR",
                   help="a saved pipeline (e.g. cachelab/zoo/weights/tiny-latte) whose transformer weights, upcast "
                   "to fp32, start this job; its training-log.jsonl, if present, gives the steps and minutes trained")
    p.add_argument("--config", type=_json_object, default=None, metavar="JSON",
                   help="transformer config overrides of a new model, e.g. '{\"num_layers\": 12}' (a resumed or "
                        "initialised job takes the architecture its checkpoint holds)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=250)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--input-perturbation", type=float, default=0.0, metavar="GAMMA",
                   help="noise the input with noise + GAMMA * extra noise while the target keeps the noise alone "
                        "(Ning et al. 2023, DDPM-IP; 0.1 there): trains on inputs like the model's own sampling "
                        "path, against exposure bias")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--probe-every", type=int, default=500)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--tiny", action="store_true", help="tiny model, 4 frames of 8x8, CPU; for tests")
    args = p.parse_args(argv)
    if args.resume is not None and args.init_from is not None:
        p.error("give --resume (a training job's EMA checkpoint) or --init-from (a saved pipeline), not both")
    if args.config is not None and (args.resume is not None or args.init_from is not None):
        p.error("--config shapes a new model; --resume and --init-from continue the architecture their checkpoint holds")
    if args.config is not None:
        allowed = _config_parameters(args.model)
        unknown = sorted(set(args.config) - allowed)
        if unknown:
            p.error(f"--config: {unknown} are not config parameters of the {args.model} transformer; "
                    f"allowed: {sorted(allowed)}")
    return args


def _config_parameters(kind: str) -> set[str]:
    return set(inspect.signature(bundled.transformer_class(kind)).parameters)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_layers\": 12}}', got {text!r}")
    return value


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.kind = args.model
        self.device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
        self.frames = 4 if args.tiny else bundled.FRAMES
        self.size = 8 if args.tiny else bundled.SIZE
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        # the progress record of a checkpoint to resume: its architecture now, its step and minutes in _load
        self.resumed = _progress(args.resume) if args.resume is not None else None
        self.overrides = self._architecture()
        self.pipe = bundled.build_pipeline(self.kind, bundled.new_transformer(self.kind, self.overrides)).to(self.device)
        self.model = self.pipe.transformer.train()
        self.combos = shapes.all_attributes()
        prompts = [shapes.prompt_of(a) for a in self.combos]
        cond, uncond = bundled.prompt_embeddings(self.pipe, self.kind, prompts)
        self.cond = cond.to(self.device)
        self.uncond = uncond.to(self.device)
        self.alphas = self.pipe.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.progress_before = 0.0  # minutes trained by earlier jobs
        self.step = 0
        if args.resume is not None:
            self._load(args.resume)
        if args.init_from is not None:
            self._init_from(args.init_from)
        self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(args.seed + 1000 * self.step)
        # large random tensors (noise) come from a generator on the training device
        self.device_generator = torch.Generator(self.device).manual_seed(args.seed + 1000 * self.step + 1)
        float_keys = [k for k, v in self.model.state_dict().items() if v.dtype.is_floating_point]
        live = self.model.state_dict()
        self._ema_live = [live[k] for k in float_keys]
        self._ema_copy = [self.ema[k] for k in float_keys]
        self.forward = self.model
        self.compiled = self.device.type == "cuda" and not args.no_compile
        if self.compiled:
            for blocks in _block_lists(self.model):
                for block in blocks:
                    block.compile()
        args.out.mkdir(parents=True, exist_ok=True)
        self.log_file = (args.out / "log.jsonl").open("a")

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _architecture(self) -> dict:
        """Config overrides of the transformer to train: the checkpoint's when continuing one, else the tiny CPU
        model's or ``--config``'s."""
        args = self.args
        if self.resumed is not None and self.resumed.get("config") is not None:
            return self.resumed["config"]
        if args.init_from is not None:
            config = args.init_from / "transformer" / "config.json"
            if not config.is_file():
                raise FileNotFoundError(f"--init-from {args.init_from}: no transformer/config.json there (not a saved pipeline)")
            saved = json.loads(config.read_text())
            cls = bundled.transformer_class(self.kind)
            if saved.get("_class_name") != cls.__name__:
                raise ValueError(f"--init-from {args.init_from}: it holds a {saved.get('_class_name')}; --model "
                                 f"{self.kind} needs a {cls.__name__}")
            return {k: v for k, v in saved.items() if k in _config_parameters(self.kind)}
        return {**(TINY_OVERRIDES[self.kind] if args.tiny else {}), **(args.config or {})}

    def _load(self, path: Path) -> None:
        meta = self.resumed
        shards = sorted(path.glob("ema-*.safetensors"))
        state = {}
        for shard in shards:
            state.update(load_file(shard))
        self.model.load_state_dict(state)
        self.step = meta["step"]
        self.progress_before = meta["minutes"]
        print(f"resumed {self.kind} from {path} at step {self.step} ({self.progress_before:.1f} min trained)")

    def _init_from(self, directory: Path) -> None:
        transformer = directory / "transformer"  # its class and config were checked by _architecture
        saved = type(self.model).from_pretrained(transformer)
        # copied into this model's fp32 parameters (upcast from bf16), built from the same config
        self.model.load_state_dict(saved.state_dict())
        log = directory / "training-log.jsonl"
        if log.is_file():
            records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            last = [r for r in records if "step" in r and "minutes" in r][-1]
            self.step, self.progress_before = last["step"], last["minutes"]
        print(f"initialised {self.kind} from {directory} (step {self.step}, {self.progress_before:.1f} min trained)")

    def save(self, minutes_now: float) -> None:
        out = self.args.out
        for old in out.glob("ema-*.safetensors"):
            old.unlink()
        meta = {"progress": json.dumps({"step": self.step, "minutes": self.progress_before + minutes_now,
                                        "model": self.kind, "config": self.overrides})}
        shard, size, index = {}, 0, 0
        for key, value in self.ema.items():
            if shard and size + value.numel() * 4 > SHARD_BYTES:
                save_file(shard, out / f"ema-{index:02d}.safetensors", metadata=meta)
                shard, size, index = {}, 0, index + 1
            shard[key] = value.contiguous().cpu()
            size += value.numel() * 4
        save_file(shard, out / f"ema-{index:02d}.safetensors", metadata=meta)

    def export(self, directory: Path) -> None:
        """Save the EMA weights as a diffusers pipeline (transformer in bf16) ready for cachelab."""
        self.model.load_state_dict({k: v.to(self.model.dtype) for k, v in self.ema.items()})
        self.model.to(torch.bfloat16)
        # shards under 16 MB: what one GPU job can return per file, and what git hosts take without LFS
        self.pipe.save_pretrained(directory, safe_serialization=True, max_shard_size="15MB")
        self.model.float()

    # -- training ---------------------------------------------------------------------------------------------
    def lr_at(self, step_in_job: int, minutes_now: float) -> float:
        args = self.args
        warm = min(1.0, (step_in_job + 1) / args.warmup) if args.warmup else 1.0
        total = args.total_minutes or (self.progress_before + args.minutes)
        progress = min(1.0, (self.progress_before + minutes_now) / total)
        return args.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))

    def batch(self):
        n = self.args.batch
        idx = torch.randint(len(self.combos), (n,), generator=self.generator)
        attrs = [self.combos[i] for i in idx.tolist()]
        videos = shapes.render_videos(attrs, frames=self.frames, size=self.size, generator=self.generator, device=self.device)
        emb = self.cond[idx.to(self.device)]
        drop = torch.rand(n, generator=self.generator).to(self.device) < self.args.caption_dropout
        emb = torch.where(drop[:, None, None], self.uncond.expand_as(emb), emb)
        return bundled.to_model_layout(self.kind, videos), emb

    def loss(self, x0: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        n = x0.shape[0]
        t = torch.randint(0, len(self.alphas), (n,), generator=self.device_generator, device=self.device)
        noise = torch.randn(x0.shape, generator=self.device_generator, device=self.device)
        a = self.alphas[t].view(-1, *[1] * (x0.ndim - 1))
        seen = noise
        if self.args.input_perturbation:
            extra = torch.randn(x0.shape, generator=self.device_generator, device=self.device)
            seen = noise + self.args.input_perturbation * extra
        xt = a.sqrt() * x0 + (1 - a).sqrt() * seen
        # the target is the unperturbed v: the model learns to map a drifted input back onto the true path
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"):
            pred = self.forward(hidden_states=xt, encoder_hidden_states=emb, timestep=t, return_dict=False)[0]
        if self.kind == "latte":
            pred = pred[:, : x0.shape[1]]
        return F.mse_loss(pred.float(), target)

    def train_step(self, x0: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        loss = self.loss(x0, emb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.args.ema, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self._ema_copy, self._ema_live, 1 - decay)

    @torch.no_grad()
    def probe(self) -> dict[str, float]:
        """Relative change of the prediction when one prompt word is swapped: colour, shape, direction."""
        g = torch.Generator().manual_seed(1234)
        base = [shapes.Attributes(c, s, d) for c, s, d in [("red", "circle", "left"), ("blue", "square", "up"), ("green", "triangle", "right"), ("white", "circle", "down")]]
        swaps = {
            "colour": [shapes.Attributes("yellow" if a.colour != "yellow" else "cyan", a.shape, a.direction) for a in base],
            "shape": [shapes.Attributes(a.colour, "triangle" if a.shape != "triangle" else "square", a.direction) for a in base],
            "direction": [shapes.Attributes(a.colour, a.shape, {"left": "right", "right": "left", "up": "down", "down": "up"}[a.direction]) for a in base],
        }
        videos = shapes.render_videos(base, frames=self.frames, size=self.size, generator=g, device=self.device)
        x0 = bundled.to_model_layout(self.kind, videos)
        t = torch.tensor([250, 500, 750, 950][: len(base)], device=self.device)
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        a = self.alphas[t].view(-1, *[1] * (x0.ndim - 1))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        self.model.eval()

        def predict(attrs):
            idx = torch.tensor([self.combos.index(x) for x in attrs], device=self.device)
            # eager: a probe batch must not trigger recompiles of the training graphs
            with torch.compiler.set_stance("force_eager"), torch.autocast(
                self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"
            ):
                return self.forward(hidden_states=xt, encoder_hidden_states=self.cond[idx], timestep=t, return_dict=False)[0].float()

        reference = predict(base)
        out = {f"sens_{word}": float((predict(attrs) - reference).norm() / reference.norm().clamp_min(1e-8)) for word, attrs in swaps.items()}
        self.model.train()
        return out

    def log(self, record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def run(self) -> None:
        args = self.args
        start = time.perf_counter()
        step_in_job, running = 0, 0.0
        while True:
            minutes = (time.perf_counter() - start) / 60
            if minutes >= args.minutes or (args.max_steps is not None and step_in_job >= args.max_steps):
                break
            lr = self.lr_at(step_in_job, minutes)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x0, emb = self.batch()
            try:
                loss = self.train_step(x0, emb)
            except Exception as exc:  # a compiler failure must not cost the job: fall back to eager once
                if not (self.compiled and step_in_job == 0):
                    raise
                self.log({"warning": f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly"})
                for blocks in _block_lists(self.model):
                    for block in blocks:
                        block._compiled_call_impl = None
                self.compiled = False
                loss = self.train_step(x0, emb)
            self.update_ema()
            self.step += 1
            step_in_job += 1
            running += loss.item() if step_in_job % 10 == 0 or args.tiny else 0.0
            if step_in_job % args.log_every == 0 or args.tiny:
                seen = args.log_every // 10 if not args.tiny else 1
                record = {"step": self.step, "minutes": round(self.progress_before + minutes, 3), "lr": lr, "loss": running / max(seen, 1)}
                record["videos_per_s"] = round(step_in_job * args.batch / max(time.perf_counter() - start, 1e-9), 1)
                if step_in_job % args.probe_every == 0 or args.tiny:
                    record.update(self.probe())
                self.log(record)
                running = 0.0
        minutes = (time.perf_counter() - start) / 60
        self.save(minutes)
        self.export(args.out / "pipeline")
        self.log({"done": True, "step": self.step, "minutes": round(self.progress_before + minutes, 3), **self.probe()})


def _progress(checkpoint: Path) -> dict:
    """A training checkpoint's progress record (step, minutes, model kind, config overrides)."""
    shards = sorted(checkpoint.glob("ema-*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"--resume {checkpoint}: no ema-NN.safetensors checkpoint shards there")
    with safe_open(shards[0], "pt") as f:
        return json.loads(f.metadata()["progress"])


def _block_lists(model):
    for name in ("transformer_blocks", "temporal_transformer_blocks"):
        blocks = getattr(model, name, None)
        if blocks is not None:
            yield blocks


def main(argv=None) -> None:
    Trainer(parse_args(argv)).run()


if __name__ == "__main__":
    main()
