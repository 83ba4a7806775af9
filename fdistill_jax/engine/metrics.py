"""Metric writers: clu's default writers (log lines + TensorBoard events) plus JSON lines.

Only process 0 writes; other processes get a writer that drops everything (clu's
`just_logging` would still print on every host, which floods pod logs).
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface


class JsonlWriter(interface.MetricWriter):
  """Appends one JSON object per write to `path` ({"step": s, name: value, ...})."""

  def __init__(self, path: str):
    self._f = open(path, "a", buffering=1)

  def _write(self, step, values: dict, kind: str):
    rec = {"step": int(step), "time": time.time(), "kind": kind}
    for k, v in values.items():
      v = np.asarray(v)
      rec[k] = v.item() if v.ndim == 0 else v.tolist()
    self._f.write(json.dumps(rec) + "\n")

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
    self._f.flush()

  def close(self):
    self._f.close()


def create_writer(workdir: str, tensorboard: bool = True) -> interface.MetricWriter:
  """Log lines, TensorBoard events (unless tensorboard=False: config.train.tensorboard, for
  hosts without TensorFlow's summary ops) and metrics.jsonl in workdir; no-op off process 0."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  os.makedirs(workdir, exist_ok=True)
  main = (metric_writers.create_default_writer(workdir, asynchronous=False) if tensorboard
          else metric_writers.LoggingWriter())
  return metric_writers.MultiWriter([main, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])
