"""SIM (squared L2 distance, exact fixed-π gradient) of the 8-mode 2-D mixture.

Command:
  python -m fdistill_jax.main --config=configs/toy2d_sim_l2.py --workdir=runs/toy2d_sim_l2
Expected (2 CPU cores):
  after 2000 steps (batch 512; ≈3 min) all 8 modes covered, sw 0.81 → 0.15,
  mode-weight TV 0.08 → 0.046, mean log-prob −75.7 → −3.6 (teacher Heun-35: sw 0.062, TV 0.009).
Same generator input, time draw and fake-score training as configs/toy2d_sid.py; the weighting
'sid' is σ⁴·sg(1/mean|x_g − D_p|), so the l2 variant is exactly 2·SiD(α = 1).
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  return defaults.toy_score_distill(sim.method_config, distance="l2")
