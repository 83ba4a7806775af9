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
Expected: BENCHMARKS.md "Few-step students (issue 27)", guidance-input rows (measured
2026-12-07).
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method.divergence = "js"
  cfg.method.guidance_scale = defaults.DIGITS_T2I_GUIDANCE  # Replaced by each sample's own w.
  cfg.method.critic_steps = 4
  cfg.guidance_input.update(dict(enabled=True, w_min=1.0, w_max=3.0))
  return cfg
