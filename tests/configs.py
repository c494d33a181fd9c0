"""Policy parameters shared by the tests."""

#: per seed policy, parameters under which it never reuses: outputs must equal running without it, bit for bit
NEVER_REUSE = {
    "vanilla": {"interval": 1},
    "dynamic": {"interval": 1},
    "cfg_cache": {"interval": 1},
    "pab": {"spatial_interval": 1, "temporal_interval": 1, "cross_interval": 1, "joint_interval": 1},
    "delta_dit": {"interval": 1},
    "fastercache": {"dynamic": {"interval": 1}, "cfg_cache": {"interval": 1}},
    "fbcache": {"threshold": 0.0},
    "taylorseer": {"interval": 1},
    # the tiny test models have no calibration: inline values (a linear polynomial; ratios resampled to any steps)
    "teacache": {"threshold": 0.0, "coefficients": [1.0, 0.0]},
    "magcache": {"max_skip_steps": 0, "mag_ratios": [1.0], "interpolate": True},
    "dbcache": {"fn": 1, "bn": 0, "threshold": 0.0},
    "easycache": {"threshold": 0.0},
}
SEED_POLICIES = sorted(NEVER_REUSE)

#: per seed policy, parameters that reuse on most steps and every site kind, so every reuse path runs
AGGRESSIVE = {
    "vanilla": {"interval": 2, "window": [0, 1]},
    "dynamic": {"interval": 2, "window": [0, 1], "roles": ["attn.spatial", "attn.temporal", "attn.joint", "attn.cross"]},
    "cfg_cache": {"interval": 2, "window": [0, 1]},
    "pab": {"window": [0, 1], "mlp_interval": 2, "mlp_layers": 1},
    "delta_dit": {"interval": 2, "span": 1},
    "fastercache": {"dynamic": {"interval": 2, "window": [0, 1]}, "cfg_cache": {"interval": 2, "window": [0, 1]}},
    "fbcache": {"threshold": 10.0},  # every step after the first skips all blocks but the first
    # full steps 0 and 2, every other step forecasts (order 0 at step 1, then order 1 from steps 0 and 2)
    "taylorseer": {"interval": 8, "warmup_steps": 1, "max_order": 2},
    "teacache": {"threshold": 10.0, "coefficients": [1.0, 0.0]},  # only the first and last steps run
    # every step after the first skips every block
    "magcache": {"threshold": 1.0, "max_skip_steps": 1000, "retention_ratio": 0.0, "mag_ratios": [1.0], "interpolate": True},
    # the tiny models have two blocks: the first decides, the second is skipped (no room for a back block)
    "dbcache": {"fn": 1, "bn": 0, "threshold": 10.0, "warmup_steps": 1},
    # skips only where the denoiser's input changes between steps (tests feeding one latent to every step: never)
    "easycache": {"threshold": 10.0, "warmup_steps": 0},
}
