"""DMD2 (reverse KL + GAN, no regression loss) with teacher guidance (w = 2) of the committed
digits text-to-image teacher into one step; the protocol of configs/digits_t2i_js.py.

Discriminator on the fake score's last block (DMD2's placement), λ_disc 1e-2, 4 critic steps per
generator step (DMD2's two-time-scale update), t ∈ [0.02, 0.98] as configs/digits_dmd2.py.

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_dmd2.py --workdir=runs/digits_t2i_dmd2
Expected: not measured yet (no time on the shared CPU before the deadline); run it under the
protocol of BENCHMARKS.md "Digits text-to-image" and add its row.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method.update(dict(divergence="rkl", ratio_normalization=False, disc_features="fake_score",
                         gan_weight_disc=1e-2, critic_steps=4, guidance_scale=2.0))
  cfg.method.time_lo, cfg.method.time_hi = 0.02, 0.98
  return cfg
