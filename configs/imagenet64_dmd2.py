"""DMD2 of EDM's ImageNet-64 ADM teacher: reverse KL + GAN, TTUR, DMD2's published settings.

f-distill with divergence rkl and h ≡ 1 (no ratio normalisation), the GAN head on the fake score's
8×8 bottleneck (its GAN loss, weight 1e-2, also trains the fake score), λ_G = 3e-3, 4 critic steps
per generator step, AdamW (0.9, 0.999) wd 0.01, lr 2e-6, batch 280, bf16, 2–98% time range, 200k
iterations (DMD2's "with GAN, from scratch" run).

Command (a GPU cluster or TPU pod; see launch/README.md):
  python -m fdistill_jax.main --config=configs/imagenet64_dmd2.py --workdir=gs://BUCKET/in64_dmd2 \
    --config.teacher.checkpoint=PATH/edm-imagenet-64x64-cond-adm.pkl \
    --config.dataset.data_dir=gs://BUCKET/tfds
Expected: DMD2 reports FID 1.51 for this run (1.28 after a lower-lr continuation; FastGen's
reproduction 1.12). Without a checkpoint it runs the architecture on random weights.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.fastgen_edm("imagenet64")
  cfg.method.update(dict(divergence="rkl", ratio_normalization=False, disc_features="fake_score",
                         gan_weight_gen=3e-3, gan_weight_disc=1e-2, time_lo=0.02, time_hi=0.98,
                         critic_steps=4))
  cfg.train.update(dict(batch_size=280, steps=200_000))
  return cfg
