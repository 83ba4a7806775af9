"""Encode an image source once with the VAE into a sharded, resumable latent cache.

A cache is a directory:
* `index.json`: {"format": FORMAT, "num_records", "shard_size", "num_shards", "image_shape",
  "latent_shape", "scaling_factor", "shift_factor", "dtype", "source", "complete"};
* `shard-00000-of-00004.safetensors`, …: the posterior "mean" and "logvar" [n, h, w, c] (the
  unscaled VAE posterior, so a trainer can draw a fresh z per epoch with `sample_latents`) and
  "label" int32 [n]; metadata "start".

Shards are written to a temporary name and renamed: a shard that exists is complete, and a rerun
skips it. Reading needs numpy and safetensors only.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from fdistill_jax import fileio, untrusted

FORMAT = "fdistill_latent_cache/1"
INDEX = "index.json"
EncodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class LatentCacheError(ValueError):
  """A cache file is missing, corrupt or inconsistent with the index."""


def shard_name(i: int, num_shards: int) -> str:
  return f"shard-{i:05d}-of-{num_shards:05d}.safetensors"


def vae_encode_fn(module, variables, batch_size: int) -> EncodeFn:
  """uint8 images [n ≤ batch_size, H, W, C] -> (mean, logvar) numpy float32, one compiled shape
  (the last batch is padded)."""
  @jax.jit
  def enc(v, x):
    post = module.apply(v, x.astype(jnp.float32) / 127.5 - 1.0, method=module.encode)
    return post.mean, post.logvar

  def fn(images: np.ndarray):
    n = images.shape[0]
    pad = np.zeros((batch_size - n,) + images.shape[1:], images.dtype)
    mean, logvar = enc(variables, np.concatenate([images, pad]))
    return np.asarray(mean)[:n], np.asarray(logvar)[:n]
  return fn


def _read_shard(path: str, rows: int, latent_shape) -> dict[str, np.ndarray]:
  if not epath.Path(path).is_file():
    raise LatentCacheError(f"{path}: missing cache file")
  try:
    arrays = fileio.load_safetensors(path)[0]
  except Exception as e:  # safetensors raises its own error types.
    raise LatentCacheError(f"{path}: truncated or corrupt .safetensors file ({e})") from e
  want = {"mean": (rows, *latent_shape), "logvar": (rows, *latent_shape), "label": (rows,)}
  for k, shape in want.items():
    if k not in arrays or tuple(arrays[k].shape) != shape:
      found = list(arrays[k].shape) if k in arrays else "absent"
      raise LatentCacheError(f"{path}: {k!r} is {found}, expected {list(shape)}")
  untrusted.check_float_arrays(arrays, path, ("mean", "logvar"), error=LatentCacheError)
  if arrays["label"].dtype.kind not in "iu":
    raise LatentCacheError(f"{path}: tensor 'label' has dtype {arrays['label'].dtype}; expected "
                           "int32")
  return arrays


def write_latent_cache(source: Any, out: str | os.PathLike, encode: EncodeFn, *,
                       scaling_factor: float, shift_factor: float | None = None,
                       shard_size: int = 4096, batch_size: int = 32,
                       dtype: str = "float32") -> dict:
  """Encode every record of `source` (`source[i]["image"]` uint8 [H, W, C], optional "label")
  with `encode` into `out` (local or gs://), skipping the shards a previous run finished.
  Returns the index."""
  out = os.fspath(out)
  fileio.makedirs(out)
  n = len(source)
  first_mean, _ = encode(np.asarray(source[0]["image"])[None])
  index = {"format": FORMAT, "num_records": n, "shard_size": shard_size,
           "num_shards": math.ceil(n / shard_size),
           "image_shape": list(np.asarray(source[0]["image"]).shape),
           "latent_shape": list(first_mean.shape[1:]), "scaling_factor": scaling_factor,
           "shift_factor": shift_factor, "dtype": dtype, "source": repr(source),
           "complete": False}
  index_path = epath.Path(out) / INDEX
  if index_path.is_file():
    old = read_index(out)
    for k in ("num_records", "shard_size", "image_shape", "latent_shape", "dtype", "source"):
      if old.get(k) != index[k]:
        raise ValueError(f"{index_path}: field {k!r} = {old.get(k)!r} but this run has "
                         f"{index[k]!r}; use a new output directory")
  fileio.write_json(index_path, index)
  store = np.float32 if dtype == "float32" else np.dtype(dtype)
  k = index["num_shards"]
  for i in range(k):
    path = str(epath.Path(out) / shard_name(i, k))
    lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
    if epath.Path(path).is_file():
      try:
        _read_shard(path, hi - lo, index["latent_shape"])
        continue  # finished by an earlier run.
      except LatentCacheError as e:
        print(f"rewriting {e}", file=sys.stderr)
    means, logvars, labels = [], [], []
    for b in range(lo, hi, batch_size):
      recs = [source[j] for j in range(b, min(hi, b + batch_size))]
      mean, logvar = encode(np.stack([np.asarray(r["image"]) for r in recs]))
      means.append(mean)
      logvars.append(logvar)
      labels += [int(r.get("label", -1)) for r in recs]
    fileio.save_safetensors(path, {"mean": np.concatenate(means).astype(store),  # All-or-nothing.
                                   "logvar": np.concatenate(logvars).astype(store),
                                   "label": np.asarray(labels, np.int32)},
                            metadata={"start": str(lo)})
  index["complete"] = True
  fileio.write_json(index_path, index)
  return index


def read_index(cache_dir: str) -> dict:
  path = epath.Path(cache_dir) / INDEX
  if not path.is_file():
    raise LatentCacheError(f"{path}: missing; {cache_dir} is not a latent cache")
  index = untrusted.read_json(path, error=LatentCacheError)  # Bounded (1 MiB).
  if not isinstance(index, dict) or index.get("format") != FORMAT:
    raise LatentCacheError(f"{path}: not a {FORMAT} index")
  # The index names no files (shard names come from these counts); its scalars scale every latent.
  for key, lo, hi in (("num_records", 0, 1 << 40), ("shard_size", 1, 1 << 30),
                      ("num_shards", 0, 1 << 30)):
    if key in index:
      untrusted.check_int(index[key], f"field {key!r}", str(path), lo, hi, error=LatentCacheError)
  if "scaling_factor" in index:
    untrusted.check_real(index["scaling_factor"], "field 'scaling_factor'", str(path),
                         positive=True, error=LatentCacheError)
  if index.get("shift_factor") is not None:
    untrusted.check_real(index["shift_factor"], "field 'shift_factor'", str(path),
                         error=LatentCacheError)
  return index


def load_latent_cache(cache_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
  """({"mean", "logvar": [N, h, w, c], "label": [N]}, index) of a complete cache."""
  cache_dir = os.fspath(cache_dir)
  index = read_index(cache_dir)
  if not index.get("complete"):
    raise LatentCacheError(f"{epath.Path(cache_dir) / INDEX}: the cache is incomplete (the "
                           "writing run was interrupted); rerun write_latent_cache to resume")
  n, size, k = index["num_records"], index["shard_size"], index["num_shards"]
  parts = [_read_shard(str(epath.Path(cache_dir) / shard_name(i, k)), min(size, n - i * size),
                       index["latent_shape"]) for i in range(k)]
  return {key: np.concatenate([p[key] for p in parts]) for key in ("mean", "logvar", "label")}, \
      index


def sample_latents(mean: jax.Array, logvar: jax.Array, key: jax.Array | None,
                   scaling_factor: float, shift_factor: float | None = None) -> jax.Array:
  """Diffusion latents scaling·(z − shift), z ~ N(mean, exp(logvar)) (z = mean when key is None),
  as `AutoencoderKL.encode_latents`."""
  mean = jnp.asarray(mean, jnp.float32)
  z = mean
  if key is not None:
    z = mean + jnp.exp(0.5 * jnp.asarray(logvar, jnp.float32)) * jax.random.normal(
        key, mean.shape, jnp.float32)
  return (z - (shift_factor or 0.0)) * scaling_factor
