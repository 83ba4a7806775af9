"""Image problems: EDM teachers (NVIDIA's files or our own), image data, image metrics.

* teacher.kind = 'edm': the teacher is an EDMPrecond network loaded from teacher.checkpoint
  (.pkl / .safetensors / .pt, architecture from the file) or, with no checkpoint, built from
  teacher.precond_kwargs with random weights (a loud warning: for smoke tests and benchmarks of
  the full architecture only).
* The generator and the fake score start as copies of the teacher (σ_init·z at σ_init in).
* Discriminator: FastGen's conv heads on named feature maps of the frozen teacher
  ('enc<res>' = encoder output at resolution res, 'bottleneck'), or of the fake score.
* Data comes from fdistill_jax.data (digits, TFDS, EDM zips, folders) through a resumable pipeline
  whose position is saved in checkpoints.
* Evaluation: the digits metric when the dataset is digits, FID when eval.fid_weights and
  eval.fid_reference are set; sample grids as PNG.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from fdistill_jax import data as data_lib
from fdistill_jax.diffusion import samplers
from fdistill_jax.engine.nets import Nets
from fdistill_jax.evaluation import grids
from fdistill_jax.experiments import Experiment
from fdistill_jax.models.edm import build_edm_precond
from fdistill_jax.models.heads import MultiConvHead
from fdistill_jax.teachers.edm import load_edm

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def flat_features(feats: dict) -> dict:
  """{'encoder': {res: map}, 'bottleneck': map} -> {'enc<res>': map, 'bottleneck': map}."""
  out = {f"enc{r}": v for r, v in feats.get("encoder", {}).items()}
  if "bottleneck" in feats:
    out["bottleneck"] = feats["bottleneck"]
  return out


def load_teacher(cfg, needs_teacher: bool):
  """(module, variables) of the configured EDM teacher."""
  t = cfg.teacher
  dtype = DTYPES[t.get("dtype", "float32")]
  kwargs = t.precond_kwargs.to_dict() if t.get("precond_kwargs") else None
  if t.checkpoint:
    if not os.path.exists(t.checkpoint):
      raise FileNotFoundError(f"config.teacher.checkpoint={t.checkpoint!r} does not exist "
                              "(see README: 'Teachers' for where to get NVIDIA's EDM files)")
    return load_edm(t.checkpoint, kwargs, dtype=dtype, remat=t.get("remat", False))
  if kwargs is None:
    raise ValueError("config.teacher needs a checkpoint or precond_kwargs")
  module = build_edm_precond(kwargs, dtype=dtype, remat=t.get("remat", False))
  if needs_teacher:
    logging.warning("=" * 78 + "\nNO TEACHER CHECKPOINT (config.teacher.checkpoint is empty): "
                    "the teacher has RANDOM weights.\nThis run only exercises the architecture, "
                    "sharding and step speed; its samples mean nothing.\n" + "=" * 78)
  key = json.dumps(kwargs, sort_keys=True, default=str)
  return module, _random_variables(key, t.get("dtype", "float32"), t.get("init_seed", 0))


@functools.lru_cache(maxsize=2)
def _random_variables(kwargs_json: str, dtype: str, seed: int):
  """Flax-initialised variables of an EDMPrecond, memoised per (architecture, seed) because the
  init compiles for tens of seconds on CPU and eval/export/sample rebuild the same experiment."""
  module = build_edm_precond(json.loads(kwargs_json), dtype=DTYPES[dtype])
  res, ch = module.img_resolution, module.img_channels
  # An 'rbg' key: XLA compiles Flax's hundreds of threefry draws ~5x slower on CPU.
  variables = jax.jit(module.init)(jax.random.key(seed, impl="rbg"),
                                   jnp.zeros((1, res, res, ch)), jnp.ones((1,)),
                                   jnp.zeros((1, module.label_dim)) if module.label_dim else None)
  return jax.device_get(variables)


def build(cfg, workdir: str, method) -> Experiment:
  needs_teacher = getattr(method, "NEEDS_TEACHER", True)
  module, variables = load_teacher(cfg, needs_teacher)
  consts = {k: v for k, v in variables.items() if k != "params"}  # e.g. NCSN++ Fourier freqs
  res, ch, label_dim = module.img_resolution, module.img_channels, module.label_dim
  shape = (res, res, ch)

  def apply(params, x, sigma, labels, key, features):
    out = module.apply({"params": params, **consts}, x, sigma,
                       labels if label_dim else None, deterministic=key is None,
                       return_features=features, rngs=None if key is None else {"dropout": key})
    return (out[0], flat_features(out[1])) if features else out

  def student(params, x, sigma, labels, *, key=None, features=False):
    return apply(params, x, sigma, labels, key, features)

  def teacher(frozen, x, sigma, labels, *, features=False):
    return apply(frozen["teacher"], x, sigma, labels, None, features)

  d = cfg.disc
  head = MultiConvHead(tuple(d.feature_keys), d.channels) if d.enabled else None
  disc = None if head is None else (lambda p, f, s: head.apply({"params": p}, f, s))
  nets = Nets(student=student, teacher=teacher, disc=disc, sigma_init=cfg.diffusion.sigma_init,
              data_shape=shape, label_dim=label_dim)

  teacher_params = variables["params"]

  def init_params(key):
    params = {"generator": teacher_params,
              "fake_score": jax.tree.map(jnp.copy, teacher_params)}
    if head is not None:
      x = jnp.zeros((1,) + shape)
      lab = jnp.zeros((1, label_dim))
      _, feats = student(teacher_params, x, jnp.ones((1,)), lab, features=True)
      params["discriminator"] = head.init(key, feats)["params"]
    return params

  # ---------------------------------------------------------------- data
  if cfg.dataset.name == "synthetic":  # Random images: step-speed runs with no data at hand.
    n = max(cfg.train.batch_size, 64)
    rng = np.random.default_rng(cfg.seed)
    source = data_lib.ArraySource(rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
                                  rng.integers(0, max(label_dim, 1), (n,)) if label_dim else None,
                                  label_dim=label_dim or None, name="synthetic")
  else:
    source = data_lib.make_source(cfg.dataset)
  if tuple(source.image_shape) != shape:
    raise ValueError(f"config.dataset gives images of shape {tuple(source.image_shape)} but the "
                     f"teacher expects {shape}")
  if source.label_dim != label_dim and cfg.dataset.get("use_labels", True) and label_dim:
    raise ValueError(f"config.dataset has label_dim {source.label_dim}, the teacher {label_dim}")
  local = data_lib.local_batch_size(cfg.train.batch_size)
  pipe = data_lib.InputPipeline(source, local, seed=cfg.seed, xflip=cfg.dataset.get("xflip", False),
                                use_labels=bool(label_dim))

  def batch(step):
    del step  # The pipeline is positional; its state is checkpointed.
    b = next(pipe)
    return {"x": b["images"], "labels": b["labels"]}

  def batch_spec():
    g = cfg.train.batch_size
    return {"x": jax.ShapeDtypeStruct((g,) + shape, jnp.float32),
            "labels": jax.ShapeDtypeStruct((g, pipe.label_dim), jnp.float32)}

  # ---------------------------------------------------------------- evaluation
  ev = cfg.eval
  metric = None
  if ev.get("metric", "auto") in ("auto", "digits") and cfg.dataset.name == "digits":
    from fdistill_jax.evaluation.digits_metric import DigitsMetric
    metric = DigitsMetric.create(resolution=res, cache_dir=ev.get("cache_dir") or workdir)
  n_eval = ev.num_samples
  eval_labels = (jax.nn.one_hot(jnp.arange(n_eval) % label_dim, label_dim)
                 if label_dim else jnp.zeros((n_eval, 0)))

  def _denoiser(params):
    return lambda x, s: student(params, x, jnp.broadcast_to(s, (x.shape[0],)), eval_labels[:x.shape[0]])

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
    return nets.generate(params, z, eval_labels)

  def samples(params, key):
    if ev.sampler == "one_step":
      return sample_one_step(params, key)
    return sample_multistep(params, key, nfe=ev.nfe)

  def score(x, key=None) -> dict:
    del key
    out = {"pixel_mean": float(jnp.mean(x)), "pixel_std": float(jnp.std(x))}
    if metric is not None:
      out.update(metric.evaluate(np.asarray(x)))
    return out

  cols, up = 8, max(1, 64 // res)
  labelled = label_dim and n_eval >= label_dim * cols  # Rows = classes (labels are i mod L).
  row_labels = [f"class {c}" for c in range(label_dim)] if labelled else []

  def write_samples(x, path, title=""):
    if not labelled:
      grids.save_grid(np.asarray(x)[:64], path, ncol=8, upscale=up)
    else:
      grids.save_labelled_grid([(title, grids.by_label(x, label_dim, cols))], row_labels, path, up)

  teacher_x = {}  # The last reference's samples at eval.nfe, for write_comparison.

  def reference(key):
    out = {}
    for nfe in ev.get("teacher_nfes", ()):
      x = sample_multistep(teacher_params, key, nfe=int(nfe))
      out[f"teacher_nfe{nfe}"] = score(x)
      if int(nfe) == ev.nfe:
        teacher_x["x"] = x
    return out

  def write_comparison(x, key, path):
    """Student samples beside the teacher's eval.nfe-step samples from the same noise and labels
    (`key` is the one both were drawn with)."""
    t = teacher_x.pop("x", None)
    t = sample_multistep(teacher_params, key, nfe=ev.nfe) if t is None else t
    blocks = [("student, 1 step", x), (f"teacher, {ev.nfe} NFE", t)]
    if not labelled:
      c = min(cols, n_eval)
      r = min(8, n_eval // c)
      return grids.save_labelled_grid([(n, np.asarray(b)[:r * c].reshape((r, c) + shape))
                                       for n, b in blocks], [""] * r, path, up)
    return grids.save_labelled_grid([(n, grids.by_label(b, label_dim, cols)) for n, b in blocks],
                                    row_labels, path, up)

  # ---------------------------------------------------------------- FID (streamed)
  extra_metrics = None
  if ev.get("metric") == "fid":
    extra_metrics = _fid_metric(cfg, nets, shape, label_dim)

  return Experiment(nets=nets, frozen={"teacher": teacher_params}, init_params=init_params,
                    batch=batch, batch_spec=batch_spec, sample=samples, score=score,
                    write_samples=write_samples,
                    reference=reference,
                    data_state=pipe.get_state, restore_data=lambda s: s and pipe.set_state(s),
                    global_batch=False,
                    sample_teacher=lambda key: sample_multistep(teacher_params, key, nfe=ev.nfe),
                    write_comparison=write_comparison if ev.sampler == "one_step" else None,
                    extra_metrics=extra_metrics)


def _fid_metric(cfg, nets: Nets, shape, label_dim: int):
  """gen_params -> {'fid': ...} over eval.num_samples one-step samples, seeds 0..N-1 (EDM's
  protocol; labels = seed mod label_dim). Needs eval.fid_weights (pytorch-fid's Inception .pth
  or its .npz) and eval.fid_reference (EDM-format mu/sigma .npz); both are checked up front."""
  from fdistill_jax.evaluation import fid
  ev = cfg.eval
  if not ev.get("fid_weights") or not ev.get("fid_reference"):
    logging.warning("config.eval.metric='fid' but eval.fid_weights / eval.fid_reference are not "
                    "set: FID is skipped (see README 'Evaluation' for the two files)")
    return None
  for field in ("fid_weights", "fid_reference"):
    if not os.path.exists(ev[field]):
      raise FileNotFoundError(f"config.eval.{field}={ev[field]!r} does not exist (see README "
                              "'Evaluation')")
  batch = int(ev.get("fid_batch", 250))
  extractor = fid.FeatureExtractor.from_weight_file(ev.fid_weights, batch)

  @jax.jit
  def from_seeds(params, seeds):
    z = jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), shape))(seeds)
    labels = (jax.nn.one_hot(seeds % label_dim, label_dim) if label_dim
              else jnp.zeros((seeds.shape[0], 0)))
    return nets.generate(params, z, labels)

  def metric(params):
    fn = lambda seeds: np.asarray(from_seeds(params, jnp.asarray(seeds, jnp.int32)))
    return {"fid": fid.fid_from_generator(fn, extractor, ev.fid_reference, ev.num_samples)}

  return metric
