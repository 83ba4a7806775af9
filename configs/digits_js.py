"""f-distill (Jensen-Shannon) of the committed digits EDM teacher into a one-step generator.

This is the offline quickstart on real data: the teacher (fdistill_jax/assets/digits_teacher.safetensors,
a 317k-parameter class-conditional SongUNet trained by configs/teachers/digits.py) ships with the
package, the data are scikit-learn's digits, and the metric is the digits classifier's Fréchet
distance (evaluation/digits_metric.py).

Command (2 CPU cores, about 7 minutes: ~95 s compile, 600 steps at ~3.3 steps/s, evaluation):
  python -m fdistill_jax.main --config=configs/digits_js.py --workdir=runs/digits_js
Expected (measured, 500 samples): the one-step student (0.99-EMA) scores digits-metric FD 38.0
with 10/10 classes and confidence 0.999; the teacher scores FD 84.4 at 1 NFE, 19.6 at 4 NFE and
3.4 at 35 NFE (BENCHMARKS.md, "Digits"). Other divergences: --config.method.divergence=kl|rkl|...
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_distill("js")
