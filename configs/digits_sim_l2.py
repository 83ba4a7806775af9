"""SIM (score implicit matching) with the L2 distance on the packaged digits teacher.

SIM's exact generator loss (methods/sim.py) with d(y) = ‖y‖² and SiD's weighting, i.e. 2·SiD(α = 1);
fake score, time draw, σ_init = 2.5 and optimiser as configs/digits_sid.py.

Command:
  python -m fdistill_jax.main --config=configs/digits_sim_l2.py --workdir=runs/digits_sim_l2
Expected: FD 11.0, 10/10 classes, confidence 0.973 (600 iterations, 500 samples; one H100);
see BENCHMARKS.md "Every method on digits".
Since issue 25 the evaluated 0.99-EMA ramps up (train.ema_rampup 0.5: none of the initial
weights left at the end); measured so on 2 shared CPU cores (2026-12-07, seed 0, 600
iterations): FD 9.1, recall 0.70; raw params FD 18.3. The figures above it were
measured without the ramp-up. `python -m fdistill_jax.benchmarks.digits` reruns them.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.digits_distill()
  cfg.method = sim.method_config(distance="l2")
  defaults.sid_style(cfg)
  return cfg
