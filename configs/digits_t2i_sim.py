"""SIM (pseudo-Huber, c = 1) with teacher guidance (w = 2) of the committed digits text-to-image
teacher into one step, data-free; the protocol of configs/digits_t2i_js.py (BENCHMARKS.md).

SiD's shared settings (σ_init 2.5, Adam β (0, 0.999), no discriminator). The teacher's score in
the SIM loss is guided with w = method.guidance_scale, as in the JS config; the fake score learns
the student's (unguided) distribution.

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_sim.py --workdir=runs/digits_t2i_sim
Expected (measured 2026-12-01 with the 12,000-step teacher, 2 shared CPU cores, 345 s, 500
samples over the 100 prompts): one-step student FD 41.7 and prompt-class accuracy 0.99
(training phrasings 1.00, held-out 0.98), class coverage 1.0, recall 0.30: both issue targets
(held-out ≥ 0.95, FD ≤ 1.5 × the guided 35-NFE teacher's 29.0 = 43.5) are met. Unguided
(--config.method.guidance_scale=1.0, 324 s): FD 13.6, accuracy 0.84 (held-out 0.75), recall
0.84, as the unguided teacher it then matches (FD 4.6, accuracy 0.81). BENCHMARKS.md "Digits
text-to-image". The evaluated 0.99-EMA holds 5 % of the initial weights after 300 generator
updates; without that share (--config.train.ema_rampup=0.5) FD 46.9, recall 0.28.
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
