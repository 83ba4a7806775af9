"""Pretrain the digits text encoder in miniature, from text alone, before the teacher trains it.

  python -m fdistill_jax.tools.pretrain_text_encoder --out=runs/digits_t5_pretrained \\
      [--steps=3000] [--batch=256] [--lr=1e-3] [--seed=0]

A real PixArt reads a T5 that was pretrained on text before PixArt ever saw it; trained from
random weights by the denoising loss alone, our byte-level T5 (data/byte_tokenizer.py) learns
which digit a phrasing names slowly (the joint pilot: prompt accuracy 0.26 / 0.43 / 0.64 after
2,000 / 3,000 / 4,000 teacher steps). This tool is its pretraining: a sentence-classification
objective on the training phrasings of data/digit_phrasings.py (179,199 phrasings from
templates × fillers × punctuation × number words, Capitalised, UPPER, numerals, plurals) — the
masked mean of the encoder's last hidden state, a linear head, cross-entropy against the digit
the phrasing names — so that "seven", "7", "sevens" and "7s" reach the teacher as one meaning.
The head is discarded (as T5's LM head is); the encoder is written as a transformers
T5EncoderModel folder with the byte tokenizer, which configs/teachers/digits_t2i_text.py reads
as teacher.text_encoder.checkpoint and then trains further with the teacher.
Held-out phrasings (templates training never uses) are only evaluated: their accuracy is in
<out>/pretrain.json with the training curve.
Sizes: defaults.DIGITS_T5 (d_model 64 = the digits transformer's caption_channels).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdistill_jax import defaults, fileio
from fdistill_jax.data import byte_tokenizer as bt
from fdistill_jax.data import digit_phrasings as dp
from fdistill_jax.models import t5 as t5_lib

NUM_CLASSES = 10


class Classifier(nn.Module):
  """T5 encoder + masked mean pool + linear head: (ids [B, L], mask [B, L]) -> logits [B, 10]."""
  config: t5_lib.T5Config

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    h = t5_lib.T5Encoder(self.config, name="encoder")(ids, mask)
    m = mask.astype(jnp.float32)[..., None]
    pooled = jnp.sum(h * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    return nn.Dense(NUM_CLASSES, name="head")(pooled)


def t5_config() -> t5_lib.T5Config:
  return t5_lib.T5Config.from_dict({k: v for k, v in defaults.DIGITS_T5.items()
                                    if k != "checkpoint"})


def pretrain(out: str, *, steps: int = 3000, batch: int = 256, lr: float = 1e-3, seed: int = 0,
             max_length: int = 64, eval_every: int = 500,
             config: t5_lib.T5Config | None = None) -> dict:
  """Trains the classifier, writes the encoder folder to `out`; returns the metrics dict."""
  config = config or t5_config()
  texts, labels = dp.training_pool()
  held_texts, held_labels = dp.heldout_pool()
  longest = max(bt.max_bytes(texts), bt.max_bytes(held_texts))
  if longest > max_length:
    raise ValueError(f"--max_length={max_length} truncates phrasings of {longest} tokens")
  ids, mask = bt.tokenize(texts, max_length)
  held_ids, held_mask = bt.tokenize(held_texts, max_length)
  model = Classifier(config)
  key = jax.random.PRNGKey(seed)
  params = model.init(key, jnp.asarray(ids[:2]), jnp.asarray(mask[:2], jnp.float32))["params"]
  # The encoder starts from transformers' random init, as the joint teacher's would.
  params = {**params, "encoder": t5_lib.init_params(config, jax.random.fold_in(key, 1))}
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, min(200, steps // 10 + 1), steps),
                   weight_decay=0.0)
  opt = tx.init(params)

  def loss_fn(p, i, m, y):
    logits = model.apply({"params": p}, i, m)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

  @jax.jit
  def step(p, o, i, m, y):
    (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(p, i, m, y)
    upd, o = tx.update(g, o, p)
    return optax.apply_updates(p, upd), o, loss, jnp.mean(jnp.argmax(logits, -1) == y)

  predict = jax.jit(lambda p, i, m: jnp.argmax(model.apply({"params": p}, i, m), -1))

  def accuracy(p, i, m, y) -> float:
    pred = np.concatenate([np.asarray(predict(p, jnp.asarray(i[s:s + 1024]),
                                              jnp.asarray(m[s:s + 1024], jnp.float32)))
                           for s in range(0, len(i), 1024)])
    return float(np.mean(pred == y))

  rng = np.random.default_rng(seed)
  curve, t0 = [], time.time()
  for k in range(1, steps + 1):
    pick = rng.integers(0, len(ids), batch)
    params, opt, loss, acc = step(params, opt, jnp.asarray(ids[pick]),
                                  jnp.asarray(mask[pick], jnp.float32), jnp.asarray(labels[pick]))
    if k % eval_every == 0 or k == steps:
      row = {"step": k, "loss": float(loss), "batch_accuracy": float(acc),
             "heldout_accuracy": accuracy(params, held_ids, held_mask, held_labels)}
      curve.append(row)
      print(json.dumps(row), flush=True)
  from fdistill_jax.convert import t5 as conv  # pylint: disable=import-outside-toplevel
  conv.write_folder(jax.device_get(params["encoder"]), config, out, max_length=max_length)
  metrics = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "max_length": max_length,
             "train_phrasings": len(texts), "heldout_phrasings": len(held_texts),
             "heldout_accuracy": curve[-1]["heldout_accuracy"],
             "train_accuracy_sample": accuracy(params, ids[::50], mask[::50], labels[::50]),
             "seconds": time.time() - t0, "curve": curve}
  fileio.write_json(os.path.join(out, "pretrain.json"), metrics, indent=1)
  return metrics


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m fdistill_jax.tools.pretrain_text_encoder",
                              description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="folder for the encoder (transformers T5 + byte "
                 "tokenizer) and pretrain.json")
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max_length", type=int, default=64)
  a = p.parse_args(argv)
  for k in ("steps", "batch", "max_length"):
    if getattr(a, k) < 1:
      p.error(f"--{k} must be >= 1")
  m = pretrain(a.out, steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, max_length=a.max_length)
  print(f"{a.out}: held-out phrasing accuracy {m['heldout_accuracy']:.3f} after {a.steps} steps "
        f"({m['seconds']:.0f} s)")


if __name__ == "__main__":
  main()
