"""Evaluation of text-to-image experiments: samplers, captioned grids, the teacher's reference
sampler and the digits prompt-accuracy metric.

Sample i is drawn for evaluation prompt rows[i mod E] (`eval_rows`; the Text spec's prompt set,
so `nets.cond.from_index(i)` is its condition). Samplers: 'one_step' (the student's
G(σ_init·z)) or the teacher family's reference samplers on any transformer params (PixArt:
'dpm_solver_pp_2m', 'ddim': teachers/pixart.sample at eval.nfe steps with classifier-free guidance
eval.guidance_scale and the cached "" prompt as ∅; used for teachers trained here).
`reference` runs the teacher at each eval.teacher_nfes with eval.guidance_scale
('teacher_nfe<n>') and, when that is ≠ 1, without guidance ('teacher_nfe<n>_unguided').
Samples are decoded by the codec before grids and metrics.

eval.metric: 'none'; 'digits' (or 'auto', the default, on the digits dataset in pixel space):
the digits metric (FD, class coverage, ...) plus prompt-class accuracy — the fraction of samples
the digits classifier assigns the class of their prompt (the cache's `labels`), over all labelled
prompts and separately over training and held-out (`heldout`) prompts. With the digits metric the
student is also measured against its guided teacher and per prompt (issue 25 §1):
  fd_teacher     FD between the samples' features and those of the teacher's eval.nfe sampler
                 at eval.guidance_scale on the same prompts and N ("student ≠ teacher", apart
                 from "guided teacher ≠ data"); on the teacher's own row it is the FD between two
                 draws of the teacher (its noise floor at this N);
  per-prompt set eval.per_prompt_samples samples (0 = off) of every held-out prompt and of the
                 first eval.per_prompt_train training prompts of each class:
                 heldout_accuracy (and _min, the worst held-out prompt) over those samples, and
                 within_prompt_diversity(_heldout): the features' variance within one prompt
                 (trace, averaged over prompts) over the real digits' within-class variance,
                 1 = as spread as a class of real digits, 0 = one image per prompt.
Teacher samples are computed once per evaluator; with eval.reference_cache = a folder they are
also kept there as .npz files named by a digest of everything they depend on (teacher weights,
prompts, null, sampler, NFE, guidance, noise key, N), so sweeps over students share them. A file
is used only when it verifies (`_read_reference`: its zip CRC-32s, a `key` member equal to the
digest it is named by, N finite float samples); otherwise it is recomputed and rewritten, with a
warning naming it.
"""
from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from fdistill_jax import codecs, conditioning, fileio, untrusted
from fdistill_jax.diffusion import few_step
from fdistill_jax.evaluation import grids, registry
from fdistill_jax.experiments import t2i_text
from fdistill_jax.nets import Nets
from fdistill_jax import teachers

METRICS = registry.names(registry.T2I)  # config.eval.metric (evaluation/registry.py).


def _metric(cfg) -> str:
  """The metric eval.metric names, 'auto' resolved ('digits' on pixel-space digits, else 'none';
  registry.auto)."""
  return registry.resolve(cfg, registry.T2I)


def eval_rows(cfg, cache) -> np.ndarray:
  """Prompt rows of the evaluation samples (sample i gets rows[i mod E]): every labelled prompt
  (training and held-out) for the digits metric, else the first eval.num_prompts prompts."""
  labels = getattr(cache, "labels", None)
  if _metric(cfg) == "digits":
    if labels is None:
      raise ValueError("config.eval.metric='digits' needs a prompt cache with per-prompt 'labels'")
    return np.flatnonzero(np.asarray(labels) >= 0)
  return np.arange(min(int(cfg.eval.num_prompts), len(cache)))


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


def per_prompt_rows(cache, per_train: int) -> np.ndarray:
  """Cache rows of the per-prompt set: every labelled held-out prompt, then the first `per_train`
  labelled training prompts of each class (int [P])."""
  labels = np.asarray(cache.labels)
  held = (np.zeros(len(labels), bool) if getattr(cache, "heldout", None) is None
          else np.asarray(cache.heldout, bool))
  train = [r for c in sorted(set(labels[labels >= 0].tolist()))
           for r in np.flatnonzero((labels == c) & ~held)[:per_train]]
  return np.concatenate([np.flatnonzero(held & (labels >= 0)), np.asarray(train, np.int64)])


def within_prompt_diversity(feats: np.ndarray, groups: np.ndarray, unit: float) -> float:
  """Mean over groups (prompts) of the trace of the features' covariance within the group,
  divided by `unit` (the real data's within-class variance). feats [N, F], groups int [N]."""
  v = [np.var(feats[groups == g], axis=0).sum() for g in np.unique(groups)
       if np.sum(groups == g) >= 2]
  return float(np.mean(v) / unit) if v else 0.0


def _digest(*parts) -> str:
  """sha256 over arrays (their dtype, shape and bytes), pytrees of arrays and plain values."""
  h = hashlib.sha256()
  for part in parts:
    for leaf in jax.tree.leaves(part):
      a = np.asarray(leaf)
      h.update(f"{a.dtype}{a.shape}".encode())
      h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:24]


def _read_reference(path, name: str, n: int) -> np.ndarray:
  """The teacher samples of a reference-cache file, or ValueError naming it and why: read by
  fileio.load_npz (sizes bounded, each member's zip CRC-32 checked), its `key` must be the digest
  it is named by, and `samples` n finite floats."""
  f = fileio.load_npz(path)
  if "key" not in f or f["key"].dtype.kind != "U" or str(f["key"]) != name or "samples" not in f:
    raise ValueError(f"{path}: not the teacher-sample cache its name says (members "
                     f"{sorted(f)}; expected samples and key = {name!r})")
  x = untrusted.check_float_array(f["samples"], "samples", str(path))
  if x.ndim < 1 or x.shape[0] != n:
    raise ValueError(f"{path}: samples have shape {x.shape}; expected {n} samples")
  return x


def evaluator(cfg, nets: Nets, module, teacher_params, adapter, codec: codecs.Codec, cache,
              rows: np.ndarray, workdir: str, encode=t2i_text.frozen_encode) -> dict:
  """The Experiment's evaluation hooks (see the module docstring). encode(params, cond) ->
  (PixArt params, text cond): a trained text encoder's (t2i_text), the identity for a cache."""
  ev = cfg.eval
  shape = tuple(nets.data_shape)
  decode = codec.jit_decode()
  n_eval = int(ev.num_samples)
  chunk = int(ev.batch_size or n_eval)
  w_eval = float(ev.guidance_scale)
  tm = teachers.of(cfg).teacher_module()
  solver = ev.teacher_solver
  idx = np.arange(n_eval) % len(rows)
  sample_rows = rows[idx]
  conds = nets.cond.from_index(jnp.asarray(idx))  # [n_eval] conditions of the samples
  # A student that takes w as an input samples at w_eval (conditioning.WithGuidance); teachers
  # read the text only.
  base = conditioning.base_condition
  takes_w = isinstance(nets.cond, conditioning.WithGuidance)

  def at_w_eval(cond):
    if not takes_w or (isinstance(cond, dict) and set(cond) == {"cond", "w"}):
      return cond
    return nets.cond.at_scale(cond, w_eval)

  teacher_conds = base(conds)
  null = base(nets.cond.null(1))

  @functools.partial(jax.jit, static_argnames=("nfe", "w", "how"))
  def _multistep(params, z, cond, nfe: int, w: float, how: str):
    tp, cond_e = encode(params, base(cond))  # Encoded once, outside the solver loop.
    net = tm.wrap(cfg.teacher, module, tp, adapter, null_cond=encode(params, null)[1])
    return tm.sample(net, z, cond_e, num_steps=nfe, guidance_scale=w, solver=how)

  @jax.jit
  def _one_step(params, z, cond, noise_key=None):
    # noise_key: a K-step student's re-noising noise (default: derived from z's first entries).
    if noise_key is None:
      noise_key = few_step.noise_key_from(z)
    return nets.generate(params, z, cond, noise_key=noise_key)

  def _chunks(fn, params, key, cs=None):
    """Decoded samples of fn for conditions cs (default the evaluation set), noise from key."""
    cs = conds if cs is None else cs
    total = len(jax.tree.leaves(cs)[0])
    step = min(chunk, total) if chunk else total
    outs = []
    for i, s in enumerate(range(0, total, step)):
      n = min(step, total - s)
      z = jax.random.normal(jax.random.fold_in(key, i), (n,) + shape)
      c = jax.tree.map(lambda a: a[s:s + n], cs)
      outs.append(np.asarray(decode(fn(params, z, c))))
    return np.concatenate(outs)

  def multistep(params, key, nfe: int, w: float, how: str = solver, cs=None):
    return _chunks(lambda p, z, c: _multistep(p, z, c, nfe=nfe, w=w, how=how), params, key, cs)

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
      x = _one_step(params, z, at_w_eval(cond))
    else:
      x = _multistep(params, z, cond, nfe=int(ev.nfe), w=w_eval, how=ev.sampler)
    return np.asarray(decode(x))

  # ------------------------------------------------------------ teacher samples, memoised
  memo = {}
  ref_dir = ev.reference_cache
  null_arrays = jax.device_get(null)

  def teacher_samples(key, nfe: int, w: float, which: str = "eval") -> np.ndarray:
    """The teacher's decoded samples of the evaluation set ('eval') or the per-prompt set
    ('per_prompt'), memoised in memory and, with eval.reference_cache, on disk."""
    cs = teacher_conds if which == "eval" else per_conds
    tag = _digest(np.asarray(jax.random.key_data(key)), cs, null_arrays,
                  np.asarray([nfe, w]), np.frombuffer(solver.encode(), np.uint8),
                  np.asarray(shape))
    if tag in memo:
      return memo[tag]
    path = name = None
    if ref_dir:
      params_tag = memo.setdefault("params", _digest(teacher_params))
      name = f"t2i_teacher_{params_tag}_{tag}"
      path = epath.Path(ref_dir) / f"{name}.npz"
      if path.is_file():
        try:
          x = _read_reference(path, name, len(jax.tree.leaves(cs)[0]))
          memo[tag] = x
          return x
        except ValueError as e:
          logging.warning("%s; recomputing the teacher samples", e)
    x = multistep(teacher_params, key, nfe, w, cs=cs)
    memo[tag] = x
    if path is not None:
      fileio.makedirs(str(path.parent))
      # `key` binds the content to the digest in its name (a renamed or copied file is refused).
      fileio.save_npz(str(path), samples=x, key=np.asarray(name))
    return x

  per_n = int(ev.per_prompt_samples)
  ctx = registry.Context(workdir=workdir, nets=nets, decode=decode,
                         image_shape=tuple(codec.image_shape(shape)))
  family, metric = registry.build(cfg, ctx, registry.T2I)  # digits: a DigitsMetric; none: None
  if family == "digits":
    labels = np.asarray(cache.labels)[sample_rows]
    held = getattr(cache, "heldout", None)
    held_all = None if held is None else np.asarray(held, bool)
    held = None if held is None else held_all[sample_rows]
    if per_n:
      per_rows = per_prompt_rows(cache, int(ev.per_prompt_train))
      per_sample_rows = np.repeat(per_rows, per_n)  # prompt p's samples are contiguous
      per_conds = {k: jnp.asarray(v, jnp.int32 if k == "ids" else jnp.float32)
                   for k, v in cache.condition(per_sample_rows).items()}
      per_held = (np.zeros(len(per_sample_rows), bool) if held_all is None
                  else held_all[per_sample_rows])
  per_key = lambda key: jax.random.fold_in(key, 7)  # the per-prompt set's own noise

  def per_prompt_metrics(x: np.ndarray) -> dict:
    """heldout_accuracy(_min) and within-prompt diversity of per-prompt samples x."""
    logits, feats = metric.logits(x), metric.features(x)
    ok = np.argmax(logits, -1) == np.asarray(cache.labels)[per_sample_rows]
    out = {"per_prompt_samples": float(per_n)}
    if per_held.any():
      acc = [ok[per_sample_rows == r].mean() for r in np.unique(per_sample_rows[per_held])]
      out.update(heldout_accuracy=float(ok[per_held].mean()),
                 heldout_accuracy_min=float(np.min(acc)),
                 within_prompt_diversity_heldout=within_prompt_diversity(
                     feats[per_held], per_sample_rows[per_held], metric.ref_class_var))
    if (~per_held).any():
      out["within_prompt_diversity"] = within_prompt_diversity(
          feats[~per_held], per_sample_rows[~per_held], metric.ref_class_var)
    return out

  def score(x, key=None, teacher_key=None) -> dict:
    """Metrics of samples x of the evaluation set; with the digits metric and a key, also
    fd_teacher against the teacher's samples drawn with teacher_key (default key)."""
    x = np.asarray(x)
    out = {"pixel_mean": float(np.mean(x)), "pixel_std": float(np.std(x))}
    if metric is not None:
      out.update(metric.evaluate(x))
      out.update(prompt_accuracy(np.argmax(metric.logits(x), -1), labels[:len(x)],
                                 None if held is None else held[:len(x)]))
      if key is not None and len(x) == n_eval:
        ref = teacher_samples(key if teacher_key is None else teacher_key, int(ev.nfe), w_eval)
        out["fd_teacher"] = metric.fd_between(x, ref)
    return out

  def extra_metrics(params) -> dict:
    """The per-prompt set of generator params (eval.sampler)."""
    if metric is None or not per_n:
      return {}
    key = per_key(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 99))
    if ev.sampler == "one_step":
      x = _chunks(_one_step, params, key, at_w_eval(per_conds))
    else:
      x = multistep(params, key, int(ev.nfe), w_eval, ev.sampler, cs=per_conds)
    return per_prompt_metrics(x)

  grid_n = min(int(ev.grid_size), n_eval)
  captions = [cache.prompts[r] for r in sample_rows[:grid_n]]
  up = max(1, 64 // codec.image_shape(shape)[0])

  def write_samples(x, path, title=""):
    grids.save_captioned_grid(np.asarray(x)[:grid_n], captions, path, ncol=min(8, grid_n),
                              upscale=up, title=title)

  def reference(key):
    """The teacher at each eval.teacher_nfes, guided and unguided; its eval.nfe guided row
    carries fd_teacher between two draws (the floor) and the per-prompt metrics."""
    out = {}
    for nfe in ev.teacher_nfes:
      nfe = int(nfe)
      for w, name in ((w_eval, f"teacher_nfe{nfe}"), (1.0, f"teacher_nfe{nfe}_unguided")):
        if name.endswith("unguided") and w_eval == 1.0:
          continue
        own = nfe == int(ev.nfe) and w == w_eval
        res = score(teacher_samples(key, nfe, w), key,
                    teacher_key=jax.random.fold_in(key, 1) if own else None)
        if own and metric is not None and per_n:
          res.update(per_prompt_metrics(teacher_samples(
              per_key(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 99)), nfe, w,
              "per_prompt")))
        out[name] = res
    return out

  return dict(sample=sample, score=score, write_samples=write_samples, reference=reference,
              sample_teacher=lambda key: teacher_samples(key, int(ev.nfe), w_eval),
              sample_cond=sample_cond, extra_metrics=extra_metrics)
