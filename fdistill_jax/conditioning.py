"""Conditions as pytrees, the spec an experiment provides for them, and classifier-free guidance.

A condition `cond` is a pytree whose leaves all have a leading batch axis [B, ...]:
  ClassLabels(C):  one-hot float32 [B, C]; the null condition is the zero vector (EDM's
                   unconditional branch, as the label-dropout teachers learn it);
  Text(L, D):      {"embeddings": float32 [B, L, D], "mask": float32 [B, L]} (1 = real token);
                   the null condition is a fixed (embeddings [L, D], mask [L]), e.g. the
                   encoded empty prompt, zeros unless given; conditions are drawn from a
                   prompt set of pre-encoded prompts;
  Tokens(L):       {"ids": int32 [B, L], "mask": float32 [B, L]}: token ids for a text encoder
                   that is part of the trained network; the null condition is the tokenised
                   empty prompt (ids [L], mask [L]); the prompt set is tokenised prompts;
  Unconditional(): an empty float32 [B, 0] array that the networks ignore.
Methods never build conditions: they take them from the batch, ask the spec (`nets.cond`) for
the null condition or for dropped rows, and guide through `guided`. The spec is the one place
that encodes a condition from an index: `encode` turns the data pipeline's int labels (or rows
of its prompt set) into conditions, and evaluation asks it for the condition of sample index i
(`from_index`: class i mod C, prompt i mod P).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Cond = Any  # A pytree of [B, ...] arrays.


def _rows(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """a where mask [B] else b, broadcast over a's trailing axes."""
  return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)


class ConditionSpec:
  """What a condition of one problem looks like; subclasses define `null(n)` and `from_index`."""
  conditional: bool = True

  def null(self, n: int) -> Cond:
    """The null condition for n samples (classifier-free guidance's ∅)."""
    raise NotImplementedError

  def null_like(self, cond: Cond) -> Cond:
    return self.null(batch_size(cond))

  def encode(self, labels) -> Cond:
    """The condition of int labels [n] (class indices, −1 = none; a text spec: rows of its
    prompt set); numpy in, numpy out for ClassLabels/Unconditional (host batches), traceable."""
    raise NotImplementedError

  def from_index(self, idx: jax.Array) -> Cond:
    """Deterministic condition of sample index idx [n] int (EDM's FID protocol: seed mod C)."""
    raise NotImplementedError

  def sample(self, key: jax.Array, n: int) -> Cond:
    """n conditions drawn uniformly from the spec's classes / prompt set."""
    raise NotImplementedError

  def drop_mask(self, key: jax.Array, rate: float, n: int) -> jax.Array:
    """bool [n]: rows to replace by ∅, each with probability `rate` (all False at rate 0)."""
    if rate > 0 and self.conditional:
      return jax.random.bernoulli(key, rate, (n,))
    return jnp.zeros((n,), bool)

  def replace(self, cond: Cond, mask: jax.Array) -> Cond:
    """cond with the rows where mask [B] is True replaced by the null condition."""
    return jax.tree.map(lambda c, z: _rows(mask, z.astype(c.dtype), c), cond,
                        self.null_like(cond))

  def drop(self, key: jax.Array, cond: Cond, rate: float) -> tuple[Cond, jax.Array]:
    """(cond with rows dropped to ∅ at `rate`, the bool [B] mask): teaches an ∅ branch."""
    mask = self.drop_mask(key, rate, batch_size(cond))
    return self.replace(cond, mask), mask

  def shapes(self, n: int) -> Cond:
    """ShapeDtypeStruct pytree of n conditions (for batch specs; draws nothing)."""
    return jax.eval_shape(lambda: self.null(n))

  def to_arrays(self, cond: Cond) -> dict[str, np.ndarray]:
    """Named numpy arrays for an npz file (see from_arrays)."""
    leaves = jax.tree.leaves(cond)
    return {f"cond_{i}": np.asarray(x) for i, x in enumerate(leaves)}

  def from_arrays(self, arrays) -> Cond:
    struct = jax.tree.structure(self.null(1))
    return jax.tree.unflatten(struct, [arrays[f"cond_{i}"] for i in range(struct.num_leaves)])

  def describe(self) -> dict:
    """JSON-able identity of the spec (pins caches built with it)."""
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Unconditional(ConditionSpec):
  """No condition: an empty [B, 0] array."""
  conditional = False

  def null(self, n: int) -> jax.Array:
    return jnp.zeros((n, 0), jnp.float32)

  def encode(self, labels):
    return np.zeros((np.shape(labels)[0], 0), np.float32)

  def from_index(self, idx):
    return self.null(idx.shape[0])

  def sample(self, key, n):
    del key
    return self.null(n)

  def to_arrays(self, cond):
    return {"labels": np.asarray(cond)}

  def from_arrays(self, arrays):
    return arrays["labels"]

  def describe(self) -> dict:
    return {"label_dim": 0}


@dataclasses.dataclass(frozen=True)
class ClassLabels(ConditionSpec):
  """One-hot class labels float32 [B, num_classes]; ∅ = zeros (the encoding of label −1)."""
  num_classes: int

  def null(self, n: int) -> jax.Array:
    return jnp.zeros((n, self.num_classes), jnp.float32)

  def encode(self, labels):
    labels = labels if isinstance(labels, jax.Array) else np.asarray(labels)
    return (labels[..., None] == np.arange(self.num_classes)).astype(np.float32)

  def from_index(self, idx):
    return self.encode(idx % self.num_classes)

  def sample(self, key, n):
    return self.encode(jax.random.randint(key, (n,), 0, self.num_classes))

  def to_arrays(self, cond):
    return {"labels": np.asarray(cond)}

  def from_arrays(self, arrays):
    return arrays["labels"]

  def describe(self) -> dict:
    return {"label_dim": int(self.num_classes)}


@dataclasses.dataclass(frozen=True, eq=False)
class Text(ConditionSpec):
  """Pre-encoded text: {"embeddings": [B, L, D], "mask": [B, L]}.

  prompts: optional prompt set {"embeddings": [P, L, D], "mask": [P, L]} that `sample` and
  `from_index` draw from; null: optional ∅ {"embeddings": [L, D], "mask": [L]} (zeros if None).
  """
  length: int
  dim: int
  prompts: dict | None = None
  null_cond: dict | None = None

  def _dtype(self, key: str):
    del key
    return jnp.float32

  def null(self, n: int) -> dict:
    if self.null_cond is None:
      return {"embeddings": jnp.zeros((n, self.length, self.dim), jnp.float32),
              "mask": jnp.zeros((n, self.length), jnp.float32)}
    return {k: jnp.broadcast_to(jnp.asarray(v, self._dtype(k)), (n,) + np.shape(v))
            for k, v in self.null_cond.items()}

  def _prompts(self, idx):
    if self.prompts is None:
      raise ValueError("conditioning.Text: drawing conditions needs a prompt set (prompts=...)")
    return {k: jnp.asarray(v, self._dtype(k))[idx] for k, v in self.prompts.items()}

  def encode(self, labels):
    return self._prompts(labels)

  def from_index(self, idx):
    return self._prompts(idx % len(self.prompts["mask"]) if self.prompts else idx)

  def sample(self, key, n):
    num = 0 if self.prompts is None else len(self.prompts["mask"])
    return self._prompts(jax.random.randint(key, (n,), 0, max(num, 1)))

  def describe(self) -> dict:
    num = 0 if self.prompts is None else int(len(self.prompts["mask"]))
    return {"condition": "text", "length": self.length, "dim": self.dim, "prompts": num}


@dataclasses.dataclass(frozen=True, eq=False)
class Tokens(Text):
  """Token ids read by a trainable text encoder: {"ids": int32 [B, L], "mask": float32 [B, L]}.

  prompts: optional {"ids": [P, L], "mask": [P, L]}; null_cond: {"ids": [L], "mask": [L]}, the
  tokenised "" (required: a zero mask would leave the encoder's attention nothing to read).
  dim is 0 (the embedding width belongs to the encoder).
  """
  dim: int = 0

  def __post_init__(self):
    if self.null_cond is None or set(self.null_cond) != {"ids", "mask"}:
      raise ValueError("conditioning.Tokens needs null_cond={'ids': [L], 'mask': [L]} "
                       "(the tokenised empty prompt)")

  def _dtype(self, key: str):
    return jnp.int32 if key == "ids" else jnp.float32

  def describe(self) -> dict:
    num = 0 if self.prompts is None else int(len(self.prompts["mask"]))
    return {"condition": "tokens", "length": self.length, "prompts": num}


@dataclasses.dataclass(frozen=True, eq=False)
class WithGuidance(ConditionSpec):
  """A base condition plus the guidance scale w that the student takes as an input:
  {"cond": the base condition, "w": float32 [B]}.

  Training conditions (`sample`, `with_scales`) draw w per sample uniformly from
  [w_min, w_max]; evaluation conditions (`from_index`, `null`) carry w_eval. The null condition
  keeps each row's w (∅ replaces the base condition only), so a guided denoiser and the fake
  score's ∅ branch see the w their sample was made with. Teachers read only cond["cond"];
  methods guide each sample at its own w (`scale_of`).
  """
  base: ConditionSpec
  w_min: float = 1.0
  w_max: float = 1.0
  w_eval: float = 1.0

  @property
  def conditional(self) -> bool:  # type: ignore[override]
    return self.base.conditional

  def _w(self, n: int, w: float | None = None) -> jax.Array:
    return jnp.full((n,), self.w_eval if w is None else w, jnp.float32)

  def null(self, n: int) -> dict:
    return {"cond": self.base.null(n), "w": self._w(n)}

  def null_like(self, cond: dict) -> dict:
    return {"cond": self.base.null_like(cond["cond"]), "w": cond["w"]}

  def encode(self, labels) -> dict:
    return {"cond": self.base.encode(labels), "w": self._w(np.shape(labels)[0])}

  def from_index(self, idx) -> dict:
    return {"cond": self.base.from_index(idx), "w": self._w(idx.shape[0])}

  def with_scales(self, key: jax.Array, base_cond: Cond) -> dict:
    """base_cond with w ~ U[w_min, w_max] drawn per row."""
    n = batch_size(base_cond)
    return {"cond": base_cond,
            "w": jax.random.uniform(key, (n,), jnp.float32, self.w_min, self.w_max)}

  def at_scale(self, base_cond: Cond, w: float) -> dict:
    """base_cond with every row at guidance scale w (sampling at a chosen w)."""
    return {"cond": base_cond, "w": self._w(batch_size(base_cond), w)}

  def sample(self, key, n):
    kc, kw = jax.random.split(key)
    return self.with_scales(kw, self.base.sample(kc, n))

  def replace(self, cond: dict, mask: jax.Array) -> dict:
    return {"cond": self.base.replace(cond["cond"], mask), "w": cond["w"]}

  def describe(self) -> dict:
    return {**self.base.describe(), "guidance_input": [float(self.w_min), float(self.w_max)]}


def base_condition(cond: Cond) -> Cond:
  """The base condition of a WithGuidance condition (cond itself otherwise)."""
  return cond["cond"] if isinstance(cond, dict) and set(cond) == {"cond", "w"} else cond


def scale_of(spec: ConditionSpec, cond: Cond, default):
  """The guidance scale to apply: each row's w [B] for a WithGuidance spec (the student takes
  it as an input and is trained against the teacher guided at it), `default` otherwise."""
  return cond["w"] if isinstance(spec, WithGuidance) else default


def batch_size(cond: Cond) -> int:
  leaves = jax.tree.leaves(cond)
  if not leaves:
    raise ValueError("a condition needs at least one [B, ...] leaf (Unconditional is [B, 0])")
  return leaves[0].shape[0]


# ----------------------------------------------------------------------------- guidance
def needs_guidance(scale, spec: ConditionSpec) -> bool:
  """Whether guidance at `scale` costs a second (∅) evaluation: not at w = 1 or without a
  condition; always for per-sample scales (an array: WithGuidance's w)."""
  if not spec.conditional:
    return False
  if isinstance(scale, (jax.Array, np.ndarray)) and np.ndim(scale) > 0:
    return True
  return float(scale) != 1.0


def combine(cond_out: jax.Array, uncond_out: jax.Array, scale) -> jax.Array:
  """Classifier-free guidance D(∅) + w·(D(c) − D(∅)); scale a float or per-sample [B]."""
  scale = jnp.asarray(scale, jnp.float32)
  scale = scale.reshape(scale.shape + (1,) * (cond_out.ndim - scale.ndim)) if scale.ndim else scale
  return uncond_out + scale * (cond_out - uncond_out)


def interval_scale(scale: float, sigma: jax.Array | None, sigma_max: float | None):
  """w where σ ≤ sigma_max and 1 above it (guidance in a limited interval of noise levels,
  Kynkäänniemi et al. 2024), per sample [B]; the plain scale when no interval is set."""
  if sigma_max is None or sigma is None or sigma_max == float("inf"):
    return scale
  return jnp.where(jnp.asarray(sigma) <= sigma_max, jnp.asarray(scale, jnp.float32),
                   jnp.float32(1.0))


def guide(cond_out: jax.Array, uncond_fn: Callable[[], jax.Array], scale: float,
          spec: ConditionSpec, sigma: jax.Array | None = None,
          sigma_max: float | None = None) -> jax.Array:
  """Guides an already computed D(c); uncond_fn() is only called when guidance is active.
  With sigma [B] and sigma_max, samples above sigma_max stay unguided (`interval_scale`)."""
  if not needs_guidance(scale, spec):
    return cond_out
  return combine(cond_out, uncond_fn(), interval_scale(scale, sigma, sigma_max))


def guided(fn: Callable, x: jax.Array, sigma: jax.Array, cond: Cond, scale: float,
           spec: ConditionSpec, sigma_max: float | None = None) -> jax.Array:
  """D(∅) + w·(D(c) − D(∅)) for fn(x, σ, cond) -> x0; one evaluation of fn when unguided;
  unguided above sigma_max when given (`interval_scale`)."""
  return guide(fn(x, sigma, cond), lambda: fn(x, sigma, spec.null_like(cond)), scale, spec,
               sigma, sigma_max)
