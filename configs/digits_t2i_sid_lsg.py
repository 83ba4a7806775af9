"""SiD-LSG (κ1 = κ2 = κ4 = w) of the digits text-to-image teacher into one step, data-free
(training prompts only, no images); the protocol of configs/digits_t2i_js.py.

Teacher, prompts and recipe (ε-teacher σ laws, 1:4, w = 1.5, 600 iterations, EMA ramp-up):
configs/digits_t2i_js.py.
SiD's settings (Adam β (0, 0.999), no discriminator), the SiD-LSG paper's α = 1, condition
dropout 0.1 for the guided fake score.

Command (about 4 minutes with the teacher's samples cached):
  python -m fdistill_jax.main --config=configs/digits_t2i_sid_lsg.py --workdir=runs/digits_t2i_sid_lsg
Expected (measured 2026-12-07, seeds 0 / 1, protocol of configs/digits_t2i_js.py):
FD 13.8 / 14.2 (≤ 1.2 × the teacher's 17.1 = 20.5), FD against the teacher's own
samples 5.5 / 5.5 (the teacher's two draws: 2.1), recall 0.73 / 0.73 (≥ 0.65; teacher
0.87), held-out prompt accuracy 0.958 / 0.967 (≥ 0.95; teacher 0.948), within-prompt
diversity 0.71 / 0.71 (teacher 0.95); raw params FD 17.7 / 17.3, recall 0.65 / 0.72.
Every tried variant, the old teacher's rows and the diagnostics: BENCHMARKS.md "Digits
text-to-image students".
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_sid_lsg(defaults.digits_t2i_distill(), defaults.eps_teacher)
