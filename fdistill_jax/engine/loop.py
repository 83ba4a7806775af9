"""The training loop: build → shard → compile → step / log / evaluate / checkpoint.

Flow of one run (`train(cfg, workdir, problem)`):
  problem      (experiment, method) composed by the caller (fdistill_jax/compose.py): the engine
               runs what it is handed and imports neither methods nor experiments
  state        initial trainable params created directly with their shardings (jit of init)
  resume       latest checkpoint in workdir/checkpoints, restored onto the current mesh
  compile      one jitted generator step and one critic step, compiled up front (time logged)
  loop         FastGen schedule: step k is a generator step iff k mod (critic_steps + 1) == 0;
               metrics are fetched from the device only at log steps
  outputs      metrics.jsonl + TensorBoard + logs, samples PNG, checkpoints, final_metrics.json,
               and the metrics plot through the caller's `plot` hook
The engine only trains, scores through the problem it is handed and loads checkpoints; the
sample and ref modes live in fdistill_jax/modes.py (tests/test_layers.py keeps data, evaluation,
methods and experiments out of fdistill_jax/engine/).
"""
from __future__ import annotations

import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from fdistill_jax import fileio
from fdistill_jax.engine import checkpoint as ckpt_lib
from fdistill_jax.engine import metrics as metrics_lib
from fdistill_jax.engine import progress as progress_lib
from fdistill_jax.engine import sharding as shard_lib
from fdistill_jax.engine import state as state_lib
from fdistill_jax.engine import steps as steps_lib
from fdistill_jax.engine import workdir_lock


# workdir -> anything: the metrics plot, drawn by the caller's code (evaluation/plots.py).
Plot = Callable[[str], Any]


class NonFiniteHalt(RuntimeError):
  pass


# ============================================================================== setup
def _build(cfg, problem):
  """problem: () -> (experiment, method module), already prepared by the composer."""
  exp, method = problem()
  init_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
  wanted = set(method.GENERATOR_NETS) | set(method.CRITIC_NETS)
  names = tuple(n for n in jax.eval_shape(exp.init_params, init_key) if n in wanted)
  critic_steps = cfg.method.critic_steps if method.CRITIC_NETS else None
  txs = {n: state_lib.make_optimizer(cfg, n, state_lib.num_updates(
      cfg.train.steps, critic_steps, n in method.GENERATOR_NETS)) for n in names}

  def init(key):
    params = {n: p for n, p in exp.init_params(key).items() if n in wanted}
    return state_lib.init_state(params, txs, method.init_extras(cfg), cfg.train.ema_decays)

  return exp, method, txs, init, init_key


def _state_layout(cfg, init, init_key, mesh):
  """(abstract state, its shardings on mesh): the layout a run's state is created or restored in."""
  abstract = jax.eval_shape(init, init_key)
  return abstract, shard_lib.tree_shardings(abstract, mesh, cfg)


def _restore_latest(ckpt, abstract, state_sh, exp, step=None, adopt: bool = False):
  """The state of ckpt's `step` (default latest) placed on state_sh; restores exp's input too.
  adopt: verify-and-adopt steps without an integrity record (Checkpointer.restore)."""
  state, data_state = ckpt.restore(ckpt_lib.abstract_with_shardings(abstract, state_sh), step,
                                   adopt_unrecorded=adopt)
  exp.restore_data(data_state)
  return state


def _resumed_state(ckpt, cfg, abstract, state_sh, exp):
  """The state to resume from, or None to start from the initial state. A run never starts over
  while the checkpoint dir holds steps it could not verify (or an earlier run set all of its
  steps aside in corrupt/), unless config.train.restart_from_scratch says so."""
  fresh = bool(cfg.train.restart_from_scratch)
  if ckpt.latest_step() is None:
    aside = ckpt.set_aside_steps()
    if aside and not fresh:
      raise ckpt_lib.NoVerifiedCheckpointError(
          f"{ckpt.directory} holds no step, but an earlier run moved steps {aside} to "
          f"{ckpt.directory / ckpt_lib.CORRUPT_DIR}/ because they failed verification (its log "
          "says why), so the run stops rather than start over; "
          f"{ckpt_lib.RESTART_FLAG} starts from step 0 (they stay there)", [], [])
    if aside:
      logging.warning("config.train.restart_from_scratch: starting from step 0 (steps %s stay in "
                      "%s/)", aside, ckpt.directory / ckpt_lib.CORRUPT_DIR)
    return None
  try:
    return _restore_latest(ckpt, abstract, state_sh, exp,
                           adopt=bool(cfg.train.adopt_unverified_checkpoints))
  except ckpt_lib.NoVerifiedCheckpointError as e:
    if not fresh:
      raise
    for s in e.unrecorded:  # Out of the way of the new run's saves, kept.
      ckpt.set_aside(s)
    logging.warning("%s\nconfig.train.restart_from_scratch: starting from step 0", e)
    return None


def _phase_of(step: int, method, cfg) -> str:
  if not method.CRITIC_NETS:
    return "generator"
  return "generator" if step % (cfg.method.critic_steps + 1) == 0 else "critic"


def generator_params(state, which: str):
  """Generator params to evaluate: 'raw' or an EMA decay like '0.999'."""
  if which == "raw":
    return state["params"]["generator"]
  key = state_lib.ema_key(float(which))
  if key not in state["ema"]:
    raise ValueError(f"config.eval.params={which!r}: no such EMA track; have {list(state['ema'])}")
  return state["ema"][key]


# ============================================================================== setup
class Run:
  """A built run: experiment, mesh, shardings, initial (or restored) state and compiled steps.

  compiler_options: XLA options the two steps are compiled with (Lowered.compile); None (every
  run the engine starts) is XLA's defaults. Tests that run a step a few hundred times pass
  options that compile faster (fdistill_jax/testing.py)."""

  def __init__(self, cfg, workdir: str, problem, devices=None, restore: bool = True,
               compiler_options: dict | None = None):
    self.cfg, self.workdir = cfg, workdir
    self.exp, self.method, self.txs, init, init_key = _build(cfg, problem)
    self.mesh = shard_lib.make_mesh(cfg, devices)
    # ---------------------------------------------------------------- state & shardings
    self.abstract, self.state_sh = _state_layout(cfg, init, init_key, self.mesh)
    self.frozen_sh = shard_lib.tree_shardings(jax.eval_shape(lambda: self.exp.frozen), self.mesh,
                                              cfg)
    self.frozen = jax.device_put(self.exp.frozen, self.frozen_sh)
    self.ckpt = ckpt_lib.Checkpointer(epath.Path(workdir) / "checkpoints",
                                      cfg.train.keep_checkpoints, cfg.train.async_checkpoints)
    resumed = (_resumed_state(self.ckpt, cfg, self.abstract, self.state_sh, self.exp)
               if restore else None)
    if resumed is not None:
      self.state = resumed
      logging.info("resumed from step %d in %s", int(self.state["step"]), self.ckpt.directory)
    else:
      self.state = jax.jit(init, out_shardings=self.state_sh)(init_key)
    # ---------------------------------------------------------------- compile
    spec = self.exp.batch_spec()  # Shapes only: compiling must not consume input batches.
    self.batch_sh = shard_lib.batch_sharding(self.mesh, spec)
    batch_abstract = ckpt_lib.abstract_with_shardings(spec, self.batch_sh)
    phases = ("generator", "critic") if self.method.CRITIC_NETS else ("generator",)
    self.lowered, self.compiled, self.compile_times = {}, {}, {}
    for phase in phases:
      t0 = time.time()
      fn = jax.jit(steps_lib.make_step(self.method, self.exp.nets, self.txs, cfg, phase),
                   in_shardings=(self.state_sh, self.frozen_sh, self.batch_sh),
                   out_shardings=(self.state_sh, None), donate_argnums=(0,))
      self.lowered[phase] = fn.lower(self.abstract, self.frozen, batch_abstract)
      self.compiled[phase] = self.lowered[phase].compile(compiler_options)
      self.compile_times[phase] = time.time() - t0
      logging.info("compiled %s step in %.1fs", phase, self.compile_times[phase])

  def phase(self, step: int) -> str:
    return _phase_of(step, self.method, self.cfg)

  def global_batch(self, step: int):
    """The experiment's batch for `step` as global arrays sharded over the mesh."""
    return shard_lib.global_arrays(self.exp.batch(step), self.batch_sh, self.exp.global_batch)

  def step(self, step: int):
    """Runs iteration `step` (its phase, its batch) on self.state; returns device metrics."""
    self.state, m = self.compiled[self.phase(step)](self.state, self.frozen,
                                                    self.global_batch(step))
    return m


# ============================================================================== train
def train(cfg, workdir: str, problem, devices=None, plot: Plot | None = None) -> dict:
  """Trains problem() = (experiment, method) per cfg in workdir (local or gs://, resuming);
  final metrics. devices: the mesh's devices (default every device, as Run). plot(workdir) draws
  the metrics plot after the final evaluation (the caller's: the engine draws no plots). Holds
  the workdir's lock (engine/workdir_lock.py) throughout: one run per workdir."""
  with workdir_lock.hold(workdir, "train") as lease:
    return _train(cfg, workdir, problem, devices, lease, plot)


def _train(cfg, workdir: str, problem, devices=None, lease=None, plot: Plot | None = None) -> dict:
  fileio.makedirs(workdir)
  writer = metrics_lib.create_writer(workdir, cfg.train.tensorboard)
  progress_lib.note("building the run and compiling its steps ...")
  run = Run(cfg, workdir, problem, devices)
  exp, ckpt = run.exp, run.ckpt
  start = int(jax.device_get(run.state["step"]))
  progress_lib.note("compiled in " + ", ".join(f"{t:.0f}s ({p})"
                                               for p, t in run.compile_times.items()))
  writer.write_scalars(start, {f"compile_time_{p}_s": t for p, t in run.compile_times.items()})

  # ---------------------------------------------------------------- preemption
  stop = {"flag": False}
  prev = signal.getsignal(signal.SIGTERM)
  signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))

  def save(step, force=False):
    if lease is not None:  # Still ours? (a lost lock race: workdir_lock's module docstring)
      lease.check()
    ckpt.save(step, run.state, exp.data_state(), force=force)

  # ---------------------------------------------------------------- loop
  total = cfg.train.steps
  pending, t_last, s_last = [], time.time(), start
  eval_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 99)
  img_per_step = cfg.train.batch_size
  progress = progress_lib.Progress(start, total, cfg.train.log_every)
  try:
    for step in range(start, total):
      pending.append(run.step(step))
      done = step + 1
      progress.update(done)
      if done % cfg.train.log_every == 0 or done == total:
        host = jax.device_get(pending)
        pending = []
        scalars = {}
        for k in {k for d in host for k in d}:
          scalars[k] = float(np.mean([d[k] for d in host if k in d]))
        nf = jax.device_get(run.state["nonfinite"])
        dt = time.time() - t_last
        scalars.update(steps_per_sec=(done - s_last) / dt,
                       images_per_sec=(done - s_last) * img_per_step / dt,
                       eta_min=(total - done) * dt / max(done - s_last, 1) / 60,
                       nonfinite_total=int(nf["total"]))
        t_last, s_last = time.time(), done
        writer.write_scalars(done, scalars)
        progress.log(done, scalars)
        if int(nf["streak"]) >= cfg.train.max_nonfinite_streak:
          raise NonFiniteHalt(f"{int(nf['streak'])} non-finite steps in a row at step {done} "
                              f"(config.train.max_nonfinite_streak="
                              f"{cfg.train.max_nonfinite_streak}); last checkpoint kept")
      if cfg.train.eval_every and done % cfg.train.eval_every == 0 and done != total:
        _evaluate(exp, run.state, cfg, writer, done, eval_key, workdir)
      if (cfg.train.ckpt_every and done % cfg.train.ckpt_every == 0) or stop["flag"]:
        save(done, force=stop["flag"])
      if stop["flag"]:
        logging.warning("SIGTERM: saved step %d and stopping", done)
        return {"preempted_at": done}
    if ckpt.latest_step() != total:
      save(total, force=True)
    if not cfg.train.final_eval:
      progress_lib.note(f"trained {total} steps; not evaluated (config.train.final_eval=False): "
                        f"--mode=eval scores the checkpoint in {workdir}")
      return {"step": total}
    final = _evaluate(exp, run.state, cfg, writer, total, eval_key, workdir, final=True,
                      plot=plot)
  finally:
    progress.close()
    signal.signal(signal.SIGTERM, prev)
    ckpt.close()
    writer.flush()
  return final


def _evaluate(exp, state, cfg, writer, step, key, workdir, final=False,
              plot: Plot | None = None) -> dict:
  params = generator_params(state, cfg.eval.params)
  if jax.process_count() > 1:  # Every process evaluates the full generator on its own devices.
    params = multihost_utils.process_allgather(params, tiled=True)
  x = exp.sample(params, key)
  res = exp.score(x, key)
  if exp.extra_metrics is not None:
    res.update(exp.extra_metrics(params))
  writer.write_scalars(step, {f"eval/{k}": v for k, v in res.items()
                              if np.ndim(v) == 0})
  if jax.process_index() == 0:
    # Not a default: only the methods with a divergence (fdistill, dmd, uni_instruct) name one.
    name = cfg.method.name + (f"/{cfg.method.divergence}" if "divergence" in cfg.method else "")
    exp.write_samples(x, str(epath.Path(workdir) / f"samples_{step:07d}.png"),
                      f"{name} step {step}")
  if final:
    out = {"step": step, "student_steps": exp.nets.steps, "student": res}
    # The EMA beside the parameters it averages (issue 25 §1).
    if cfg.eval.params != "raw" and cfg.eval.score_raw:
      raw = generator_params(state, "raw")
      if jax.process_count() > 1:
        raw = multihost_utils.process_allgather(raw, tiled=True)
      out["student_raw"] = exp.score(exp.sample(raw, key), key)
      if exp.extra_metrics is not None:
        out["student_raw"].update(exp.extra_metrics(raw))
      writer.write_scalars(step, {f"eval_raw/{k}": v for k, v in out["student_raw"].items()
                                  if np.ndim(v) == 0})
    writer.flush()  # metrics.jsonl complete (on gs:// it is uploaded in batches) for the plot.
    out.update(exp.reference(key))
    if jax.process_index() == 0:
      fileio.write_json(epath.Path(workdir) / "final_metrics.json", out)
      progress_lib.final_pictures(exp, x, key, workdir, step, plot)
    return out
  return res


# ============================================================================== eval / load
def load_trained(cfg, workdir: str, problem, step: int | None = None):
  """(experiment, state) of checkpoint `step` (default the latest) in workdir."""
  exp, _, _, init, init_key = _build(cfg, problem)
  abstract, state_sh = _state_layout(cfg, init, init_key, shard_lib.make_mesh(cfg))
  ckpt = ckpt_lib.Checkpointer(epath.Path(workdir) / "checkpoints", async_save=False)
  try:
    if ckpt.latest_step() is None:
      aside = ckpt.set_aside_steps()
      raise FileNotFoundError(f"no checkpoint under {ckpt.directory}; train first "
                              f"(--mode=train --workdir={workdir})" + (
                                  f" ({ckpt_lib.CORRUPT_DIR}/ holds steps {aside} that failed "
                                  "verification)" if aside else ""))
    if step is not None and step not in ckpt.mngr.all_steps():
      raise FileNotFoundError(f"no checkpoint of step {step} under {ckpt.directory}; kept steps: "
                              f"{sorted(ckpt.mngr.all_steps())}")
    return exp, _restore_latest(ckpt, abstract, state_sh, exp, step,
                                adopt=bool(cfg.train.adopt_unverified_checkpoints))
  finally:
    ckpt.close()


def evaluate_checkpoint(cfg, workdir: str, problem, plot: Plot | None = None) -> dict:
  """Scores the latest checkpoint (writes final_metrics.json and metrics.jsonl, so it holds the
  workdir's lock like a training run); plot as in train."""
  with workdir_lock.hold(workdir, "eval"):
    return _evaluate_checkpoint(cfg, workdir, problem, plot)


def _evaluate_checkpoint(cfg, workdir: str, problem, plot: Plot | None = None) -> dict:
  exp, state = load_trained(cfg, workdir, problem)
  step = int(state["step"])
  writer = metrics_lib.create_writer(workdir, cfg.train.tensorboard)
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 99)
  return _evaluate(exp, state, cfg, writer, step, key, workdir, final=True, plot=plot)
