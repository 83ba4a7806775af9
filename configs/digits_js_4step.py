"""f-distill (Jensen-Shannon) of the committed digits EDM teacher into a 4-step student.

The quickstart's recipe (configs/digits_js.py: 1 generator : 3 critic steps, 1,200 iterations,
lr 6e-4 / 2e-3 / 3e-4, EDM-weighted fake-score loss, 0.98-EMA) with a student that samples in
K = 4 steps along σ = 80, 18, 2.7, 0.2 (four points of EDM's ρ = 7 curve from 80 to 0.2) and
re-noises with fresh noise between steps (DMD2's multi-step sampler). Each generator and critic
step trains the student at one of the 4 positions per sample, reached by backward simulation:
the student's own chain from pure noise with its current weights and no gradient through the
earlier steps (DMD2's SDXL recipe; diffusion/few_step.py). --config.few_step.source=noised_data
trains on forward-noised real digits instead (FastGen's multi-step default).

Command:
  python -m fdistill_jax.main --config=configs/digits_js_4step.py --workdir=runs/digits_js_4step
Expected (measured 2026-12-07, seed 0, shared 2-core CPU, 38 min; BENCHMARKS.md "Few-step
students and guidance as an input"): the 4-step student scores FD 21.5, recall 0.72, precision
0.61 (seed 1: FD 19.2, recall 0.85; 13 min with one core to itself): worse than the one-step quickstart (FD 3.94) and short of the issue's target (within 5 % of
the teacher's 35-NFE FD 3.45). Deterministic re-noising: FD 21.9; noised_data: FD 15.7 (precision
0.46); 2 steps at σ 80, 0.821: FD 10.6 (10.7 with twice the iterations). Started from the trained
one-step student (--config.student.init_checkpoint=<its exported edm_precond.safetensors>, FD 3.94)
it ends at FD 11.1 (backward) and 7.5 / 15.9 with --config.few_step.source=rollout (2026-12-08,
seeds 0 / 1).
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_quickstart()
  cfg.few_step.sigmas = (80.0, 18.0, 2.7, 0.2)
  cfg.few_step.source = "backward"
  cfg.few_step.renoise = "stochastic"
  return cfg
