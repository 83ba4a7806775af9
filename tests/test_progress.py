"""What a run shows: progress lines without a terminal, the summary table, the plot, the grids."""
import io
import json

import numpy as np
import PIL.Image

from fdistill_jax.engine import progress
from fdistill_jax.evaluation import grids, plots


def test_without_a_terminal_progress_prints_periodic_lines():
  out = io.StringIO()  # Not a tty.
  p = progress.Progress(0, 100, every=25, stream=out)
  for step in range(1, 101):
    p.update(step)
    p.log(step, {"generator/loss": 0.5, "critic/dsm": 0.25, "critic/grad_norm_fake_score": 3.0})
  p.close()
  lines = out.getvalue().splitlines()
  assert [ln.split()[1] for ln in lines] == ["25/100", "50/100", "75/100", "100/100"]
  assert "G 0.5" in lines[0] and "dsm 0.25" in lines[0] and "grad_norm" not in lines[0]
  assert "steps/s" in lines[0] and "eta" in lines[0]


def test_on_a_terminal_progress_is_a_bar():
  out = io.StringIO()
  p = progress.Progress(0, 10, every=5, stream=out, bar=True)
  for step in range(1, 11):
    p.update(step)
    p.log(step, {"generator/loss": 0.5})
  p.close()
  assert "10/10" in out.getvalue() and "step 5/10" not in out.getvalue()


def test_summary_table_has_student_teacher_rows_and_paths():
  final = {"step": 600,
           "student": {"fd": 8.4, "class_coverage": 1.0, "mean_confidence": 0.956,
                       "precision": 0.8, "recall": 0.5},
           "teacher_nfe35": {"fd": 3.4, "class_coverage": 1.0, "mean_confidence": 0.947}}
  text = progress.summary(final, {"grid": "/w/samples.png", "plot": None})
  lines = text.splitlines()
  assert lines[0].split() == ["sampler", "FD", "classes", "confidence", "precision", "recall"]
  assert lines[2].split()[-5:] == ["8.40", "100%", "0.956", "0.800", "0.500"]
  assert lines[3].startswith("teacher (35 NFE)") and lines[3].split()[-2:] == ["–", "–"]
  assert "grid:" in text and "/w/samples.png" in text and "plot" not in text


def test_metrics_plot_is_a_png(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for s in (50, 100, 150):
      f.write(json.dumps({"step": s, "time": 0.0, "kind": "scalars", "generator/loss": 1.0 / s,
                          "generator/h_mean": 1.0, "generator/ratio_max": 2.0}) + "\n")
    f.write(json.dumps({"step": 150, "time": 0.0, "kind": "scalars", "eval/fd": 8.0}) + "\n")
  path = plots.metrics_png(str(tmp_path))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert PIL.Image.open(path).size == (3 * 450, 340)  # Three panels.


def test_labelled_grid_rows_are_classes_and_blocks_sit_side_by_side(tmp_path):
  n, cols, res = 100, 8, 16
  x = np.stack([np.full((res, res, 1), (i % 10) / 10.0, np.float32) for i in range(n)])
  rows = grids.by_label(x, 10, cols)
  assert rows.shape == (10, cols, res, res, 1)
  assert np.all(rows[3] == 0.3)  # Row c holds only samples drawn with label c.
  labels = [f"class {c}" for c in range(10)]
  path = grids.save_labelled_grid([("student", rows), ("teacher", rows)], labels,
                                  str(tmp_path / "g.png"), upscale=2)
  w, h = PIL.Image.open(path).size
  tile_w, tile_h = (cols * (res + 1) + 1) * 2, (10 * (res + 1) + 1) * 2
  assert h == tile_h + 16 and w == 8 * len("class 0") + 6 + 2 * tile_w + 3 * 2
