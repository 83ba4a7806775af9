"""SIM (pseudo-Huber, c = 1 in score units) of EDM's class-conditional CIFAR-10 teacher.

SIM's optimiser, batch and EMA were not published (arXiv 2410.16794 gives none), so this uses SiD's CIFAR-10
recipe (configs/cifar10_sid.py) with SIM's exact generator loss in place of SiD's.

Command (a GPU cluster or TPU pod; see launch/README.md):
  python -m fdistill_jax.main --config=configs/cifar10_sim.py --workdir=gs://BUCKET/c10_sim \
    --config.teacher.checkpoint=PATH/edm-cifar10-32x32-cond-vp.pkl --config.dataset.name=synthetic
Expected: the SIM paper reports one-step FID 1.96 (conditional). Without a checkpoint it runs
the architecture on random weights.
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sim


def get_config():
  cfg = defaults.sid_edm("cifar10")
  cfg.method = sim.method_config(distance="pseudo_huber", huber_c=1.0)
  return cfg
