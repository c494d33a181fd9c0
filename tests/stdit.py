"""An Open-Sora-style spatial-temporal DiT written for the tests, with its own module names.

cachelab cannot know this model: its sites are named with patterns. It also serves as a small denoiser for
driving sampling loops by hand (batched CFG, two calls per step, CFG off).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context):
        b, n, c = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, c // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class STBlock(nn.Module):
    def __init__(self, dim: int, heads: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.modulation = nn.Linear(dim, dim)

    def forward(self, x, context, t_emb, frames: int):
        # x: (B, T*S, C); attention runs per frame (spatial) or per position (temporal)
        b, n, c = x.shape
        s = n // frames
        x = x + self.modulation(t_emb)[:, None]
        h = self.norm1(x).view(b, frames, s, c)
        if self.temporal:
            h = h.transpose(1, 2).reshape(b * s, frames, c)
            h = self.attn(h).view(b, s, frames, c).transpose(1, 2)
        else:
            h = self.attn(h.reshape(b * frames, s, c)).view(b, frames, s, c)
        x = x + h.reshape(b, n, c)
        x = x + self.cross_attn(self.norm2(x), context)
        return x + self.mlp(self.norm3(x))


class STDiT(nn.Module):
    """Video DiT: patch-embed, (spatial block, temporal block) x depth, unpatchify. Output (B, C, T, H, W)."""

    def __init__(self, channels=4, dim=32, heads=4, depth=2, patch=2, text_dim=16):
        super().__init__()
        self.patch = patch
        self.channels = channels
        self.x_embedder = nn.Conv3d(channels, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch))
        self.t_embedder = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.y_embedder = nn.Linear(text_dim, dim)
        self.spatial_blocks = nn.ModuleList([STBlock(dim, heads, temporal=False) for _ in range(depth)])
        self.temporal_blocks = nn.ModuleList([STBlock(dim, heads, temporal=True) for _ in range(depth)])
        self.final = nn.Linear(dim, channels * patch * patch)
        self.dim = dim

    def timestep_embedding(self, t):
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, x, timestep, y):
        b, c, frames, height, width = x.shape
        p = self.patch
        h = self.x_embedder(x)  # (B, D, T, H/p, W/p)
        h = h.flatten(3).permute(0, 2, 3, 1).reshape(b, -1, self.dim)
        t = timestep.expand(b) if timestep.ndim else timestep.reshape(1).expand(b)
        t_emb = self.t_embedder(self.timestep_embedding(t))
        context = self.y_embedder(y)
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks):
            h = spatial(h, context, t_emb, frames)
            h = temporal(h, context, t_emb, frames)
        out = self.final(h).view(b, frames, height // p, width // p, c, p, p)
        return out.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, frames, height, width)


STDIT_SITES = {
    "block": r"(spatial|temporal)_blocks\.\d+",
    "attn.spatial": r"spatial_blocks\.\d+\.attn",
    "attn.temporal": r"temporal_blocks\.\d+\.attn",
    "attn.cross": r"(spatial|temporal)_blocks\.\d+\.cross_attn",
    "ffn": r"(spatial|temporal)_blocks\.\d+\.mlp",
}


def make_stdit(seed: int = 0) -> STDiT:
    torch.manual_seed(seed)
    return STDiT().eval()


@torch.no_grad()
def sample(model, steps=12, cfg="batched", seed=0, prompt_seed=1, batch=1, scale=4.0):
    """A DDIM-like loop calling the model directly: cfg in {"batched", "sequential", "off"}."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 3, 8, 8, generator=g)
    gp = torch.Generator().manual_seed(prompt_seed)
    cond = torch.randn(batch, 5, 16, generator=gp)
    uncond = torch.zeros_like(cond)
    for t in torch.linspace(999, 1, steps):
        if cfg == "batched":
            eps = model(torch.cat([x, x]), t.expand(2 * batch), torch.cat([uncond, cond]))
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + scale * (eps_c - eps_u)
        elif cfg == "sequential":
            eps_c = model(x, t.expand(batch), cond)
            eps_u = model(x, t.expand(batch), uncond)
            eps = eps_u + scale * (eps_c - eps_u)
        else:
            eps = model(x, t.expand(batch), cond)
        x = x - 0.05 * eps
    return x
