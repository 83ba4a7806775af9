"""Cached text-encoder outputs (T5 embeddings + masks) for text-to-image teachers: format, reader.

Written once by `python -m fdistill_jax.tools.encode_prompts` (T5 never runs inside the JAX step).
A cache is a directory:

* `index.json`: {"format": FORMAT, "num_prompts": N, "max_length": L, "dim": D, "dtype",
  "shard_size", "num_shards", "prompts_sha256", "model", "preprocess", "complete"};
* `shard-00000-of-00007.safetensors`, …: "embeddings" [n, L, D] (float32 or bfloat16),
  "mask" [n, L] uint8 (1 = token, 0 = padding), metadata "prompts" (JSON list of the n
  preprocessed prompts) and "start" (index of the first prompt);
* `null.safetensors`: the same for the empty prompt "" (n = 1), PixArt's negative prompt for
  classifier-free guidance;
* optional index fields "labels" (int list [N]: the class of each prompt, −1 unknown) and
  "heldout" (bool list [N]: prompts kept out of training), for class-labelled image data.

Only numpy and safetensors are needed to read it. Files, writes and checks are those of
fdistill_jax/shard_cache.py: shards are written all-or-nothing, so a shard that exists is
complete and an interrupted run resumes by skipping them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Sequence

import numpy as np
from etils import epath

from fdistill_jax import fileio, shard_cache, untrusted

FORMAT = "fdistill_prompt_cache/1"
MAX_INDEX_BYTES = 256 << 20  # Per-prompt labels make an index of 10^7 prompts ~100 MB.
INDEX = "index.json"
NULL = "null.safetensors"
FIX = "write the cache with python -m fdistill_jax.tools.encode_prompts"


class PromptCacheError(shard_cache.ShardError):
  """A cache file is missing, corrupt or inconsistent with the index."""


# The folder's files, writes and checks are shard_cache's; here: what a shard holds.
LAYOUT = shard_cache.Layout("shard-{i:05d}-of-{n:05d}.safetensors", INDEX,
                            what="prompt-cache index", error=PromptCacheError,
                            max_manifest_bytes=MAX_INDEX_BYTES)


def shard_name(i: int, num_shards: int) -> str:
  return LAYOUT.name(i, num_shards)


def prompts_digest(prompts: Sequence[str]) -> str:
  return hashlib.sha256(json.dumps(list(prompts)).encode("utf-8")).hexdigest()


def write_shard(path: str, embeddings: np.ndarray, mask: np.ndarray, prompts: Sequence[str],
                start: int) -> None:
  """Write one shard all-or-nothing (fileio.write_bytes), to a local or gs:// path."""
  LAYOUT.write(path, {"embeddings": np.ascontiguousarray(embeddings),
                      "mask": np.ascontiguousarray(mask, dtype=np.uint8)},
               {"prompts": json.dumps(list(prompts)), "start": str(start)})


def read_shard(path: str, *, rows: int | None = None, max_length: int | None = None,
               dim: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str], int]:
  """(embeddings [n,L,D], mask [n,L] uint8, prompts, start) of one shard, checked against the
  expected row count / L / D when given. Raises PromptCacheError naming the file."""
  tensors, meta = LAYOUT.read(path, required=("embeddings", "mask"), floats=("embeddings",))
  emb, mask = tensors["embeddings"], tensors["mask"]
  try:
    prompts, start = json.loads(meta["prompts"]), int(meta["start"])
  except (KeyError, ValueError) as e:
    raise PromptCacheError(f"{path}: metadata needs 'prompts' (JSON list) and 'start'") from e
  if emb.ndim != 3:
    raise PromptCacheError(f"{path}: 'embeddings' has shape {list(emb.shape)}, expected "
                           "[rows, max_length, dim]")
  if mask.dtype.kind not in "biu":
    raise PromptCacheError(f"{path}: tensor 'mask' has dtype {mask.dtype}; expected uint8 0/1")
  want = (emb.shape[0] if rows is None else rows, emb.shape[1] if max_length is None
          else max_length, emb.shape[2] if dim is None else dim)
  if tuple(emb.shape) != want:
    raise PromptCacheError(f"{path}: 'embeddings' has shape {list(emb.shape)}, expected "
                           f"{list(want)} [rows, max_length, dim]")
  if tuple(mask.shape) != want[:2] or len(prompts) != want[0]:
    raise PromptCacheError(f"{path}: 'mask' shape {list(mask.shape)} / {len(prompts)} prompts "
                           f"do not match {want[0]} rows of length {want[1]}")
  return emb, mask, prompts, start


def read_index(cache_dir: str) -> dict:
  index, path = LAYOUT.read_manifest(cache_dir, fix=FIX), LAYOUT.manifest_path(cache_dir)
  if index.get("format") != FORMAT:
    raise PromptCacheError(f"{path}: 'format' is {index.get('format')!r}, expected {FORMAT!r}")
  # The index names no files (shard names are derived from these counts), so it cannot point
  # outside the folder; the counts are checked so that they cannot ask for absurd reads either.
  for key, hi in (("num_prompts", 1 << 40), ("shard_size", 1 << 30), ("max_length", 1 << 20),
                  ("dim", 1 << 20)):
    if key in index:
      untrusted.check_int(index[key], f"field {key!r}", str(path), 0 if key == "num_prompts"
                          else 1, hi, error=PromptCacheError)
  if "num_shards" in index and "num_prompts" in index and "shard_size" in index:
    want = -(-index["num_prompts"] // index["shard_size"])
    if index["num_shards"] not in (want, max(1, want)):  # write_cache writes 1 for no prompts.
      raise PromptCacheError(f"{path}: 'num_shards' is {index['num_shards']!r}, expected {want} "
                             f"for {index['num_prompts']} prompts in shards of "
                             f"{index['shard_size']}")
  return index


@dataclasses.dataclass
class PromptCache:
  """A loaded cache. embeddings [N, L, D] (stored dtype or the requested one), mask [N, L] int32,
  prompts (N preprocessed strings); null_embeddings [1, L, D] / null_mask [1, L] for ""."""
  embeddings: np.ndarray
  mask: np.ndarray
  prompts: list[str]
  null_embeddings: np.ndarray
  null_mask: np.ndarray
  index: dict
  labels: np.ndarray | None = None   # int32 [N] class of each prompt (−1 unknown), or None
  heldout: np.ndarray | None = None  # bool [N] prompts kept out of training, or None

  def __len__(self) -> int:
    return len(self.prompts)

  def condition(self, idx: Any) -> dict[str, np.ndarray]:
    """The text condition pytree {"embeddings": [B, L, D], "mask": [B, L]} of rows `idx`."""
    return {"embeddings": self.embeddings[idx], "mask": self.mask[idx]}

  def null_condition(self, batch: int = 1) -> dict[str, np.ndarray]:
    """The "" condition repeated to `batch` rows."""
    return {"embeddings": np.repeat(self.null_embeddings, batch, axis=0),
            "mask": np.repeat(self.null_mask, batch, axis=0)}


def load_prompt_cache(cache_dir: str | os.PathLike, *, dtype: Any = None) -> PromptCache:
  """Read a complete cache into memory (numpy). dtype: cast the embeddings (e.g. np.float32);
  None keeps the stored dtype. Raises PromptCacheError naming the bad file."""
  cache_dir = os.fspath(cache_dir)
  index = read_index(cache_dir)
  if not index.get("complete"):
    raise PromptCacheError(f"{epath.Path(cache_dir) / INDEX}: the cache is incomplete (an "
                           "encode_prompts run was interrupted); rerun it to resume")
  n, size, k = index["num_prompts"], index["shard_size"], index["num_shards"]
  length, dim = index["max_length"], index["dim"]

  def read(i: int, path: str, _) -> tuple[np.ndarray, np.ndarray, list[str]]:
    emb, mask, p, start = read_shard(path, rows=min(size, n - i * size), max_length=length,
                                     dim=dim)
    if start != i * size:
      raise PromptCacheError(f"{path}: starts at prompt {start}, expected {i * size}")
    return emb if dtype is None else emb.astype(dtype), mask.astype(np.int32), p

  parts = LAYOUT.load(LAYOUT.paths(cache_dir, k), read)  # [(embeddings, mask, prompts)]
  null_emb, null_mask, _, _ = read_shard(str(epath.Path(cache_dir) / NULL), rows=1,
                                         max_length=length, dim=dim)
  return PromptCache(
      embeddings=(np.concatenate([e for e, _, _ in parts]) if parts
                  else np.zeros((0, length, dim), np.float32)),
      mask=np.concatenate([m for _, m, _ in parts]) if parts else np.zeros((0, length), np.int32),
      prompts=[p for _, _, ps in parts for p in ps],
      null_embeddings=null_emb if dtype is None else null_emb.astype(dtype),
      null_mask=null_mask.astype(np.int32), index=index,
      labels=_optional_rows(index, "labels", np.int32, n, cache_dir),
      heldout=_optional_rows(index, "heldout", bool, n, cache_dir))


def _optional_rows(index: dict, key: str, dtype, n: int, cache_dir: str) -> np.ndarray | None:
  if index.get(key) is None:
    return None
  a = np.asarray(index[key], dtype)
  if a.shape != (n,):
    raise PromptCacheError(f"{epath.Path(cache_dir) / INDEX}: {key!r} has shape "
                           f"{list(a.shape)}, expected [{n}] (one per prompt)")
  return a


def write_cache(cache_dir: str | os.PathLike, embeddings: np.ndarray, mask: np.ndarray,
                prompts: Sequence[str], null_embeddings: np.ndarray, null_mask: np.ndarray, *,
                labels: Sequence[int] | None = None, heldout: Sequence[bool] | None = None,
                shard_size: int = 4096, model: str = "") -> dict:
  """Write a complete cache from arrays already encoded (embeddings [N, L, D], mask [N, L],
  null_embeddings [1, L, D], null_mask [1, L]); returns the index. For small prompt sets built
  in code (tests, the digits prompts); encode_prompts writes T5 caches resumably."""
  cache_dir = os.fspath(cache_dir)
  fileio.makedirs(cache_dir)  # Local or gs://.
  n, length, dim = embeddings.shape
  k = max(1, -(-n // shard_size))
  for i, path in enumerate(LAYOUT.paths(cache_dir, k)):
    sl = slice(i * shard_size, (i + 1) * shard_size)
    write_shard(path, embeddings[sl], mask[sl], list(prompts)[sl], i * shard_size)
  write_shard(str(epath.Path(cache_dir) / NULL), null_embeddings, null_mask, [""], 0)
  index = {"format": FORMAT, "num_prompts": n, "max_length": length, "dim": dim,
           "dtype": str(embeddings.dtype), "shard_size": shard_size, "num_shards": k,
           "prompts_sha256": prompts_digest(prompts), "model": model, "preprocess": "none",
           "complete": True}
  if labels is not None:
    index["labels"] = [int(v) for v in labels]
  if heldout is not None:
    index["heldout"] = [bool(v) for v in heldout]
  fileio.write_json(epath.Path(cache_dir) / INDEX, index)
  return index
