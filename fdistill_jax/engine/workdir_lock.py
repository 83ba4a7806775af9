"""One run per workdir: a lock file (`<workdir>/run.lock`) held by the run's primary process.

Two runs writing one workdir interleave checkpoints, rotate each other's steps away and garble
metrics.jsonl. `hold(workdir)` is taken by `jax.process_index() == 0` only (the other processes
of the same run share the workdir) and released on normal exit and on exceptions. The file is
JSON: host, pid, the process's start time in kernel ticks since boot (`proc_start`, field 22 of
/proc/<pid>/stat) and the boot id (`boot_id`), wall-clock start, what the run does, and a random
owner `token`. When it already exists:

* same host, pid alive and the same process (same boot id and start time): refused, naming the
  holder;
* same host, pid gone, a zombie, the machine rebooted since (other boot id) or the pid now
  belongs to another process (other start time: the pid was reused after a crash): a stale lock,
  taken over with a warning. A record without `proc_start` (older versions) is judged by the pid
  alone;
* another host: whether that process lives cannot be told from here, so it is refused unless
  `FDISTILL_BREAK_WORKDIR_LOCK=1` (or `break_foreign=True`) says the holder is gone.

Creating the lock, local: a complete file hard-linked into place (`os.link` fails if a lock
exists): atomic. On object stores (gs://) the lock is written with fsspec's
`pipe_file(mode="create")`: gcsfs >= 2024.12 sends it as a conditional upload
(`ifGenerationMatch=0`), which GCS applies only if no object of that name exists, so exactly one
of two racing runs gets it and the other sees FileExistsError: atomic. Backends or versions
without conditional writes (older gcsfs, TensorFlow's gfile, other fsspec stores) fall back to a
check and then a write, which is not atomic. On every backend the lock is then read back and its
owner token compared: a run that finds another owner's token has lost and is refused (it leaves
that lock alone).

Residual race, and what bounds it: with a non-atomic create, two runs started within the same
window of check, upload and read-back (typically well under a second on GCS) may each read back
their own token (A writes and reads A; B, which also saw no lock, then overwrites with B and
reads B). The same holds on every backend for two runs taking over one *stale* lock at the same
moment (A removes the stale lock and creates its own; B, which read the stale lock before, then
removes A's). Both cases are caught at the next checkpoint: training re-reads the lock before
every save (`Lease.check`) and the run whose token is no longer there stops with
WorkdirLockedError before writing anything; the other run goes on. What the two may have written
to the workdir between their start and the first save (metrics lines, caches) is not undone.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from typing import Iterator

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from fdistill_jax import fileio

LOCK_NAME = "run.lock"
BREAK_ENV = "FDISTILL_BREAK_WORKDIR_LOCK"


class WorkdirLockedError(RuntimeError):
  """Another run holds the workdir's lock (the holder is named in the message)."""


def proc_start(pid: int) -> int | None:
  """Start time of process `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or
  None where /proc cannot tell (no such process, not Linux)."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      stat = f.read(4096).decode("ascii", "replace")
    # Field 2 (the command) may hold spaces and ')': the fields after it follow the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def boot_id() -> str | None:
  """This boot of this machine (Linux); None elsewhere."""
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read(100).strip() or None
  except OSError:
    return None


def _me(what: str) -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": proc_start(os.getpid()),
          "boot_id": boot_id(), "started": time.time(),
          "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what,
          "token": uuid.uuid4().hex}


def _gone(rec: dict) -> str:
  """Why the same-host holder `rec` no longer runs ('' when it may still run)."""
  pid = rec["pid"]
  if rec.get("boot_id") and boot_id() and rec["boot_id"] != boot_id():
    return "the machine has rebooted since"
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return "is no longer running"
  except PermissionError:  # Another user's live process: its start time still tells.
    pass
  try:  # A killed run not yet reaped by its parent is a zombie: it holds nothing.
    with open(f"/proc/{pid}/stat", "rb") as f:
      if f.read(4096).decode("ascii", "replace").rsplit(")", 1)[1].split()[0] == "Z":
        return "is no longer running (a zombie)"
  except (OSError, IndexError):
    pass
  want, now = rec.get("proc_start"), proc_start(pid)
  if isinstance(want, int) and now is not None and now != want:
    return (f"is no longer running (pid {pid} now belongs to another process, started at tick "
            f"{now}, not {want})")
  return ""


def _read(path: epath.Path) -> dict | None:
  """The lock's holder, or None when the file is unreadable or not a lock record."""
  try:
    with path.open("rb") as f:
      rec = json.loads(f.read(4096))
  except (OSError, ValueError):
    return None
  ok = (isinstance(rec, dict) and isinstance(rec.get("host"), str)
        and isinstance(rec.get("pid"), int) and not isinstance(rec.get("pid"), bool)
        and rec["pid"] > 0)
  return rec if ok else None


def _same(a: dict | None, b: dict) -> bool:
  """Whether lock record `a` is `b` (by owner token; records without one by host, pid, start)."""
  if a is None:
    return False
  keys = ("token",) if "token" in b and "token" in a else ("host", "pid", "started")
  return all(a.get(k) == b.get(k) for k in keys)


def _describe(rec: dict) -> str:
  return (f"pid {rec['pid']} on host {rec['host']!r} ({rec.get('what', '?')}, started "
          f"{rec.get('started_utc', '?')})")


def _create_object(path: epath.Path, data: bytes) -> bool:
  """Object stores: uploads `data` to `path` unless an object exists there; False when one does.
  Atomic where the fsspec backend makes mode='create' a conditional write (gcsfs >= 2024.12),
  else checked and written (see module docstring)."""
  try:
    import fsspec  # pylint: disable=import-outside-toplevel
    fs, key = fsspec.core.url_to_fs(os.fspath(path))
  except (ImportError, ValueError):  # No fsspec backend for the scheme: epath's own.
    fs = None
  if fs is not None:
    try:
      fs.pipe_file(key, data, mode="create")
      return True
    except FileExistsError:
      return False
    except TypeError:  # An fsspec backend without mode= (gcsfs < 2024.12): not atomic.
      logging.warning("%s: this storage backend has no exclusive create; the workdir lock is "
                      "checked, written and read back (see engine/workdir_lock.py)", path)
      if fs.exists(key):
        return False
      fs.pipe_file(key, data)
      return True
  if path.exists():
    return False
  path.write_bytes(data)
  return True


def _create(path: epath.Path, rec: dict) -> bool:
  """Writes the lock if none exists; False when one does."""
  data = json.dumps(rec).encode()
  if not fileio.is_local(path):
    return _create_object(path, data)
  tmp = path.parent / f"{path.name}.{rec['pid']}.{rec['token']}.tmp"
  tmp.write_bytes(data)
  try:
    os.link(tmp, path)  # Atomic, and fails if a lock exists: a complete file or none.
    return True
  except FileExistsError:
    return False
  finally:
    tmp.unlink()


def acquire(workdir: epath.PathLike, what: str = "train",
            break_foreign: bool | None = None) -> dict:
  """Takes `workdir`'s lock for this process (see module docstring); returns the record written.
  break_foreign None: the FDISTILL_BREAK_WORKDIR_LOCK environment variable decides."""
  if break_foreign is None:
    break_foreign = os.environ.get(BREAK_ENV, "") == "1"
  path = fileio.makedirs(workdir) / LOCK_NAME
  me = _me(what)
  for _ in range(3):  # A stale lock taken over by another run between our steps: look again.
    if _create(path, me):
      holder = _read(path)  # Read back: a non-atomic create may have been overwritten.
      if _same(holder, me):
        return me
      raise WorkdirLockedError(
          f"{workdir} was locked at the same moment by "
          f"{_describe(holder) if holder else 'another run'} (lock {path}): "
          "one run per workdir; wait for it to finish or use another --workdir")
    holder = _read(path)
    if holder is None:
      if not break_foreign:
        raise WorkdirLockedError(
            f"{path} exists but is not a readable lock record; if no run uses {workdir}, delete "
            f"it or set {BREAK_ENV}=1")
      logging.warning("replacing the unreadable lock %s (%s=1)", path, BREAK_ENV)
    elif holder["host"] == me["host"] and holder["pid"] == me["pid"] and not _gone(holder):
      raise WorkdirLockedError(f"{workdir} is already locked by this process ({path}): one run "
                               "per workdir")
    elif holder["host"] == me["host"]:
      why = _gone(holder)
      if not why:
        raise WorkdirLockedError(
            f"{workdir} is in use by {_describe(holder)} (lock {path}): one run per workdir; "
            "wait for it to finish or use another --workdir")
      logging.warning("taking over the stale lock %s: %s %s", path, _describe(holder), why)
    elif not break_foreign:
      raise WorkdirLockedError(
          f"{workdir} is locked by {_describe(holder)} (lock {path}); from host {me['host']!r} "
          f"it cannot be told whether that process still runs. If it does not, set {BREAK_ENV}=1 "
          "(or delete the lock file) to take over")
    else:
      logging.warning("taking over the lock %s of %s (%s=1)", path, _describe(holder), BREAK_ENV)
    with contextlib.suppress(FileNotFoundError):
      path.unlink()
  raise WorkdirLockedError(f"could not take the lock {path}: other runs keep replacing it")


def release(workdir: epath.PathLike, rec: dict) -> None:
  """Removes the lock if it is still `rec` (a run that took over a stale lock keeps its own)."""
  path = epath.Path(workdir) / LOCK_NAME
  if _same(_read(path), rec):
    with contextlib.suppress(FileNotFoundError):
      path.unlink()


def _agree(error: str, workdir) -> str:
  """Multi-host: process 0's verdict for every process ('' = fine)."""
  if jax.process_count() > 1:
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(not error)))
    if not ok and not error:
      error = f"process 0 could not lock {workdir} (its log names the holder)"
  return error


class Lease:
  """The lock a run holds (`hold` yields it). `check()` re-reads the lock: it raises
  WorkdirLockedError on every process when the file no longer holds this run's token (another
  run replaced it: the residual races in the module docstring). Training calls it before every
  checkpoint save."""

  def __init__(self, workdir: epath.PathLike, rec: dict | None):
    self.workdir, self.rec = workdir, rec

  def check(self) -> None:
    error = ""
    if self.rec is not None:
      path = epath.Path(self.workdir) / LOCK_NAME
      holder = _read(path)
      if not _same(holder, self.rec):
        error = (f"the lock {path} no longer names this run (it names "
                 f"{_describe(holder) if holder else 'no readable holder'}): another run has "
                 f"taken {self.workdir}; stopping before writing to it")
    error = _agree(error, self.workdir)
    if error:
      raise WorkdirLockedError(error)


@contextlib.contextmanager
def hold(workdir: epath.PathLike, what: str = "train",
         break_foreign: bool | None = None) -> Iterator[Lease]:
  """The workdir lock for the duration of a run: taken by process 0, released on exit or
  exception; yields the Lease. Multi-host: every process raises when process 0 could not take it
  (rather than waiting in a collective for a primary that has stopped)."""
  rec, error = None, ""
  if jax.process_index() == 0:
    try:
      rec = acquire(workdir, what, break_foreign)
    except WorkdirLockedError as e:
      error = str(e)
  error = _agree(error, workdir)
  if error:
    raise WorkdirLockedError(error)
  try:
    yield Lease(workdir, rec)
  finally:
    if rec is not None:
      release(workdir, rec)
