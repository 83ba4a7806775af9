"""f-distill (Jensen-Shannon) of the digits text-to-image teacher into a one-step student that
takes the guidance scale w as an input: one checkpoint for every w in [1, 3].

The recipe of configs/digits_t2i_js.py (teacher, prompts, ε-teacher σ laws, 1:4 schedule, 600
iterations, 0.99-EMA with ramp-up) with config.guidance_input: the student (and the fake score,
which must model the student's w-dependent outputs) is the teacher's transformer plus a
guidance embedding (sinusoid of 1000·w → MLP whose output layer starts at zero, added to the
timestep embedding, so at initialisation the student is the teacher at every w). Each training
sample draws its own w ~ U[1, 3] and its distribution-matching target is the teacher guided at
that w. Evaluation samples at eval.guidance_scale (1.5 by default), against the 35-NFE teacher
guided at the same w:
  python -m fdistill_jax.main --config=configs/digits_t2i_js_guidance.py --workdir=runs/t2i_w
  python -m fdistill_jax.main --config=configs/digits_t2i_js_guidance.py --workdir=runs/t2i_w \
      --mode=eval --config.eval.guidance_scale=3.0
Expected (measured 2026-12-07, seed 0, one shared CPU core, 8 min + 5 min per extra w;
BENCHMARKS.md "Few-step students and guidance as an input"): after these 600 iterations the
student hardly reads w (held-out accuracy 0.98-0.99, recall 0.44-0.48 at every w; at w = 1.5 FD
26.4 against the teacher's 17.1). With --config.train.steps=1800 it follows w: FD 9.8 / 21.1 /
67.9 at w = 1 / 1.5 / 3 (teacher 5.4 / 17.1 / 92.1), held-out accuracy 0.96 / 0.98 / 0.99
(teacher 0.85 / 0.95 / 0.99); not yet within the issue's 10 % of the teacher in FD.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method.divergence = "js"
  cfg.method.guidance_scale = defaults.DIGITS_T2I_GUIDANCE  # Replaced by each sample's own w.
  cfg.method.critic_steps = 4
  cfg.guidance_input.update(dict(enabled=True, w_min=1.0, w_max=3.0))
  return cfg
