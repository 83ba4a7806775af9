"""Knowledge distillation (Luhman & Luhman): regress the one-step student onto teacher ODE pairs.

4,096 (noise, 18-step Heun sample) pairs of the packaged digits teacher, cached in
<workdir>/kd_pairs in resumable shards; L2 regression, 600 steps at batch 32, lr 2e-4.

Command:
  python -m fdistill_jax.main --config=configs/digits_kd.py --workdir=runs/digits_kd
Expected: FD 3.2 (the teacher at 35 NFE: 3.3), 10/10 classes, confidence 0.944 (500 samples; one H100);
see BENCHMARKS.md "Every method on digits".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import kd


def get_config():
  cfg = defaults.digits_distill()
  cfg.method = kd.method_config(pairs_num=4096)
  cfg.disc.enabled = False
  return cfg
