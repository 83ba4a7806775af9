"""VSD / Diff-Instruct (reverse KL, h ≡ 1, no DMD normalisation, no GAN) on the digits teacher.

f-distill with divergence rkl, ratio normalisation off, dm_normalize off, no discriminator,
1:1 fake-score/generator alternation; everything else as defaults.digits_distill (the 1:1,
600-iteration protocol that configs/digits_js.py started from).

Command:
  python -m fdistill_jax.main --config=configs/digits_vsd.py --workdir=runs/digits_vsd
Expected: FD 137.3, 9/10 classes, confidence 0.920 (600 iterations, 500 samples; one H100):
without the DMD normaliser the steps are tiny at this learning rate;
see BENCHMARKS.md "Every method on digits".
Since issue 25 the evaluated 0.99-EMA ramps up (train.ema_rampup 0.5: none of the initial
weights left at the end); measured so on 2 shared CPU cores (2026-12-07, seed 0, 600
iterations): FD 136.1, recall 0.00; raw params FD 339.4. The figures above it were
measured without the ramp-up. `python -m fdistill_jax.benchmarks.digits` reruns them.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_distill("rkl")
  cfg.method.ratio_normalization = False
  cfg.method.dm_normalize = False
  cfg.method.gan_weight_gen = 0.0
  cfg.disc.enabled = False
  return cfg
