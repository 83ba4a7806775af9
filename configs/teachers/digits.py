"""Train the small class-conditional EDM teacher on scikit-learn's handwritten digits (16×16×1).

Command (2 CPU cores, about 35 minutes unloaded; the committed file is its step-2700 0.999-EMA):
  python -m fdistill_jax.main --config=configs/teachers/digits.py --workdir=runs/digits_teacher
  python -m fdistill_jax.export --config=configs/teachers/digits.py --workdir=runs/digits_teacher \
      --out=runs/digits_teacher/export
  cp runs/digits_teacher/export/edm_precond.safetensors fdistill_jax/assets/digits_teacher.safetensors
Expected: 35-NFE Heun samples that look like digits (samples_*.png): at step 2000 the 0.999-EMA
scored digits-metric FD 10.6 (500 samples), class coverage 1.0, confidence 0.91. The exported file is the committed offline teacher used by
configs/digits_*.py.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_teacher()
