"""Policy parameters shared by the tests."""

#: per seed policy, parameters under which it never reuses: outputs must equal running without it, bit for bit
NEVER_REUSE = {
    "vanilla": {"interval": 1},
    "dynamic": {"interval": 1},
    "cfg_cache": {"interval": 1},
    "pab": {"spatial_interval": 1, "temporal_interval": 1, "cross_interval": 1, "joint_interval": 1},
    "delta_dit": {"interval": 1},
    "fastercache": {"dynamic": {"interval": 1}, "cfg_cache": {"interval": 1}},
}
SEED_POLICIES = sorted(NEVER_REUSE)
