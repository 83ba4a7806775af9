"""Uni-Instruct, Pearson χ², of the exact 8-mode 2-D Gaussian-mixture teacher.

Command:
  python -m fdistill_jax.main --config=configs/toy2d_uni_chi2.py --workdir=runs/toy2d_uni_chi2
Settings: configs/toy2d_uni_fkl.py with method.divergence = 'chi2' (the paper's ratio).
χ²: SiD weighted by 2r² plus the code's −4r²·Δ‖Δ‖ Diff-Instruct term.
Expected: at 3,000 steps, seeds 0 and 1, SW 0.126 ± 0.002 and 8/8 modes; BENCHMARKS.md
"Uni-Instruct on ring8 and digits".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import uni_instruct


def get_config():
  return defaults.toy_score_distill(uni_instruct.method_config, divergence="chi2")
