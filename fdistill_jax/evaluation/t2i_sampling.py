"""Text sample mode: one PNG per prompt of a prompt file, and a captioned grid.

  python -m fdistill_jax.main --config=configs/pixart512_js.py --workdir=runs/js --mode=sample \\
      --prompts=coco30k.txt [--prompt_cache=/data/coco30k_t5]

T5 does not run in the JAX process, so the prompts' embeddings come from a prompt cache:
--prompt_cache (default config.teacher.prompt_cache) must hold every prompt of the file; a
prompt that is missing is an error naming it and its line. Encode the file first with
  python -m fdistill_jax.tools.encode_prompts --prompts=coco30k.txt --out=/data/coco30k_t5 \\
      --model=/models/PixArt-XL-2-512x512
(one prompt per line, as it reads them). A prompt matches its cache row as written or
lower-cased and stripped (encode_prompts' default preprocessing).

Sample i uses the noise N(0, I) of fold_in(key, i), so a prompt's image does not depend on the
batch size or on the other prompts; it is written to <out>/%06d.png (what tools/eval_t2i reads),
with <out>/prompts.txt holding the prompts in order. Batches (eval.batch_size, default 64) are
split over the devices; the mode runs in one process (one host).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fdistill_jax import fileio
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.evaluation import grids


def read_prompts(path: str) -> list[str]:
  """Prompts of a text file, one per non-blank line, as encode_prompts reads them."""
  if path.lower().endswith(".json"):
    raise ValueError(f"{path}: sample mode takes a text file of prompts, one per line; for COCO "
                     "write the selected captions first: python -m fdistill_jax.tools.eval_t2i "
                     f"--prompts={path} --write_prompts=prompts.txt")
  if not epath.Path(path).is_file():  # Local or gs://.
    raise FileNotFoundError(f"prompt file not found: {path}")
  prompts = [line for line in epath.Path(path).read_text(encoding="utf-8").split("\n")
             if line.strip()]
  if not prompts:
    raise ValueError(f"{path}: no prompts")
  return prompts


def lookup_rows(cache: pc.PromptCache, prompts: Sequence[str], prompts_path: str,
                cache_dir: str) -> np.ndarray:
  """Row [n] of each prompt in the cache (as written, else lower().strip()); a clear error
  listing the prompts that are not there."""
  rows = {p: i for i, p in reversed(list(enumerate(cache.prompts)))}
  out, missing = [], []
  for line, p in enumerate(prompts, 1):
    r = rows.get(p, rows.get(p.lower().strip()))
    if r is None:
      missing.append(f"line {line}: {p!r}")
    out.append(r)
  if missing:
    raise KeyError(
        f"{len(missing)} of {len(prompts)} prompts of {prompts_path} are not in the prompt cache "
        f"{cache_dir} (first: {'; '.join(missing[:3])}). T5 does not run in the JAX process: "
        f"encode the file first (python -m fdistill_jax.tools.encode_prompts "
        f"--prompts={prompts_path} --out=DIR --model=T5_OR_PIXART_FOLDER) and pass "
        "--prompt_cache=DIR")
  return np.asarray(out, np.int64)


@functools.partial(jax.jit, static_argnames="shape")
def _noise(key: jax.Array, idx: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """N(0, I) noise [n, *shape] of samples idx [n]: sample i's from fold_in(key, i)."""
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape))(idx)


def batch_sharding(params, batch_size: int) -> NamedSharding | None:
  """Sharding of a sample batch over every device of the params' mesh (a restored checkpoint's
  data × fsdp mesh), or of the local devices for host params; None when the batch does not
  divide evenly. The jitted sampler follows its inputs' shardings."""
  meshes = [x.sharding.mesh for x in jax.tree.leaves(params)
            if isinstance(getattr(x, "sharding", None), NamedSharding)]
  mesh = meshes[0] if meshes else Mesh(np.asarray(jax.local_devices()), ("data",))
  if batch_size % mesh.size:
    return None
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def write_prompt_samples(exp, params, prompts_path: str, cache_dir: str, out_dir: str,
                         key: jax.Array, *, teacher: bool = False, batch_size: int = 64,
                         grid_size: int = 16, title: str = "") -> dict:
  """Samples of `exp.sample_cond` for every prompt of the file: PNGs, prompts.txt, a grid.

  Args:
    exp: a text-to-image Experiment (with sample_cond and a Text condition spec).
    params: generator params (or the teacher's, with teacher=True).
    batch_size: prompts per compiled call (the last batch is padded, so one program).
  """
  if exp.sample_cond is None:
    raise ValueError("--prompts (text sample mode) needs a text-to-image config "
                     "(a teacher family whose problem is text-to-image, e.g. "
                     "config.teacher.kind='pixart')")
  if jax.process_count() > 1:
    raise ValueError("--prompts (text sample mode) runs in one process: start it on one host "
                     "(the checkpoint is restored onto that host's devices)")
  prompts = read_prompts(prompts_path)
  cache = pc.load_prompt_cache(cache_dir)
  spec = exp.nets.cond
  want = (int(spec.length), int(spec.dim)) if hasattr(spec, "length") else None
  got = tuple(cache.embeddings.shape[1:])
  if want is not None and got != want:
    raise ValueError(f"prompt cache {cache_dir} holds embeddings [L, D] = {list(got)}; the "
                     f"model was built for {list(want)} (config.teacher.prompt_cache)")
  rows = lookup_rows(cache, prompts, prompts_path, cache_dir)
  shape = tuple(exp.nets.data_shape)
  sharding = batch_sharding(params, batch_size)
  fileio.write_text(epath.Path(out_dir) / "prompts.txt", "\n".join(prompts) + "\n")
  first = []
  n = len(prompts)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    take = np.minimum(idx, n - 1)  # pad the last batch with its final prompt
    cond = {"embeddings": np.asarray(cache.embeddings[rows[take]], np.float32),
            "mask": np.asarray(cache.mask[rows[take]], np.float32)}
    z = _noise(key, idx, shape)
    if sharding is not None:
      z, cond = jax.device_put((z, cond), sharding)
    x = exp.sample_cond(params, z, cond, teacher=teacher)[:min(batch_size, n - start)]
    grids.save_numbered(x, out_dir, first_index=start)
    if sum(len(a) for a in first) < grid_size:
      first.append(x[:grid_size])
  sample = np.concatenate(first)[:grid_size]
  grid = out_dir.rstrip("/") + ".png"
  grids.save_captioned_grid(sample, prompts[:len(sample)], grid, ncol=min(8, len(sample)),
                            upscale=max(1, 64 // sample.shape[1]), title=title)
  return {"pngs": out_dir, "grid": grid, "num": n, "prompts": prompts_path,
          "prompt_cache": cache_dir}

