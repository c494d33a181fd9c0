"""A toy denoiser of residual blocks for checking reuse formulas by hand (the block-stack policies' tests)."""

import torch
from torch import nn


class Block(nn.Module):
    """``h + tanh(proj(h)) * temb``; with ``adaln``, an AdaLN-like block whose modulated input ``h * temb`` goes into
    ``attn`` (a linear standing in for attention), as teacache reads it."""

    def __init__(self, dim=6, adaln=False):
        super().__init__()
        self.adaln = adaln
        if adaln:
            self.attn = nn.Linear(dim, dim)
        else:
            self.proj = nn.Linear(dim, dim)

    def forward(self, hidden_states, temb):
        if self.adaln:
            return hidden_states + torch.tanh(self.attn(hidden_states * temb[:, None, None]))
        return hidden_states + torch.tanh(self.proj(hidden_states)) * temb[:, None, None]


class Toy(nn.Module):
    """``blocks`` residual blocks; the output is the last block's times ``scale`` (2: the denoiser's output is not
    the last block's)."""

    def __init__(self, blocks=3, scale=1, adaln=False):
        super().__init__()
        torch.manual_seed(0)
        self.scale = scale
        self.blocks = nn.ModuleList(Block(adaln=adaln) for _ in range(blocks))

    def forward(self, hidden_states, timestep):
        temb = 1 + timestep / 1000
        for block in self.blocks:
            hidden_states = block(hidden_states, temb)
        return hidden_states if self.scale == 1 else self.scale * hidden_states


class DoubleBlock(nn.Module):
    """Updates the image and the text stream separately (a joint block without the joint attention)."""

    def __init__(self, dim=6):
        super().__init__()
        self.image, self.text = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, hidden_states, encoder_hidden_states, temb):
        scale = temb[:, None, None]
        return (hidden_states + torch.tanh(self.image(hidden_states)) * scale,
                encoder_hidden_states + torch.tanh(self.text(encoder_hidden_states)) * scale)


class JoinedToy(nn.Module):
    """Two double-stream blocks, then two single-stream blocks on the joined sequence ``[text, image]`` (Flux 2) or
    ``[image, text]`` (HiDream); the output is the image tokens of the last block's output."""

    def __init__(self, image_first=False):
        super().__init__()
        torch.manual_seed(0)
        self.image_first = image_first
        self.double_blocks = nn.ModuleList(DoubleBlock() for _ in range(2))
        self.single_blocks = nn.ModuleList(Block() for _ in range(2))

    def forward(self, hidden_states, encoder_hidden_states, timestep):
        temb = 1 + timestep / 1000
        for block in self.double_blocks:
            hidden_states, encoder_hidden_states = block(hidden_states, encoder_hidden_states, temb)
        n = hidden_states.shape[1]
        parts = [hidden_states, encoder_hidden_states] if self.image_first else [encoder_hidden_states, hidden_states]
        joined = torch.cat(parts, dim=1)
        for block in self.single_blocks:
            joined = block(joined, temb)
        return joined[:, :n] if self.image_first else joined[:, -n:]


def tiny_transformer(name="cogvideox", layers=3):
    """A tiny diffusers transformer of the coverage table with ``layers`` blocks, and its spec (inputs)."""
    import dataclasses

    from tiny_transformers import TINY_TRANSFORMERS

    spec = TINY_TRANSFORMERS[name]
    spec = dataclasses.replace(spec, config={**spec.config, "num_layers": layers})
    return spec.build(), spec


def run_steps(model, spec, timesteps, batch=2):
    """The denoiser's output at each timestep (one call per step)."""
    with torch.no_grad():
        return [model(**spec.inputs(batch, t))[0] for t in timesteps]


# -- sequences of denoiser calls, for comparing with another library's cache -----------------------------------
def tail_block(model):
    stacks = [getattr(model, n) for n in ("transformer_blocks", "single_transformer_blocks") if hasattr(model, n)]
    return stacks[-1][-1]


class RunLog:
    """Records whether a block's real forward ran: a hook on its first child, which wrapping hooks never reach
    when they skip the block."""

    def __init__(self, block: nn.Module):
        self.ran: list[bool] = []
        self._handle = next(block.children()).register_forward_pre_hook(lambda *_: self.mark())

    def new_call(self):
        self.ran.append(False)

    def mark(self):
        self.ran[-1] = True

    def remove(self):
        self._handle.remove()


def run_logged(model, spec, calls, context=None):
    """Outputs of a sequence of denoiser calls, and per call whether the last block ran."""
    log = RunLog(tail_block(model))
    outputs = []
    try:
        with torch.no_grad():
            for t, branch, batch, seed in calls:
                log.new_call()
                if context is None:
                    outputs.append(model(**spec.inputs(batch, t, seed=seed))[0])
                else:
                    with context(branch):
                        outputs.append(model(**spec.inputs(batch, t, seed=seed))[0])
    finally:
        log.remove()
    return outputs, log.ran
