"""SIM (score implicit matching, pseudo-Huber) of PixArt-α 512 into a one-step generator,
data-free — the recipe behind SIM-DiT-600M.

Command:
  python -m fdistill_jax.main --config=configs/pixart512_sim.py --workdir=gs://BUCKET/pixart_sim \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts
Expected: not measured here. SIM reports an aesthetic score of 6.42 for its one-step
SIM-DiT-600M distilled from PixArt-α (SDXL-Turbo 5.33); no FID is published for it. Without
files it steps the full architecture on random weights and prompts (loud warnings).

From SIM (docs/algorithms.md §5; SIM's training code is not public): pseudo-Huber distance,
SiD-style alternating fake-score DSM, no real data, generator input σ_init = 2.5 (the released
SIM-DiT's init_sigma). Chosen where the docs are silent: Huber c = 0.00054·√(64·64·4) = 0.0691
(the consistency-model rule; SIM's c is not given), teacher guidance 4.5 (PixArt's default),
SiD-LSG's optimiser (Adam β = (0, 0.999), lr 1e-6, batch 512, EMA half-life 0.05 Mimg), the
SiD-matched weighting, 10 Mimg.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.pixart512()
  cfg.method = sim.method_config(distance="pseudo_huber", huber_c=round(0.00054 * 128, 6),
                                 t_max=1000.0, guidance_scale=4.5)
  defaults.pixart512_sid_lsg_schedule(cfg)
  cfg.diffusion.sigma_init = 2.5
  return cfg
