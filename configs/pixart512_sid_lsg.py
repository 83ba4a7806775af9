"""SiD-LSG (long and short guidance) of PixArt-α 512 into a one-step generator, data-free.

Command:
  python -m fdistill_jax.main --config=configs/pixart512_sid_lsg.py \
    --workdir=gs://BUCKET/pixart_sid_lsg \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts_laion_aesthetic6
Expected: not measured here. SiD-LSG reports zero-shot COCO-2014-30k FID 8.71 / CLIP 0.302 with
g = 1.5 on SD1.5 (8.15 trained longer); no published PixArt-α number. Without files it steps
the full architecture on random weights and prompts (loud warnings).

From SiD-LSG (docs/algorithms.md §4.5): κ1 = κ2 = κ3 = κ4 = 1.5 (the released runs' best-FID
setting), 10% of captions dropped to "" while training the fake score, α = 1, Adam β = (0,
0.999) with lr 1e-6 for both nets, batch 512, EMA half-life 0.05 Mimg (per-iteration decay
0.5^(512/5e4) = 0.992928), 10 Mimg (19,531 iterations), generator input at t_init = 625
(σ_init = σ(625) = 7.2325), diffusion times t ∈ {20, …, 979} (σ ∈ [σ(20), σ(979)], t_max 1000
of that range), no images (dataset 'prompts'), prompts from LAION-Aesthetics 6+. Chosen: bf16
compute with fp32 master weights (SiD-LSG recommends fp32 over fp16), SiD's official loss
scaling (sid.OFFICIAL_SCALING), the fake score trained at SiD's log-normal σ.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sid


def get_config():
  cfg = defaults.pixart512()
  cfg.method = sid.method_config(alpha=1.0, t_max=1000.0, kappa_train_fake=1.5, kappa_fake=1.5,
                                 kappa_real=1.5, cond_drop=0.1, **sid.OFFICIAL_SCALING)
  defaults.pixart512_sid_lsg_schedule(cfg)  # sets SiD's σ_init 2.5, replaced below
  cfg.diffusion.update(dict(sigma_min=defaults.PIXART_SIGMA_T20,
                            sigma_max=defaults.PIXART_SIGMA_T979,
                            sigma_init=defaults.PIXART_SIGMA_T625))
  return cfg
