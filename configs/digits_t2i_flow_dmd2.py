"""DMD2 (reverse KL + GAN on the fake score's block 1) of the digits text-to-image
RECTIFIED-FLOW teacher into a one-step generator: the recipe of configs/digits_t2i_dmd2.py
(defaults.digits_t2i_dmd2) on the flow family.

Teacher: fdistill_jax/assets/digits_t2i_flow_teacher (teacher.kind 'flow_dit': the digits
transformer predicting a velocity at t = 1000·s, configs/teachers/digits_t2i_flow.py), frozen;
the same prompts, data, batch (32, 1:4) and evaluation (560 samples, 50 per held-out prompt,
the guided 35-step Euler teacher at w = 1.5 as reference) as the PixArt digits students. Two
differences (defaults.digits_t2i_flow_distill, DIGITS_T2I_FLOW_GUIDANCE): 1,200 iterations
instead of 600, and guidance 1.3 in the loss instead of 1.5, because matching the guided score
overshoots the guided sampler at the same w. Noise levels: defaults.flow_distill (σ_init 80,
i.e. s = 0.988; t uniform in s up to σ 80; velocity-MSE fake-score loss).

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_flow_dmd2.py --workdir=runs/digits_t2i_flow_dmd2
Expected (measured 2026-12-07, seeds 0 / 1, one shared CPU core each, about 14 minutes with the
teacher's reference samples computed; 0.99-EMA with ramp-up; the guided 35-step Euler teacher at
w = 1.5 as reference: FD 8.65 / 8.92, recall 0.71 / 0.68, held-out 0.971 / 0.971):
FD 6.04 / 6.00, FD against the teacher's own samples 1.64 / 1.40 (its two draws: 1.36 / 2.26),
recall 0.70 / 0.75, precision 0.82 / 0.81, held-out prompt accuracy 0.959 / 0.967,
within-prompt diversity 0.62 / 0.66; raw params FD 4.84 / 6.69, recall 0.81 / 0.79, held-out
0.950 / 0.957 (the discriminator stays at chance, so it equals f-distill JS, as on the ε
teacher).
Targets of the PixArt digits students (FD ≤ 1.2 × the teacher's, recall ≥ 0.65, held-out
≥ 0.95): met on both seeds. BENCHMARKS.md "Digits text-to-image students of a rectified-flow
teacher".
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_dmd2(defaults.digits_t2i_flow_distill(),
                                  w=defaults.DIGITS_T2I_FLOW_GUIDANCE)
