"""The run modes that do not train: sample (--mode=sample) and ref (--mode=ref).

They live outside the engine (fdistill_jax/engine/ only trains, scores the problem it is handed
and loads checkpoints), so the engine imports nothing from data, evaluation, methods or
experiments. Both build what they need through compose.py, the one place that knows the layers.

  sample_checkpoint(cfg, workdir[, prompts])  samples of the latest checkpoint, else the teacher's
  reference_statistics(cfg, workdir)          FID reference statistics of config.dataset
"""
from __future__ import annotations

import os

import jax
import numpy as np
from etils import epath

from fdistill_jax import compose, config_defaults, fileio
from fdistill_jax import data as data_lib
from fdistill_jax.engine import workdir_lock
from fdistill_jax.evaluation import fid, grids, t2i_sampling


# ============================================================================== sample
def sample_checkpoint(cfg, workdir: str, prompts: str | None = None,
                      prompt_cache: str | None = None) -> dict:
  """Samples of the latest checkpoint (or of the teacher when there is none): `sample_grid`;
  with `prompts` (a text file, text-to-image configs) one PNG per prompt and a captioned grid,
  the prompts' embeddings read from `prompt_cache` (default config.teacher.prompt_cache):
  `sample_prompts`.

  Holds the workdir's lock (engine/workdir_lock.py), like training: restoring may move a step
  that fails verification to checkpoints/corrupt/ (or adopt one), building the problem may
  write the workdir's caches, and the samples are written into the workdir."""
  with workdir_lock.hold(workdir, "sample"):
    if prompts:
      return sample_prompts(cfg, workdir, prompts, prompt_cache)
    return sample_grid(cfg, workdir)


def _student_or_teacher(cfg, workdir: str):
  """(experiment, tag, generator params or None for the teacher) of what the sample mode draws:
  the latest checkpoint's eval.params, else (no checkpoint, config.teacher.checkpoint set) the
  teacher, built without the method's prepare hook (sampling it needs no pair cache)."""
  ckpt_dir = epath.Path(workdir) / "checkpoints"  # Local or gs://.
  if ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
    exp, state = compose.load_trained(cfg, workdir)
    return (exp, f"{int(state['step']):07d}_{cfg.eval.params}",
            compose.generator_params(state, cfg.eval.params))
  if not cfg.teacher.get("checkpoint"):
    raise FileNotFoundError(f"nothing to sample: no checkpoint under {ckpt_dir} and "
                            "config.teacher.checkpoint is empty")
  exp, _ = compose.build(cfg, workdir, prepare=False)
  return exp, f"teacher_nfe{cfg.eval.nfe}", None


def _sample_key(cfg) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 123)


def sample_grid(cfg, workdir: str) -> dict:
  """Samples of the latest student checkpoint in workdir (its eval.sampler and eval.params), or,
  when workdir has no checkpoint and config.teacher.checkpoint is set, of the teacher with its
  eval.nfe-NFE sampler. Writes workdir/samples_<tag>.png (a grid), .npz (samples [N, ...], and
  labels [N] for images) and, for images ([N, H, W, C]), numbered PNGs in samples_<tag>/ for
  external FID tools. Takes no lock: sample_checkpoint does."""
  key = _sample_key(cfg)
  exp, tag, params = _student_or_teacher(cfg, workdir)
  x = exp.sample_teacher(key) if params is None else exp.sample(params, key)
  wd = fileio.makedirs(workdir)
  grid = str(wd / f"samples_{tag}.png")
  exp.write_samples(x, grid, tag)
  x = np.asarray(x)
  out = {"grid": grid, "npz": str(wd / f"samples_{tag}.npz"), "num": len(x)}
  arrays = {"samples": x}
  if x.ndim == 4:
    classes = getattr(exp.nets.cond, "num_classes", 0)  # The class index of each sample.
    arrays["labels"] = np.asarray(classes and np.arange(len(x)) % max(classes, 1))
    out["pngs"] = str(epath.Path(grids.save_numbered(x, wd / f"samples_{tag}")[0]).parent)
  fileio.save_npz(out["npz"], **arrays)
  return out


def sample_prompts(cfg, workdir: str, prompts: str, prompt_cache: str | None = None) -> dict:
  """Text sample mode (evaluation/t2i_sampling.py): the student of the latest checkpoint with
  eval.sampler / eval.params, else the teacher's eval.nfe sampler; writes
  workdir/samples_<tag>_<file stem>/%06d.png and the captioned grid beside it. Takes no lock:
  sample_checkpoint does."""
  key = _sample_key(cfg)
  exp, tag, params = _student_or_teacher(cfg, workdir)
  teacher = params is None
  if teacher:
    params = exp.frozen.get("teacher") if isinstance(exp.frozen, dict) else None
  stem = os.path.splitext(os.path.basename(prompts))[0]
  return t2i_sampling.write_prompt_samples(
      exp, params, prompts, prompt_cache or cfg.teacher.prompt_cache,
      os.path.join(workdir, f"samples_{tag}_{stem}"), key, teacher=teacher,
      batch_size=int(cfg.eval.batch_size or 64),
      grid_size=int(cfg.eval.grid_size), title=f"{tag}: {stem}")


# ============================================================================== ref
def reference_statistics(cfg, workdir: str, extractor=None) -> dict:
  """FID reference statistics (EDM's npz format: mu [2048], sigma [2048, 2048]) of every image
  of config.dataset.

  Written to workdir/fid_reference.npz; pass it as config.eval.fid_reference. The Inception
  weights come from config.eval.fid_weights unless an extractor is given.
  """
  config_defaults.resolve(cfg)  # A Python-API entry point (main resolves too).
  source = data_lib.make_source(cfg.dataset)
  if extractor is None:
    if not cfg.eval.get("fid_weights"):
      raise ValueError("--mode=ref needs config.eval.fid_weights (pytorch-fid's Inception .pth "
                       "or its .npz); see docs/evaluation.md 'FID'")
    extractor = fid.FeatureExtractor.from_weight_file(cfg.eval.fid_weights,
                                                      int(cfg.eval.fid_batch))
  bs = 256

  def batches():
    for i in range(0, len(source), bs):
      yield np.stack([source[j]["image"] for j in range(i, min(i + bs, len(source)))])

  mu, sigma = fid.image_statistics(batches(), extractor)
  path = str(fileio.makedirs(workdir) / "fid_reference.npz")
  fid.save_reference_stats(path, mu, sigma)
  return {"reference": path, "num_images": len(source)}
