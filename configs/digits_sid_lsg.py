"""SiD-LSG (long and short guidance, κ1 = κ2 = κ3 = κ4 = 1.5) on a class-conditional digits teacher.

CFG needs a teacher with an unconditional branch, so this uses the packaged digits teacher trained
with 10% label dropout (fdistill_jax/assets/digits_teacher_cfg.safetensors, made with
configs/teachers/digits_cfg.py; the zero label vector is "no class"). Everything else is
configs/digits_sid.py; the fake score drops 10% of labels while it is trained (method.cond_drop).

Command:
  python -m fdistill_jax.main --config=configs/digits_sid_lsg.py --workdir=runs/digits_sid_lsg
Expected: see BENCHMARKS.md "Digits", SiD-LSG rows (guidance raises the classifier confidence of
the one-step samples over plain SiD on the same teacher).
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sid


def get_config():
  cfg = defaults.digits_distill()
  cfg.teacher.checkpoint = defaults.asset("digits_teacher_cfg.safetensors")
  cfg.method = sid.method_config(kappa_train_fake=1.5, kappa_fake=1.5, kappa_real=1.5,
                                 cond_drop=0.1)
  defaults.sid_style(cfg)
  return cfg
