"""Progressive distillation 8 → 4 → 2 → 1 steps of the exact 8-mode mixture (EDM σ, x-pred).

Rounds (one engine run each, in <workdir>/round{r}_{N}steps, the previous student as teacher):
  python -m fdistill_jax.pd_rounds --config=configs/toy2d_pd.py --workdir=runs/toy2d_pd
One round alone (4-step student of the exact teacher's 8-step sampler) also runs through main:
  python -m fdistill_jax.main --config=configs/toy2d_pd.py --workdir=runs/toy2d_pd_round0
(its evaluation uses the 4-step sampler; the init_generator reference is one-step).
Expected (2 CPU cores):
  3 rounds × 1000 steps (≈2 min). Against truth, N-step students (sampled with
  progressive.sample): 4-step sw 0.155, 2-step 0.159, 1-step 0.166, all 8 modes, TV ≈ 0.055 —
  as good as the 8-step exact-teacher Euler sampler they distil (sw 0.150, TV 0.053) and far
  better than that teacher at equal steps (4: sw 0.45, 2: 0.53, 1: 1.40). RMSE to the teacher's
  8-step sample from the same noise: 0.074 / 0.081 / 0.097 (the teacher's own 4/2/1-step:
  0.57 / 0.71 / 1.84).
"""
from fdistill_jax import defaults
from fdistill_jax.methods import progressive


def get_config():
  cfg = defaults.toy()
  cfg.method = progressive.method_config(pd_base_steps=8, student_steps=4, pd_final_steps=1)
  cfg.disc.enabled = False
  cfg.train.steps = 1000
  return cfg
