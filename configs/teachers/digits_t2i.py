"""Train the tiny digits text-to-image teacher: a PixArt-α-architecture transformer (4 blocks,
hidden 64, patch 2, 16×16×1 pixels) on scikit-learn's digits paired with the committed prompts
(fdistill_jax/assets/digits_t2i_prompts, encoded by the committed tiny T5), 10 % prompt dropout.

Command (2 shared CPU cores, about 25 minutes):
  python -m fdistill_jax.main --config=configs/teachers/digits_t2i.py --workdir=runs/digits_t2i_teacher
  python -m fdistill_jax.export --config=configs/teachers/digits_t2i.py \
      --workdir=runs/digits_t2i_teacher --out=runs/digits_t2i_teacher/export
  cp -r runs/digits_t2i_teacher/export/diffusers fdistill_jax/assets/digits_t2i_teacher
Expected: RESULT PENDING.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_teacher()
