"""Orbax checkpoints of the train state (never the frozen teacher) plus the input position.

* `CheckpointManager` with keep-last-N (N >= 1) and optional async saves; every process calls
  save/restore (orbax coordinates multi-host writes); a step directory becomes visible only once
  committed, so a run killed mid-save leaves the previous checkpoint intact.
* A state with a non-finite float leaf is refused (`NonFiniteStateError`) and nothing is written.
* Integrity: every step also holds an `integrity` item: per leaf its path, shape, dtype and a 64-bit
  position-weighted checksum of its bits (computed on device, so the same for any sharding or
  process count; it detects corruption, it is not a cryptographic hash against tampering), and a
  sha256 of the data item. `restore` recomputes and compares them and refuses non-finite values.
* Fallback: a step that fails verification, is truncated, half-deleted or empty, or whose
  integrity record is unreadable or damaged, is reported by name, moved to `<dir>/corrupt/` (out of
  orbax's rotation, never deleted) and the next-newest step is tried, saying so. A step whose
  recorded shapes differ from the requested state is a config mismatch, not corruption: it raises
  `CheckpointMismatchError` and nothing is moved. A record that disagrees with the config is only
  believed when orbax's own array metadata agrees with the record (else the record is damaged).
* No silent restart: when steps exist but none verifies, `restore` raises
  `NoVerifiedCheckpointError` naming what was moved where and the flags that go on. Steps without
  an integrity record (written before records existed) are left in place, not moved, unless an
  older step verifies; `adopt_unrecorded=True` (config.train.adopt_unverified_checkpoints) restores
  such a step, checks its layout against the config and every float leaf finite, and writes its
  record.
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


class MissingRecordError(CorruptCheckpointError):
  """A step with a state item but no integrity item (e.g. written before records existed)."""


class NoVerifiedCheckpointError(CorruptCheckpointError):
  """Steps exist but none verifies; `moved` lists the steps set aside in corrupt/, `unrecorded`
  the steps without an integrity record left in place."""

  def __init__(self, message: str, moved: list[int], unrecorded: list[int]):
    super().__init__(message)
    self.moved, self.unrecorded = moved, unrecorded


# How to go on, named in NoVerifiedCheckpointError's message.
RESTART_FLAG = "--config.train.restart_from_scratch=True"
ADOPT_FLAG = "--config.train.adopt_unverified_checkpoints=True"


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

  def restore(self, abstract_state, step: int | None = None, *, adopt_unrecorded: bool = False):
    """(state, data_state) of `step`, verified against its integrity record.

    step None: the newest step that verifies; every step that does not is logged by name and
    moved to `<dir>/corrupt/`. Steps without a record are moved only once an older step verifies
    (they would collide with the resumed run's saves); when no step verifies they stay in place
    and NoVerifiedCheckpointError says how to go on. adopt_unrecorded: verify-and-adopt such
    steps (see _adopt) instead. An explicit step that fails raises CorruptCheckpointError.
    """
    if step is not None:
      return self._restore_one(abstract_state, step, adopt_unrecorded)
    failures, moved, unrecorded = [], [], []
    for s in sorted(self.mngr.all_steps(), reverse=True):
      try:
        out = self._restore_one(abstract_state, s, adopt_unrecorded)
      except MissingRecordError as e:
        unrecorded.append(s)
        logging.error("%s", e)
        continue
      except CorruptCheckpointError as e:
        failures.append(str(e))
        logging.error("%s", e)
        moved.append(s)
        self._move_aside(s)
        continue
      for u in unrecorded:  # Newer than the step resumed from: out of the way of its saves.
        self._move_aside(u)
      if failures or unrecorded:
        logging.warning("fell back to step %d of %s (newer steps failed verification and were "
                        "moved to %s/)", s, self.directory, CORRUPT_DIR)
      return out
    if failures or unrecorded:
      raise NoVerifiedCheckpointError(self._none_verifies(failures, unrecorded), moved, unrecorded)
    raise FileNotFoundError(f"no checkpoint in {self.directory}")

  def _none_verifies(self, failures: list[str], unrecorded: list[int]) -> str:
    lines = [f"no checkpoint in {self.directory} verifies, so the run stops rather than start "
             "over:"]
    if failures:
      lines.append(f"moved to {self.directory / CORRUPT_DIR}/ (kept, never deleted):")
      lines += [f"  {f}" for f in failures]
    if unrecorded:
      lines.append(f"left in place, without an integrity record (written before records "
                   f"existed, or the record was deleted): steps {sorted(unrecorded)}; {ADOPT_FLAG} "
                   "restores them, checks their shapes against this config and every value "
                   "finite, and writes their record")
    lines.append(f"{RESTART_FLAG} starts from step 0 instead (steps that do not verify are moved "
                 f"to {CORRUPT_DIR}/ first)")
    return "\n".join(lines)

  def set_aside(self, step: int) -> None:
    """Moves `step` to <dir>/corrupt/ (e.g. unrecorded steps before a restart from scratch)."""
    self._move_aside(step)

  def set_aside_steps(self) -> list[str]:
    """Names of the step folders an earlier run moved to <dir>/corrupt/."""
    root = self.directory / CORRUPT_DIR
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

  def _restore_one(self, abstract_state, step: int, adopt_unrecorded: bool):
    try:
      return self._restore_verified(abstract_state, step)
    except MissingRecordError:
      if not adopt_unrecorded:
        raise
    return self._adopt(abstract_state, step)

  def _read_record(self, step: int) -> dict:
    """The integrity record of `step`, checked for the structure verification relies on (a byte
    flip may leave valid JSON with a key renamed or a list shortened)."""
    where = self.directory / str(step)
    try:
      record = self.mngr.restore(step, args=ocp.args.Composite(
          integrity=ocp.args.JsonRestore()))["integrity"]
      problem = _record_problem(record)
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore/json types vary)
      problem = _first_line(e)
    if problem:
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): unreadable or damaged "
                                   f"integrity record ({problem})") from None
    return record

  def _array_layout(self, step: int) -> dict[str, list]:
    """{leaf path: [shape, dtype]} from orbax's own metadata of step's state item."""
    meta = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
    tree = getattr(meta, "tree", meta)
    return {jax.tree_util.keystr(p): [list(x.shape), str(x.dtype)]
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

  def _check_layout(self, step: int, stored: dict[str, list], wanted: dict[str, list],
                    what: str) -> None:
    """Raises CheckpointMismatchError when `stored` (the record's or orbax's layout) differs from
    the config's and orbax's array metadata agrees with `stored` on every differing leaf; when
    the arrays agree with the config instead, the record is what is damaged (corrupt)."""
    if stored == wanted:
      return
    where = self.directory / str(step)
    diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    try:
      arrays = self._array_layout(step)
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): the state item's "
                                   f"metadata cannot be read ({_first_line(e)})") from None
    if not all(_same_leaf(arrays.get(k), stored.get(k)) for k in diff):
      raise CorruptCheckpointError(
          f"checkpoint step {step} ({where}): the {what} disagrees with the saved arrays' own "
          f"metadata at {diff[0]} ({stored.get(diff[0])} vs {arrays.get(diff[0])}): the {what} "
          "is damaged")
    k = diff[0]
    raise CheckpointMismatchError(
        f"checkpoint step {step} ({where}) does not match the state this config builds: "
        f"{len(diff)} leaves differ, e.g. {k}: checkpoint has {stored.get(k)}, config expects "
        f"{wanted.get(k)} (same config as the run that wrote it? a new workdir for a new config)")

  def _restore_verified(self, abstract_state, step: int):
    where = self.directory / str(step)
    items = {p.name for p in where.iterdir()} if where.is_dir() else set()
    if "state" in items and "integrity" not in items:
      raise MissingRecordError(f"checkpoint step {step} ({where}) has no integrity record "
                               "(written before records existed, or the record was deleted)")
    if "integrity" not in items or "state" not in items:
      missing = sorted({"state", "integrity"} - items)
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}) is incomplete: no "
                                   f"{' or '.join(missing)} item (truncated or half-deleted)")
    record = self._read_record(step)
    wanted = _layout(abstract_state)
    self._check_layout(step, {k: v[:2] for k, v in record["leaves"].items()}, wanted,
                       "integrity record")
    state, data, sums, finite = self._restore_arrays(abstract_state, step)
    for path, s in zip(wanted, sums):
      if [int(v) for v in s] != record["leaves"][path][2]:
        raise CorruptCheckpointError(f"checkpoint step {step} ({where}): {path} fails its "
                                     "checksum (the array files were changed after saving)")
    if not finite:
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): restored state has "
                                   "non-finite values")
    if _data_digest(data) != record["data_sha256"]:
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): the data item (input "
                                   "position) fails its checksum")
    return state, data

  def _restore_arrays(self, abstract_state, step: int):
    """(state, data, per-leaf checksums, all finite) of step, any read error as corruption."""
    try:
      out = self.mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      state, data = out["state"], out["data"]
      sums, finite = _fingerprint(state)
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(f"checkpoint step {step} ({self.directory / str(step)}) cannot "
                                   f"be read: {_first_line(e)}") from None
    return state, data, sums, bool(finite)

  def _adopt(self, abstract_state, step: int):
    """Verify-and-adopt a step without an integrity record: its arrays' layout must be the
    config's (else CheckpointMismatchError), it must restore and every float leaf be finite (else
    CorruptCheckpointError); then its record is written from what was restored, so later resumes
    verify it like any other step. What it cannot know: whether the files changed before now."""
    where = self.directory / str(step)
    wanted = _layout(abstract_state)
    try:
      arrays = self._array_layout(step)
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}): the state item's "
                                   f"metadata cannot be read ({_first_line(e)})") from None
    diff = [k for k in set(arrays) | set(wanted) if not _same_leaf(arrays.get(k), wanted.get(k))]
    if diff:
      k = sorted(diff)[0]
      raise CheckpointMismatchError(
          f"checkpoint step {step} ({where}) cannot be adopted: it does not match the state this "
          f"config builds: {len(diff)} leaves differ, e.g. {k}: checkpoint has {arrays.get(k)}, "
          f"config expects {wanted.get(k)}")
    state, data, sums, finite = self._restore_arrays(abstract_state, step)
    if not finite:
      raise CorruptCheckpointError(f"checkpoint step {step} ({where}) cannot be adopted: restored "
                                   "state has non-finite values")
    if jax.process_index() == 0:
      # integrity/ is built beside the step and renamed in (locally atomic), so a crash never
      # leaves a step with a half-written record.
      tmp = where / "integrity.adopting"
      fileio.write_json(tmp / "metadata", _integrity(state, sums, data), indent=None)
      fileio.move(tmp, where / "integrity")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"ckpt_adopt_{step}")
    logging.warning("adopted checkpoint step %d of %s: no integrity record; its layout matches "
                    "the config and every value is finite, so its record was written now",
                    step, self.directory)
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


def _record_problem(record) -> str | None:
  """What makes `record` unusable as an integrity record of this format (None: usable)."""
  if not isinstance(record, dict):
    return f"not a JSON object: {str(record)[:80]!r}"
  if record.get("format") != INTEGRITY_FORMAT:
    return f"format {str(record.get('format'))[:40]!r}, expected {INTEGRITY_FORMAT}"
  if not isinstance(record.get("data_sha256"), str):
    return "no data_sha256 string"
  leaves = record.get("leaves")
  if not isinstance(leaves, dict):
    return "no leaves object"
  for path, v in leaves.items():
    ok = (isinstance(v, list) and len(v) == 3 and isinstance(v[0], list)
          and all(isinstance(d, int) for d in v[0]) and isinstance(v[1], str)
          and isinstance(v[2], list) and len(v[2]) == 2 and all(isinstance(c, int) for c in v[2]))
    if not ok:
      return f"leaf {path[:80]!r}: {str(v)[:80]!r} is not [shape, dtype, [checksum, checksum]]"
  return None


def _same_leaf(arrays: list | None, layout: list | None) -> bool:
  """Whether orbax's [shape, dtype] of a leaf matches a layout entry; orbax stores a typed PRNG
  key of shape S as its uint32 key data, shape S + (n,)."""
  if arrays is None or layout is None:
    return arrays is layout
  if layout[1].startswith("key<"):
    return arrays[1] == "uint32" and arrays[0][:-1] == layout[0]
  return arrays == layout


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def abstract_with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)
