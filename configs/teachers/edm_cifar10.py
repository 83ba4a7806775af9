"""NVIDIA's EDM CIFAR-10 teacher (edm-cifar10-32x32-cond-vp): sample it, or train one like it.

Sample the official teacher (18 Heun steps = 35 NFE; PNG grid, .npz and numbered PNGs):
  python -m fdistill_jax.main --config=configs/teachers/edm_cifar10.py --workdir=runs/edm_c10 \
    --mode=sample --config.teacher.checkpoint=PATH/edm-cifar10-32x32-cond-vp.pkl
Expected: recognisable CIFAR-10 classes; EDM reports FID 1.79 at 35 NFE over 50k samples.
Train from scratch on your data (EDM's loss, log-normal σ, λ(σ)):
  python -m fdistill_jax.main --config=configs/teachers/edm_cifar10.py --workdir=runs/edm_c10_train
(EDM's recipe: batch 512, lr 1e-3, 200 Mimg on 8 V100s for ~2 days, with EDM's geometric
augmentation at p = 0.12 (method.augment_p, diffusion/augment.py) as `--augment 0.12` does.)
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.fastgen_edm("cifar10")
  cfg.method.name = "edm_training"
  cfg.method.augment_p = 0.12  # EDM's --augment default; labels go to map_augment (augment_dim 9).
  cfg.disc.enabled = False
  cfg.optim.generator.update(dict(lr=1e-3, weight_decay=0.0, clip=0.0))
  cfg.train.update(dict(steps=400_000, batch_size=512, ema_decays=(0.9999,)))
  cfg.eval.update(dict(sampler="heun", nfe=35, params="0.9999", num_samples=64, metric="none"))
  return cfg
