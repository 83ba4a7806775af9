"""NVIDIA's EDM ImageNet-64 teacher (edm-imagenet-64x64-cond-adm): sample it, or train one like it.

Sample the official teacher (40 deterministic Heun steps = 79 NFE; grid, .npz, numbered PNGs):
  python -m fdistill_jax.main --config=configs/teachers/edm_imagenet64.py --workdir=runs/edm_in64 \
    --mode=sample --config.teacher.checkpoint=PATH/edm-imagenet-64x64-cond-adm.pkl
Expected: recognisable ImageNet classes; the f-distill paper lists the teacher at FID 2.35 for
79 NFE (EDM's best, 1.36, uses 256 stochastic steps: S_churn 40, S_min 0.05, S_max 50,
S_noise 1.003 — fdistill_jax.diffusion.samplers.edm_sampler takes these).
Train from scratch on your data:
  python -m fdistill_jax.main --config=configs/teachers/edm_imagenet64.py --workdir=runs/edm_in64_train
(EDM trained it at batch 4096 for 2500 Mimg on 32 A100s, ~13 days.)
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.fastgen_edm("imagenet64")
  cfg.method.name = "edm_training"
  cfg.disc.enabled = False
  cfg.optim.generator.update(dict(lr=2e-4, weight_decay=0.0, clip=0.0))
  cfg.train.update(dict(steps=600_000, batch_size=4096, ema_decays=(0.9999,)))
  cfg.eval.update(dict(sampler="heun", nfe=79, params="0.9999", num_samples=64, metric="none"))
  return cfg
