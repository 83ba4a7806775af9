"""ByT5's byte-level tokenisation in numpy (transformers' `ByT5Tokenizer(extra_ids=0)`), so the
JAX process tokenises prompts exactly as the saved tokenizer does in PyTorch, with no vocabulary.

Ids: <pad> 0, </s> 1, <unk> 2, then byte b of the UTF-8 text -> b + 3 (vocabulary 259). A
prompt becomes its bytes + </s>, truncated to max_length − 1 bytes and padded with <pad>
(transformers' padding='max_length', truncation=True, add_special_tokens=True). No word is
ever unknown: a new word, a plural or a punctuation mark is its own bytes.
Prompts are first preprocessed as tools/encode_prompts does by default (lower().strip()).

`write_tokenizer(folder, max_length)` writes the tokenizer_config.json that
`ByT5Tokenizer(extra_ids=0, model_max_length=max_length).save_pretrained(folder)` writes, so
`AutoTokenizer.from_pretrained(folder, local_files_only=True)` loads it (tests/test_t5.py) and
encode_prompts reads its max length from `model_max_length`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from etils import epath

from fdistill_jax import fileio

PAD, EOS, UNK = 0, 1, 2
OFFSET = 3  # ids of the three specials come first.
VOCAB_SIZE = 256 + OFFSET
SPECIALS = ("<pad>", "</s>", "<unk>")


def preprocess(texts: Sequence[str]) -> list[str]:
  """encode_prompts' default preprocessing (PixArtAlphaPipeline without caption cleaning)."""
  return [t.lower().strip() for t in texts]


def tokenize(texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32 [N, L], mask int32 [N, L]) of already preprocessed texts, L = max_length."""
  if max_length < 2:
    raise ValueError(f"max_length={max_length}: needs room for one byte and </s>")
  ids = np.full((len(texts), max_length), PAD, np.int32)
  for i, t in enumerate(texts):
    if any(s in t for s in SPECIALS):  # ByT5Tokenizer would read these as one special token.
      raise ValueError(f"prompt {t!r} contains a special token string {SPECIALS}")
    b = np.frombuffer(t.encode("utf-8"), np.uint8)[:max_length - 1].astype(np.int32) + OFFSET
    ids[i, :len(b)] = b
    ids[i, len(b)] = EOS
  return ids, (ids != PAD).astype(np.int32)


def max_bytes(texts: Sequence[str]) -> int:
  """Length in tokens of the longest text (its bytes + </s>): the max_length that truncates none."""
  return max(len(t.encode("utf-8")) for t in texts) + 1


def tokenizer_config(max_length: int) -> dict:
  """tokenizer_config.json of ByT5Tokenizer(extra_ids=0, model_max_length=max_length)."""
  token = lambda s: {"content": s, "lstrip": True, "normalized": True, "rstrip": True,
                     "single_word": False, "special": False}
  return {"added_tokens_decoder": {str(i): token(s) for i, s in enumerate(SPECIALS)},
          "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "extra_ids": 0,
          "extra_special_tokens": [], "model_max_length": int(max_length),
          "tokenizer_class": "ByT5Tokenizer"}


def write_tokenizer(folder: str, max_length: int) -> None:
  """Writes the byte tokenizer's tokenizer_config.json into `folder` (local or gs://)."""
  fileio.write_json(epath.Path(folder) / "tokenizer_config.json", tokenizer_config(max_length),
                    indent=2)
