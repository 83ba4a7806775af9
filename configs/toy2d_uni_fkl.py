"""Uni-Instruct, forward KL, of the exact 8-mode 2-D Gaussian-mixture teacher.

Command:
  python -m fdistill_jax.main --config=configs/toy2d_uni_fkl.py --workdir=runs/toy2d_uni_fkl
Settings: toy2d_sid.py's (σ_init 2.5, truncated Karras draw with t_max 800, fake score trained
1:1 with the EDM loss at the toy's pretraining σ law, Adam β = (0, 0.999), 2000 steps) with the
Uni-Instruct generator loss: SiD (α = 1) weighted per sample by the density ratio r read off the
fake score's last hidden layer (its mean as the logit, the fake score also trained as the
discriminator), r normalised by its batch mean, plus the non-saturating GAN term; loss scales in the released
code's balance (method_config's defaults: GAN 1e-4 next to the SiD term's 1, i.e. the code's
0.01 : 100; fake-score loss summed over pixels beside the discriminator's batch mean).
This is the paper's ratio (method.ratio 'logit'), not the released code's (see
docs/uni_instruct.md).
Expected: at 3,000 steps, seeds 0 and 1, SW 0.223 ± 0.032 and 8/8 modes; BENCHMARKS.md
"Uni-Instruct on ring8 and digits".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import uni_instruct


def get_config():
  return defaults.toy_score_distill(uni_instruct.method_config, divergence="fkl")
