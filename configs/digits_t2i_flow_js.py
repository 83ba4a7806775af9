"""f-distill (Jensen-Shannon) with teacher guidance of the digits text-to-image
RECTIFIED-FLOW teacher into a one-step generator: the recipe of configs/digits_t2i_js.py
(defaults.digits_t2i_js) on the flow family.

Teacher: fdistill_jax/assets/digits_t2i_flow_teacher (teacher.kind 'flow_dit': the digits
transformer predicting a velocity at t = 1000·s, configs/teachers/digits_t2i_flow.py), frozen;
the same prompts, data, budget (600 iterations, batch 32, 1:4), guidance w = 1.5 and evaluation
(560 samples, 50 per held-out prompt, the guided 35-step Euler teacher as reference) as the
PixArt digits students. Noise levels: defaults.flow_distill (σ_init 80, i.e. s = 0.988; t
uniform in s up to σ 80; velocity-MSE fake-score loss).

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_flow_js.py --workdir=runs/digits_t2i_flow_js
Expected (measured 2026-12-07, seed 0, one shared CPU core, about 10 minutes with the teacher's
reference samples computed; 0.99-EMA with ramp-up; the guided 35-step Euler teacher at w = 1.5
as reference: FD 8.65, recall 0.71, held-out 0.971):
FD 12.8, FD against the teacher's own samples 1.97 (its two draws: 1.36), recall 0.47,
held-out prompt accuracy 0.979, within-prompt diversity 0.42; raw params FD 13.4, recall 0.64.
Targets of the PixArt digits students (FD ≤ 1.2 × the teacher's = 10.4, recall ≥ 0.65, held-out
≥ 0.95): held-out met, FD and recall NOT met. With --config.train.steps=1200 (twice the
budget): FD 11.5, recall 0.59, held-out 0.973, and the raw params meet all three (FD 8.06,
recall 0.74, held-out 0.961); seed 1: FD 11.8, recall 0.63 (raw 12.5, 0.68). BENCHMARKS.md "Digits text-to-image students of a rectified-flow teacher".
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_js(defaults.digits_t2i_flow_distill())
