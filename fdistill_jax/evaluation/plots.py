"""The metrics plot written at the end of a run: workdir/metrics.png from workdir/metrics.jsonl.

Three panels over steps: the losses (generator and critic), the f-distill weighting statistics
(h and the density ratio r: mean, min, max) and the evaluation metric (FD/FID or toy SW). A panel
with nothing to show is left out.
"""
from __future__ import annotations

import io

from etils import epath

from fdistill_jax import fileio
from fdistill_jax.engine import metrics

LOSSES = ("generator/loss", "generator/dm", "generator/gan_gen", "critic/loss", "critic/dsm",
          "critic/gan_disc", "loss")
WEIGHTS = ("generator/h_mean", "generator/h_min", "generator/h_max", "generator/ratio_mean",
           "generator/ratio_min", "generator/ratio_max")
EVALS = ("eval/fd", "eval/fid", "eval/sw", "eval/in_mode_fraction", "eval/mode_tv")


def read_jsonl(path: epath.PathLike) -> dict[str, tuple[list[int], list[float]]]:
  """{metric: (steps, values)} of the scalar records in a metrics.jsonl."""
  series: dict[str, tuple[list[int], list[float]]] = {}
  for rec in metrics.read_records(path):  # Torn lines skipped with a warning.
    for k, v in rec.items():
      if k in ("step", "time", "kind") or not isinstance(v, (int, float)):
        continue
      steps, vals = series.setdefault(k, ([], []))
      steps.append(int(rec["step"]))
      vals.append(float(v))
  return series


def metrics_png(workdir: epath.PathLike, path: epath.PathLike | None = None) -> str | None:
  """Writes the plot of workdir/metrics.jsonl to `path` (default workdir/metrics.png); returns
  the path, or None when there is nothing to plot."""
  src = epath.Path(workdir) / "metrics.jsonl"
  if not src.exists():
    return None
  series = read_jsonl(src)
  panels = [(title, [k for k in keys if k in series]) for title, keys in
            (("losses", LOSSES), ("h and ratio r", WEIGHTS), ("evaluation", EVALS))]
  panels = [(t, ks) for t, ks in panels if ks]
  if not panels:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), dpi=100,
                           squeeze=False)
  for ax, (title, keys) in zip(axes[0], panels):
    for k in keys:
      steps, vals = series[k]
      ax.plot(steps, vals, marker="o" if len(steps) < 12 else None, ms=3, label=k.split("/")[-1])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    if title == "h and ratio r":
      ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = path or epath.Path(workdir) / "metrics.png"
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  plt.close(fig)
  fileio.write_bytes(path, buf.getvalue())
  return str(path)
