"""metrics.jsonl: a torn or garbled line (a run killed mid-write) never fails the run that
resumes and finishes; it is skipped with a warning, and new records start on their own line."""
import json
import logging
import os

from fdistill_jax.engine import metrics
from fdistill_jax.evaluation import plots


def _line(step, loss):
  return json.dumps({"step": step, "time": 0.0, "kind": "scalars", "generator/loss": loss})


def test_resumed_writer_starts_after_a_torn_line_and_reader_skips_it(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  path.write_text(_line(5, 1.0) + "\n" + _line(10, 0.5)[:17])  # Killed mid-write.
  w = metrics.JsonlWriter(str(path))
  w.write_scalars(10, {"generator/loss": 0.4})
  w.close()
  lines = path.read_text().splitlines()
  assert len(lines) == 3 and json.loads(lines[2])["generator/loss"] == 0.4
  with caplog.at_level(logging.WARNING):
    recs = metrics.read_records(path)
  assert [r["step"] for r in recs] == [5, 10]
  assert "metrics.jsonl: skipped 1 torn or garbled line(s) (line 2)" in caplog.text


def test_finished_run_plots_despite_garbled_lines(tmp_path, caplog):
  good = [_line(s, 1.0 / s) for s in (1, 2, 3)]
  garbled = [good[0][:9] + "\x00\xff" + good[0][11:], "[1, 2]", '{"no_step": 1}', "\ufffd" * 4]
  (tmp_path / "metrics.jsonl").write_text("\n".join(good[:1] + garbled + good[1:]) + "\n")
  out = plots.metrics_png(str(tmp_path))
  assert out and os.path.exists(out)
  assert plots.read_jsonl(tmp_path / "metrics.jsonl")["generator/loss"][0] == [1, 2, 3]
  assert "skipped 4 torn or garbled line(s)" in caplog.text
