"""f-distill (Jensen-Shannon) with teacher guidance of the committed digits text-to-image teacher
into a one-step generator: the offline text-to-image quickstart.

Teacher: fdistill_jax/assets/digits_t2i_teacher (a 4-block PixArt-α-architecture transformer on
16×16×1 pixels, trained by configs/teachers/digits_t2i.py), prompts from the committed cache
fdistill_jax/assets/digits_t2i_prompts (tiny T5; 7 training and 3 held-out phrasings per digit).
The teacher's score inside the generator loss is guided with w = method.guidance_scale (FastGen's
placement); the GAN branch reads the teacher's last block on real digits paired with training
prompts of their class. final_metrics.json: prompt-class accuracy (train / held-out phrasings),
digits FD and class coverage for the student and the teacher at 1/2/4/35 NFE, guided and not.

Command:
  python -m fdistill_jax.main --config=configs/digits_t2i_js.py --workdir=runs/digits_t2i_js
Expected: RESULT PENDING.
"""
from fdistill_jax import defaults


def get_config():
  cfg = defaults.digits_t2i_distill()
  cfg.method.divergence = "js"
  cfg.method.guidance_scale = 2.0
  return cfg
