"""Train the digits text-to-image teacher WITH its own text encoder: the PixArt-α-architecture
transformer of configs/teachers/digits_t2i.py (4 blocks, hidden 64, patch 2, 16×16×1 pixels;
caption_channels 64) and a tiny byte-level T5 encoder (2 blocks, d_model 64, 4 heads, gated-GELU
d_ff 128, 32 relative-position buckets up to distance 64), trained jointly from the denoising
loss, as a real T5 is pretrained before PixArt freezes it. Prompts are UTF-8 bytes (ByT5's
tokenizer, max_length 64: no word is ever unknown); each digit image is paired with a random
TRAINING phrasing of its class (data/digit_phrasings.py: 116,000 phrasings from templates ×
fillers × punctuation × number words / Capitalised / UPPER / numerals / plurals), drawn from
(seed, step); 10 % of the conditions drop to the tokenised "" for classifier-free guidance. The
final evaluation (DPM-Solver++(2M), 35 NFE, w = 2) reports prompt accuracy on the training and
HELD-OUT phrasings of fdistill_jax/assets/digits_prompts_v2.json (templates training never uses:
"draw a 7", "an image of the numeral 7", "Seven", "7 written by hand", ...).

Train, export (diffusers/ transformer + text_encoder/ T5 with its byte tokenizer), encode the
prompt cache the distillation configs read (torch extra), then copy into the package:
  python -m fdistill_jax.main --config=configs/teachers/digits_t2i_text.py \\
      --workdir=runs/digits_t2i_text_teacher
  python -m fdistill_jax.export --config=configs/teachers/digits_t2i_text.py \\
      --workdir=runs/digits_t2i_text_teacher --out=runs/digits_t2i_text_teacher/export
  python -m fdistill_jax.tools.encode_prompts --prompts=fdistill_jax/assets/digits_prompts_v2.json \\
      --model=runs/digits_t2i_text_teacher/export/text_encoder \\
      --out=runs/digits_t2i_text_teacher/prompts
(encode_prompts reads max_length 64 from the exported tokenizer.) A distillation config then
uses teacher.checkpoint = export/diffusers, teacher.prompt_cache = that cache,
teacher.max_length = 64 and pixart_config = defaults.DIGITS_T2I_TEXT_PIXART.

Expected (pilot, 2026-12-06, 2,500 steps with the cosine decay over 2,500, one CPU core; raw
params, 35 NFE, w = 2): see BENCHMARKS.md "Digits text-to-image: a trained text encoder". The
full run (train.steps = 12,000 as the committed teacher) is for the lead to launch.
"""
from fdistill_jax import defaults


def get_config():
  return defaults.digits_t2i_text_teacher()
