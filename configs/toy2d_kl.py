"""f-distill (forward KL) of an exact 8-mode 2-D Gaussian mixture with unequal weights.

Command:
  python -m fdistill_jax.main --config=configs/toy2d_kl.py --workdir=runs/toy2d_kl
Expected (2 CPU cores, about a minute): every mode covered, mode-weight TV error ≲ 0.05, sliced
Wasserstein distance close to the teacher's 35-NFE Heun sampler; samples_*.png in the workdir.
Other divergences: --config.method.divergence=js|kl|rkl|sf|sh|jf|neyman.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.toy()
  cfg.method.divergence = "kl"
  return cfg
