"""DMD2 (reverse KL + GAN, no regression loss) with teacher guidance of the digits
text-to-image teacher into one step; the protocol of configs/digits_t2i_js.py.

Teacher, prompts and recipe (ε-teacher σ laws, 1:4, w = 1.5, 600 iterations, EMA ramp-up):
configs/digits_t2i_js.py.
Discriminator on the fake score's block 1 of 4 (mid-network, DMD2's bottleneck placement), λ_disc
1e-2; its GAN loss trains the fake score's first half. The student matches JS's to 0.1 FD
(the discriminator stays near chance: BENCHMARKS.md).

Command (about 4 minutes with the teacher's samples cached):
  python -m fdistill_jax.main --config=configs/digits_t2i_dmd2.py --workdir=runs/digits_t2i_dmd2
Expected (measured 2026-12-07, seeds 0 / 1, protocol of configs/digits_t2i_js.py):
FD 12.3 / 12.0 (≤ 1.2 × the teacher's 17.1 = 20.5), FD against the teacher's own
samples 6.3 / 6.8 (the teacher's two draws: 2.1), recall 0.71 / 0.71 (≥ 0.65; teacher
0.87), held-out prompt accuracy 0.965 / 0.968 (≥ 0.95; teacher 0.948), within-prompt
diversity 0.65 / 0.70 (teacher 0.95); raw params FD 16.5 / 13.0, recall 0.78 / 0.77.
Every tried variant, the old teacher's rows and the diagnostics: BENCHMARKS.md "Digits
text-to-image students".
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_dmd2(defaults.digits_t2i_distill())
