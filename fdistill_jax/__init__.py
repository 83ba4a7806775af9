"""fdistill_jax: one-step diffusion distillation (f-distill, DMD2, SiD, SIM, KD, PD) in JAX/Flax."""
__version__ = "0.1.0"
