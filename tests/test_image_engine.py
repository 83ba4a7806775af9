"""The engine on an EDM architecture: f-distill steps, data×fsdp sharding, resume, export.

A tiny class-conditional SongUNet on 8×8 digits keeps this fast on CPU; the random-weight
teacher is fine here because only the mechanics are under test.
"""
import json
import os
import types

import jax
import numpy as np
import pytest

from fdistill_jax import defaults
from fdistill_jax import compose, modes
from fdistill_jax.engine import loop


def tiny_image_cfg():
  cfg = defaults.image()
  # One resolution level (with attention): half the compile time of two levels, and compiling the
  # steps is most of this file's time on CPU; EDM's down/up-sampling paths have their own parity
  # tests (test_edm_parity).
  cfg.teacher.precond_kwargs.update(dict(img_resolution=8, model_channels=8, channel_mult=(1,),
                                         num_blocks=1, attn_resolutions=(8,)))
  cfg.dataset.resolution = 8
  cfg.disc.feature_keys = ("enc8",)
  cfg.disc.channels = 8
  cfg.train.update(dict(steps=4, batch_size=16, log_every=2, ckpt_every=2,
                        async_checkpoints=False))
  # eval.nfe = the one teacher NFE evaluated: the final comparison grid reuses those samples.
  cfg.eval.update(dict(num_samples=16, teacher_nfes=(1,), nfe=1, metric="none"))
  cfg.mesh.fsdp_min_size = 64
  return cfg


def _leaves_close(a, b, tol):
  fa, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(a))
  for (path, x), y in zip(fa, jax.tree.leaves(jax.device_get(b))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """compose.train of tiny_image_cfg on one device: its workdir, final metrics, the Run it built
  and each step's (step, metrics). Run.step is wrapped to keep the Run and fetch every step's
  metrics (the loop fetches them only at log steps; fetching changes no numbers), so the slow
  tests check the steps of this run instead of building and compiling a second one-device Run."""
  workdir = tmp_path_factory.mktemp("one")
  runs, steps = [], []
  step = loop.Run.step

  def recording_step(run, k):
    m = step(run, k)
    runs.append(run)
    steps.append((k, jax.device_get(m)))
    return m

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loop.Run, "step", recording_step)
    # On one device: the slow test below compares it with a data×fsdp run.
    out = compose.train(tiny_image_cfg(), str(workdir), devices=jax.devices()[:1])
  assert all(r is runs[0] for r in runs)
  return types.SimpleNamespace(workdir=workdir, out=out, run=runs[0], steps=steps)


@pytest.mark.slow  # test_train_resume_and_export asserts the same of its run in the quick tier.
def test_fdistill_steps_on_edm_are_finite_and_update(trained):
  run = trained.run
  assert [k for k, _ in trained.steps] == [0, 1, 2, 3]
  metrics = [m for _, m in trained.steps]
  assert [run.phase(k) for k in range(4)] == ["generator", "critic"] * 2
  for m in metrics:
    assert all(np.isfinite(v) for v in m.values()), m
  assert "generator/h_mean" in metrics[0] and "critic/gan_disc" in metrics[1]
  assert int(run.state["nonfinite"]["total"]) == 0
  teacher = jax.device_get(run.frozen["teacher"])
  gen = jax.device_get(run.state["params"]["generator"])
  diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(teacher),
                                                         jax.tree.leaves(gen)))
  assert diff > 0  # the generator moved away from its teacher initialisation


@pytest.mark.slow
def test_data_fsdp_mesh_step_equals_single_device(trained, tmp_path):
  ref = trained.run
  cfg = tiny_image_cfg()
  cfg.mesh.data, cfg.mesh.fsdp = 2, 4
  run = compose.Run(cfg, str(tmp_path), devices=jax.devices()[:8], restore=False)
  specs = {str(s.spec) for s in jax.tree.leaves(run.state_sh)}
  assert any("fsdp" in s for s in specs), specs  # something really is FSDP-sharded
  for k in range(4):
    run.step(k)
  _leaves_close(ref.state["params"], run.state["params"], 1e-5)
  _leaves_close(ref.state["extras"], run.state["extras"], 1e-5)


def test_train_resume_and_export(trained, tmp_path):
  # `trained` ran compose.train on one device; loading below restores onto the default mesh of
  # all 8 devices.
  out, workdir = trained.out, trained.workdir
  assert "teacher_nfe1" in out and np.isfinite(out["student"]["pixel_std"])
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 4
  # A longer config resumes at step 4, with the data pipeline where it stopped.
  cfg = tiny_image_cfg()
  cfg.train.steps = 6
  exp, state = compose.load_trained(cfg, str(workdir))
  assert int(state["step"]) == 4 and exp.data_state()["grain"]
  # The f-distill steps alternate, stay finite, log the ratio weights and the GAN loss, and move
  # the generator away from its teacher initialisation.
  from fdistill_jax.methods import registry
  method = registry.get(cfg.method.name)
  assert [loop._phase_of(k, method, cfg) for k in range(4)] == ["generator", "critic"] * 2  # pylint: disable=protected-access
  logged = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  steps_logged = [m for m in logged if "generator/h_mean" in m]
  assert [m["step"] for m in steps_logged] == [2, 4]
  assert all("critic/gan_disc" in m and all(np.isfinite(v) for v in m.values()
                                            if isinstance(v, float)) for m in steps_logged)
  assert int(state["nonfinite"]["total"]) == 0
  diff = max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(jax.device_get(exp.frozen["teacher"])),
      jax.tree.leaves(jax.device_get(state["params"]["generator"]))))
  assert diff > 0
  from safetensors.numpy import load_file

  from fdistill_jax import export
  from fdistill_jax.teachers.edm import load_edm
  export.export_generator(cfg, str(workdir), str(tmp_path / "ex"), "0.999")
  module, variables = load_edm(tmp_path / "ex" / "edm_precond.safetensors")  # EDM's state_dict
  _leaves_close(variables["params"], state["ema"]["0.999"], 0)
  flat = load_file(str(tmp_path / "ex" / "params.safetensors"))
  assert all(np.array_equal(flat[k], v) for k, v in export.flatten(state["ema"]["0.999"]).items())
  meta = json.loads((tmp_path / "ex" / "metadata.json").read_text())
  assert (meta["step"], meta["params"], meta["architecture"]["kind"]) == (4, "0.999", "EDMPrecond")
  assert meta["architecture"]["kwargs"]["model_channels"] == 8 and meta["sigma_init"] == 80.0
  # The state dict carries how the student samples beside its constructor kwargs.
  from safetensors import safe_open
  with safe_open(str(tmp_path / "ex" / "edm_precond.safetensors"), "np") as f:
    assert json.loads(f.metadata()["sampling"]) == meta["sampling"] == {
        "steps": 1, "sigmas": [80.0], "renoise": None, "guidance_input": None}
  out = modes.sample_checkpoint(cfg, str(workdir))
  saved = np.load(out["npz"])
  assert saved["samples"].shape == (16, 8, 8, 1) and len(os.listdir(out["pngs"])) == 16
