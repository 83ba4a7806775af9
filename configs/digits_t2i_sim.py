"""SIM (pseudo-Huber, c = 1) of the committed digits text-to-image teacher into one step,
data-free; the protocol of configs/digits_t2i_js.py (BENCHMARKS.md).

SiD's shared settings (σ_init 2.5, Adam β (0, 0.999), no discriminator). Unguided
(method.guidance_scale unset = 1; setting it in get_config guides the teacher as in the JS
config, not measured yet), so the student matches the unguided teacher.

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_sim.py --workdir=runs/digits_t2i_sim
Expected (measured, 2 shared CPU cores, ~6.5 min, 500 samples over the 100 prompts): one-step
student FD 21.4, class coverage 0.9, recall 0.79, prompt-class accuracy 0.59 (training phrasings
0.65, held-out 0.46), close to the unguided teacher it matches (35 NFE: FD 13.4, accuracy 0.63,
held-out 0.53); BENCHMARKS.md "Digits text-to-image".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method = sim.method_config(distance="pseudo_huber", huber_c=1.0)
  defaults.sid_style(cfg)
  cfg.dataset.name = "prompts"
  return cfg
