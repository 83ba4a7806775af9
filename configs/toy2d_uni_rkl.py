"""Uni-Instruct, reverse KL, of the exact 8-mode 2-D Gaussian-mixture teacher.

Command:
  python -m fdistill_jax.main --config=configs/toy2d_uni_rkl.py --workdir=runs/toy2d_uni_rkl
Settings: configs/toy2d_uni_fkl.py with method.divergence = 'rkl' (the paper's ratio).
Reverse KL is SiD (α = 1) plus the encoder GAN term, i.e. SiDA's loss.
Expected: at 3,000 steps, seeds 0 and 1, SW 0.183 ± 0.011 with 7/8 modes; BENCHMARKS.md
"Uni-Instruct on ring8 and digits".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import uni_instruct


def get_config():
  return defaults.toy_score_distill(uni_instruct.method_config, divergence="rkl")
