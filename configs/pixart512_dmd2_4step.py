"""DMD2 of PixArt-α 512 into a 4-step student trained by backward simulation, DMD2's multi-step
recipe (arXiv 2405.14867 §4.4; tianweiy/DMD2 experiments/sdxl 4-step scripts) on the one-step
PixArt recipe of configs/pixart512_dmd2.py.

Command:
  python -m fdistill_jax.main --config=configs/pixart512_dmd2_4step.py --workdir=gs://BUCKET/pixart_dmd2_4 \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts_laion \
    --config.dataset.name=folder --config.dataset.path=gs://BUCKET/laion_512 \
    --config.dataset.captions=row
Expected: not measured here (no accelerator). DMD2 reports SDXL 4-step COCO-10k FID 19.32 with
backward simulation; no published PixArt-α 4-step DMD2 number. The same rule on the digits
text-to-image teacher: configs/digits_t2i_js_4step.py (measured there).

From DMD2's 4-step SDXL recipe: the student's steps at DDPM t = 999, 749, 499, 249, taken on SD's
schedule like every noise level of the PixArt recipes (defaults.eps_teacher; σ = 14.61, 4.08,
1.61, 0.693: the first from pure noise), fresh noise between steps, and the generator's input at
each step from its own chain with the current weights and no gradient through the earlier steps
(backward simulation; DMD2 found training on forward-noised real images degrades the later steps).
Kept from the one-step recipe (pixart512_dmd2.py, where each value's source is given): reverse
KL without ratio weighting, the GAN head on the fake score, guidance 1.75, critic_steps 9, the
σ laws inside DMD2's SD range, the optimiser and EMA. DMD2's SDXL run differs in its own
teacher's settings (guidance 8, lr 5e-7, GAN weight 5e-3), which do not transfer to PixArt-α.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.pixart512_dmd2()
  sigmas = defaults.sd_sigmas(defaults.DMD2_4STEP_TIMESTEPS)
  cfg.diffusion.sigma_init = sigmas[0]
  cfg.few_step.update(dict(sigmas=sigmas, source="backward", renoise="stochastic"))
  return cfg
