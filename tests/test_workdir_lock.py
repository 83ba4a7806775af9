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
  from fdistill_jax import compose, defaults, export, modes
  from fdistill_jax.engine import loop
  wd = str(tmp_path / "w")
  _write_lock(wd, pid=os.getppid())  # A live process on this host.

  def fail(*args, **kwargs):
    raise AssertionError("restored or built while another run holds the workdir")
  monkeypatch.setattr(loop, "load_trained", fail)
  monkeypatch.setattr(modes, "sample_grid", fail)
  monkeypatch.setattr(compose, "build", fail)
  with pytest.raises(wl.WorkdirLockedError, match=f"in use by pid {os.getppid()}"):
    if entry == "sample":
      modes.sample_checkpoint(defaults.toy(), wd)
    else:
      export.export_generator(defaults.toy(), wd, str(tmp_path / "out"))
  assert _lock(wd)["pid"] == os.getppid()  # Left alone.


# ------------------------------------------------------------------- pid reuse after a crash
def test_lock_records_the_process_start_time_and_boot(tmp_path):
  wd = str(tmp_path / "w")
  with wl.hold(wd):
    rec = _lock(wd)
  assert rec["proc_start"] == wl.proc_start(os.getpid())
  assert rec["boot_id"] == wl.boot_id() and len(rec["token"]) == 32
  if os.path.exists("/proc/self/stat"):
    assert isinstance(rec["proc_start"], int) and rec["boot_id"]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_reused_pid_is_a_stale_lock(tmp_path, caplog):
  """A run crashed; its pid now belongs to an unrelated live process (here: the parent of this
  test, alive, but started at another tick than the lock says). The lock is stale."""
  wd = str(tmp_path / "w")
  other = os.getppid()
  _write_lock(wd, pid=other, proc_start=wl.proc_start(other) + 12345, boot_id=wl.boot_id())
  with wl.hold(wd):
    assert _lock(wd)["pid"] == os.getpid()
  assert "stale lock" in caplog.text and "now belongs to another process" in caplog.text


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_lock_naming_this_very_pid_with_another_start_time_is_stale(tmp_path, caplog):
  """The crashed run's pid is now ours: not 'already locked by this process'."""
  wd = str(tmp_path / "w")
  _write_lock(wd, pid=os.getpid(), proc_start=wl.proc_start(os.getpid()) - 1)
  with wl.hold(wd):
    assert _lock(wd)["token"]
  assert "now belongs to another process" in caplog.text


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_live_holder_with_its_own_start_time_is_refused(tmp_path):
  wd = str(tmp_path / "w")
  other = os.getppid()
  _write_lock(wd, pid=other, proc_start=wl.proc_start(other), boot_id=wl.boot_id())
  with pytest.raises(wl.WorkdirLockedError, match=f"in use by pid {other}"):
    wl.acquire(wd)
  _write_lock(wd, pid=os.getpid(), proc_start=wl.proc_start(os.getpid()))
  with pytest.raises(wl.WorkdirLockedError, match="already locked by this process"):
    wl.acquire(wd)


def test_a_lock_from_before_a_reboot_is_stale(tmp_path, caplog):
  wd = str(tmp_path / "w")
  _write_lock(wd, pid=os.getppid(), boot_id="another-boot")
  if wl.boot_id() is None:
    pytest.skip("no boot id on this system")
  with wl.hold(wd):
    pass
  assert "rebooted" in caplog.text


@pytest.mark.parametrize("pid", [0, -1, True])
def test_a_lock_with_a_nonsense_pid_is_not_a_record(tmp_path, pid):
  wd = str(tmp_path / "w")
  _write_lock(wd, pid=pid)
  with pytest.raises(wl.WorkdirLockedError, match="not a readable lock record"):
    wl.acquire(wd, break_foreign=False)


# ------------------------------------------------------------------------- gs:// workdirs
def test_gcs_lock_is_created_exclusively(gcs_bucket, tmp_path):
  """gs://: one conditional create (fsspec pipe_file mode='create', gcsfs: ifGenerationMatch=0);
  a second acquire sees the object and is refused naming the holder."""
  wd = f"{gcs_bucket}/run1"
  with wl.hold(wd, "train"):
    obj = tmp_path / "fake_gcs" / "test-bucket" / "run1" / wl.LOCK_NAME
    assert json.loads(obj.read_text())["pid"] == os.getpid()
    _set_host(obj, "elsewhere-9")
    with pytest.raises(wl.WorkdirLockedError, match="'elsewhere-9'"):
      wl.acquire(wd, break_foreign=False)
    assert json.loads(obj.read_text())["host"] == "elsewhere-9"  # Not overwritten.
  assert obj.exists()  # Not ours any more: left in place.


def _set_host(obj, host):
  rec = json.loads(obj.read_text())
  obj.write_text(json.dumps({**rec, "host": host, "token": "theirs"}))


def test_gcs_create_uses_the_conditional_write(gcs_bucket, monkeypatch):
  """No check-then-write: a create that finds an object raises FileExistsError in the store
  itself (here the fake's emulation of ifGenerationMatch=0), even when exists() says no."""
  import fsspec
  fs, key = fsspec.core.url_to_fs(f"{gcs_bucket}/w/{wl.LOCK_NAME}")
  fs.pipe_file(key, b'{"host": "x", "pid": 7}', mode="create")
  monkeypatch.setattr(type(fs), "exists", lambda self, path, **kw: False)  # A racing reader.
  with pytest.raises(wl.WorkdirLockedError, match="in use by|locked by"):
    wl.acquire(f"{gcs_bucket}/w", break_foreign=False)


def test_gcs_lost_race_on_a_non_atomic_backend_is_refused(gcs_bucket, tmp_path, monkeypatch):
  """A backend without exclusive create: another run's upload lands between our write and our
  read-back. We read its token back and refuse, leaving its lock alone."""
  import fsspec
  fs, _ = fsspec.core.url_to_fs(f"{gcs_bucket}/w")
  cls = type(fs)
  original = cls.pipe_file
  other = {"host": "elsewhere-3", "pid": 99, "token": "theirs", "started_utc": "now"}

  def old_gcsfs(self, path, value, mode="overwrite", **kw):
    if mode != "overwrite":
      raise TypeError("_pipe_file() got an unexpected keyword argument 'mode'")
    original(self, path, value, **kw)
    original(self, path, json.dumps(other).encode(), **kw)  # The racing run's upload.
  monkeypatch.setattr(cls, "pipe_file", old_gcsfs)
  with pytest.raises(wl.WorkdirLockedError, match="at the same moment.*'elsewhere-3'"):
    wl.acquire(f"{gcs_bucket}/w")
  obj = tmp_path / "fake_gcs" / "test-bucket" / "w" / wl.LOCK_NAME
  assert json.loads(obj.read_text())["token"] == "theirs"


def test_lease_check_stops_a_run_whose_lock_was_replaced(tmp_path):
  """The residual races end at the loser's next checkpoint: Lease.check (called before every
  save) raises once the lock holds another run's token, and release leaves that lock alone."""
  wd = str(tmp_path / "w")
  with pytest.raises(wl.WorkdirLockedError, match="no longer names this run.*'elsewhere-5'"):
    with wl.hold(wd) as lease:
      lease.check()  # Still ours.
      _write_lock(wd, host="elsewhere-5", pid=5, token="theirs")
      lease.check()
  assert _lock(wd)["token"] == "theirs"


def test_training_checks_the_lease_before_each_save():
  import inspect
  from fdistill_jax.engine import loop
  src = inspect.getsource(loop._train)  # pylint: disable=protected-access
  assert src.index("lease.check()") < src.index("ckpt.save(")
