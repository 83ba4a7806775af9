"""The digits teacher with 10% label dropout, so that classifier-free guidance (SiD-LSG) has an
unconditional branch (the zero label vector). Otherwise configs/teachers/digits.py.

Command:
  python -m fdistill_jax.main --config=configs/teachers/digits_cfg.py --workdir=runs/digits_teacher_cfg
  python -m fdistill_jax.export --config=configs/teachers/digits_cfg.py \
      --workdir=runs/digits_teacher_cfg --out=fdistill_jax/assets/digits_teacher_cfg.safetensors
Expected: the committed file is this run's 0.999-EMA at step 2,042 (an H100 run stopped there by
its time limit): 35-NFE Heun FD 16.1, 4 NFE 50.1, 10/10 classes, confidence 0.90 (500 samples);
weaker than configs/teachers/digits.py's 2,700-step teacher (FD 3.3). BENCHMARKS.md "Digits".
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.image()
  cfg.method.name = "edm_training"
  cfg.teacher.precond_kwargs.dropout = 0.1
  cfg.teacher.precond_kwargs.label_dropout = 0.1
  cfg.disc.enabled = False
  cfg.optim.generator.lr = 1e-3
  cfg.optim.generator.weight_decay = 0.0
  cfg.train.update(dict(steps=2700, batch_size=32, ema_decays=(0.999,), log_every=100,
                        ckpt_every=500, eval_every=1000))
  cfg.eval.update(dict(sampler="heun", nfe=35, params="0.999", teacher_nfes=()))
  return cfg
