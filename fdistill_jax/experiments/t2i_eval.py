"""Evaluation of text-to-image experiments: samplers, captioned grids, the teacher's reference
sampler and the digits prompt-accuracy metric.

Sample i is drawn for evaluation prompt rows[i mod E] (`eval_rows`; the Text spec's prompt set,
so `nets.cond.from_index(i)` is its condition). Samplers: 'one_step' (the student's
G(σ_init·z)) or the teacher's reference samplers on any PixArt params ('dpm_solver_pp_2m',
'ddim': teachers/pixart.sample at eval.nfe steps with classifier-free guidance
eval.guidance_scale and the cached "" prompt as ∅; used for teachers trained here).
`reference` runs the teacher at each eval.teacher_nfes with eval.guidance_scale
('teacher_nfe<n>') and, when that is ≠ 1, without guidance ('teacher_nfe<n>_unguided').
Samples are decoded by the codec before grids and metrics.

eval.metric: 'none'; 'digits' (or 'auto' on the digits dataset, pixel space): the digits
metric (FD, class coverage, ...) plus prompt-class accuracy — the fraction of samples the digits
classifier assigns the class of their prompt (the cache's `labels`), over all labelled prompts
and separately over training and held-out (`heldout`) prompts.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax import codecs
from fdistill_jax.evaluation import grids
from fdistill_jax.experiments import t2i_text
from fdistill_jax.nets import Nets
from fdistill_jax.teachers import pixart as pixart_teacher

SAMPLERS = ("one_step",) + pixart_teacher.SOLVERS
METRICS = ("auto", "none", "digits")


def _metric(cfg) -> str:
  m = cfg.eval.get("metric", "none")
  if m == "auto":
    return "digits" if cfg.dataset.name == "digits" and not cfg.teacher.get("vae") else "none"
  return m


def eval_rows(cfg, cache) -> np.ndarray:
  """Prompt rows of the evaluation samples (sample i gets rows[i mod E]): every labelled prompt
  (training and held-out) for the digits metric, else the first eval.num_prompts prompts."""
  labels = getattr(cache, "labels", None)
  if _metric(cfg) == "digits":
    if labels is None:
      raise ValueError("config.eval.metric='digits' needs a prompt cache with per-prompt 'labels'")
    return np.flatnonzero(np.asarray(labels) >= 0)
  return np.arange(min(int(cfg.eval.get("num_prompts", 16)), len(cache)))


def prompt_accuracy(pred: np.ndarray, classes: np.ndarray, heldout: np.ndarray | None) -> dict:
  """Fractions of samples whose predicted class [N] is their prompt's class [N] (−1 ignored),
  overall and over training / held-out prompts (heldout bool [N] or None)."""
  ok = classes >= 0
  out = {"prompt_accuracy": float(np.mean(pred[ok] == classes[ok]))}
  if heldout is not None:
    for name, sel in (("train", ok & ~heldout), ("heldout", ok & heldout)):
      if sel.any():
        out[f"prompt_accuracy_{name}"] = float(np.mean(pred[sel] == classes[sel]))
  return out


def evaluator(cfg, nets: Nets, module, teacher_params, adapter, codec: codecs.Codec, cache,
              rows: np.ndarray, workdir: str, encode=t2i_text.frozen_encode) -> dict:
  """The Experiment's evaluation hooks (see the module docstring). encode(params, cond) ->
  (PixArt params, text cond): a trained text encoder's (t2i_text), the identity for a cache."""
  ev = cfg.eval
  shape = tuple(nets.data_shape)
  decode = codec.jit_decode()
  n_eval = int(ev.num_samples)
  chunk = int(ev.get("batch_size", 0) or n_eval)
  w_eval = float(ev.get("guidance_scale", 1.0))
  solver = ev.get("teacher_solver", "dpm_solver_pp_2m")
  idx = np.arange(n_eval) % len(rows)
  sample_rows = rows[idx]
  conds = nets.cond.from_index(jnp.asarray(idx))  # [n_eval] conditions of the samples
  null = nets.cond.null(1)

  @functools.partial(jax.jit, static_argnames=("nfe", "w", "how"))
  def _multistep(params, z, cond, nfe: int, w: float, how: str):
    tp, cond_e = encode(params, cond)  # Encoded once, outside the solver loop.
    net = pixart_teacher.PixArtTeacher(module, tp, adapter, null_cond=encode(params, null)[1])
    return pixart_teacher.sample(net, z, cond_e, num_steps=nfe, guidance_scale=w, solver=how)

  @jax.jit
  def _one_step(params, z, cond):
    return nets.generate(params, z, cond)

  def _chunks(fn, params, key):
    outs = []
    for i, s in enumerate(range(0, n_eval, chunk)):
      n = min(chunk, n_eval - s)
      z = jax.random.normal(jax.random.fold_in(key, i), (n,) + shape)
      c = jax.tree.map(lambda a: a[s:s + n], conds)
      outs.append(np.asarray(decode(fn(params, z, c))))
    return np.concatenate(outs)

  def multistep(params, key, nfe: int, w: float, how: str = solver):
    return _chunks(lambda p, z, c: _multistep(p, z, c, nfe=nfe, w=w, how=how), params, key)

  def sample(params, key):
    if ev.sampler == "one_step":
      return _chunks(_one_step, params, key)
    return multistep(params, key, int(ev.nfe), w_eval, ev.sampler)

  def sample_cond(params, z, cond, teacher: bool = False) -> np.ndarray:
    """Decoded samples of noise z [n, *shape] for conditions cond [n] (any prompts, e.g. of a
    prompt file): eval.sampler on generator params, or with teacher=True the teacher's eval.nfe
    sampler (as sample_teacher)."""
    if teacher:
      x = _multistep(params, z, cond, nfe=int(ev.nfe), w=w_eval, how=solver)
    elif ev.sampler == "one_step":
      x = _one_step(params, z, cond)
    else:
      x = _multistep(params, z, cond, nfe=int(ev.nfe), w=w_eval, how=ev.sampler)
    return np.asarray(decode(x))

  metric = None
  if _metric(cfg) == "digits":
    from fdistill_jax.evaluation.digits_metric import DigitsMetric
    metric = DigitsMetric.create(resolution=codec.image_shape(shape)[0],
                                 cache_dir=ev.get("cache_dir") or workdir)
    labels = np.asarray(cache.labels)[sample_rows]
    held = getattr(cache, "heldout", None)
    held = None if held is None else np.asarray(held, bool)[sample_rows]

  def score(x, key=None) -> dict:
    del key
    x = np.asarray(x)
    out = {"pixel_mean": float(np.mean(x)), "pixel_std": float(np.std(x))}
    if metric is not None:
      out.update(metric.evaluate(x))
      out.update(prompt_accuracy(np.argmax(metric.logits(x), -1), labels[:len(x)],
                                 None if held is None else held[:len(x)]))
    return out

  grid_n = min(int(ev.get("grid_size", 16)), n_eval)
  captions = [cache.prompts[r] for r in sample_rows[:grid_n]]
  up = max(1, 64 // codec.image_shape(shape)[0])

  def write_samples(x, path, title=""):
    grids.save_captioned_grid(np.asarray(x)[:grid_n], captions, path, ncol=min(8, grid_n),
                              upscale=up, title=title)

  def reference(key):
    out = {}
    for nfe in ev.get("teacher_nfes", ()):
      out[f"teacher_nfe{nfe}"] = score(multistep(teacher_params, key, int(nfe), w_eval))
      if w_eval != 1.0:
        out[f"teacher_nfe{nfe}_unguided"] = score(multistep(teacher_params, key, int(nfe), 1.0))
    return out

  return dict(sample=sample, score=score, write_samples=write_samples, reference=reference,
              sample_teacher=lambda key: multistep(teacher_params, key, int(ev.nfe), w_eval),
              sample_cond=sample_cond)
