"""SiD-LSG (κ1 = κ2 = κ4 = w), data-free of the digits text-to-image RECTIFIED-FLOW teacher into a one-step generator: the
recipe of configs/digits_t2i_sid_lsg.py (defaults.digits_t2i_sid_lsg) on the flow family.

Teacher: fdistill_jax/assets/digits_t2i_flow_teacher (teacher.kind 'flow_dit': the digits
transformer predicting a velocity at t = 1000·s, configs/teachers/digits_t2i_flow.py), frozen;
the same prompts, data, budget (600 iterations, batch 32, 1:4), guidance w = 1.5 and evaluation
(560 samples, 50 per held-out prompt, the guided 35-step Euler teacher as reference) as the
PixArt digits students. Noise levels: defaults.flow_distill (σ_init 80, i.e. s = 0.988; t
uniform in s up to σ 80; velocity-MSE fake-score loss).

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_flow_sid_lsg.py --workdir=runs/digits_t2i_flow_sid_lsg
Expected: RESULT
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_sid_lsg(defaults.digits_t2i_flow_distill(), defaults.flow_distill)
