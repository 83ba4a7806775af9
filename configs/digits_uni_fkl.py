"""Uni-Instruct, forward KL, of the packaged digits teacher into a one-step generator.

Same teacher, data, batch (32), steps (600), learning rate (2e-4) and metric as
defaults.digits_distill, with SiD's choices (defaults.sid_style: σ_init 2.5, truncated Karras
draw with t_max 800, fake score trained 1:1 by the EDM loss, Adam β = (0, 0.999)) and the
Uni-Instruct loss: SiD (α = 1) weighted per sample by the paper's density ratio (the fake
score's lowest-resolution encoder map averaged over channels as the GAN logit, the fake score
also trained as that discriminator on real digits), ratio normalised by its batch mean, plus the
GAN term, in the released code's balance (method_config's defaults: GAN 1e-4 next to the SiD
term's 1, as the code's 0.01 : 100; the fake-score loss summed over pixels beside the
discriminator's batch mean).

Command:
  python -m fdistill_jax.main --config=configs/digits_uni_fkl.py --workdir=runs/digits_uni_fkl
Expected: FD 9.0 / 9.1 (seeds 0 / 1), recall 0.70 / 0.72, 10/10 classes, on 2 shared CPU cores
(2026-12-07); BENCHMARKS.md "Uni-Instruct on ring8 and digits".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import uni_instruct


def get_config():
  cfg = defaults.digits_distill()
  cfg.method = uni_instruct.method_config(divergence="fkl")
  defaults.sid_style(cfg)
  return cfg
