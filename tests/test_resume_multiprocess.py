"""Preemption safety and multi-process runs, through the real command line.

* A run killed with SIGKILL after a checkpoint and then resumed ends with exactly the same state
  as an uninterrupted run (CPU, fixed seeds).
* Two processes (2 CPU devices each) joined by jax.distributed with gloo collectives give the same
  parameters as one process with 4 devices.

Both compare against one uninterrupted 4-device run of 20 steps (a module fixture that keeps its
step-10 checkpoint too: the learning rates are constant, so step 10 of a 20-step run is a 10-step
run). The 4-device runs share one compilation cache, so the killed run and its resumption load the
uninterrupted run's executables instead of compiling them again.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/toy2d_js.py", "--config.pretrain.steps=50", "--config.student.hidden=32",
        "--config.disc.hidden=32", "--config.train.batch_size=64", "--config.eval.num_samples=256",
        "--config.train.async_checkpoints=False", "--config.train.log_every=5",
        "--config.train.keep_checkpoints=4",
        # Constant lr: the 10-step two-process run is compared with the 20-step run's step 10,
        # and a cosine schedule depends on train.steps.
        *(f"--config.optim.{n}.schedule=constant" for n in ("generator", "fake_score",
                                                             "discriminator"))]


def _env(devices: int, **extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
  return env


def _cmd(workdir, steps, cache="workdir", final_eval=False, ckpt_every=10):
  """The command line of a run. Only the two-process run evaluates at the end (multi-process
  evaluation gathers the generator on every process); the others are compared by state alone.
  Checkpoints every 10 steps save only the steps compared (a save, with its checksums and, across
  two processes, its barriers, costs more than the 10 toy steps between two); the killed run
  checkpoints every 5, so that it is still running, 10 steps and 2 saves from its end, when its
  step-10 checkpoint appears."""
  return [sys.executable, "-m", "fdistill_jax.main", *TINY, f"--workdir={workdir}",
          f"--config.train.steps={steps}", f"--compilation_cache={cache}",
          f"--config.train.final_eval={final_eval}", f"--config.train.ckpt_every={ckpt_every}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """(workdir of one 4-device 20-step run with checkpoints 10 and 20, its compilation cache)."""
  root = tmp_path_factory.mktemp("uninterrupted")
  cache = str(root / "jax_cache")
  subprocess.run(_cmd(root / "run", 20, cache), cwd=REPO, env=_env(4), check=True,
                 capture_output=True)
  return root / "run", cache


def _with_pretrained(workdir, uninterrupted_dir):
  """Seeds a new workdir with the uninterrupted run's pretrained-denoiser cache (same settings,
  so the run reuses it instead of pretraining again) and returns the workdir."""
  workdir.mkdir(parents=True)
  for name in ("pretrained_denoiser.msgpack", "pretrained_denoiser.json"):
    (workdir / name).write_bytes((uninterrupted_dir / name).read_bytes())
  return workdir


def _final_state(workdir, step):
  """The saved state as numpy arrays, whatever device topology wrote it."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def _assert_same(a, b, atol):
  fa, _ = jax.tree_util.tree_flatten_with_path(a)
  for (path, x), y in zip(fa, jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
  steps = 20
  full, cache = uninterrupted
  killed = _with_pretrained(tmp_path / "killed", full)
  proc = subprocess.Popen(_cmd(killed, steps, cache, ckpt_every=5), cwd=REPO, env=_env(4),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  marker = killed / "checkpoints" / "10"
  t0 = time.time()
  while not marker.exists() and proc.poll() is None and time.time() - t0 < 300:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert marker.exists(), "the run never reached its step-10 checkpoint"
  ckpts = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
  assert ckpts[-1] < steps, f"the run finished before it was killed: {ckpts}"
  subprocess.run(_cmd(killed, steps, cache, ckpt_every=5), cwd=REPO, env=_env(4), check=True,
                 capture_output=True)
  _assert_same(_final_state(full, steps), _final_state(killed, steps), atol=0)
  assert not (killed / "final_metrics.json").exists()  # train.final_eval=False: not evaluated.


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, uninterrupted):
  steps = 10
  one, _ = uninterrupted  # Its step-10 checkpoint: one process, 4 devices.
  two = _with_pretrained(tmp_path / "two", one)
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(two, steps, final_eval=True), cwd=REPO,
      env=_env(2, FDISTILL_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  outs = [p.communicate(timeout=600)[0].decode() for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert os.path.exists(two / "final_metrics.json")  # Written by process 0 after both evaluated.
  _assert_same(_final_state(one, steps), _final_state(two, steps), atol=1e-5)
