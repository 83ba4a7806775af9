"""The digits teacher with 10% label dropout, so that classifier-free guidance (SiD-LSG) has an
unconditional branch (the zero label vector). Otherwise configs/teachers/digits.py.

Command:
  python -m fdistill_jax.main --config=configs/teachers/digits_cfg.py --workdir=runs/digits_teacher_cfg
  python -m fdistill_jax.export --config=configs/teachers/digits_cfg.py \
      --workdir=runs/digits_teacher_cfg --out=runs/digits_teacher_cfg/export
  cp runs/digits_teacher_cfg/export/edm_precond.safetensors fdistill_jax/assets/digits_teacher_cfg.safetensors
Expected: the committed file is this run's 0.999-EMA at step 2,042 (an H100 run stopped there by
its time limit): 35-NFE Heun FD 16.1, 4 NFE 50.1, 10/10 classes, confidence 0.90 (500 samples);
weaker than configs/teachers/digits.py's 2,700-step teacher (FD 3.3).
BENCHMARKS.md "SiD-LSG on a class-conditional teacher".
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_teacher(label_dropout=0.1)
