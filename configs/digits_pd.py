"""Progressive distillation of the digits teacher: 16 → 8 → 4 → 2 → 1 Euler steps (x-prediction).

Round r trains the 2^(3−r)-step student from the previous round's student (round 0 from the
teacher's 16-step Euler sampler on the nested Karras grid), 600 steps per round at batch 32 on
real digits, truncated-SNR weighting. σ_init = σ_max = 80 (the 1-step student is D(80 z, 80)).

Command (all rounds, one sub-folder and student.msgpack each):
  python -m fdistill_jax.pd_rounds --config=configs/digits_pd.py --workdir=runs/digits_pd
Expected: the 1-step student scores FD 6.6 (8/4/2-step students 6.2/6.7/6.6), 10/10
classes (500 samples; one H100);
see BENCHMARKS.md "Every method on digits".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import progressive


def get_config():
  cfg = defaults.digits_distill()
  cfg.method = progressive.method_config(pd_base_steps=16, student_steps=8, pd_final_steps=1)
  cfg.disc.enabled = False
  return cfg
