"""DMD (v1): reverse-KL distribution matching + λ_reg = 0.25 L2 regression to teacher ODE pairs.

The pairs (4,096 noises and the teacher's 18-step Heun samples of them) are built once into
<workdir>/kd_pairs (resumable shards). No GAN, 1:1 alternation, DMD2's 2–98% time range;
everything else as defaults.digits_distill (the 1:1, 600-iteration
protocol that configs/digits_js.py started from).

Command:
  python -m fdistill_jax.main --config=configs/digits_dmd.py --workdir=runs/digits_dmd
Expected: FD 18.2, 10/10 classes, confidence 0.976 (600 iterations, 500 samples; one H100);
see BENCHMARKS.md "Every method on digits".
Since issue 25 the evaluated 0.99-EMA ramps up (train.ema_rampup 0.5: none of the initial
weights left at the end); measured so on 2 shared CPU cores (2026-12-07, seed 0, 600
iterations): FD 18.4, recall 0.22; raw params FD 161.0. The figures above it were
measured without the ramp-up. `python -m fdistill_jax.benchmarks.digits` reruns them.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import dmd


def get_config():
  cfg = defaults.digits_distill("rkl")
  cfg.method = dmd.method_config(cfg.method, ratio_normalization=False, pairs_num=4096)
  cfg.disc.enabled = False
  return cfg
