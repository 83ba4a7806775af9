"""DMD2 (reverse KL + GAN, no regression loss) with teacher guidance (w = 2) of the committed
digits text-to-image teacher into one step; the protocol of configs/digits_t2i_js.py.

Discriminator on the fake score's last block (DMD2's placement), λ_disc 1e-2, 4 critic steps per
generator step (DMD2's two-time-scale update), t ∈ [0.02, 0.98] as configs/digits_dmd2.py.

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_dmd2.py --workdir=runs/digits_t2i_dmd2
Expected (measured 2026-12-01 with the 12,000-step teacher, 2 shared CPU cores, 383 s, 500
samples over the 100 prompts, σ_init 80 as configured here): one-step student FD 184.6, class
coverage 1.0, prompt-class accuracy 0.85 (training phrasings 0.90, held-out 0.75), precision
0.006: noisy digits, as f-distill JS at σ_init 80 (FD 305 with the previous teacher) before it
moved to 2.5 (the ε-parameterised x0 = x − σ·ε̂ amplifies errors by σ); a σ_init = 2.5 run is
the next thing to measure. (Previous teacher: FD 362.3, accuracy 0.74.) BENCHMARKS.md "Digits
text-to-image".
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method.update(dict(divergence="rkl", ratio_normalization=False, disc_features="fake_score",
                         gan_weight_disc=1e-2, critic_steps=4, guidance_scale=2.0))
  cfg.method.time_lo, cfg.method.time_hi = 0.02, 0.98
  return cfg
