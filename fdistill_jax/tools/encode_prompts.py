"""Encode prompts once with T5 (PyTorch transformers) into a sharded, resumable prompt cache.

  python -m fdistill_jax.tools.encode_prompts --prompts=captions.txt --out=/data/t5_cache \\
      --model=/models/PixArt-XL-2-512x512 [--max_length=N] [--shard_size=4096] \\
      [--batch_size=32] [--device=cpu|cuda] [--model_dtype=float32|bfloat16] \\
      [--dtype=float32|bfloat16] [--clean_caption]

--prompts: a text file with one prompt per line (blank lines skipped), a COCO captions JSON
({"annotations": [{"caption": ...}, ...]}, in file order) or a labelled prompt JSON
({"prompts": [{"text": ..., "label": int, "heldout": bool}, ...]}, e.g.
fdistill_jax/assets/digits_prompts.json), whose labels (−1 when absent) and heldout flags go to
the cache index (PromptCache.labels / .heldout). --model: a local T5 encoder folder with its
tokenizer, or a PixArt pipeline folder (text_encoder/ and tokenizer/ are used); folders are read
offline (local_files_only), e.g. the committed tiny fdistill_jax/assets/digits_t5, or the
text_encoder/ folder that `python -m fdistill_jax.export` writes for a teacher trained with its
own byte-level T5 (configs/teachers/digits_t2i_text.py).
--max_length (tokens per prompt, </s> included): given, or else read from the folder: a T5
folder whose tokenizer sets `model_max_length` (the byte tokenizer of an exported text encoder
does) uses that; a PixArt pipeline folder, or a tokenizer without it, uses PixArt's 120 (T5-XXL's
own tokenizer says 512: pass --max_length=120 for PixArt with a bare T5-XXL folder). The
length is stored in the cache index; the t2i experiment refuses a cache whose length differs
from config.teacher.max_length.

Encoding follows PixArtAlphaPipeline.encode_prompt (diffusers 0.42.1): each prompt is
preprocessed (lower-cased and stripped, or diffusers' caption cleaning with --clean_caption,
which needs bs4 and ftfy; the pipeline's __call__ cleans captions by default when both are
installed and falls back to lower/strip otherwise), tokenised with padding="max_length",
max_length (120 for PixArt), truncation and add_special_tokens (the trailing </s>), and `T5EncoderModel(ids, attention_mask=mask)[0]` is kept
with that mask. The empty prompt "" is encoded the same way: it is the pipeline's negative prompt
for classifier-free guidance. Reader: `fdistill_jax.data.prompt_cache.load_prompt_cache`.
Rerunning with the same arguments skips finished shards.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np
from etils import epath

from fdistill_jax import fileio
from fdistill_jax.data import prompt_cache as pc

PIXART_MAX_LENGTH = 120  # PixArtAlphaPipeline's max_sequence_length.


def read_prompts(path: str) -> list[str]:
  """Prompts from a text file (one per line), a COCO captions JSON or a labelled prompt JSON."""
  return read_prompt_file(path)[0]


def read_prompt_file(path: str) -> tuple[list[str], dict]:
  """(prompts, extra index fields): {"labels": [N] int, "heldout": [N] bool} for a labelled
  prompt JSON, {} otherwise."""
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"--prompts: no such file: {path}")
  text = epath.Path(path).read_text(encoding="utf-8")
  extra = {}
  if path.lower().endswith(".json"):
    try:
      doc = json.loads(text)
      if isinstance(doc, dict) and "prompts" in doc:
        rows = doc["prompts"]
        prompts = [str(r["text"]) for r in rows]
        extra = {"labels": [int(r.get("label", -1)) for r in rows],
                 "heldout": [bool(r.get("heldout", False)) for r in rows]}
      else:
        prompts = [str(a["caption"]) for a in doc["annotations"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{path}: expected a COCO captions JSON "
                       '{"annotations": [{"caption": ...}, ...]} or a labelled prompt JSON '
                       '{"prompts": [{"text": str, "label": int, "heldout": bool}, ...]}') from e
  else:
    prompts = [line for line in text.splitlines() if line.strip()]
  if not prompts:
    raise ValueError(f"{path}: no prompts found")
  return prompts, extra


def preprocess(prompts: Sequence[str], clean_caption: bool) -> list[str]:
  """PixArtAlphaPipeline._text_preprocessing: lower().strip(), or its caption cleaning."""
  if not clean_caption:
    return [p.lower().strip() for p in prompts]
  # pylint: disable=import-outside-toplevel,protected-access
  from diffusers import PixArtAlphaPipeline
  from diffusers.utils import is_bs4_available, is_ftfy_available
  if not (is_bs4_available() and is_ftfy_available()):
    raise ImportError("--clean_caption needs beautifulsoup4 and ftfy (pip install "
                      "beautifulsoup4 ftfy)")
  pipe = PixArtAlphaPipeline.__new__(PixArtAlphaPipeline)  # only the cleaning methods are used.
  return pipe._text_preprocessing(list(prompts), clean_caption=True)


class T5Encoder:
  """The tokenizer and T5EncoderModel of a folder, on `device` in `model_dtype`."""

  def __init__(self, model: str, device: str = "cpu", model_dtype: str = "float32",
               max_length: int | None = None):
    # pylint: disable=import-outside-toplevel
    import torch
    from transformers import AutoTokenizer, T5EncoderModel
    enc_dir, tok_dir = model, model
    if os.path.isdir(os.path.join(model, "text_encoder")):
      enc_dir = os.path.join(model, "text_encoder")
      tok_dir = os.path.join(model, "tokenizer")
    self.torch, self.device = torch, device
    local = os.path.isdir(model)  # a folder never triggers a hub look-up.
    self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=local)
    self.max_length = max_length or default_max_length(self.tokenizer, enc_dir != model)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16}[model_dtype]
    self.model = T5EncoderModel.from_pretrained(enc_dir, dtype=dtype,
                                                local_files_only=local).to(device).eval()
    self.dim = self.model.config.d_model

  def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32 [n, L, D], mask uint8 [n, L]) of preprocessed prompts."""
    torch = self.torch
    tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length,
                         truncation=True, add_special_tokens=True, return_tensors="pt")
    with torch.no_grad():
      out = self.model(tok.input_ids.to(self.device),
                       attention_mask=tok.attention_mask.to(self.device))[0]
    return out.float().cpu().numpy(), tok.attention_mask.numpy().astype(np.uint8)


def default_max_length(tokenizer, pipeline: bool) -> int:
  """The folder's length when --max_length is not given (module docstring): the tokenizer's
  model_max_length for a T5 folder that sets it, else PixArt's 120."""
  n = getattr(tokenizer, "model_max_length", None)
  if pipeline or not n or n >= PIXART_MAX_LENGTH * 10 ** 6:  # transformers' "unset" is 1e30.
    return PIXART_MAX_LENGTH
  return int(n)


def _index(prompts, args, dim: int) -> dict:
  n = len(prompts)
  return {"format": pc.FORMAT, "num_prompts": n, "max_length": args.max_length, "dim": dim,
          "dtype": args.dtype, "shard_size": args.shard_size,
          "num_shards": math.ceil(n / args.shard_size),
          "prompts_sha256": pc.prompts_digest(prompts),
          "model": args.model, "model_dtype": args.model_dtype,
          "preprocess": "clean_caption" if args.clean_caption else "lower_strip", "complete": False}


RESUME_KEYS = ("num_prompts", "max_length", "dim", "dtype", "shard_size", "prompts_sha256",
               "model_dtype", "preprocess")  # What the finished shards depend on.


def encode_to_cache(prompts: Sequence[str], out: str, encoder, args,
                    extra: dict | None = None) -> dict:
  """Encode `prompts` into the cache directory `out`, skipping shards already there (and
  readable; a damaged one is set aside as <name>.corrupt and rewritten). extra: per-prompt index
  fields ("labels", "heldout") from read_prompt_file. args.max_length None: the encoder's (read
  from its folder)."""
  if args.max_length is None:
    args = argparse.Namespace(**{**vars(args), "max_length": encoder.max_length})
  prompts = preprocess(prompts, args.clean_caption)
  index = {**_index(prompts, args, encoder.dim), **(extra or {})}
  pc.LAYOUT.resume(out, index, keys=RESUME_KEYS, read=pc.read_index,
                   fix="use a new --out or the arguments of the interrupted run")
  index_path = pc.LAYOUT.manifest_path(out)
  fileio.write_json(index_path, index)  # complete: False until every shard is there.
  store = np.float32 if args.dtype == "float32" else _bfloat16()
  size = args.shard_size
  chunk = lambda i: prompts[i * size:(i + 1) * size]

  def make(i: int, path: str) -> None:
    embs, masks = zip(*[encoder(chunk(i)[b:b + args.batch_size])
                        for b in range(0, len(chunk(i)), args.batch_size)])
    pc.write_shard(path, np.concatenate(embs).astype(store), np.concatenate(masks), chunk(i),
                   i * size)
    print(f"{path}: {len(chunk(i))} prompts", file=sys.stderr)

  check = lambda i, path: pc.read_shard(path, rows=len(chunk(i)), max_length=args.max_length,
                                        dim=encoder.dim)
  pc.LAYOUT.build(pc.LAYOUT.paths(out, index["num_shards"]), make, check=check)
  e, m = encoder([""])
  pc.write_shard(str(epath.Path(out) / pc.NULL), e.astype(store), m, [""], 0)
  index["complete"] = True
  fileio.write_json(index_path, index)
  return index


def _bfloat16():
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  return ml_dtypes.bfloat16


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m fdistill_jax.tools.encode_prompts",
                              description=__doc__.split("\n")[0])
  p.add_argument("--prompts", required=True, help="text file (one per line), COCO captions JSON "
                 "or labelled prompt JSON")
  p.add_argument("--out", required=True, help="cache directory (created; resumed if present)")
  p.add_argument("--model", required=True, help="T5 folder or PixArt pipeline folder")
  p.add_argument("--max_length", type=int, default=None,
                 help="tokens per prompt; default: the T5 folder's tokenizer model_max_length, "
                 "else 120 (PixArt)")
  p.add_argument("--shard_size", type=int, default=4096)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
  p.add_argument("--model_dtype", default="float32", choices=("float32", "bfloat16", "float16"))
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="stored embedding dtype")
  p.add_argument("--clean_caption", action="store_true",
                 help="diffusers' caption cleaning (needs bs4, ftfy) instead of lower().strip()")
  args = p.parse_args(argv)
  for k in ("max_length", "shard_size", "batch_size"):
    if getattr(args, k) is not None and getattr(args, k) < 1:
      p.error(f"--{k} must be >= 1")
  return args


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  prompts, extra = read_prompt_file(args.prompts)
  encoder = T5Encoder(args.model, args.device, args.model_dtype, args.max_length)
  index = encode_to_cache(prompts, args.out, encoder, args, extra)
  print(f"{args.out}: {index['num_prompts']} prompts in {index['num_shards']} shards, "
        f"embeddings [{index['max_length']}, {index['dim']}] {index['dtype']}")


if __name__ == "__main__":
  main()
