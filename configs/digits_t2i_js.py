"""f-distill (Jensen-Shannon) with teacher guidance of the committed digits text-to-image teacher
into a one-step generator: the offline text-to-image quickstart.

Teacher: fdistill_jax/assets/digits_t2i_teacher (a 4-block PixArt-α-architecture transformer on
16×16×1 pixels, trained by configs/teachers/digits_t2i.py), prompts from the committed cache
fdistill_jax/assets/digits_t2i_prompts (tiny T5; 7 training and 3 held-out phrasings per digit).
The teacher's score inside the generator loss is guided with w = method.guidance_scale (FastGen's
placement); the GAN branch reads the teacher's last block on real digits paired with training
prompts of their class. final_metrics.json: prompt-class accuracy (train / held-out phrasings),
digits FD and class coverage for the student and the teacher at 1/2/4/35 NFE, guided and not.

The generator starts from σ_init = 2.5 (SiD's value): with the ε-parameterised PixArt the x0 of
a one-step generator is x − σ·ε̂, so σ_init = 80 multiplies every ε error by 80 (measured: FD 305,
accuracy 0.76, noisy digits).

Command (2 shared CPU cores, about 11 minutes: ~1.5 min compile, 600 steps at ~1.5 steps/s,
evaluation of the student and the teacher at 1/2/4/35 NFE):
  python -m fdistill_jax.main --config=configs/digits_t2i_js.py --workdir=runs/digits_t2i_js
Expected (measured 2026-12-01 with the 12,000-step teacher, 500 samples over the 100 prompts):
one-step student FD 78.5, class coverage 1.0, prompt-class accuracy 0.98 (training phrasings
0.99, held-out 0.953), recall 0.17; the teacher at 35 NFE guided (w = 2): FD 29.0, accuracy 0.96
(held-out 0.91), recall 0.77; unguided: FD 4.6, accuracy 0.81 (held-out 0.69). The held-out
accuracy target (≥ 0.95) is met; the FD target (≤ 1.5 × 29.0 = 43.5) is NOT: the student
collapses within classes (recall 0.17). BENCHMARKS.md "Digits text-to-image" has every row.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method.divergence = "js"
  cfg.method.guidance_scale = 2.0
  cfg.diffusion.sigma_init = 2.5
  return cfg
