"""Evaluation of image experiments: samplers, metrics, grids and streamed FID.

Samples are generated in the teacher's space and decoded by the experiment's codec (identity in
pixel space) before anything scores or draws them. Conditions come from the spec: sample i gets
`nets.cond.from_index(i)` (class i mod C), EDM's protocol.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax import codecs, experiments
from fdistill_jax.diffusion import few_step, samplers
from fdistill_jax.evaluation import grids, registry
from fdistill_jax.nets import Nets

SAMPLERS = ("one_step", "heun")
METRICS = registry.names(registry.IMAGE)  # config.eval.metric (evaluation/registry.py).


def evaluator(cfg, nets: Nets, teacher_params, codec: codecs.Codec, workdir: str) -> dict:
  """The Experiment's evaluation hooks: sample, score, write_samples, reference, sample_teacher,
  write_comparison (one-step student beside the teacher), extra_metrics (FID when
  eval.metric = 'fid')."""
  ev = cfg.eval
  experiments.eval_metric(cfg, registry.IMAGE)  # First: a typo fails before anything is built.
  shape = tuple(nets.data_shape)
  decode = codec.jit_decode()
  ctx = registry.Context(workdir=workdir, nets=nets, decode=decode,
                         image_shape=tuple(codec.image_shape(shape)))
  chosen, built = registry.build(cfg, ctx, registry.IMAGE)
  metric = built if chosen == "digits" else None  # scores every sample set
  extra = built if chosen == "fid" else None  # gen_params -> {'fid': ...}
  n_eval = ev.num_samples
  eval_cond = nets.cond.from_index(jnp.arange(n_eval))

  def _denoiser(params):
    def den(x, s):
      cond = jax.tree.map(lambda c: c[:x.shape[0]], eval_cond)
      return nets.student(params, x, jnp.broadcast_to(s, (x.shape[0],)), cond)
    return den

  @functools.partial(jax.jit, static_argnames=("nfe",))
  def sample_multistep(params, key, nfe: int):
    z = jax.random.normal(key, (n_eval,) + shape)
    if nfe >= 3 and nfe % 2:
      return samplers.edm_sampler(_denoiser(params), z, samplers.steps_for_nfe(nfe),
                                  cfg.diffusion.sigma_min, cfg.diffusion.sigma_max)
    return samplers.edm_sampler(_denoiser(params), z, nfe, cfg.diffusion.sigma_min,
                                cfg.diffusion.sigma_max, second_order=False)

  @jax.jit
  def sample_one_step(params, key):
    z = jax.random.normal(key, (n_eval,) + shape)
    return nets.generate(params, z, eval_cond, noise_key=few_step.chain_key(key))

  def sample(params, key):
    if ev.sampler == "one_step":
      return decode(sample_one_step(params, key))
    return decode(sample_multistep(params, key, nfe=ev.nfe))

  def score(x, key=None) -> dict:
    del key
    out = {"pixel_mean": float(jnp.mean(x)), "pixel_std": float(jnp.std(x))}
    if metric is not None:
      out.update(metric.evaluate(np.asarray(x)))
    return out

  image_shape = tuple(codec.image_shape(shape))
  label_dim = getattr(nets.cond, "num_classes", 0)
  cols, up = 8, max(1, 64 // image_shape[0])
  labelled = label_dim and n_eval >= label_dim * cols  # Rows = classes (labels are i mod L).
  row_labels = [f"class {c}" for c in range(label_dim)] if labelled else []

  def write_samples(x, path, title=""):
    if not labelled:
      grids.save_grid(np.asarray(x)[:64], path, ncol=8, upscale=up)
    else:
      grids.save_labelled_grid([(title, grids.by_label(x, label_dim, cols))], row_labels, path, up)

  teacher_x = {}  # The last reference's samples at eval.nfe, for write_comparison.

  def reference(key):
    out = {"real_heldout": metric.evaluate_heldout()} if metric is not None else {}
    for nfe in ev.teacher_nfes:
      x = decode(sample_multistep(teacher_params, key, nfe=int(nfe)))
      out[f"teacher_nfe{nfe}"] = score(x)
      if int(nfe) == ev.nfe:
        teacher_x["x"] = x
    return out

  def write_comparison(x, key, path):
    """Student samples beside the teacher's eval.nfe-step samples from the same noise and
    conditions (`key` is the one both were drawn with)."""
    t = teacher_x.pop("x", None)
    t = decode(sample_multistep(teacher_params, key, nfe=ev.nfe)) if t is None else t
    k = nets.steps
    blocks = [(f"student, {k} step{'s' if k > 1 else ''}", x), (f"teacher, {ev.nfe} NFE", t)]
    if not labelled:
      c = min(cols, n_eval)
      r = min(8, n_eval // c)
      return grids.save_labelled_grid([(n, np.asarray(b)[:r * c].reshape((r, c) + image_shape))
                                       for n, b in blocks], [""] * r, path, up)
    return grids.save_labelled_grid([(n, grids.by_label(b, label_dim, cols)) for n, b in blocks],
                                    row_labels, path, up)

  return dict(sample=sample, score=score, write_samples=write_samples, reference=reference,
              sample_teacher=lambda key: decode(sample_multistep(teacher_params, key, nfe=ev.nfe)),
              write_comparison=write_comparison if ev.sampler == "one_step" else None,
              extra_metrics=extra)

