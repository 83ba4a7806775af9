"""The digits text-to-image teacher that reads what people type: the PixArt-α-architecture
transformer of configs/teachers/digits_t2i.py (4 blocks, hidden 64, patch 2, 16×16×1 pixels;
caption_channels 64) reading a tiny byte-level T5 encoder (2 blocks, d_model 64, 4 heads,
gated-GELU d_ff 128, 32 relative-position buckets up to distance 64; ByT5's tokenizer, so no
word is ever unknown). Made as PixArt-α was made, in miniature, in three commands:

1. The T5 is pretrained on text alone (tools/pretrain_text_encoder.py: which digit does a
   phrasing name, over the 179,199 training phrasings of data/digit_phrasings.py: templates ×
   fillers × punctuation × number words / Capitalised / UPPER / numerals / plurals, with
   distractor words), as PixArt's T5 was pretrained before PixArt saw it;
2. the transformer starts from the committed class-prompt teacher (assets/digits_t2i_teacher)
   with its caption projection's input layer re-initialised for the 64-d T5 states
   (tools/recaption_pixart.py), as PixArt-α starts from a class-conditional DiT;
3. both train together on the digits (this config): each image is paired with a random TRAINING
   phrasing of its class drawn from (seed, step), 10 % of the conditions drop to the tokenised ""
   for classifier-free guidance, ε-MSE-like weighting as configs/teachers/digits_t2i.py, cosine
   lr decay over 3,000 steps; the T5's lr is TEXT_LR_SCALE × the transformer's.

  python -m fdistill_jax.tools.pretrain_text_encoder --out=runs/digits_t5 --steps=2500 --batch=64
  python -m fdistill_jax.tools.recaption_pixart --src=fdistill_jax/assets/digits_t2i_teacher \\
      --caption_channels=64 --out=runs/digits_t2i_text_init
  python -m fdistill_jax.main --config=configs/teachers/digits_t2i_text.py \\
      --workdir=runs/digits_t2i_text_teacher
Then export (diffusers/ transformer + text_encoder/ T5 with its byte tokenizer), encode the
prompt cache the distillation configs read (torch extra), and copy both into the package:
  python -m fdistill_jax.export --config=configs/teachers/digits_t2i_text.py \\
      --workdir=runs/digits_t2i_text_teacher --out=runs/digits_t2i_text_teacher/export
  python -m fdistill_jax.tools.encode_prompts --prompts=fdistill_jax/assets/digits_prompts_v2.json \\
      --model=runs/digits_t2i_text_teacher/export/text_encoder \\
      --out=runs/digits_t2i_text_teacher/prompts
(encode_prompts reads max_length 64 from the exported tokenizer.) The final evaluation
(DPM-Solver++(2M), 35 NFE, w = 2, raw params) reports prompt accuracy on the training and
HELD-OUT phrasings of fdistill_jax/assets/digits_prompts_v2.json (templates training never uses:
"draw a 7", "an image of the numeral 7", "Seven", "7 written by hand", ...).

How the committed assets were made: steps 1–3 above (2026-12-07, one CPU core each beside
another run: pretraining 335 s, teacher 2,461 s at 1.3–1.6 steps/s), exported, the cache encoded,
then copied: export/diffusers/* -> fdistill_jax/assets/digits_t2i_text_teacher/,
export/text_encoder/* -> assets/digits_t2i_text_encoder/, prompts/* -> assets/digits_t2i_text_prompts/.
Expected: pretraining alone reads the 300 held-out phrasings of data/digit_phrasings at accuracy
0.997 (0.903 before the distractor words were added: "...everywhere" read as a 7); the teacher at
step 3,000 (raw params, 35 NFE, w = 2, 560 samples = 2 per prompt): digits FD 39.5, recall 0.73,
precision 0.53, prompt accuracy 0.98 (training phrasings 0.988, held-out 0.95; with 50 samples
per held-out prompt, as the distillation configs evaluate it: see configs/digits_t2i_js.py).
With the T5 at 0.1 × the transformer's lr (TEXT_LR_SCALE = 0.1) the same run reached only 0.81
(held-out 0.725): the pretrained T5 must still move for the transformer's new caption layer.
BENCHMARKS.md "Digits text-to-image students".
"""
from fdistill_jax import defaults

TEXT_LR_SCALE = 1.0


def get_config():
  cfg = defaults.digits_t2i_text_teacher()
  cfg.teacher.checkpoint = "runs/digits_t2i_text_init"  # step 2
  cfg.teacher.text_encoder.checkpoint = "runs/digits_t5"  # step 1
  cfg.optim.generator.lr_scales = (("^text_encoder/", TEXT_LR_SCALE),)
  return cfg
