"""SiD (α = 1.2) of EDM's ImageNet-64 ADM teacher, the released SiD recipe.

batch 8192 (use train.grad_accum on small slices), lr 4e-6, Adam β = (0, 0.999), bf16 compute with
fp32 weights (SiD: fp16), σ_init 2.5, 1000 Mimg (122k iterations), EMA half-life 0.5 Mimg, ramp-up 0.05.

Command (a GPU cluster or TPU pod; see launch/README.md):
  python -m fdistill_jax.main --config=configs/imagenet64_sid.py --workdir=gs://BUCKET/in64_sid \
    --config.teacher.checkpoint=PATH/edm-imagenet-64x64-cond-adm.pkl --config.dataset.name=synthetic
Expected: SiD's README reports one-step FID 1.52; not reproduced here. Without a checkpoint it
runs the architecture on random weights.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.sid_edm("imagenet64")
