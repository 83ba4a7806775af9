"""Train the digits text-to-image rectified-flow teacher (teacher.kind 'flow_dit'): the PixArt-α
body of the digits text teacher (4 blocks, hidden 64, patch 2, 16×16×1 pixels, reading the 64-d
states of its frozen byte-level T5 through the committed prompt cache) predicting a velocity
ε − x0 on x_s = (1 − s)·x0 + s·ε at t = 1000·s, the SD3 / FLUX convention.

Two commands: cut the ε teacher's output head to a velocity head (the body already draws digits
from prompts), then train on the flow-matching loss (defaults.digits_t2i_flow_teacher):
  python -m fdistill_jax.tools.flow_from_eps --src=fdistill_jax/assets/digits_t2i_text_teacher \\
      --out=runs/digits_t2i_flow_init
  python -m fdistill_jax.main --config=configs/teachers/digits_t2i_flow.py \\
      --workdir=runs/digits_t2i_flow_teacher
Then export the raw params (a trained flow teacher exports as transformer/ + its FlowMatch
scheduler/) and keep them as the committed teacher the distillation configs read:
  python -m fdistill_jax.export --config=configs/teachers/digits_t2i_flow.py \\
      --workdir=runs/digits_t2i_flow_teacher --params=raw --out=runs/digits_t2i_flow_teacher/export
  cp -r runs/digits_t2i_flow_teacher/export/diffusers fdistill_jax/assets/digits_t2i_flow_teacher
Expected (measured 2026-12-07, the committed assets/digits_t2i_flow_teacher: 3,000 steps in 26
min on one shared CPU core at 1.9–2.1 steps/s, loss 0.19 → 0.13; raw params, Euler 35 NFE,
w = 2, 560 samples, 2 per prompt): digits FD 19.7, class coverage 1.0, prompt accuracy 0.993
(training phrasings 1.0, held-out 0.95), precision / recall 0.78 / 0.47. The ε teacher it
starts from scores FD 39.5, accuracy 0.98 (held-out 0.975), precision / recall 0.53 / 0.73 at
w = 2: BENCHMARKS.md "Digits text-to-image students of a rectified-flow teacher".
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_t2i_flow_teacher()
  cfg.teacher.checkpoint = "runs/digits_t2i_flow_init"  # step 1
  return cfg
