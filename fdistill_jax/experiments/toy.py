"""Toy problems: distil an exact Gaussian-mixture teacher into a one-step MLP generator.

As in the real method, the generator and the fake score start from a pretrained denoiser of the
teacher, not from random weights: a small MLP trained briefly with the EDM loss on exact teacher
samples (cached in the workdir as pretrained_denoiser.msgpack, sha256-checked: see load_or_pretrain).
The teacher's own denoiser is exact.
Discriminator features come from the frozen pretrained denoiser ('teacher', the analogue of
FastGen's frozen-teacher encoder) or from the fake score ('fake_score', DMD2).
"""
from __future__ import annotations

import functools
import math
import io
import json

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epath

from fdistill_jax import conditioning, fileio
from fdistill_jax.diffusion import edm, few_step, samplers
from fdistill_jax.evaluation import registry
from fdistill_jax import experiments
from fdistill_jax.experiments import Experiment
from fdistill_jax.models.heads import MLPHead
from fdistill_jax.models.mlp import MLPDenoiser
from fdistill_jax.teachers import analytic
from fdistill_jax import validation as V
from fdistill_jax.validation import need


MIXTURES = ("ring", "random", "grid", "explicit", "file")


_WIDTH, _DEPTH = V.within(1, 65_536, "an int"), V.within(1, 256, "an int")
RULES = {  # Ranges of the toy fields (types and finiteness: config_checks.check_types).
    "teacher.radius": V.above(0),
    "teacher.scale": V.above(0),
    "teacher.dim": V.within(1, 65_536, "an int"),
    "teacher.spread": V.above(0),
    "teacher.mixture_seed": V.within(0, 2 ** 32 - 1, "an int"),
    "teacher.weights": V.each(V.above(0, "a finite weight")),
    "teacher.grid_size": V.within(1, 1000, "an int"),
    "teacher.spacing": V.above(0),
    "teacher.means": V.each(V.Rule(lambda r: len(r) >= 1 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r),
        "a tuple of finite coordinates")),
    "teacher.scales": V.each(V.Rule(lambda s: all(x > 0 and math.isfinite(x) for x in (
        s if isinstance(s, (tuple, list)) else (s,))), "a finite scale > 0, or a tuple of them")),
    "student.hidden": _WIDTH,
    "student.depth": _DEPTH,
    "disc.hidden": _WIDTH,
    "disc.depth": _DEPTH,
    "pretrain.steps": V.at_least(1),
    "pretrain.batch": V.within(1, 1 << 20, "an int"),
    "teacher.num_modes": V.within(1, 100_000, "an int"),
    "pretrain.lr": V.within(0, 1, "a learning rate", lo_open=True),
    "pretrain.p_mean": V.within(-20, 20, "a mean of ln σ"),
    "pretrain.p_std": V.within(0, 10, "a std of ln σ", lo_open=True),
    "pretrain.seed": V.within(0, 2 ** 32 - 1, "an int"),
    "eval.teacher_nfe": V.within(1, 10_000, "an int"),
}


def check_config(cfg) -> None:
  """Validates the 'gmm' teacher's fields; raises ConfigError."""
  t = cfg.teacher
  experiments.refuse_init_checkpoint(cfg)
  need(t.mixture in MIXTURES, "teacher.mixture", t.mixture, f"allowed: {MIXTURES}")
  V.check_fields(cfg, RULES)
  if t.mixture == "explicit":
    need(len(t.means) >= 1 and len({len(r) for r in t.means}) == 1, "teacher.means", t.means,
         "mixture 'explicit' needs K >= 1 means of one dimension, a (K, d) tuple of tuples")
    need(len(t.scales) in (0, len(t.means)), "teacher.scales", t.scales,
         f"() (teacher.scale for every mode) or one per mode ({len(t.means)})")
  if t.mixture == "file":
    need(bool(t.file), "teacher.file", t.file, "a .npz/.json mixture file for mixture 'file'")
  need(t.num_modes >= 1, "teacher.num_modes", t.num_modes, "must be >= 1")
  k = {"ring": t.num_modes, "random": t.num_modes, "grid": t.grid_size ** 2}.get(t.mixture)
  need(not t.weights or k is None or k % len(t.weights) == 0, "teacher.weights", t.weights,
       f"() or K weights, or fewer that tile the K = {k} modes")


def make_mixture(t) -> analytic.GaussianMixture:
  """The mixture named by config.teacher.mixture:
  'ring'   num_modes on a circle of `radius` in 2-D, isotropic `scale`;
  'random' num_modes at N(0, spread²) positions in `dim` dimensions (mixture_seed), `scale`;
  'grid'   grid_size × grid_size modes `spacing` apart in 2-D, `scale`;
  'explicit' the tuples teacher.means ((K, d) nested), teacher.scales (K or K×d; empty = `scale`);
  'file'   teacher.file, a .npz/.json with means, scales and optional weights.
  weights: K values, or fewer that tile the K modes (K a multiple of their number); () = uniform.
  """
  if t.mixture == "ring":
    means, scales = analytic.ring_mixture(t.num_modes, t.radius).means, t.scale
  elif t.mixture == "random":
    means = analytic.random_mixture(t.mixture_seed, t.num_modes, t.dim, t.spread).means
    scales = t.scale
  elif t.mixture == "grid":
    means, scales = analytic.grid_mixture(t.grid_size, t.spacing).means, t.scale
  elif t.mixture == "explicit":
    if not t.means:
      raise ValueError("config.teacher.mixture='explicit' needs config.teacher.means, a (K, d) "
                       "tuple of tuples")
    means, scales = np.asarray(t.means, np.float64), (np.asarray(t.scales) if t.scales else t.scale)
  elif t.mixture == "file":
    spec = analytic.load_mixture_file(t.file)
    means, scales = spec["means"], spec["scales"]
    if "weights" in spec:
      return analytic.GaussianMixture.create(means, scales, spec["weights"] / spec["weights"].sum())
  else:
    raise ValueError(f"config.teacher.mixture={t.mixture!r}; allowed: 'ring', 'random', 'grid', "
                     "'explicit', 'file'")
  return analytic.GaussianMixture.create(means, scales, _weights(t.weights, len(means)))


def _weights(w, k: int):
  if w is None or len(w) == 0:
    return None
  w = np.asarray(w, np.float64)
  if k % len(w):
    raise ValueError(f"config.teacher.weights has {len(w)} values for {k} modes; give {k} values "
                     "or a number of values that divides it (they are tiled)")
  w = np.tile(w, k // len(w))
  return w / w.sum()


def pretrain_denoiser(module: MLPDenoiser, gmm, cfg, key) -> dict:
  """EDM-loss training of `module` on exact samples (ln σ ~ N(-1.2, 1.2²), λ(σ) weighting)."""
  p = cfg.pretrain
  params = module.init(key, jnp.zeros((1, gmm.dim)), jnp.ones((1,)))["params"]
  tx = optax.adam(optax.cosine_decay_schedule(p.lr, p.steps))
  opt = tx.init(params)
  sd = cfg.diffusion.sigma_data

  @jax.jit
  def step(params, opt, k):
    k1, k2, k3 = jax.random.split(k, 3)
    x0, _ = gmm.sample(k1, p.batch)
    sigma = edm.sample_lognormal_sigma(k2, (p.batch,), p.p_mean, p.p_std)
    xt = x0 + sigma[:, None] * jax.random.normal(k3, x0.shape)

    def loss_fn(pr):
      d = module.apply({"params": pr}, xt, sigma)
      return jnp.mean(edm.edm_loss_weight(sigma, sd)[:, None] * (d - x0) ** 2)

    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt, loss

  for i in range(p.steps):
    params, opt, loss = step(params, opt, jax.random.fold_in(key, i))
  logging.info("pretrained denoiser: %d steps, final EDM loss %.4f", p.steps, float(loss))
  return params


def cache_key(cfg) -> dict:
  """Everything the pretrained denoiser depends on: the teacher, σ_data, the network and the
  pretraining settings."""
  return {"teacher": cfg.teacher.to_dict(), "sigma_data": float(cfg.diffusion.sigma_data),
          "student": cfg.student.to_dict(), "pretrain": cfg.pretrain.to_dict()}


def load_or_pretrain(module, gmm, cfg, workdir: str) -> dict:
  """Pretrained denoiser params, cached in workdir/pretrained_denoiser.msgpack: a
  fileio.write_cache envelope holding the params, their cache_key and sha256, so the one file can
  be copied between workdirs. A cache that fails its sha256, was made for other settings or is
  not such an envelope (an older version's bare params) is pretrained again with a warning;
  pretrained_denoiser.json beside it shows the settings (informational, not read)."""
  path = epath.Path(workdir) / "pretrained_denoiser.msgpack"  # Local or gs://.
  want = cache_key(cfg)
  key = jax.random.PRNGKey(cfg.pretrain.seed)
  # Only the params' structure is read: shapes, no op-by-op init (dozens of small compiles).
  template = jax.eval_shape(module.init, key, jnp.zeros((1, gmm.dim)), jnp.ones((1,)))["params"]
  if path.exists():
    try:
      return read_pretrained(path, template, want)
    except fileio.CacheError as e:
      logging.warning("%s; pretraining again", e)
  params = pretrain_denoiser(module, gmm, cfg, key)
  fileio.write_json(path.with_suffix(".json"), json.loads(json.dumps(want)))
  # All-or-nothing: a killed run never leaves a half-written cache.
  fileio.write_cache(path, flax.serialization.to_bytes(params), want)
  return params


def read_pretrained(path: epath.PathLike, template, want: dict) -> dict:
  """The params of a pretrained-denoiser cache (shaped like `template`), checked by
  fileio.read_cache against `want` (a cache_key); fileio.CacheError when it must not be used."""
  payload = fileio.read_cache(path, want)
  try:
    return flax.serialization.from_bytes(template, payload)
  except Exception as e:  # pylint: disable=broad-except  (a layout this module does not build)
    raise fileio.CacheError(f"{path}: params do not fit the denoiser ({e})") from None


def scatter_png(gmm, x: np.ndarray, path: str, title: str = "") -> None:
  """Student samples over the exact density (first two coordinates), written as PNG."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
  lim = float(np.abs(gmm.means).max() + 4 * gmm.scales.max())
  if gmm.dim == 2:
    g = np.linspace(-lim, lim, 200)
    xx, yy = np.meshgrid(g, g)
    lp = np.asarray(gmm.log_prob(jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)))
    ax.contourf(xx, yy, np.exp(lp).reshape(xx.shape), levels=30, cmap="Blues")
  ax.scatter(x[:, 0], x[:, 1], s=2, c="crimson", alpha=0.5)
  ax.set_xlim(-lim, lim)
  ax.set_ylim(-lim, lim)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  buf = io.BytesIO()  # Through fileio: path may be gs://.
  fig.savefig(buf, format="png")
  plt.close(fig)
  fileio.write_bytes(path, buf.getvalue())


def build(cfg, workdir: str, method=None) -> Experiment:
  """The toy experiment of cfg (method: unused; every toy teacher is cheap to build)."""
  del method
  gmm = make_mixture(cfg.teacher)
  s = cfg.student
  module = MLPDenoiser(dim=gmm.dim, hidden=s.hidden, depth=s.depth,
                       sigma_data=cfg.diffusion.sigma_data)
  pre = load_or_pretrain(module, gmm, cfg, workdir)
  head = MLPHead(hidden=cfg.disc.hidden, depth=cfg.disc.depth) if cfg.disc.enabled else None

  def student(params, x, sigma, cond, *, key=None, features=False):
    del cond, key
    return module.apply({"params": params}, x, sigma, return_features=features)

  def teacher(frozen, x, sigma, cond, *, features=False):
    del cond
    x0 = gmm.denoise(x, sigma)
    if not features:
      return x0
    _, feats = module.apply({"params": frozen["feature_net"]}, x, sigma, return_features=True)
    return x0, feats

  nets, init_params = experiments.networks(
      cfg, student=student, teacher=teacher, head=head, data_shape=(gmm.dim,),
      cond=conditioning.Unconditional(), generator_init=lambda key: pre,
      head_example=lambda _: (jnp.zeros((1, s.hidden)), jnp.ones((1,))))

  b = cfg.train.batch_size
  data_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 7)

  @jax.jit
  def _batch(step):
    x, _ = gmm.sample(jax.random.fold_in(data_key, step), b)
    return {"x": x, "cond": nets.cond.null(b)}

  n_eval = cfg.eval.num_samples
  # The toy metrics (evaluation/registry.py: the toy's one metric family): (x, key) -> dict.
  _, metric = registry.build(cfg, registry.Context(workdir=workdir, nets=nets, target=gmm),
                             registry.TOY)

  @jax.jit
  def _samples(gen_params, key):
    z = jax.random.normal(key, (n_eval, gmm.dim))
    return nets.generate(gen_params, z, nets.cond.from_index(jnp.arange(n_eval)),
                         noise_key=few_step.chain_key(key))

  def score(x, key):
    return metric(x, jax.random.fold_in(key, 1))

  def write_samples(x, path, title=""):
    scatter_png(gmm, np.asarray(x), path, title)

  def reference(key):
    """Teacher's Heun sampler (exact denoiser) at cfg.eval.teacher_nfe and the pretrained init."""
    steps = samplers.steps_for_nfe(cfg.eval.teacher_nfe)
    fn = jax.jit(functools.partial(samplers.edm_sampler, gmm.denoise, num_steps=steps,
                                   sigma_min=cfg.diffusion.sigma_min,
                                   sigma_max=cfg.diffusion.sigma_max))
    k1, k2, k3 = jax.random.split(key, 3)
    x = fn(jax.random.normal(k1, (n_eval, gmm.dim)))
    return {f"teacher_heun{cfg.eval.teacher_nfe}": metric(x, k2),
            "init_generator": score(_samples(pre, k3), k3)}

  return Experiment(nets=nets, frozen={"feature_net": pre}, init_params=init_params,
                    batch=_batch, batch_spec=lambda: jax.eval_shape(_batch, 0), sample=_samples,
                    score=score, write_samples=write_samples,
                    reference=reference)
