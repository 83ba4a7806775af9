"""One run per workdir: the lock file, its holder in the error, stale-lock takeover, release."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from fdistill_jax.engine import workdir_lock as wl


def _lock(wd) -> dict:
  return json.loads(open(os.path.join(wd, wl.LOCK_NAME)).read())


def _write_lock(wd, **rec):
  os.makedirs(wd, exist_ok=True)
  open(os.path.join(wd, wl.LOCK_NAME), "w").write(json.dumps(
      {"host": socket.gethostname(), "started": 0.0, "started_utc": "then", "what": "train",
       **rec}))


def _dead_pid() -> int:
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()
  return p.pid


def test_lock_names_host_pid_start_and_is_released(tmp_path):
  wd = str(tmp_path / "w")
  with wl.hold(wd, "train"):
    rec = _lock(wd)
    assert rec["host"] == socket.gethostname() and rec["pid"] == os.getpid()
    assert rec["started"] > 0 and rec["what"] == "train"
  assert not os.path.exists(os.path.join(wd, wl.LOCK_NAME))


def test_lock_is_released_on_exceptions(tmp_path):
  wd = str(tmp_path / "w")
  with pytest.raises(ValueError, match="boom"):
    with wl.hold(wd):
      raise ValueError("boom")
  assert not os.path.exists(os.path.join(wd, wl.LOCK_NAME))


def test_second_process_is_refused_naming_the_holder(tmp_path):
  wd = str(tmp_path / "w")
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          import sys, time
          from fdistill_jax.engine import workdir_lock as wl
          with wl.hold({wd!r}, "train"):
            print("held", flush=True)
            sys.stdin.readline()""")],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(wl.WorkdirLockedError, match=rf"in use by pid {holder.pid} on host"):
      with wl.hold(wd):
        pass
  finally:
    holder.communicate("\n", timeout=60)
  assert holder.returncode == 0 and not os.path.exists(os.path.join(wd, wl.LOCK_NAME))


def test_stale_lock_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
  wd = str(tmp_path / "w")
  dead = _dead_pid()
  _write_lock(wd, pid=dead)
  with wl.hold(wd):
    assert _lock(wd)["pid"] == os.getpid()
  assert f"stale lock" in caplog.text and f"pid {dead}" in caplog.text


def test_other_hosts_lock_is_refused_unless_told(tmp_path, monkeypatch, caplog):
  wd = str(tmp_path / "w")
  _write_lock(wd, host="elsewhere-7", pid=1234)
  monkeypatch.delenv(wl.BREAK_ENV, raising=False)
  with pytest.raises(wl.WorkdirLockedError, match=rf"'elsewhere-7'.*{wl.BREAK_ENV}=1"):
    with wl.hold(wd):
      pass
  assert _lock(wd)["host"] == "elsewhere-7"  # Left alone.
  monkeypatch.setenv(wl.BREAK_ENV, "1")
  with wl.hold(wd):
    assert _lock(wd)["pid"] == os.getpid()
  assert "taking over the lock" in caplog.text


def test_unreadable_lock_is_refused_naming_the_file(tmp_path):
  wd = tmp_path / "w"
  wd.mkdir()
  (wd / wl.LOCK_NAME).write_text("{torn")
  with pytest.raises(wl.WorkdirLockedError, match=r"run.lock exists but is not a readable"):
    wl.acquire(str(wd), break_foreign=False)


@pytest.mark.parametrize("entry", ["train", "evaluate_checkpoint"])
def test_train_and_eval_take_the_lock_before_building_anything(tmp_path, entry):
  from fdistill_jax.engine import loop
  wd = str(tmp_path / "w")
  _write_lock(wd, pid=os.getppid())  # A live process on this host.

  def problem():
    raise AssertionError("built while another run holds the workdir")
  with pytest.raises(wl.WorkdirLockedError, match=f"in use by pid {os.getppid()}"):
    getattr(loop, entry)(None, wd, problem)


@pytest.mark.parametrize("entry", ["sample", "export"])
def test_sample_and_export_take_the_lock_before_restoring(tmp_path, monkeypatch, entry):
  """Both may move or adopt checkpoint steps and write the workdir's caches, so they wait for
  the run that holds the workdir (nothing is restored or built meanwhile)."""
  from fdistill_jax import compose, defaults, export
  from fdistill_jax.engine import loop
  wd = str(tmp_path / "w")
  _write_lock(wd, pid=os.getppid())  # A live process on this host.

  def fail(*args, **kwargs):
    raise AssertionError("restored or built while another run holds the workdir")
  monkeypatch.setattr(loop, "load_trained", fail)
  monkeypatch.setattr(loop, "sample_checkpoint", fail)
  monkeypatch.setattr(compose, "build", fail)
  with pytest.raises(wl.WorkdirLockedError, match=f"in use by pid {os.getppid()}"):
    if entry == "sample":
      compose.sample_checkpoint(defaults.toy(), wd)
    else:
      export.export_generator(defaults.toy(), wd, str(tmp_path / "out"))
  assert _lock(wd)["pid"] == os.getppid()  # Left alone.
