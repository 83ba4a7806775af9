"""SiD-LSG (κ1 = κ2 = κ4 = w) of the digits text-to-image teacher into one step, data-free
(training prompts only, no images); the protocol of configs/digits_t2i_js.py.

Teacher: fdistill_jax/assets/digits_t2i_text_teacher (a 4-block PixArt-α-architecture
transformer on 16×16×1 pixels reading a byte-level T5, configs/teachers/digits_t2i_text.py),
frozen; prompts from its cache fdistill_jax/assets/digits_t2i_text_prompts (24 training and 4
held-out phrasings per digit of assets/digits_prompts_v2.json; the held-out ones from templates
the teacher never saw: "draw a 7", "an image of the numeral 7", "Seven", "7 written by hand").
Recipe (issue 25): defaults.eps_teacher (σ_init 2.5; t uniform over the DDPM steps between
σ 0.02 and SD's 14.6 for the generator and the fake score; ε-MSE fake-score loss), FastGen's 1:4
schedule (4 fake-score steps per generator step), guidance w = 1.5 (defaults.DIGITS_T2I_GUIDANCE)
in the loss and for the teacher it is scored against, 600 iterations, batch 32, evaluated as the
0.99-EMA with ramp-up 0.5 (none of the teacher-copy initial weights left).
SiD's settings (Adam β (0, 0.999), no discriminator), the SiD-LSG paper's α = 1, condition
dropout 0.1 for the guided fake score.

Command (about 4 minutes with the teacher's samples cached):
  python -m fdistill_jax.main --config=configs/digits_t2i_sid_lsg.py --workdir=runs/digits_t2i_sid_lsg
Expected (measured 2026-12-07, one shared CPU core per run, seeds 0 / 1; 560 samples = 2
per prompt, 50 per held-out prompt; the guided 35-NFE teacher at w = 1.5 as reference):
FD 13.8 / 14.2 (≤ 1.2 × the teacher's 17.1 = 20.5), FD against the teacher's own
samples 5.5 / 5.5 (the teacher's two draws: 2.1), recall 0.73 / 0.73 (≥ 0.65; teacher
0.87), held-out prompt accuracy 0.958 / 0.967 (≥ 0.95; teacher 0.948), within-prompt
diversity 0.71 / 0.71 (teacher 0.95); raw params FD 17.7 / 17.3, recall 0.65 / 0.72.
Every tried variant, the old teacher's rows and the diagnostics: BENCHMARKS.md "Digits
text-to-image students on their own (issue 25)".
"""
from fdistill_jax import defaults
from fdistill_jax.methods import sid


def get_config():
  cfg = defaults.digits_t2i_distill()
  w = defaults.DIGITS_T2I_GUIDANCE
  cfg.method = sid.method_config(alpha=1.0, kappa_train_fake=w, kappa_fake=w, kappa_real=w,
                                 cond_drop=0.1, critic_steps=4)
  defaults.sid_style(cfg)
  cfg.dataset.name = "prompts"
  return defaults.eps_teacher(cfg)
