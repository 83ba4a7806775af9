"""SIM (score implicit matching, pseudo-Huber) of PixArt-α 512 into a one-step generator,
data-free, with teacher guidance (issue 25 §3).

Command:
  python -m fdistill_jax.main --config=configs/pixart512_sim.py --workdir=gs://BUCKET/pixart_sim \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts
Expected: not measured here. SIM reports an aesthetic score of 6.42 for its one-step
SIM-DiT-600M distilled from PixArt-α (SDXL-Turbo 5.33) and no FID; its training code, loss
weighting, Huber c, learning rate, guidance and EMA are unpublished, so this is a SIM recipe
for PixArt, not SIM-DiT's. Without files it steps the full architecture on random weights and
prompts (loud warnings). The same recipe on the digits text-to-image teacher is
configs/digits_t2i_sim.py (measured there).

Values and where they come from:
* SIM (arXiv 2410.16794): the pseudo-Huber distance, SiD-style alternating
  fake-score training, no real data; the released SIM-DiT inference script's init_sigma 2.5.
* Ours: SiD-LSG's schedule and noise levels (configs/pixart512_sid_lsg.py: Adam β (0, 0.999),
  lr 1e-6, batch 512, EMA half-life 0.05 Mimg with ramp-up 0.05, 10 Mimg, σ ∈ [0.138, 12.97] with
  t uniform and the fake score trained on the same law with an ε-MSE); Huber c = 0.00054·
  √(64·64·4) = 0.0691 in x0 units (the consistency-model rule, stated for distances between
  images; method.huber_space='x0'); teacher guidance 1.75 (the f-distill / DMD2 FID setting), the
  fake score unguided; the SiD-matched weighting; bf16 compute with a float32 output layer.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.pixart512()
  cfg.method = sim.method_config(distance="pseudo_huber", huber_c=round(0.00054 * 128, 6),
                                 huber_space="x0", guidance_scale=1.75)
  defaults.pixart512_sid_lsg_schedule(cfg)
  return defaults.eps_teacher(cfg, sigma_min=defaults.SD_SIGMA_T20,
                              sigma_max=defaults.SD_SIGMA_T979)
