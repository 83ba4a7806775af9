"""f-distill (forward KL) of EDM's class-conditional CIFAR-10 teacher, FastGen's recipe.

Command:
  python -m fdistill_jax.main --config=configs/cifar10_kl.py --workdir=gs://BUCKET/c10_kl \
    --config.teacher.checkpoint=PATH/edm-cifar10-32x32-cond-vp.pkl \
    --config.dataset.data_dir=gs://BUCKET/tfds
Expected: the paper reports one-step FID 1.92 (FastGen reproduction 1.85) at batch 2048; EDM's
teacher is 1.79 at 35 NFE. Without a checkpoint it runs the full 55.7M-parameter architecture on
random weights (loud warning), for speed measurements only.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.fastgen_edm("cifar10")
