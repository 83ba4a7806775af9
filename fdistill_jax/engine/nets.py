"""Moved to fdistill_jax/nets.py (it sits below the engine and the methods); kept as an alias."""
from fdistill_jax.nets import Nets  # noqa: F401
