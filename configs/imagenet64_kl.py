"""f-distill (forward KL) of EDM's ImageNet-64 ADM teacher, FastGen's published recipe.

Command (a TPU pod or GPU cluster; see launch/README.md):
  python -m fdistill_jax.main --config=configs/imagenet64_kl.py --workdir=gs://BUCKET/in64_js \
    --config.teacher.checkpoint=PATH/edm-imagenet-64x64-cond-adm.pkl \
    --config.dataset.data_dir=gs://BUCKET/tfds
Expected: the paper reports one-step FID 1.21 for forward KL after 380k–600k
iterations at batch 512; EDM's teacher is 2.35 at 79 NFE. Without a checkpoint it builds,
shards and steps the full 296M-parameter architecture on random weights (loud warning) — for
speed measurements only; add --config.dataset.name=synthetic when no data is at hand.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.fastgen_edm("imagenet64")
  cfg.method.divergence = "kl"
  return cfg
