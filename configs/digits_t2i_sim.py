"""SIM (pseudo-Huber, c = 1) with teacher guidance of the digits text-to-image teacher into one
step, data-free; the protocol of configs/digits_t2i_js.py.

Teacher, prompts and recipe (ε-teacher σ laws, 1:4, w = 1.5, 600 iterations, EMA ramp-up):
configs/digits_t2i_js.py.
SiD's shared settings (Adam β (0, 0.999), no discriminator); the teacher's score in the SIM
loss is guided, the fake score learns the student's unguided distribution.

Command (about 4 minutes with the teacher's samples cached):
  python -m fdistill_jax.main --config=configs/digits_t2i_sim.py --workdir=runs/digits_t2i_sim
Expected (measured 2026-12-07, seeds 0 / 1, protocol of configs/digits_t2i_js.py):
FD 13.7 / 14.0 (≤ 1.2 × the teacher's 17.1 = 20.5), FD against the teacher's own
samples 5.7 / 5.7 (the teacher's two draws: 2.1), recall 0.75 / 0.77 (≥ 0.65; teacher
0.87), held-out prompt accuracy 0.957 / 0.964 (≥ 0.95; teacher 0.948), within-prompt
diversity 0.75 / 0.76 (teacher 0.95); raw params FD 18.2 / 17.9, recall 0.74 / 0.77.
Every tried variant, the old teacher's rows and the diagnostics: BENCHMARKS.md "Digits
text-to-image students".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method = sim.method_config(distance="pseudo_huber", huber_c=1.0, critic_steps=4)
  defaults.sid_style(cfg)
  cfg.dataset.name = "prompts"
  cfg.method.guidance_scale = defaults.DIGITS_T2I_GUIDANCE
  return defaults.eps_teacher(cfg)
