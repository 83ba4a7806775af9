"""What a person watching a run sees: a progress bar, quiet libraries, and a summary at the end.

* Progress: a tqdm bar (steps, steps/s, ETA and the few losses that matter) when stdout is a
  terminal; otherwise (CI, a pod's log file) one plain line every `every` steps.
* quiet_libraries: orbax/absl/grain/TensorFlow INFO lines off (main.py's --verbose keeps them).
* summary: a short table of student vs teacher and the paths of the run's outputs.
Only process 0 prints.
"""
from __future__ import annotations

import logging as py_logging
import os
import sys
import time
from typing import IO, Any, Callable

import jax
from etils import epath

# The losses worth a glance, by method family; the rest stay in metrics.jsonl / TensorBoard.
SHOWN = ("generator/loss", "generator/dm", "generator/gan_gen", "critic/dsm", "critic/gan_disc",
         "generator/h_mean", "loss")
_SHORT = {"generator/loss": "G", "generator/dm": "dm", "generator/gan_gen": "gan_G",
          "critic/dsm": "dsm", "critic/gan_disc": "gan_D", "generator/h_mean": "h", "loss": "loss"}


def quiet_libraries() -> None:
  """Silences INFO chatter of orbax (checkpoint threads), absl, grain and TensorFlow; the run's
  own progress, warnings and errors still show."""
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  for name in ("orbax", "absl", "grain", "tensorflow", "jax._src.xla_bridge"):
    py_logging.getLogger(name).setLevel(py_logging.WARNING)


class Progress:
  """Steps from `start` to `total`; `update(step)` every step, `log(step, scalars)` at log steps."""

  def __init__(self, start: int, total: int, every: int, stream: IO | None = None,
               bar: bool | None = None):
    self.stream = stream or sys.stdout
    self.enabled = jax.process_index() == 0
    self.total, self.every, self.start = total, max(1, every), start
    self.t0 = time.time()
    use_bar = self.stream.isatty() if bar is None else bar
    self.bar = None
    if self.enabled and use_bar:
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=start, file=self.stream, unit="step",
                      dynamic_ncols=True, smoothing=0.1)

  def update(self, step: int) -> None:
    """Called after iteration `step` finished (step = iterations done)."""
    if self.bar is not None:
      self.bar.update(step - self.bar.n)

  def log(self, step: int, scalars: dict) -> None:
    """Shows the losses of SHOWN found in scalars (a bar's postfix, or a line every `every`)."""
    if not self.enabled:
      return
    shown = {_SHORT[k]: f"{scalars[k]:.4g}" for k in SHOWN if k in scalars}
    if self.bar is not None:
      self.bar.set_postfix(shown, refresh=False)
      return
    if step % self.every and step != self.total:
      return
    rate = (step - self.start) / max(time.time() - self.t0, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    losses = " ".join(f"{k} {v}" for k, v in shown.items())
    print(f"step {step}/{self.total} ({100 * step / self.total:.0f}%) {rate:.2f} steps/s "
          f"eta {_duration(eta)}  {losses}".rstrip(), file=self.stream, flush=True)

  def message(self, text: str) -> None:
    """A line that does not break the bar."""
    if not self.enabled:
      return
    if self.bar is not None:
      self.bar.write(text, file=self.stream)
    else:
      print(text, file=self.stream, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


def _duration(s: float) -> str:
  if s != s:  # NaN
    return "?"
  m, s = divmod(int(s), 60)
  return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def note(text: str) -> None:
  """A line on stdout from process 0 (what the run is doing while nothing else moves)."""
  if jax.process_index() == 0:
    print(text, flush=True)


# ------------------------------------------------------------------------------------- summary
def final_pictures(exp, x, key, workdir: str, step: int,
                   plot: Callable[[str], Any] | None = None) -> None:
  """At the end of a run: the student beside the teacher on the same noise and labels (when the
  experiment can draw that) and plot(workdir), the metrics plot the caller hands in (compose.py:
  evaluation/plots.py; the engine imports no evaluation code)."""
  if exp.write_comparison is not None:
    exp.write_comparison(x, key, str(epath.Path(workdir) / f"samples_{step:07d}_vs_teacher.png"))
  if plot is not None:
    plot(workdir)


def output_paths(workdir: str) -> dict:
  """{what: path} of a finished run's outputs that exist in workdir."""
  wd = epath.Path(workdir)
  grids = sorted(str(p) for p in wd.glob("samples_*.png"))
  paths = {"grid": next((g for g in reversed(grids) if g.endswith("_vs_teacher.png")),
                        grids[-1] if grids else None),
           "metrics": str(wd / "final_metrics.json"),
           "plot": str(wd / "metrics.png"),
           "checkpoint": str(wd / "checkpoints"),
           "tensorboard": f"tensorboard --logdir={workdir}"}
  return {k: v for k, v in paths.items()
          if v and (k == "tensorboard" or epath.Path(v).exists())}

# (column title, metric key, format) for whichever of these the experiment reports.
_COLUMNS = (("FD", "fd", "{:.2f}"), ("FD@297", "fd_n297", "{:.2f}"), ("FID", "fid", "{:.2f}"),
            ("FD to teacher", "fd_teacher", "{:.2f}"),
            ("accuracy", "prompt_accuracy", "{:.3f}"),
            ("held-out acc.", "heldout_accuracy", "{:.3f}"),
            ("diversity/prompt", "within_prompt_diversity", "{:.2f}"),
            ("classes", "class_coverage", "{:.0%}"), ("confidence", "mean_confidence", "{:.3f}"),
            ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
            ("SW", "sw", "{:.4f}"), ("in-mode", "in_mode_fraction", "{:.3f}"),
            ("mode TV", "mode_tv", "{:.3f}"))


def summary(final: dict, paths: dict) -> str:
  """A plain-text table of the student and every reference sampler in `final` (the dict
  train() returns: 'student', 'teacher_nfe35', ...), then `paths` ({what: path})."""
  k_steps = final.get("student_steps", 1)
  steps = f"{k_steps} step{'s' if k_steps > 1 else ''}"
  rows = [(f"student ({steps})", final["student"])]
  for k, v in final.items():
    if isinstance(v, dict) and k != "student":
      rows.append((_row_name(k, steps), v))
  cols = [c for c in _COLUMNS if any(c[1] in r for _, r in rows)]
  table = [["sampler"] + [c[0] for c in cols]]
  for name, r in rows:
    table.append([name] + [c[2].format(r[c[1]]) if c[1] in r else "–" for c in cols])
  width = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, width)).rstrip() for row in table]
  lines.insert(1, "  ".join("-" * w for w in width))
  lines.append("")
  lines += [f"{k + ':':<12} {v}" for k, v in paths.items() if v]
  return "\n".join(lines)


def _row_name(key: str, steps: str = "1 step") -> str:
  if key.startswith("teacher_nfe"):
    nfe, unguided = key[len("teacher_nfe"):], key.endswith("_unguided")
    return f"teacher ({nfe.removesuffix('_unguided')} NFE{', unguided' if unguided else ''})"
  if key.startswith("teacher_heun"):
    return f"teacher (Heun, {key[len('teacher_heun'):]} NFE)"
  if key == "student_raw":
    return f"student raw params ({steps})"
  if key == "real_heldout":
    return "real held-out digits"
  return key.replace("_", " ")
