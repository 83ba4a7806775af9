"""DMD2 of PixArt-α 512 into a one-step generator: reverse KL + GAN, regression-free, TTUR, at
the noise levels of DMD2's SD recipe (issue 25 §3).

Command:
  python -m fdistill_jax.main --config=configs/pixart512_dmd2.py --workdir=gs://BUCKET/pixart_dmd2 \
    --config.teacher.checkpoint=PixArt-XL-2-512x512/transformer \
    --config.teacher.vae=PixArt-XL-2-512x512/vae \
    --config.teacher.prompt_cache=gs://BUCKET/prompts_laion \
    --config.dataset.name=folder --config.dataset.path=gs://BUCKET/laion_512 \
    --config.dataset.captions=row
Expected: not measured here. DMD2 reports zero-shot COCO-30k FID 8.35 on SD1.5 at CFG 1.75
(f-distill's rerun 8.17); no published PixArt-α DMD2 number. Without files it steps the full
architecture on random weights, prompts and latents (loud warnings). The same recipe on the
digits text-to-image teacher is configs/digits_t2i_dmd2.py (measured there).

f-distill with divergence 'rkl' and no ratio normalisation (h ≡ 1) is DMD2's distribution
matching loss. Values and where they come from:
* DMD2's SD1.5 recipe (tianweiy/DMD2 main/train_sd.py and its SD1.5 launch script;
  arXiv 2405.14867): no regression loss, batch 2048, lr 1e-5, AdamW, GAN weight 1e-3 on
  the generator and 1e-2 on the fake score's GAN head (the GAN loss also trains the fake score),
  fake-score update frequency 10 (critic_steps 9), real_guidance_scale 1.75, DM and fake-score
  times t ∈ [20, 980) uniform, i.e. SD σ ∈ [0.138, 12.97], the fake score's ε-MSE loss, fp32
  (TF32 matmuls).
* Ours: σ_init 2.5 (DMD2-SD feeds pure noise at SD's t = 999, σ 14.6; PixArt's t = 999 is
  σ 157, so we use the ε-teacher value of SiD-LSG / SIM-DiT / PixArt's own DMD script), t
  uniform over PixArt's timesteps inside DMD2's σ range, one token head (1152 channels) on the
  fake score's block 13 (DMD2 reads the UNet bottleneck), 60k iterations, the 0.9999-EMA with
  EDM's ramp-up 0.05 (DMD2-SD evaluates the raw generator, which the final evaluation also
  scores), bf16 compute with a float32 output layer (defaults.pixart512).
"""
from fdistill_jax import defaults


def get_config():
  return defaults.pixart512_dmd2()
