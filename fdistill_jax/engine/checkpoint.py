"""Orbax checkpoints of the train state (never the frozen teacher) plus the input position.

* `CheckpointManager` with keep-last-N (N >= 1) and optional async saves; every process calls
  save/restore (orbax coordinates multi-host writes); a step directory becomes visible only once
  committed, so a run killed mid-save leaves the previous checkpoint intact.
* A state with a non-finite float leaf is refused (`NonFiniteStateError`) and nothing is written.
* Integrity: every step also holds an `integrity` item: per leaf its path, shape, dtype and a 64-bit
  position-weighted checksum of its bits (computed on device, so the same for any sharding or
  process count; it detects corruption, it is not a cryptographic hash against tampering), and a
  sha256 of the data item. `restore` recomputes and compares them and refuses non-finite values.
* Fallback: a step that fails verification, is truncated, half-deleted or empty is reported by
  name, moved to `<dir>/corrupt/` (out of orbax's rotation, never deleted) and the next-newest
  step is tried, saying so. A step whose recorded shapes differ from the requested state is a
  config mismatch, not corruption: it raises `CheckpointMismatchError` and nothing is moved.
* `restore` takes the abstract state *with target shardings*, so a checkpoint written on one mesh
  or device count restores onto another.
"""
from __future__ import annotations

import hashlib
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from fdistill_jax import fileio

INTEGRITY_FORMAT = 1
CORRUPT_DIR = "corrupt"


class NonFiniteStateError(RuntimeError):
  pass


class CorruptCheckpointError(RuntimeError):
  """No step of a checkpoint directory verifies (each reason is in the message)."""


class CheckpointMismatchError(ValueError):
  """The checkpoint's recorded layout differs from the state the config builds."""


# ------------------------------------------------------------------------------- checksums
def _bits_u32(x: jax.Array) -> jax.Array:
  """x's bit patterns as flat uint32 (8/16-bit types widened, 64-bit types split in two)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).reshape(-1)
  size = x.dtype.itemsize
  narrow = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
  return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32).reshape(-1)


def _leaf_checksum(x: jax.Array) -> jax.Array:
  """uint32 [2]: two sums mod 2^32 of the bits times odd position weights. Integer sums are exact
  in any reduction order (so sharding-independent) and any single flipped bit changes both."""
  b = _bits_u32(x)
  i = jnp.arange(b.shape[0], dtype=jnp.uint32)
  h1 = jnp.sum(b * (2 * i + 1), dtype=jnp.uint32)
  mixed = (b * jnp.uint32(0x85EBCA6B)) ^ (b >> 13)
  h2 = jnp.sum(mixed * ((i * jnp.uint32(0x9E3779B9)) | 1), dtype=jnp.uint32)
  return jnp.stack([h1, h2])


@jax.jit
def _leaf_fingerprint(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(uint32 [2] checksum, bool: finite) of one leaf (True for integer and key leaves)."""
  finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
  return _leaf_checksum(x), finite


def _fingerprint(tree) -> tuple[list[np.ndarray], bool]:
  """(per-leaf uint32 [2] checksums, all float leaves finite) of a pytree, on the host.

  One small jitted program per leaf signature (shape, dtype, sharding) rather than one program
  over the whole tree: the state's ~1,000 leaves repeat a few dozen signatures (params, EMAs and
  Adam moments share shapes), so this compiles those few dozen once per process (and hits the
  persistent cache across runs), where a whole-tree program was recompiled for every new tree
  (26 s of a 33 s first save for the tiny 8-device test state on CPU; 8 s this way). Each leaf
  is fetched before the next is dispatched: ~1,000 programs with collectives in flight at once
  deadlock XLA:CPU's in-process collectives on fake devices (a rendezvous timeout abort)."""
  out = [jax.device_get(_leaf_fingerprint(x)) for x in jax.tree.leaves(tree)]
  return [s for s, _ in out], all(bool(f) for _, f in out)  # device_get gives numpy.


def _layout(tree) -> dict[str, list]:
  """{leaf path: [shape, dtype]} of a pytree of arrays or ShapeDtypeStructs."""
  return {jax.tree_util.keystr(p): [list(x.shape), str(x.dtype)]
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _data_digest(data_state: dict) -> str:
  return hashlib.sha256(json.dumps(data_state, sort_keys=True).encode()).hexdigest()


def _integrity(state, sums: list[np.ndarray], data_state: dict) -> dict:
  leaves = {path: layout + [[int(v) for v in s]]
            for (path, layout), s in zip(_layout(state).items(), sums)}
  return {"format": INTEGRITY_FORMAT, "leaves": leaves, "data_sha256": _data_digest(data_state)}


# ------------------------------------------------------------------------ closed-loop noise
def _is_closed_loop_noise(unraisable) -> bool:
  """When one read of a restore fails, orbax's asyncio loop closes while tensorstore still has
  reads in flight; each late completion calls loop.call_soon_threadsafe and raises this
  unraisable RuntimeError (one traceback per pending read, ~100 for a real state), which buried
  the actual error. Only that exact case is dropped."""
  e = unraisable.exc_value
  return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


class _QuietClosedLoop:
  """sys.unraisablehook filter for _is_closed_loop_noise, installed while a Checkpointer is
  open (late callbacks arrive after restore returns) and removed by close()."""

  def __init__(self):
    self.previous, self.dropped = sys.unraisablehook, 0

  def __call__(self, unraisable):
    if _is_closed_loop_noise(unraisable):
      self.dropped += 1
      return
    self.previous(unraisable)

  def uninstall(self):
    if sys.unraisablehook is self:
      sys.unraisablehook = self.previous
    if self.dropped:
      logging.debug("dropped %d 'Event loop is closed' callbacks of failed reads", self.dropped)


# ------------------------------------------------------------------------------ checkpointer
class Checkpointer:
  """Thin wrapper around ocp.CheckpointManager for {state, data, integrity} items."""

  def __init__(self, directory: epath.PathLike, max_to_keep: int = 3, async_save: bool = True):
    if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
      raise ValueError(f"max_to_keep={max_to_keep!r} (config.train.keep_checkpoints) must be an "
                       "int >= 1: orbax keeps that many newest steps and deletes the rest")
    directory = epath.Path(directory)  # Local or gs://; orbax wants local paths absolute.
    self.directory = directory.resolve() if fileio.is_local(directory) else directory
    self._quiet = _QuietClosedLoop()
    sys.unraisablehook = self._quiet
    self.mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def save(self, step: int, state, data_state: dict | None = None, *, force: bool = False) -> bool:
    sums, finite = _fingerprint(state)
    if not finite:
      raise NonFiniteStateError(f"refusing to checkpoint step {step}: the state has non-finite "
                                f"values; the last good checkpoint in {self.directory} is kept")
    data_state = data_state or {}
    return self.mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        integrity=ocp.args.JsonSave(_integrity(state, sums, data_state))), force=force)

  def restore(self, abstract_state, step: int | None = None):
    """(state, data_state) of `step`, verified against its integrity record.

    step None: the newest step that verifies; every step that does not is logged by name and
    moved to `<dir>/corrupt/`. An explicit step that fails raises CorruptCheckpointError.
    """
    if step is not None:
      return self._restore_verified(abstract_state, step)
    failures = []
    for s in sorted(self.mngr.all_steps(), reverse=True):
      try:
        out = self._restore_verified(abstract_state, s)
      except CorruptCheckpointError as e:
        failures.append(str(e))
        logging.error("%s", e)
        self._move_aside(s)
        continue
      if failures:
        logging.warning("fell back to step %d of %s (newer steps failed verification and were "
                        "moved to %s/)", s, self.directory, CORRUPT_DIR)
      return out
    if failures:
      raise CorruptCheckpointError(
          f"no checkpoint in {self.directory} verifies (moved to {CORRUPT_DIR}/):\n  "
          + "\n  ".join(failures))
    raise FileNotFoundError(f"no checkpoint in {self.directory}")

  def _restore_verified(self, abstract_state, step: int):
    where = self.directory / str(step)
    items = {p.name for p in where.iterdir()} if where.is_dir() else set()
    if "integrity" not in items or "state" not in items:
      missing = sorted({"state", "integrity"} - items)
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}) is incomplete: no "
                                   f"{' or '.join(missing)} item (truncated or half-deleted)")
    try:
      record = self.mngr.restore(step, args=ocp.args.Composite(
          integrity=ocp.args.JsonRestore()))["integrity"]
      if not isinstance(record, dict) or record.get("format") != INTEGRITY_FORMAT:
        raise ValueError(f"unknown integrity record {str(record)[:80]!r}")
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore/json types vary)
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): unreadable integrity "
                                   f"record ({_first_line(e)})") from None
    stored = {k: v[:2] for k, v in record["leaves"].items()}
    wanted = _layout(abstract_state)
    if stored != wanted:
      diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
      k = diff[0]
      raise CheckpointMismatchError(
          f"checkpoint step {step} ({where}) does not match the state this config builds: "
          f"{len(diff)} leaves differ, e.g. {k}: checkpoint has {stored.get(k)}, config expects "
          f"{wanted.get(k)} (same config as the run that wrote it? a new workdir for a new config)")
    try:
      out = self.mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      state, data = out["state"], out["data"]
      sums, finite = _fingerprint(state)
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}) cannot be read: "
                                   f"{_first_line(e)}") from None
    paths = list(wanted)
    for path, s in zip(paths, sums):
      if [int(v) for v in s] != record["leaves"][path][2]:
        raise CorruptCheckpointError(f"checkpoint step {step} ({where}): {path} fails its "
                                     "checksum (the array files were changed after saving)")
    if not bool(finite):
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): restored state has "
                                   "non-finite values")
    if _data_digest(data) != record.get("data_sha256"):
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): the data item (input "
                                   "position) fails its checksum")
    return state, data

  def _move_aside(self, step: int) -> None:
    """Moves step's directory to <dir>/corrupt/ (primary process), so rotation never counts it
    and later saves never delete a good step because of it."""
    if jax.process_index() == 0:
      src, dst_root = self.directory / str(step), self.directory / CORRUPT_DIR
      dst, n = dst_root / str(step), 1
      while dst.exists():
        dst, n = dst_root / f"{step}.{n}", n + 1
      if src.exists():
        fileio.move(src, dst)  # Local: one rename; GCS: copy then delete (not atomic).
        logging.error("moved checkpoint step %d to %s", step, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"ckpt_move_aside_{step}")
    self.mngr.reload()

  def reached_preemption(self, step: int) -> bool:
    return self.mngr.reached_preemption(step)

  def wait(self):
    self.mngr.wait_until_finished()

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()
    self._quiet.uninstall()


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)
