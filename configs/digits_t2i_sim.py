"""SIM (pseudo-Huber, c = 1) of the committed digits text-to-image teacher into one step,
data-free; the protocol of configs/digits_t2i_js.py (BENCHMARKS.md).

SiD's shared settings (σ_init 2.5, Adam β (0, 0.999), no discriminator). Unguided
(method.guidance_scale unset = 1; setting it in get_config guides the teacher as in the JS
config, not measured yet), so the student matches the unguided teacher.

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_sim.py --workdir=runs/digits_t2i_sim
Expected (measured 2026-12-01 with the 12,000-step teacher, 2 shared CPU cores, 324 s, 500
samples over the 100 prompts): one-step student FD 13.6, class coverage 1.0, recall 0.84,
prompt-class accuracy 0.84 (training phrasings 0.87, held-out 0.75), close to the unguided
teacher it matches (35 NFE: FD 4.6, accuracy 0.81, held-out 0.69); BENCHMARKS.md "Digits
text-to-image". (Previous teacher: FD 21.4, accuracy 0.59, held-out 0.46.)
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method = sim.method_config(distance="pseudo_huber", huber_c=1.0)
  defaults.sid_style(cfg)
  cfg.dataset.name = "prompts"
  return cfg
