"""f-distill (reverse KL = DMD2) of the committed digits EDM teacher into a one-step generator.

This is the offline quickstart on real data: the teacher (fdistill_jax/assets/digits_teacher.safetensors,
a 317k-parameter class-conditional SongUNet trained by configs/teachers/digits.py) ships with the
package, the data are scikit-learn's digits, and the metric is the digits classifier's Fréchet
distance (evaluation/digits_metric.py).

Command (2 CPU cores):
  python -m fdistill_jax.main --config=configs/digits_rkl.py --workdir=runs/digits_rkl
Expected: see BENCHMARKS.md ("Digits") for the measured FD / class coverage of the one-step student
against the teacher at 1, 2, 4 and 35 NFE. Other divergences: --config.method.divergence=js|kl|rkl|sf|sh|jf|neyman
"""
import os

import fdistill_jax
from fdistill_jax import defaults

ASSET = os.path.join(os.path.dirname(fdistill_jax.__file__), "assets", "digits_teacher.safetensors")


def get_config():
  cfg = defaults.image()
  cfg.teacher.checkpoint = ASSET
  cfg.method.divergence = "rkl"
  cfg.method.critic_steps = 1
  cfg.optim.generator.lr = 2e-4
  cfg.optim.fake_score.lr = 2e-4
  cfg.optim.discriminator.lr = 2e-4
  cfg.train.update(dict(steps=600, batch_size=32, ema_decays=(0.99,), log_every=50,
                        ckpt_every=200))
  cfg.eval.update(dict(num_samples=500, sampler="one_step", params="0.99",
                       teacher_nfes=(1, 2, 4, 35)))
  return cfg
