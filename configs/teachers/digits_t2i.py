"""Train the tiny digits text-to-image teacher: a PixArt-α-architecture transformer (4 blocks,
hidden 64, patch 2, 16×16×1 pixels, 320k parameters) on scikit-learn's digits paired with the
committed prompts (fdistill_jax/assets/digits_t2i_prompts, encoded by the committed tiny T5,
training phrasings only), 10 % prompt dropout to the cached "" for classifier-free guidance.
Since issue 25 the distillation configs use the teacher that reads what people type
(configs/teachers/digits_t2i_text.py), which starts from this one's transformer.

How the committed fdistill_jax/assets/digits_t2i_teacher was made: one run of this config
(12,000 steps, batch 64, ε-MSE weighting, lr 1e-3 with cosine decay to 0; 89 min on one CPU core
beside other jobs, 1.4–2.3 steps/s), then the raw params exported:
  python -m fdistill_jax.main --config=configs/teachers/digits_t2i.py --workdir=runs/digits_t2i_teacher
  python -m fdistill_jax.export --config=configs/teachers/digits_t2i.py \
      --workdir=runs/digits_t2i_teacher --out=runs/digits_t2i_teacher/export
  cp -r runs/digits_t2i_teacher/export/diffusers/* fdistill_jax/assets/digits_t2i_teacher/
Expected (measured 2026-12-01, step 12,000, raw params, DPM-Solver++(2M) 35 NFE, guidance w = 2,
500 samples over all 100 prompts): digits FD 29.0, class coverage 1.0, prompt-class accuracy 0.96
(training phrasings 0.98, held-out 0.91), confidence 0.98, precision / recall 0.53 / 0.77.
The previous teacher (3,200 steps at a constant lr, the first 2,157 of them at EDM's σ law) scored
FD 39.5 and accuracy 0.83 (held-out 0.71): BENCHMARKS.md "Digits text-to-image: the earlier
teachers".
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_teacher()
