"""SIM (pseudo-Huber, c = 1) of the committed digits text-to-image teacher into one step,
data-free; the protocol of configs/digits_t2i_js.py (BENCHMARKS.md).

SiD's shared settings (σ_init 2.5, Adam β (0, 0.999), no discriminator). methods/sim.py has no
guidance, so the student matches the unguided teacher (compare with its unguided rows).

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_sim.py --workdir=runs/digits_t2i_sim
Expected: not measured yet (no time on the shared CPU before the deadline); run it under the
protocol of BENCHMARKS.md "Digits text-to-image" and add its row.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method = sim.method_config(distance="pseudo_huber", huber_c=1.0)
  defaults.sid_style(cfg)
  cfg.dataset.name = "prompts"
  return cfg
