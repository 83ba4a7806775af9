"""Metric writers: clu's default writers (log lines + TensorBoard events) plus JSON lines.

Only process 0 writes; other processes get a writer that drops everything (clu's
`just_logging` would still print on every host, which floods pod logs).
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from clu.metric_writers import interface
from etils import epath

from fdistill_jax import fileio


class JsonlWriter(interface.MetricWriter):
  """Appends one JSON object per write to `path` ({"step": s, name: value, ...}).

  Local paths: an append, flushed per line. Object stores (gs://) cannot append to an object, so the
  whole file (what a resumed run finds there, plus the new lines) is re-uploaded at most every
  `upload_every_s` seconds and on flush/close; each upload replaces the object at once.
  """

  def __init__(self, path: epath.PathLike, upload_every_s: float = 30.0):
    self._path, self._every = epath.Path(path), upload_every_s
    self._local = fileio.is_local(path)
    # A run killed mid-write leaves a torn last line; the first new record starts on a line of
    # its own instead of being glued to it (readers skip the torn line: read_records).
    if self._local:
      torn = self._path.exists() and not _ends_with_newline(self._path)
      self._f = self._path.open("a")
      if torn:
        self._f.write("\n")
    else:
      self._lines = self._path.read_text() if self._path.exists() else ""
      if self._lines and not self._lines.endswith("\n"):
        self._lines += "\n"
      self._uploaded, self._dirty = time.time(), False

  def _write(self, step, values: dict, kind: str):
    rec = {"step": int(step), "time": time.time(), "kind": kind}
    for k, v in values.items():
      v = np.asarray(v)
      rec[k] = v.item() if v.ndim == 0 else v.tolist()
    line = json.dumps(rec) + "\n"
    if self._local:
      self._f.write(line)
      self._f.flush()  # One complete line at a time, as a line-buffered file.
      return
    self._lines, self._dirty = self._lines + line, True
    if time.time() - self._uploaded >= self._every:
      self.flush()

  def write_scalars(self, step, scalars):
    self._write(step, scalars, "scalars")

  def write_summaries(self, step, values, metadata=None):
    self._write(step, {k: np.asarray(v) for k, v in values.items() if np.asarray(v).ndim == 0},
                "summaries")

  def write_texts(self, step, texts):
    self._write(step, texts, "texts")

  def write_hparams(self, hparams):
    self._write(0, {k: str(v) for k, v in hparams.items()}, "hparams")

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def flush(self):
    if self._local:
      self._f.flush()
    elif self._dirty:
      fileio.write_text(self._path, self._lines)
      self._uploaded, self._dirty = time.time(), False

  def close(self):
    self.flush()
    if self._local:
      self._f.close()


def _ends_with_newline(path: epath.Path) -> bool:
  with path.open("rb") as f:
    f.seek(0, 2)
    if f.tell() == 0:
      return True
    f.seek(-1, 2)
    return f.read(1) == b"\n"


def read_records(path: epath.PathLike) -> list[dict]:
  """The records of a metrics.jsonl. A torn or garbled line (a run killed mid-write, a damaged
  file) is skipped with a warning naming the file and line, so a finished run's plot and summary
  never fail on it."""
  records, bad = [], []
  text = epath.Path(path).read_bytes().decode("utf-8", "replace")  # Garbled bytes: one bad line.
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except ValueError:
      rec = None
    if isinstance(rec, dict) and isinstance(rec.get("step"), int):
      records.append(rec)
    else:
      bad.append(n)
  if bad:
    logging.warning("%s: skipped %d torn or garbled line(s) (line %s%s)", path, len(bad),
                    ", ".join(map(str, bad[:5])), ", ..." if len(bad) > 5 else "")
  return records


def create_writer(workdir: epath.PathLike, tensorboard: bool = True) -> interface.MetricWriter:
  """Log lines, TensorBoard events (unless tensorboard=False: config.train.tensorboard, for
  hosts without TensorFlow's summary ops) and metrics.jsonl in workdir; no-op off process 0."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  wd = fileio.makedirs(workdir)
  main = (metric_writers.create_default_writer(str(wd), asynchronous=False) if tensorboard
          else metric_writers.LoggingWriter())  # TensorBoard's writer takes gs:// itself (gfile).
  return metric_writers.MultiWriter([main, JsonlWriter(wd / "metrics.jsonl")])
