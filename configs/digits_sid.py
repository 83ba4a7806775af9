"""SiD (score identity distillation, α = 1.2) of the packaged digits teacher into a one-step generator.

Same teacher, data, batch (32), steps (600), learning rate (2e-4) and metric as
defaults.digits_distill, with SiD's own choices: generator input σ_init = 2.5, truncated Karras
time draw (t_max 800), fake score trained 1:1 by the EDM loss (ln σ ~ N(−1.2, 1.2²)), Adam
β = (0, 0.999) without weight decay, no discriminator and no real data.

Command:
  python -m fdistill_jax.main --config=configs/digits_sid.py --workdir=runs/digits_sid
Expected: FD 10.0, 10/10 classes, confidence 0.971 (the 0.99-EMA after 600 iterations, 500 samples; one H100);
see BENCHMARKS.md "Every method on digits".
Since issue 25 the evaluated 0.99-EMA ramps up (train.ema_rampup 0.5: none of the initial
weights left at the end); measured so on 2 shared CPU cores (2026-12-07, seed 0, 600
iterations): FD 10.3, recall 0.68; raw params FD 19.3. The figures above it were
measured without the ramp-up. `python -m fdistill_jax.benchmarks.digits` reruns them.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sid


def get_config():
  cfg = defaults.digits_distill()
  cfg.method = sid.method_config()
  defaults.sid_style(cfg)
  return cfg
