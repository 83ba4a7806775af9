"""One run per workdir: a lock file (`<workdir>/run.lock`) held by the run's primary process.

Two runs writing one workdir interleave checkpoints, rotate each other's steps away and garble
metrics.jsonl. `hold(workdir)` is taken by `jax.process_index() == 0` only (the other processes
of the same run share the workdir) and released on normal exit and on exceptions. The file is
JSON: host, pid, start time, what the run does. When it already exists:

* same host, pid still alive: refused, naming the holder;
* same host, pid gone (the run was killed): a stale lock, taken over with a warning;
* another host: whether that process lives cannot be told from here, so it is refused unless
  `FDISTILL_BREAK_WORKDIR_LOCK=1` (or `break_foreign=True`) says the holder is gone.

Locally the lock is created atomically (a complete file hard-linked into place, which fails if
one exists). On object stores (gs://) there is no exclusive create: the check and the write are
separate, so two runs started within the same moment may both proceed.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
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


def _me(what: str) -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what}


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's live process.
    return True
  try:  # A killed run not yet reaped by its parent is a zombie: it holds nothing.
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def _read(path: epath.Path) -> dict | None:
  """The lock's holder, or None when the file is unreadable or not a lock record."""
  try:
    rec = json.loads(path.read_text()[:4096])
  except (OSError, ValueError):
    return None
  ok = (isinstance(rec, dict) and isinstance(rec.get("host"), str)
        and isinstance(rec.get("pid"), int))
  return rec if ok else None


def _describe(rec: dict) -> str:
  return (f"pid {rec['pid']} on host {rec['host']!r} ({rec.get('what', '?')}, started "
          f"{rec.get('started_utc', '?')})")


def _create(path: epath.Path, rec: dict) -> bool:
  """Writes the lock if none exists; False when one does."""
  text = json.dumps(rec)
  if not fileio.is_local(path):
    if path.exists():
      return False
    path.write_text(text)  # One object upload (not exclusive: see module docstring).
    return True
  tmp = path.parent / f"{path.name}.{rec['pid']}.tmp"
  tmp.write_text(text)
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
      return me
    holder = _read(path)
    if holder is None:
      if not break_foreign:
        raise WorkdirLockedError(
            f"{path} exists but is not a readable lock record; if no run uses {workdir}, delete "
            f"it or set {BREAK_ENV}=1")
      logging.warning("replacing the unreadable lock %s (%s=1)", path, BREAK_ENV)
    elif holder["host"] == me["host"] and holder["pid"] == me["pid"]:
      raise WorkdirLockedError(f"{workdir} is already locked by this process ({path}): one run "
                               "per workdir")
    elif holder["host"] == me["host"]:
      if _alive(holder["pid"]):
        raise WorkdirLockedError(
            f"{workdir} is in use by {_describe(holder)} (lock {path}): one run per workdir; "
            "wait for it to finish or use another --workdir")
      logging.warning("taking over the stale lock %s: %s is no longer running", path,
                      _describe(holder))
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
  holder = _read(path)
  if holder is not None and all(holder.get(k) == rec[k] for k in ("host", "pid", "started")):
    with contextlib.suppress(FileNotFoundError):
      path.unlink()


@contextlib.contextmanager
def hold(workdir: epath.PathLike, what: str = "train",
         break_foreign: bool | None = None) -> Iterator[None]:
  """The workdir lock for the duration of a run: taken by process 0, released on exit or
  exception. Multi-host: every process raises when process 0 could not take it (rather than
  waiting in a collective for a primary that has stopped)."""
  rec, error = None, ""
  if jax.process_index() == 0:
    try:
      rec = acquire(workdir, what, break_foreign)
    except WorkdirLockedError as e:
      error = str(e)
  if jax.process_count() > 1:
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(not error)))
    if not ok and not error:
      error = f"process 0 could not lock {workdir} (its log names the holder)"
  if error:
    raise WorkdirLockedError(error)
  try:
    yield
  finally:
    if rec is not None:
      release(workdir, rec)
