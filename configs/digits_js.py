"""f-distill (Jensen-Shannon) of the committed digits EDM teacher into a one-step generator.

This is the offline quickstart on real data: the teacher (fdistill_jax/assets/digits_teacher.safetensors,
a 317k-parameter class-conditional SongUNet trained by configs/teachers/digits.py) ships with the
package, the data are scikit-learn's digits, and the metric is the digits classifier's Fréchet
distance (evaluation/digits_metric.py).

Recipe (f-distill JS as FastGen runs it: h(r) = r/(r+1) from the discriminator on the teacher's
16×16 and 8×8 encoder maps, two-stage normalisation, λ_G = 1e-3, unweighted fake-score DSM),
tuned for a CPU budget of about ten minutes on the evidence in BENCHMARKS.md ("Digits
quickstart recipe"): 1 generator : 3 critic steps, generator lr 6e-4, fake score 1e-3,
discriminator 3e-4, 1,200 iterations (300 generator updates), generator input σ_init = 80 as
FastGen (σ_init 2.5 gave the same FD within noise).

Command (2 CPU cores: 8 min on an idle machine, 9.5 min beside another job; ~50–65 s compile,
2.5–3.7 steps/s, evaluation):
  python -m fdistill_jax.main --config=configs/digits_js.py --workdir=runs/digits_js
Expected (measured 2026-12-01, 500 samples, 0.99-EMA): the one-step student scores digits FD
5.99 (FD 7.00 at N = 297, where the real held-out digits score 7.56), 10/10 classes, confidence
0.961, precision / recall 0.77 / 0.82 and within-class diversity 0.90 of the data's (teacher at
35 NFE: FD 3.45, 0.66 / 0.94, 1.15; at 4 NFE 20.0; at 1 NFE 85.7). With --config.seed=1:
FD 7.62 (8.54 at N = 297), recall 0.87, diversity 0.99.
Other divergences: --config.method.divergence=kl|rkl|...; the shared 1:1 600-iteration protocol
of the other digits configs is defaults.digits_distill (FD 38.0 for JS, BENCHMARKS.md "Digits").
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_distill("js")
  cfg.method.critic_steps = 3
  for net, lr in (("generator", 6e-4), ("fake_score", 1e-3), ("discriminator", 3e-4)):
    cfg.optim[net].lr = lr
  cfg.train.update(dict(steps=1200, ckpt_every=400))
  return cfg
