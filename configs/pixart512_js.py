"""f-distill (JS) of PixArt-α 512 into a one-step generator: teacher guidance and the GAN branch
on real-image latents, FastGen's text-to-image f-distill settings at the noise levels of an
ε-prediction teacher (f-distill, arXiv 2502.15681; issue 25 §3).

Command (a TPU pod or GPU cluster; see launch/README.md):
  python -m fdistill_jax.main --config=configs/pixart512_js.py --workdir=gs://BUCKET/pixart_js \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts_coyo \
    --config.dataset.name=folder --config.dataset.path=gs://BUCKET/coyo_512 \
    --config.dataset.captions=row
  (dataset: 512² images whose dataset.json label is the row of their caption in the cache.)
Expected: not measured here (no accelerator time yet). f-distill's paper reports zero-shot
COCO-2014-30k FID 7.42 (JS, CFG 1.75; 14.25 at CFG 5 with CLIP 0.311 against 0.292) for an
SD1.5 teacher; there is no published PixArt-α f-distill number. Without files it builds, shards
and steps the full 600M architecture on random weights, random prompts and N(0, 1) latents
(loud warnings): speed and memory only. The same recipe on the digits text-to-image teacher is
configs/digits_t2i_js.py (measured there).

Values and where they come from:
* FastGen's SD1.5 f-distill config (fastgen/configs/.../config_f_distill_sd15): batch 2048,
  AdamW (0.9, 0.999) wd 0.01, lr 1e-5 for all nets, generator gradient clip 10, λ_G = 1e-3,
  λ_D = 1, generator update every 10th step (critic_steps 9), 100k iterations, ratio EMA 0,
  R1 0 (the paper's γ = 1 is unresolved); t ~ U[0.001, 0.999] of SD's schedule, i.e.
  σ ∈ [SD σ(1), SD σ(999)] = [0.041, 14.6] (the same SD-VAE latent space as PixArt-α).
* The f-distill paper (Table 5 / §5.3): CFG 1.75 for the best FID; CFG 5 is the CLIP/HPS
  setting (--config.method.guidance_scale=5.0).
* Ours, for an ε-prediction teacher (defaults.eps_teacher, measured on digits): σ_init 2.5
  instead of FastGen's pure noise at max t (PixArt's max t is σ 157: x0 = x − 157·ε̂), t uniform
  over PixArt's own timesteps inside that σ range, an ε-MSE fake-score loss (FastGen: x0 MSE),
  ratio bins uniform in t (FastGen: linear in σ, which left 62 % of PixArt's draws in bin 0).
* Ours where the docs are silent for PixArt: one token head (1152 channels) on the output of
  the middle block 13 of the frozen teacher (FastGen reads the SD UNet bottleneck), the 0.9999
  EMA with EDM's ramp-up 0.05, bf16 compute with a float32 output layer (defaults.pixart512).
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.pixart512()
  cfg.method.update(dict(
      name="fdistill", divergence="js", guidance_scale=1.75, critic_steps=9,
      ratio_normalization=True, ratio_ema=0.0, gan_weight_gen=1e-3, gan_weight_disc=1.0,
      r1_weight=0.0, disc_features="teacher"))
  defaults.pixart512_fastgen_optim(cfg, steps=100_000)
  return defaults.eps_teacher(cfg, sigma_min=defaults.SD_SIGMA_T1)
