"""Registered models, one module each; every module registers itself with ``register_model`` on import."""
