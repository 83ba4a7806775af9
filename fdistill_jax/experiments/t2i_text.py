"""Text-to-image with its own text encoder: a tiny T5 trained jointly with the PixArt transformer.

On when config.teacher.text_encoder is set (configs/teachers/digits_t2i_text.py). A real PixArt
reads a pretrained, frozen T5-XXL through a prompt cache; here the T5 (models/t5.py) learns from
the denoising loss with the transformer, from bytes (data/byte_tokenizer.py: no vocabulary, so
no unseen word collapses to <unk>), and is then exported and frozen like PixArt's:
  conditions   conditioning.Tokens {"ids": int32 [B, L], "mask": float32 [B, L]}, L =
               teacher.max_length; ∅ = the tokenised "" (</s> alone), so edm_training's
               method.cond_drop teaches classifier-free guidance's null as before;
  params       generator = {"transformer": PixArt params, "text_encoder": T5 params}; `encode`
               runs T5 on the ids and hands PixArt {"embeddings": last hidden state [B, L, D],
               "mask"} (D = d_model = the transformer's caption_channels);
  prompts      teacher.prompts, a labelled prompt JSON (tools/encode_prompts' format, e.g.
               fdistill_jax/assets/digits_prompts_v2.json): the evaluation prompts, training
               and held-out phrasings, labels for the digits metric;
  pool         teacher.train_prompts, what training pairs images with (by class, from
               (seed, step) as for a cache): 'digit_phrasings' = every training phrasing of
               data/digit_phrasings (179,199), '' = the training rows of teacher.prompts, or
               another labelled prompt JSON (its rows not marked heldout);
  encoder      teacher.text_encoder: T5 sizes (models/t5.T5Config fields; vocabulary 259 bytes
               + specials) with transformers' random init from teacher.init_seed, or
               `checkpoint`, a transformers T5 folder (e.g. one exported here).
Prompts are preprocessed as tools/encode_prompts does (lower().strip()). `export.py` writes the
encoder as a transformers T5EncoderModel folder with the byte tokenizer (text_encoder/, beside
diffusers/), which `tools/encode_prompts --model=<it>` turns into the prompt cache that
distillation configs read; its embeddings equal `encode`'s (tests/test_t2i_text.py).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from fdistill_jax import conditioning
from fdistill_jax.data import byte_tokenizer as bt
from fdistill_jax.models import t5 as t5_lib
from fdistill_jax import validation as V
from fdistill_jax.validation import need

T5_FIELDS = tuple(f.name for f in dataclasses.fields(t5_lib.T5Config) if f.name != "vocab_size")
POOLS = ("", "digit_phrasings")


def enabled(cfg) -> bool:
  return bool(cfg.teacher.get("text_encoder"))


def frozen_encode(params, cond):
  """The identity `encode` of cached embeddings: (transformer params, cond) as given."""
  return params, cond


@dataclasses.dataclass
class TokenPrompts:
  """Tokenised prompts, read like a data.prompt_cache.PromptCache: ids / mask int32 [N, L],
  prompts (preprocessed), labels int32 [N] or None, heldout bool [N] or None, null_ids /
  null_mask int32 [1, L] (the tokenised "")."""
  ids: np.ndarray
  mask: np.ndarray
  prompts: list[str]
  labels: np.ndarray | None
  heldout: np.ndarray | None
  null_ids: np.ndarray
  null_mask: np.ndarray
  index: dict

  def __len__(self) -> int:
    return len(self.prompts)

  def condition(self, idx) -> dict[str, np.ndarray]:
    return {"ids": self.ids[idx], "mask": self.mask[idx]}

  @classmethod
  def tokenize(cls, texts, labels, heldout, max_length: int, source: str) -> "TokenPrompts":
    texts = bt.preprocess(texts)
    ids, mask = bt.tokenize(texts, max_length)
    null_ids, null_mask = bt.tokenize([""], max_length)
    return cls(ids, mask, texts, None if labels is None else np.asarray(labels, np.int32),
               None if heldout is None else np.asarray(heldout, bool), null_ids, null_mask,
               {"model": source, "max_length": max_length})


def read_prompt_json(path: str, max_length: int) -> TokenPrompts:
  """The labelled prompt JSON at `path`, tokenised (labels, heldout flags kept)."""
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"config.teacher.prompts={path!r}: no such labelled prompt JSON")
  rows = json.loads(epath.Path(path).read_text(encoding="utf-8"))["prompts"]
  return TokenPrompts.tokenize([r["text"] for r in rows], [int(r.get("label", -1)) for r in rows],
                               [bool(r.get("heldout", False)) for r in rows], max_length, path)


def training_pool(cfg, prompts: TokenPrompts) -> TokenPrompts:
  """The prompts training draws from (teacher.train_prompts; module docstring)."""
  # train_prompts: optional, not resolved (a new field would change the teacher-block digests of
  # existing runs, methods/progressive.student_key); absent = the prompt cache's prompts.
  name, length = cfg.teacher.get("train_prompts", ""), int(cfg.teacher.max_length)
  if name == "digit_phrasings":
    from fdistill_jax.data import digit_phrasings  # pylint: disable=import-outside-toplevel
    texts, labels = digit_phrasings.training_pool()
    return TokenPrompts.tokenize(texts, labels, None, length, name)
  src = prompts if not name else read_prompt_json(name, length)
  keep = np.ones(len(src), bool) if src.heldout is None else ~src.heldout
  return TokenPrompts(src.ids[keep], src.mask[keep], [p for p, k in zip(src.prompts, keep) if k],
                      None if src.labels is None else src.labels[keep], None, src.null_ids,
                      src.null_mask, src.index)


def t5_config(cfg) -> t5_lib.T5Config:
  te = cfg.teacher.text_encoder
  return t5_lib.T5Config(vocab_size=bt.VOCAB_SIZE, **{k: te[k] for k in T5_FIELDS if k in te})


_TE = "teacher.text_encoder"
RULES = {  # Sizes of the jointly trained T5 (types: config_checks.check_types).
    **{f"{_TE}.{k}": V.within(1, 65_536, "an int") for k in ("d_model", "d_kv", "d_ff",
                                                             "num_heads")},
    f"{_TE}.num_layers": V.within(1, 1024, "an int"),
    f"{_TE}.relative_attention_num_buckets": V.within(4, 4096, "an int"),
    f"{_TE}.relative_attention_max_distance": V.within(1, 1 << 20, "an int"),
    f"{_TE}.layer_norm_epsilon": V.within(0, 1, lo_open=True),
}


def check_config(cfg) -> None:
  """The text-encoder fields (ConfigError naming the field)."""
  t = cfg.teacher
  V.check_fields(cfg, RULES)
  need(cfg.method.name == "edm_training", "method.name", cfg.method.name,
       "'edm_training' with teacher.text_encoder (the T5 trains with the teacher; distillation "
       "reads a prompt cache of the exported encoder instead)")
  need(not t.get("prompt_cache"), "teacher.prompt_cache", t.get("prompt_cache"),
       "'' with teacher.text_encoder (prompts are tokenised from teacher.prompts)")
  need(bool(t.get("prompts")), "teacher.prompts", t.get("prompts"),
       "a labelled prompt JSON (the evaluation prompts)")
  need(isinstance(t.get("max_length"), int) and t.max_length >= 2, "teacher.max_length",
       t.get("max_length"), "the token length of a prompt, >= 2 (bytes + </s>)")
  tp = t.get("train_prompts", "")
  need(tp in POOLS or str(tp).endswith(".json"), "teacher.train_prompts", tp,
       f"one of {POOLS} or a labelled prompt JSON")
  te = t.text_encoder
  unknown = sorted(set(te) - set(T5_FIELDS) - {"checkpoint"})
  need(not unknown, "teacher.text_encoder", unknown, f"fields allowed: {T5_FIELDS + ('checkpoint',)}")
  try:
    t5_config(cfg)
  except ValueError as e:
    need(False, "teacher.text_encoder", te.to_dict(), str(e))


@functools.lru_cache(maxsize=2)
def _random_t5(config: t5_lib.T5Config, seed: int):
  """transformers-style random T5 params, memoised (eval and export rebuild the experiment)."""
  key = jax.random.fold_in(jax.random.key(seed, impl="rbg"), 1)  # Not PixArt's init key.
  return jax.device_get(jax.jit(lambda k: t5_lib.init_params(config, k))(key))


def text_encoder(cfg, caption_channels: int) -> tuple[t5_lib.T5Encoder, dict]:
  """(T5Encoder, params) of teacher.text_encoder, checked against the transformer."""
  ckpt = cfg.teacher.text_encoder.checkpoint
  if ckpt:
    from fdistill_jax.convert import t5 as conv  # pylint: disable=import-outside-toplevel
    config, params = conv.load_folder(ckpt)
  else:
    config = t5_config(cfg)
    params = _random_t5(config, int(cfg.teacher.init_seed))
  if config.d_model != caption_channels:
    raise ValueError(f"config.teacher.text_encoder: d_model={config.d_model} must equal the "
                     f"PixArt transformer's caption_channels={caption_channels}")
  if config.vocab_size < bt.VOCAB_SIZE:
    raise ValueError(f"config.teacher.text_encoder: vocab_size={config.vocab_size} is smaller "
                     f"than the byte tokenizer's {bt.VOCAB_SIZE}")
  return t5_lib.T5Encoder(config), params


@dataclasses.dataclass(frozen=True)
class TextSide:
  """What t2i.build needs: the evaluation prompts and training pool (TokenPrompts), the T5
  module and its initial params, and `encode(params, cond) -> (PixArt params, text cond)`."""
  prompts: TokenPrompts
  pool: TokenPrompts
  module: t5_lib.T5Encoder
  params: dict

  def generator_params(self, transformer_params) -> dict:
    return {"transformer": transformer_params, "text_encoder": self.params}

  def condition_spec(self, eval_rows: np.ndarray) -> conditioning.Tokens:
    p = self.prompts
    return conditioning.Tokens(
        int(p.ids.shape[1]), prompts={"ids": p.ids[eval_rows], "mask": p.mask[eval_rows]},
        null_cond={"ids": p.null_ids[0], "mask": p.null_mask[0]})

  @property
  def encode(self) -> Callable:
    module = self.module

    def encode(params, cond):
      if "ids" not in cond:
        raise ValueError("this teacher reads byte ids through its own T5 (teacher.text_encoder); "
                         f"got a condition with {sorted(cond)} (prompt-cache embeddings): use "
                         "the exported teacher (diffusers/) with a cache of its text_encoder/")
      emb = module.apply({"params": params["text_encoder"]}, cond["ids"], cond["mask"])
      return params["transformer"], {"embeddings": emb, "mask": cond["mask"]}

    return encode


def build(cfg, caption_channels: int) -> TextSide:
  length = int(cfg.teacher.max_length)
  prompts = read_prompt_json(cfg.teacher.prompts, length)
  pool = training_pool(cfg, prompts)
  longest = max(bt.max_bytes(prompts.prompts), bt.max_bytes(pool.prompts))
  if longest > length:
    raise ValueError(f"config.teacher.max_length={length} truncates prompts of {longest} tokens "
                     "(bytes + </s>); raise it")
  module, params = text_encoder(cfg, caption_channels)
  return TextSide(prompts, pool, module, params)


def write_text_encoder(cfg, params, out_dir: str) -> dict:
  """Writes the trained T5 as a transformers folder with the byte tokenizer (model_max_length
  = teacher.max_length); returns its config for export's metadata."""
  from fdistill_jax.convert import t5 as conv  # pylint: disable=import-outside-toplevel
  config = conv.read_config(cfg.teacher.text_encoder.checkpoint) \
      if cfg.teacher.text_encoder.get("checkpoint") else t5_config(cfg)
  conv.write_folder(params, config, out_dir, max_length=int(cfg.teacher.max_length))
  return config.to_transformers()
