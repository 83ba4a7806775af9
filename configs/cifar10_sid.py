"""SiD (α = 1.2) of EDM's class-conditional CIFAR-10 teacher, the released SiD recipe.

batch 256, lr 1e-5 for the generator and the fake score, Adam β = (0, 0.999), fp32, σ_init 2.5,
800 Mimg (3.1M iterations), EMA half-life 0.5 Mimg with ramp-up 0.05; no real data (only FID
statistics); the fake score trains on EDM-augmented generator samples (method.augment_p = 0.12,
SiD's --augment).

Command (a GPU cluster or TPU pod; see launch/README.md):
  python -m fdistill_jax.main --config=configs/cifar10_sid.py --workdir=gs://BUCKET/c10_sid \
    --config.teacher.checkpoint=PATH/edm-cifar10-32x32-cond-vp.pkl --config.dataset.name=synthetic
Expected: SiD's README reports one-step FID 1.71 (conditional); not reproduced here (it needs
the EDM checkpoint and GPU weeks). Without a checkpoint it runs the architecture on random weights.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.sid_edm("cifar10")
