"""Knowledge distillation (Luhman & Luhman 2021): regress a one-step student onto teacher ODE pairs.

Pairs (z, y = Heun_teacher(σ_max·z)) are built once with the teacher's deterministic EDM Heun
sampler and cached on disk as npz shards (`<cache>/shard_00000.npz`, ...; keys z [n, ...],
y [n, ...] and the conditions as their spec names them, e.g. labels [n, label_dim]) through
fdistill_jax/shard_cache.py. Every shard is written all-or-nothing, so a killed build leaves only
complete shards and the next build writes only the missing ones.
Shard i draws its noise from fold_in(PRNGKey(pairs_seed), i): the cache does not depend on how
often the build was interrupted. A manifest.json pins the settings; a cache built with other
settings, or whose manifest is unreadable, is refused naming the field (or the file) and the fix.
Shards are checked as they are loaded (`load_pair_cache`): npz structure and member sizes, each
member's zip CRC-32 (a flipped byte), float and finite z/y. A shard that fails is set aside as
`<name>.corrupt` with a warning and rebuilt: it is a function of (pairs_seed, its index) alone.

`prepare` (called by the engine's loop) builds/loads the cache and wraps `exp.batch` so every
batch also holds z_pair, y_pair, cond_pair (drawn uniformly from the cache, deterministic in the
step). The generator loss is mean_b d(G_θ(z_pair), y_pair) with d one of
  'l2' (mean squared error over elements), 'l1' (mean absolute error) or
  'pseudo_huber' (√(‖Δ‖² + c²) − c over the flattened sample; c ≤ 0 means 0.00054·√dim).
Config keys (config.method): pairs_num, pairs_shard_size, pairs_steps (Heun steps), pairs_seed,
pairs_dir ('' = <workdir>/kd_pairs), reg_distance, reg_huber_c.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from fdistill_jax import conditioning, fileio, shard_cache
from fdistill_jax.diffusion import few_step, samplers
from fdistill_jax.nets import Nets
from fdistill_jax import validation as V
from fdistill_jax.validation import need

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ()
DISTANCES = ("l2", "l1", "pseudo_huber")


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  del cfg
  return {}


def pair_keys() -> dict:
  """The pair-cache and regression-distance keys shared by kd and dmd."""
  return dict(pairs_num=4096, pairs_shard_size=1024, pairs_steps=18, pairs_seed=0, pairs_dir="",
              reg_distance="l2", reg_huber_c=0.0)


def method_config(**overrides) -> ml_collections.ConfigDict:
  """config.method for KD."""
  m = dict(name="kd", **pair_keys())
  m.update(overrides)
  return ml_collections.ConfigDict(m)


RULES = {  # Ranges beyond check_config's (types and finiteness: config_checks.check_types).
    "method.pairs_num": V.within(1, 10 ** 7, "an int (cached teacher pairs)"),
    "method.pairs_shard_size": V.within(1, 10 ** 6, "an int"),
    "method.pairs_seed": V.within(0, 2 ** 32 - 1, "an int"),
    "method.pairs_steps": V.within(1, 10_000, "an int (Heun steps)"),
    "method.reg_huber_c": V.at_least(0, "a finite number (0 = l2 in pseudo_huber)"),
    "method.reg_weight": V.at_least(0, "a finite weight"),
}


FIELDS = {**RULES, "method.pairs_dir": V.text("a folder ('' = <workdir>/kd_pairs)"),
          "method.reg_distance": V.one_of(*DISTANCES)}  # Every field (fdistill.FIELDS says why).
REQUIRED = ("pairs_dir", "pairs_num", "pairs_seed", "pairs_shard_size", "pairs_steps",
            "reg_distance", "reg_huber_c")


def check_config(cfg) -> None:
  """Validates the pair-cache and regression keys of cfg.method (kd and dmd)."""
  m = cfg.method
  V.check_fields(cfg, FIELDS)
  need(m.reg_distance in DISTANCES, "method.reg_distance", m.reg_distance,
       f"allowed: {DISTANCES}")
  need(m.pairs_num >= 1 and m.pairs_shard_size >= 1, "method.pairs_num/pairs_shard_size",
       (m.pairs_num, m.pairs_shard_size), "both must be >= 1")
  need(m.pairs_steps >= 1, "method.pairs_steps", m.pairs_steps, "Heun steps, must be >= 1")


# ----------------------------------------------------------------------------- pair cache
# The cache's files and checks are shard_cache's; this part makes and concatenates pairs.
PAIRS = shard_cache.Layout("shard_{i:05d}.npz", "manifest.json", what="pair-cache manifest")


def teacher_sampler(nets: Nets, frozen, num_steps: int, sigma_min: float, sigma_max: float):
  """jit fn(z [n, ...], cond) -> y: the teacher's deterministic Heun ODE sample."""

  @jax.jit
  def run(z, cond):
    den = lambda x, s: nets.teacher(frozen, x, jnp.full((x.shape[0],), s, jnp.float32), cond)
    return samplers.edm_sampler(den, z, num_steps, sigma_min, sigma_max)

  return run


def _manifest(num_pairs, shard_size, num_steps, seed, sigma_min, sigma_max, data_shape,
              spec: conditioning.ConditionSpec) -> dict:
  return {"num_pairs": int(num_pairs), "shard_size": int(shard_size), "num_steps": int(num_steps),
          "seed": int(seed), "sigma_min": float(sigma_min), "sigma_max": float(sigma_max),
          "data_shape": [int(d) for d in data_shape], **spec.describe()}


def _open_pair_cache(sample_fn, cache_dir: str, *, num_pairs: int, shard_size: int,
                     num_steps: int, seed: int, sigma_min: float, sigma_max: float,
                     data_shape: tuple[int, ...],
                     cond_spec: conditioning.ConditionSpec = conditioning.Unconditional()
                     ) -> tuple[list[str], shard_cache.MakeShard]:
  """(shard paths, make(i, path)) of the pair cache in cache_dir, after writing its manifest or
  checking the one there. Conditions are drawn by cond_spec.sample (uniform classes / prompts;
  [n, 0] when unconditional)."""
  if num_pairs < 1 or shard_size < 1:
    raise ValueError(f"config.method.pairs_num={num_pairs} and pairs_shard_size={shard_size} "
                     "must be >= 1")
  want = _manifest(num_pairs, shard_size, num_steps, seed, sigma_min, sigma_max, data_shape,
                   cond_spec)
  fix = (f"delete {cache_dir} to rebuild the cache, or set another config.method.pairs_dir "
         "(the shards cannot be matched to settings without a manifest)")
  if not PAIRS.resume(cache_dir, want, fix=fix):
    fileio.write_json(PAIRS.manifest_path(cache_dir), want, indent=None)

  def make(i: int, path: str) -> None:
    n = min(shard_size, num_pairs - i * shard_size)
    kz, kl = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), i))
    z = jax.random.normal(kz, (n,) + tuple(data_shape), jnp.float32)
    cond = cond_spec.sample(kl, n)
    PAIRS.write(path, {"z": np.asarray(z), "y": np.asarray(sample_fn(z, cond), np.float32),
                       **cond_spec.to_arrays(cond)})
    logging.info("kd pair cache: wrote %s (%d pairs)", path, n)

  return PAIRS.paths(cache_dir, -(-num_pairs // shard_size)), make


def build_pair_cache(sample_fn, cache_dir: str, *, max_new_shards: int | None = None,
                     **settings) -> list[str]:
  """Writes the missing shards of the pair cache; returns all shard paths (complete or not).

  sample_fn(z, cond) -> y; settings: num_pairs, shard_size, num_steps, seed, sigma_min,
  sigma_max, data_shape and cond_spec (_open_pair_cache). max_new_shards stops after that many
  new shards (a bounded build step; also how tests simulate a killed build).
  """
  paths, make = _open_pair_cache(sample_fn, cache_dir, **settings)
  return PAIRS.build(paths, make, max_new=max_new_shards)


def _load_shard(i: int, p: str, first: dict | None) -> dict[str, np.ndarray]:
  """The arrays of shard p, checked by PAIRS.read (member sizes, CRC-32, z and y float, float
  arrays finite) and holding the same arrays as the `first` shard's (PAIRS.error naming p)."""
  del i
  part, _ = PAIRS.read(p, required=("z", "y"), floats=("z", "y"))
  if first is not None and set(part) != set(first):
    raise PAIRS.error(f"{p}: pair shard holds {sorted(part)}; expected the same arrays as the "
                      f"first shard ({sorted(first)})")
  return part


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_pairs(paths: list[str]) -> dict[str, np.ndarray]:
  """Concatenated arrays (z, y and the conditions' arrays) of the given shards (all must exist)."""
  missing = [p for p in paths if not epath.Path(p).exists()]
  if missing:
    raise FileNotFoundError(f"pair cache incomplete: {len(missing)} shards missing, first "
                            f"{missing[0]}")
  return _concat(PAIRS.load(paths, _load_shard))


def load_pair_cache(sample_fn, cache_dir: str, **settings) -> dict[str, np.ndarray]:
  """build_pair_cache(sample_fn, cache_dir, **settings), then every shard loaded and checked;
  a shard that fails (damaged, truncated, non-finite) is moved to `<name>.corrupt` (replacing an
  older one) with a warning naming it and why, rebuilt, and checked again (a second failure
  raises)."""
  paths, make = _open_pair_cache(sample_fn, cache_dir, **settings)
  return _concat(PAIRS.load(PAIRS.build(paths, make), _load_shard, make=make))


def cache_for(cfg, exp, workdir: str) -> dict[str, np.ndarray]:
  """Builds (or completes) and loads the pair cache named by cfg.method for experiment exp."""
  m, d = cfg.method, cfg.diffusion
  nets = exp.nets
  cache_dir = m.pairs_dir or str(epath.Path(workdir) / "kd_pairs")
  fn = teacher_sampler(nets, exp.frozen, m.pairs_steps, d.sigma_min, d.sigma_max)
  return load_pair_cache(fn, cache_dir, num_pairs=m.pairs_num, shard_size=m.pairs_shard_size,
                         num_steps=m.pairs_steps, seed=m.pairs_seed, sigma_min=d.sigma_min,
                         sigma_max=d.sigma_max, data_shape=nets.data_shape, cond_spec=nets.cond)


def prepare(cfg, exp, workdir: str):
  """Engine hook: the experiment with batches extended by z_pair, y_pair, cond_pair [B, ...]."""
  pairs = cache_for(cfg, exp, workdir)
  spec = exp.nets.cond
  n, b = pairs["z"].shape[0], cfg.train.batch_size
  base = exp.batch
  # Experiments whose batch() is this process's share (image pipelines) get a local share of
  # pairs too, drawn from a per-process stream; global batches (toy) draw the whole batch.
  local = b if exp.global_batch else b // jax.process_count()
  stream = [] if exp.global_batch else [jax.process_index()]

  def batch(step):
    rng = np.random.default_rng([cfg.seed, 11, int(step), *stream])
    idx = rng.integers(0, n, size=local)
    out = dict(base(step))
    out.update(z_pair=pairs["z"][idx], y_pair=pairs["y"][idx],
               cond_pair=spec.from_arrays({k: v[idx] for k, v in pairs.items()}))
    return out

  def batch_spec():
    out = dict(exp.batch_spec())
    shaped = lambda a: jax.ShapeDtypeStruct((b,) + a.shape[1:], a.dtype)
    out.update(z_pair=shaped(pairs["z"]), y_pair=shaped(pairs["y"]),
               cond_pair=jax.tree.map(shaped, spec.from_arrays(pairs)))
    return out

  # Deterministic in the step (and process): resuming replays the same pairs.
  return dataclasses.replace(exp, batch=batch, batch_spec=batch_spec)


# ----------------------------------------------------------------------------- loss
def regression_distance(pred: jax.Array, target: jax.Array, distance: str,
                        c: float = 0.0) -> jax.Array:
  """Per-sample distance [B] float32 between pred and target [B, ...]."""
  d = (pred.astype(jnp.float32) - target.astype(jnp.float32)).reshape(pred.shape[0], -1)
  if distance == "l2":
    return jnp.mean(jnp.square(d), axis=1)
  if distance == "l1":
    return jnp.mean(jnp.abs(d), axis=1)
  if distance == "pseudo_huber":
    c = c if c > 0 else 0.00054 * float(np.sqrt(d.shape[1]))
    return jnp.sqrt(jnp.sum(jnp.square(d), axis=1) + c * c) - c
  raise ValueError(f"config.method.reg_distance={distance!r}; allowed: {DISTANCES}")


def regression_loss(gen_params, batch, nets: Nets, cfg, key=None) -> jax.Array:
  """mean_b d(G_θ(z_pair), y_pair): scalar float32. A few-step student regresses its x0 at each
  sample's chain position onto y_pair (from the pair's noise; 'noised_data' noises y_pair itself);
  key draws the positions (required then)."""
  chain = {} if key is None else {"chain_key": few_step.chain_key(key), "data": batch["y_pair"]}
  x = nets.train_generate(gen_params, batch["z_pair"], batch["cond_pair"], **chain)
  return jnp.mean(regression_distance(x, batch["y_pair"], cfg.method.reg_distance,
                                      cfg.method.reg_huber_c))


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(regression loss, (metrics, extras)); w.r.t. params['generator']."""
  del frozen
  loss = regression_loss(params["generator"], batch, nets, cfg, key)
  return loss, ({"regression": loss}, extras)


def critic_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  raise NotImplementedError("kd has no critic (CRITIC_NETS = ()); the loop never calls this")
