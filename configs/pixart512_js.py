"""f-distill (JS) of PixArt-α 512 into a one-step generator: teacher guidance and the GAN branch
on real-image latents, FastGen's text-to-image f-distill settings (docs/algorithms.md §1.5).

Command (a TPU pod or GPU cluster; see launch/README.md):
  python -m fdistill_jax.main --config=configs/pixart512_js.py --workdir=gs://BUCKET/pixart_js \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts_coyo \
    --config.dataset.name=folder --config.dataset.path=gs://BUCKET/coyo_512 \
    --config.dataset.captions=row
  (dataset: 512² images whose dataset.json label is the row of their caption in the cache.)
Expected: not measured here (no accelerator time yet). f-distill's paper reports zero-shot
COCO-2014-30k FID 7.42 (JS) for an SD1.5 teacher with these settings; there is no published
PixArt-α f-distill number. Without files it builds, shards and steps the full 600M architecture
on random weights, random prompts and N(0, 1) latents (loud warnings): speed and memory only.

From FastGen's SD1.5 f-distill config: batch 2048, AdamW (0.9, 0.999) wd 0.01, lr 1e-5 for all
nets, generator gradient clip 10, λ_G = 1e-3, generator update every 10th step (critic_steps 9),
100k iterations, bf16, unweighted x0 DSM, ratio EMA 0, R1 0 (FastGen; the paper's γ = 1 is
unresolved), student input pure noise at max t. Chosen where the docs are silent for PixArt:
guidance scale 4.5 (PixArtAlphaPipeline's default; FastGen uses 1.75 for SD1.5, 8 for SDXL),
one token head (1152 channels) on the output of the middle block 13 of the frozen teacher (FastGen
reads the SD UNet bottleneck, 1280 channels), EMA 0.9999.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.pixart512()
  cfg.method.update(dict(
      name="fdistill", divergence="js", guidance_scale=4.5, critic_steps=9,
      ratio_normalization=True, ratio_ema=0.0, gan_weight_gen=1e-3, gan_weight_disc=1.0,
      r1_weight=0.0, disc_features="teacher", dsm_weighting="none"))
  defaults.pixart512_fastgen_optim(cfg, steps=100_000)
  return cfg
