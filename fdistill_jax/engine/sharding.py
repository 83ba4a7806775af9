"""Device mesh and sharding rules (big_vision-style regex tactics over the state pytree).

Mesh axes: ("data", "fsdp"). The batch is sharded over both axes (every device gets a distinct
slice). Parameters and optimizer states follow `cfg.mesh.rules`, a list of (regex, tactic) pairs
matched against the '/'-joined leaf path; the first match wins, the default is
`cfg.mesh.default_tactic`. Tactics:
  'replicate' : every device holds the whole leaf;
  'fsdp'      : the largest dimension divisible by the fsdp axis size is split over it (leaves
                smaller than `cfg.mesh.fsdp_min_size` elements, or with no divisible dim, replicate);
  'tp_out' / 'tp_in': tensor parallelism: the last / first dimension is split over the optional
                "tensor" axis (`cfg.mesh.tensor` > 1 adds it; the batch is not split over it), the
                remaining dims as 'fsdp'; without a tensor axis (or if the dim is not divisible)
                they act as 'fsdp'. Models list their rules (e.g. `models.pixart.sharding_rules`).
"""
from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_SPEC = P(AXES)


def make_mesh(cfg, devices=None) -> Mesh:
  """Mesh of shape (data, fsdp[, tensor]); data = -1 fills the remaining devices."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  n = devices.size
  fsdp = int(cfg.mesh.fsdp)
  tensor = int(cfg.mesh.tensor)
  data = int(cfg.mesh.data)
  if data == -1:
    if n % (fsdp * tensor):
      raise ValueError(f"config.mesh.fsdp×tensor={fsdp}×{tensor} does not divide the {n} devices")
    data = n // (fsdp * tensor)
  if data * fsdp * tensor != n:
    raise ValueError(f"config.mesh data×fsdp×tensor = {data}×{fsdp}×{tensor} != {n} devices")
  if tensor > 1:
    return Mesh(devices.reshape(data, fsdp, tensor), AXES + ("tensor",))
  return Mesh(devices.reshape(data, fsdp), AXES)


def _path_str(path) -> str:
  parts = []
  for p in path:
    parts.append(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))))
  return "/".join(parts)


def _fsdp_spec(shape, axis_size: int, min_size: int, taken: dict | None = None) -> P:
  spec = [None] * len(shape)
  for i, axis in (taken or {}).items():
    spec[i] = axis
  if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P(*spec) if taken else P()
  dims = sorted(range(len(shape)), key=lambda i: -shape[i])
  for i in dims:
    if spec[i] is None and shape[i] % axis_size == 0:
      spec[i] = "fsdp"
      return P(*spec)
  return P(*spec) if taken else P()


def tree_shardings(abstract_tree, mesh: Mesh, cfg):
  """NamedSharding pytree for a (shape-dtype) pytree according to cfg.mesh rules."""
  rules = [(re.compile(r), t) for r, t in cfg.mesh.rules]
  default = cfg.mesh.default_tactic
  fsdp = mesh.shape["fsdp"]
  tensor = mesh.shape["tensor"] if "tensor" in mesh.shape else 1  # The mesh's axis (make_mesh).
  min_size = int(cfg.mesh.fsdp_min_size)

  def one(path, leaf):
    name = _path_str(path)
    tactic = next((t for r, t in rules if r.search(name)), default)
    if tactic == "replicate" or not getattr(leaf, "shape", ()):
      return NamedSharding(mesh, P())
    if tactic in ("tp_out", "tp_in"):
      dim = len(leaf.shape) - 1 if tactic == "tp_out" else 0
      if tensor > 1 and leaf.shape[dim] % tensor == 0:
        return NamedSharding(mesh, _fsdp_spec(leaf.shape, fsdp, min_size, {dim: "tensor"}))
      tactic = "fsdp"
    if tactic == "fsdp":
      return NamedSharding(mesh, _fsdp_spec(leaf.shape, fsdp, min_size))
    raise ValueError(f"config.mesh.rules: unknown tactic {tactic!r} for {name}; "
                     "allowed: 'replicate', 'fsdp', 'tp_out', 'tp_in'")

  return jax.tree_util.tree_map_with_path(one, abstract_tree)


def batch_sharding(mesh: Mesh, tree):
  """Batch leaves split over all mesh axes along axis 0 (labels with 0 columns too)."""
  return jax.tree.map(lambda _: NamedSharding(mesh, BATCH_SPEC), tree)


def global_arrays(batch, shardings, same_on_every_process: bool):
  """A host batch (pytree of numpy arrays) -> global jax.Arrays on `shardings` (one per leaf).

  same_on_every_process: every process holds the full global batch (each takes the slices its
  devices need); otherwise each holds its own rows and the global batch is their concatenation
  in process order. Transfers are asynchronous, so the host draws the next batch while the
  devices run the current step: no separate device prefetch is needed.
  """
  if jax.process_count() == 1:
    return jax.device_put(batch, shardings)
  if same_on_every_process:
    return jax.tree.map(lambda x, s: jax.make_array_from_callback(
        x.shape, s, lambda idx, x=np.asarray(x): x[idx]), batch, shardings)
  return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)),
                      batch, shardings)
