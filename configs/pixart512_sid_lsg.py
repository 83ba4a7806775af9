"""SiD-LSG (long and short guidance) of PixArt-α 512 into a one-step generator, data-free, at
SiD-LSG's noise levels (issue 25 §3).

Command:
  python -m fdistill_jax.main --config=configs/pixart512_sid_lsg.py \
    --workdir=gs://BUCKET/pixart_sid_lsg \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts_laion_aesthetic6
Expected: not measured here. SiD-LSG reports zero-shot COCO-2014-30k FID 8.71 / CLIP 0.302 with
g = 1.5 on SD1.5 (8.15 trained longer; g = 4.5 gives FID 16.59 / CLIP 0.317, the CLIP-oriented
setting: --config.method.kappa_*=4.5); no published PixArt-α number. Without files it steps the
full architecture on random weights and prompts (loud warnings). The same recipe on the digits
text-to-image teacher is configs/digits_t2i_sid_lsg.py (measured there).

Values and where they come from:
* SiD-LSG (mingyuanzhou/SiD-LSG training/sid_training_loop.py, run_sid.sh;
  arXiv 2406.01561): κ1 = κ2 = κ3 = κ4 = 1.5 (the best-FID setting), α = 1, Adam β =
  (0, 0.999) with lr 1e-6 for both nets, batch 512, EMA half-life 0.05 Mimg with ramp-up 0.05,
  10 Mimg = 19,531 iterations of one fake-score and one generator update each (39,062 engine
  iterations here, which alternate them), loss scales 1 / 1 with pixel sums (run_sid.sh passes
  neither --lsg nor --ls), generator input at SD's t_init 625 = σ 2.50, diffusion times t ∈
  [20, 980) on SD = σ ∈ [0.138, 12.97] for both the generator loss and the fake score, whose
  loss is an ε-MSE, prompts from LAION-Aesthetics 6+, no images, fp32 recommended.
* Ours: t uniform over PixArt's own timesteps inside SiD-LSG's σ range (the same SD-VAE latent
  space, so σ transfers); captions dropped to "" for the fake score after generation (so its ∅
  branch learns the student's marginal, where the official code drops them before generating
  and learns G("")); bf16 compute with a float32 output layer (defaults.pixart512).
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sid


def get_config():
  cfg = defaults.pixart512()
  cfg.method = sid.method_config(alpha=1.0, kappa_train_fake=1.5, kappa_fake=1.5, kappa_real=1.5,
                                 cond_drop=0.1, generator_loss_scale=1.0,
                                 fake_score_loss_scale=1.0, fake_score_reduction="sum")
  defaults.pixart512_sid_lsg_schedule(cfg)
  return defaults.eps_teacher(cfg, sigma_min=defaults.SD_SIGMA_T20,
                              sigma_max=defaults.SD_SIGMA_T979)
