"""Orbax checkpoints of the train state (never the frozen teacher) plus the input position.

* `CheckpointManager` with keep-last-N and optional async saves; every process calls save/restore
  (orbax coordinates multi-host writes); a step directory becomes visible only once committed, so a
  run killed mid-save leaves the previous checkpoint intact.
* A state with a non-finite float leaf is refused (`NonFiniteStateError`) and nothing is written.
* `restore` takes the abstract state *with target shardings*, so a checkpoint written on one mesh
  or device count restores onto another.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class NonFiniteStateError(RuntimeError):
  pass


def _all_finite(tree) -> bool:
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  return bool(jax.device_get(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))))


class Checkpointer:
  """Thin wrapper around ocp.CheckpointManager for {state, data} items."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def save(self, step: int, state, data_state: dict | None = None, *, force: bool = False) -> bool:
    if not _all_finite(state):
      raise NonFiniteStateError(f"refusing to checkpoint step {step}: the state has non-finite "
                                f"values; the last good checkpoint in {self.directory} is kept")
    return self.mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {})), force=force)

  def restore(self, abstract_state, step: int | None = None):
    """(state, data_state) of `step` (default latest) onto abstract_state's shardings."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    out = self.mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def reached_preemption(self, step: int) -> bool:
    return self.mngr.reached_preemption(step)

  def wait(self):
    self.mngr.wait_until_finished()

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)
