"""Build a tiny T5 encoder folder (word-level tokenizer + random T5EncoderModel) for offline tests
and the digits text-to-image quickstart; nothing is downloaded.

  python -m fdistill_jax.tools.make_tiny_t5 --prompts=fdistill_jax/assets/digits_prompts.json \\
      --out=fdistill_jax/assets/digits_t5 [--d_model=32] [--num_layers=2] [--seed=0]

Tokenizer (the `tokenizers` library, saved as a transformers PreTrainedTokenizerFast):
lower-casing, then the Whitespace pre-tokenizer (runs of word characters and runs of punctuation
are separate tokens: "seven, written" -> "seven" "," "written"), word-level vocabulary
<pad>=0, </s>=1, <unk>=2, then every token of every prompt of --prompts (training and held-out
ones: the vocabulary is not training data) in sorted order; unknown words map to <unk>, and </s>
is appended as T5 does. Model: transformers.T5EncoderModel (T5 v1.1 layout, gated-GELU) with
transformers' own initialisation under torch.manual_seed(seed), saved as model.safetensors.
The committed digits_t5 folder is the output of the command above; its weights are committed, so
caches do not depend on torch's initialisers staying the same across versions.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from fdistill_jax.tools import encode_prompts as ep

SPECIALS = ("<pad>", "</s>", "<unk>")


def vocabulary(prompts: Sequence[str]) -> dict[str, int]:
  """Word-level vocabulary {token: id}: the specials, then the prompts' tokens sorted."""
  from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
  split = pre_tokenizers.Whitespace()
  words = {w for p in prompts for w, _ in split.pre_tokenize_str(p.lower())}
  return {**{s: i for i, s in enumerate(SPECIALS)},
          **{w: i + len(SPECIALS) for i, w in enumerate(sorted(words - set(SPECIALS)))}}


def build(prompts: Sequence[str], out: str, *, d_model: int = 32, num_layers: int = 2,
          num_heads: int = 4, d_ff: int = 64, seed: int = 0) -> None:
  """Write tokenizer files, config.json and model.safetensors of a tiny T5 encoder to `out`."""
  # pylint: disable=import-outside-toplevel
  import tokenizers
  import torch
  import transformers
  vocab = vocabulary(prompts)
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = tokenizers.normalizers.Lowercase()
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="$A </s>", special_tokens=[("</s>", 1)])  # T5 appends </s>.
  transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
      unk_token="<unk>").save_pretrained(out)
  if d_model % num_heads:
    raise ValueError(f"--d_model={d_model} must be a multiple of --num_heads={num_heads}")
  cfg = transformers.T5Config(
      vocab_size=len(vocab), d_model=d_model, d_kv=d_model // num_heads, num_heads=num_heads,
      d_ff=d_ff, num_layers=num_layers, feed_forward_proj="gated-gelu", dropout_rate=0.0,
      relative_attention_num_buckets=8, relative_attention_max_distance=16,
      pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
  torch.manual_seed(seed)
  transformers.T5EncoderModel(cfg).eval().save_pretrained(out, safe_serialization=True)


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m fdistill_jax.tools.make_tiny_t5",
                              description=__doc__.split("\n")[0])
  p.add_argument("--prompts", required=True, help="prompt file the vocabulary comes from "
                 "(any format of encode_prompts)")
  p.add_argument("--out", required=True)
  p.add_argument("--d_model", type=int, default=32)
  p.add_argument("--num_layers", type=int, default=2)
  p.add_argument("--num_heads", type=int, default=4)
  p.add_argument("--d_ff", type=int, default=64)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  build(ep.read_prompts(a.prompts), a.out, d_model=a.d_model, num_layers=a.num_layers,
        num_heads=a.num_heads, d_ff=a.d_ff, seed=a.seed)
  print(f"{a.out}: tiny T5 encoder (d_model {a.d_model}, {a.num_layers} layers)")


if __name__ == "__main__":
  main()
