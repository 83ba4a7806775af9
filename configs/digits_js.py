"""f-distill (Jensen-Shannon) of the committed digits EDM teacher into a one-step generator.

This is the offline quickstart on real data: the teacher (fdistill_jax/assets/digits_teacher.safetensors,
a 317k-parameter class-conditional SongUNet trained by configs/teachers/digits.py) ships with the
package, the data are scikit-learn's digits, and the metric is the digits classifier's Fréchet
distance (evaluation/digits_metric.py).

Recipe (f-distill JS as FastGen runs it: h(r) = r/(r+1) from the discriminator on the teacher's
16×16 and 8×8 encoder maps, two-stage normalisation, λ_G = 1e-3, generator input σ_init = 80),
tuned for a CPU budget of about ten minutes on the evidence in BENCHMARKS.md ("Digits
quickstart recipe"): 1 generator : 3 critic steps, 1,200 iterations (300 generator updates),
generator lr 6e-4, fake score 2e-3, discriminator 3e-4; the fake score is trained with EDM's
λ(σ)-weighted denoising loss (as SiD and EDM do; FastGen's f-distill leaves it unweighted, which
scored FD 6.2 / recall 0.83 here against 4.6 / 0.84 weighted, seed 0), and the evaluated
generator is the 0.98-EMA (per generator update).

Command (2 CPU cores, otherwise idle: 7 min 37 s end to end; 50 s compile, 3.7–4.0 steps/s,
evaluation):
  python -m fdistill_jax.main --config=configs/digits_js.py --workdir=runs/digits_js
Expected (measured 2026-12-01, 500 samples, 0.98-EMA): the one-step student scores digits FD
3.94 (FD 5.18 at N = 297, where the real held-out digits score 7.56), 10/10 classes, confidence
0.957, precision / recall 0.71 / 0.90 and within-class diversity 1.11 of the data's (teacher at
35 NFE: FD 3.45, 0.66 / 0.94, 1.14; the held-out digits 0.92 / 0.92, 1.06; teacher at 4 NFE
FD 20.0, at 1 NFE 85.7). With --config.seed=1 (6 min 59 s): FD 4.21 (6.16 at N = 297), recall
0.92, diversity 1.08 (its teacher 3.50, 0.96, 1.15).
Other divergences: --config.method.divergence=kl|rkl|...; the shared 1:1 600-iteration protocol
of the other digits configs is defaults.digits_distill (FD 38.0 for JS, BENCHMARKS.md "Every method
on digits").
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_quickstart()
