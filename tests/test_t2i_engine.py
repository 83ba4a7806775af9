"""The 'pixart' teacher kind end to end, on configs/pixart512_*.py with a tiny PixArt override
(8×8 pixels, one channel, one block, hidden 32) and a prompt cache written here:

* pixart512_js (f-distill JS, guidance 1.75, GAN on the teacher's block tokens) trains on a 2×4
  data×fsdp mesh of 8 fake CPU devices, checkpoints and evaluates (captioned grid, the teacher
  with and without guidance); resumed from its step-2 checkpoint on ONE device, steps 2–3 give
  the 8-device step-4 checkpoint to 1e-5; its export is a diffusers folder whose
  PixArtTransformer2DModel reproduces the one-step student to 1e-5 (relative, float32);
* pixart512_sid_lsg, pixart512_sim and pixart512_dmd2 build and trace both train steps
  (jax.eval_shape: compiling each costs ~20 s of CPU; their losses run in tests/test_methods_*
  and the digits text-to-image recipes); EDM training with condition dropout steps and samples
  (DPM-Solver++); memory_plan compiles a one-block tiny pixart512_js step on 2 devices;
* the data pairs images with training prompts of their class or their caption row; dropped
  conditions are the cached "" prompt; σ fields outside the adapter's range and a cache of
  another length than teacher.max_length fail clearly.

The teacher is random normal weights (diffusers zero-initialises the cross-attention output,
which would make the text irrelevant), written as a diffusers folder, so the loader runs too.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import compose, config_checks, defaults, testing
from fdistill_jax.convert import pixart as conv
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.engine import loop, sharding
from fdistill_jax.engine import steps as steps_lib
from fdistill_jax.experiments import t2i
from fdistill_jax.models import pixart

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P, L, D = 8, 6, 8
LABELS = [0, 1, 2, 3] * 2
HELDOUT = [False] * 6 + [True] * 2
TINY = dict(defaults.TINY_PIXART, sample_size=8, caption_channels=D, num_layers=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("t2i")
  rng = np.random.default_rng(0)
  mask = np.ones((P, L), np.uint8)
  mask[:, 4:] = 0
  null_mask = np.zeros((1, L), np.uint8)
  null_mask[0, 0] = 1
  pc.write_cache(root / "cache", rng.normal(size=(P, L, D)).astype(np.float32), mask,
                 [f"the digit {c}, phrasing {i}" for i, c in enumerate(LABELS)],
                 rng.normal(size=(1, L, D)).astype(np.float32), null_mask, labels=LABELS,
                 heldout=HELDOUT)
  module = pixart.from_diffusers_config(TINY)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32),
                        conv.abstract_params(module))
  conv.to_diffusers_folder(params, module, root / "teacher")
  return str(root / "cache"), str(root / "teacher")


def config(name, files):
  cfg = testing.shipped_config(name)
  # float32 compute for the 1e-5 comparisons; no remat (it only slows the CPU compile; the
  # option is tested in test_pixart.py).
  cfg.teacher.update(dict(checkpoint=files[1], prompt_cache=files[0], compute_dtype="float32",
                          remat=False, pixart_config=dict(TINY), max_length=L))
  cfg.dataset.resolution = 8
  cfg.disc.update(dict(feature_keys=("block0",), channels=16))
  cfg.method.critic_steps = 1
  cfg.train.update(dict(steps=4, batch_size=8, log_every=2, ckpt_every=2, eval_every=0,
                        async_checkpoints=False))
  cfg.eval.update(dict(num_samples=8, batch_size=0, teacher_nfes=(1,), nfe=1, grid_size=4))
  cfg.mesh.fsdp_min_size = 64
  config_checks.check(cfg, num_devices=8)
  return cfg


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("js")
  cfg = config("pixart512_js", files)
  cfg.mesh.data, cfg.mesh.fsdp = 2, 4
  return cfg, str(workdir), compose.train(cfg, str(workdir))


def _leaves_close(a, b, tol):
  fa, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(a))
  for (path, x), y in zip(fa, jax.tree.leaves(jax.device_get(b))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol,
                               err_msg=jax.tree_util.keystr(path))


def test_js_trains_sharded_and_evaluates(trained):
  cfg, workdir, out = trained
  assert np.isfinite(out["student"]["pixel_std"])
  # The teacher reads the text: its guided and unguided samples differ.
  assert out["teacher_nfe1"]["pixel_std"] != out["teacher_nfe1_unguided"]["pixel_std"]
  assert os.path.exists(os.path.join(workdir, "samples_0000004.png"))


@pytest.mark.slow
def test_resumed_on_one_device_equals_the_sharded_run(trained, tmp_path):
  cfg, workdir, _ = trained
  shutil.copytree(os.path.join(workdir, "checkpoints"), tmp_path / "checkpoints")
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  cfg = config("pixart512_js", (cfg.teacher.prompt_cache, cfg.teacher.checkpoint))
  run = compose.Run(cfg, str(tmp_path), devices=jax.devices()[:1])
  assert int(run.state["step"]) == 2
  assert [run.phase(k) for k in (2, 3)] == ["generator", "critic"]
  for k in (2, 3):
    m = jax.device_get(run.step(k))
    assert all(np.isfinite(v) for v in m.values()), m
  # The step-4 checkpoint restored onto the trained run's own 2×4 layout: its saves already
  # compiled the checksum programs of that layout (the default mesh would compile another set).
  cfg.mesh.data, cfg.mesh.fsdp = 2, 4  # The trained run's layout really is FSDP-sharded.
  _, ref = compose.load_trained(cfg, workdir)
  assert int(ref["step"]) == 4
  specs = {str(s.spec) for s in jax.tree.leaves(sharding.tree_shardings(
      jax.eval_shape(lambda: ref["params"]), sharding.make_mesh(cfg, jax.devices()[:8]), cfg))}
  assert any("fsdp" in s for s in specs), specs
  _leaves_close(run.state["params"], ref["params"], 1e-5)
  _leaves_close(run.state["extras"], ref["extras"], 1e-5)


def test_export_is_a_diffusers_pixart_that_reproduces_the_student(trained, tmp_path):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  from fdistill_jax import export
  cfg, workdir, _ = trained
  export.export_generator(cfg, workdir, str(tmp_path), "0.9999")
  meta = json.loads((tmp_path / "metadata.json").read_text())
  arch = meta["architecture"]
  # t* = t(σ_init) on PixArt-α's DDPM schedule (linear β 1e-4 → 0.02; SD's scaled_linear would
  # give 625 for σ 2.5, not 440), interpolated in log σ, from diffusers' own ᾱ_t.
  abar = diffusers.DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02
                                 ).alphas_cumprod.double().numpy()
  t_star = np.interp(np.log(cfg.diffusion.sigma_init), 0.5 * np.log((1 - abar) / abar),
                     np.arange(len(abar)))
  assert arch["kind"] == "PixArtTransformer2DModel" and abs(arch["timestep"] - t_star) < 1e-3
  model, info = diffusers.PixArtTransformer2DModel.from_pretrained(
      tmp_path / "diffusers" / "transformer", output_loading_info=True)
  assert all(not v for v in info.values()), info  # strict: nothing missing or unexpected
  from flax import traverse_util
  from safetensors.numpy import load_file
  params = traverse_util.unflatten_dict(load_file(str(tmp_path / "params.safetensors")), sep="/")
  exp, _ = compose.build(cfg, workdir, prepare=False)
  z = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
  cond = {k: np.array(v) for k, v in exp.nets.cond.from_index(jnp.arange(4)).items()}
  want = np.asarray(jax.jit(exp.nets.generate)(params, z, cond))
  # The pipeline's one step: ε̂ at t* on x_t = input_scale·z, x0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ.
  sigma = cfg.diffusion.sigma_init
  x_t = np.ascontiguousarray(arch["input_scale"] * np.asarray(z).transpose(0, 3, 1, 2))
  with torch.no_grad():
    out = model.eval()(torch.from_numpy(x_t), encoder_hidden_states=torch.from_numpy(
        np.asarray(cond["embeddings"])), timestep=torch.full((4,), arch["timestep"]),
        encoder_attention_mask=torch.from_numpy(np.asarray(cond["mask"]))).sample.numpy()
  got = (x_t * np.sqrt(1 + sigma ** 2) - sigma * out[:, :1]).transpose(0, 2, 3, 1)
  assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-5


def _tiny_vae_folder(path):
  """A diffusers AutoencoderKL folder (one latent channel, 2× down) with random weights."""
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  torch.manual_seed(0)
  vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, latent_channels=1,
                                down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2,
                                block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4)
  vae.save_pretrained(str(path))
  return str(path)


@pytest.mark.parametrize("name,renoise,vae", [("pixart512_js", None, False),
                                              ("pixart512_dmd2_4step", "stochastic", True),
                                              ("pixart512_dmd2_4step", "deterministic", False)])
def test_the_exported_pipeline_folder_samples_as_we_do(files, tmp_path, monkeypatch, name,
                                                       renoise, vae):
  """Issue 27 §3: PixArtAlphaPipeline.from_pretrained(export/diffusers) with the exported
  FewStepScheduler gives the latents of our sampler (nets.generate, what --mode=sample runs)
  for the one-step and the 4-step student, both re-noising rules: ≤ 1e-4 relative, float32."""
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  from diffusers.utils import dynamic_modules_utils
  from fdistill_jax import export
  monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
  cfg = config(name, files)
  if renoise:
    cfg.few_step.renoise = renoise
  if vae:
    cfg.teacher.vae = _tiny_vae_folder(tmp_path / "vae")
  k_steps = len(cfg.few_step.sigmas) or 1
  exp, _ = compose.build(cfg, str(tmp_path / "wd"), prepare=False)
  _, teacher = conv.load_diffusers_folder(files[1])
  rng = np.random.default_rng(1)  # A "student": the teacher's weights, moved.
  params = jax.tree.map(lambda p: p + 0.02 * rng.standard_normal(p.shape).astype(p.dtype),
                        jax.device_get(teacher))
  export.write_export(cfg, params, str(tmp_path / "ex"), step=7, which="raw")
  meta = json.loads((tmp_path / "ex" / "metadata.json").read_text())
  assert meta["sampling"]["steps"] == k_steps and meta["architecture"]["pipeline"] == "diffusers"
  folder = tmp_path / "ex" / "diffusers"
  index = json.loads((folder / "model_index.json").read_text())
  assert index["scheduler"] == [export.SCHEDULER_MODULE, "FewStepScheduler"]
  assert index["vae"] == (["diffusers", "AutoencoderKL"] if vae else [None, None])
  # The one line (a pixel-space student has no VAE to ship: vae=None says so).
  pipe = diffusers.PixArtAlphaPipeline.from_pretrained(
      str(folder), trust_remote_code=True, **({} if vae else {"vae": None}))
  assert type(pipe.scheduler).__name__ == "FewStepScheduler" and pipe.scheduler.order == 1
  b, s = 3, TINY["sample_size"]
  z = jax.random.normal(jax.random.key(5), (b, s, s, 1))
  noise_key = jax.random.key(6)
  cond = {k: np.array(v) for k, v in exp.nets.cond.from_index(jnp.arange(b)).items()}
  want = np.asarray(jax.jit(exp.nets.generate)(params, z, cond, noise_key=noise_key))
  nchw = lambda a: torch.from_numpy(np.array(np.asarray(a).transpose(0, 3, 1, 2)))  # A copy.
  if k_steps > 1 and renoise == "stochastic":  # Replays our chain's fresh noise.
    from fdistill_jax.diffusion import few_step
    pipe.scheduler.set_renoise_noise(
        [nchw(n) for n in few_step.renoise_noise(noise_key, k_steps, z.shape)])
  got = pipe(prompt_embeds=torch.from_numpy(cond["embeddings"]),
             prompt_attention_mask=torch.from_numpy(cond["mask"]), latents=nchw(z),
             num_inference_steps=k_steps, guidance_scale=1.0, use_resolution_binning=False,
             height=s * pipe.vae_scale_factor, width=s * pipe.vae_scale_factor,
             output_type="latent").images.numpy().transpose(0, 2, 3, 1)
  err = np.linalg.norm(got - want) / np.linalg.norm(want)
  assert err <= 1e-4, err  # Measured 5e-7 to 7e-7.
  # Any other step count is refused by name rather than sampled at the wrong σ's.
  with pytest.raises(ValueError, match=f"num_inference_steps={k_steps}"):
    pipe(prompt_embeds=torch.from_numpy(cond["embeddings"]),
         prompt_attention_mask=torch.from_numpy(cond["mask"]), num_inference_steps=20,
         guidance_scale=1.0, use_resolution_binning=False, output_type="latent")


def build_and_trace(cfg):
  """Builds cfg's experiment and traces both train steps (jax.eval_shape: no compile); each
  must keep the state's structure and report metrics. Returns the Experiment."""
  exp, method, txs, init, key = loop._build(cfg, lambda: compose.build(cfg, "/tmp/unused"))  # pylint: disable=protected-access
  state = jax.eval_shape(init, key)
  for phase in ("generator", "critic"):
    new, metrics = jax.eval_shape(steps_lib.make_step(method, exp.nets, txs, cfg, phase), state,
                                  exp.frozen, exp.batch_spec())
    assert jax.tree.structure(new) == jax.tree.structure(state) and metrics
  return exp


@pytest.mark.parametrize("name", ["pixart512_sid_lsg", "pixart512_sim", "pixart512_dmd2"])
def test_sid_lsg_sim_dmd2_build_and_trace(files, name):
  cfg = config(name, files)
  if name != "pixart512_dmd2":
    assert cfg.dataset.name == "prompts"  # data-free
  build_and_trace(cfg)


@pytest.mark.slow
def test_edm_training_with_condition_dropout(files, tmp_path):
  cfg = config("pixart512_js", files)
  cfg.method.update(dict(name="edm_training", cond_drop=0.2))
  cfg.disc.enabled = False
  cfg.dataset.update(dict(name="arrays", path=str(tmp_path / "d.npz"), captions="class"))
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8),
           labels=np.arange(16) % 4)
  cfg.eval.update(dict(sampler="dpm_solver_pp_2m", teacher_nfes=()))
  config_checks.check(cfg, num_devices=8)
  run = compose.Run(cfg, str(tmp_path), devices=jax.devices()[:1], restore=False)
  before = jax.device_get(run.state["params"]["generator"])
  assert np.isfinite(float(jax.device_get(run.step(0))["generator/edm_loss"]))
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before,
                       jax.device_get(run.state["params"]["generator"]))
  assert max(jax.tree.leaves(moved)) > 0
  x = run.exp.sample(run.state["params"]["generator"], jax.random.key(0))
  assert x.shape == (8, 8, 8, 1) and np.isfinite(x).all()


def test_condition_dropout_uses_the_cached_null_prompt(files):
  exp, _ = compose.build(config("pixart512_sid_lsg", files), "/tmp/unused", prepare=False)
  cond = exp.batch(0)["cond"]
  dropped, mask = exp.nets.cond.drop(jax.random.key(0), jax.tree.map(jnp.asarray, cond), 0.5)
  null = pc.load_prompt_cache(files[0]).null_condition()
  assert 0 < int(mask.sum()) < 8
  for i in range(8):
    want = null["embeddings"][0] if mask[i] else cond["embeddings"][i]
    np.testing.assert_array_equal(np.asarray(dropped["embeddings"][i]), want)


def _rows(cache, emb):
  return [int(np.argmin(np.abs(cache.embeddings - e).sum((1, 2)))) for e in emb]


def test_data_pairs_images_with_prompts(files, tmp_path):
  cache = pc.load_prompt_cache(files[0])
  table, counts = t2i.prompts_by_class(cache, 4)
  assert counts.tolist() == [2, 2, 1, 1]  # rows 6, 7 (classes 2, 3) are held out
  labels = np.arange(32) % 4  # Each image's pixels carry its label (40·label).
  images = np.broadcast_to((40 * labels).astype(np.uint8)[:, None, None, None], (32, 8, 8, 1))
  np.savez(tmp_path / "d.npz", images=images, labels=labels)
  label_of = lambda x: np.rint((np.asarray(x)[:, 0, 0, 0] + 1) * 127.5 / 40).astype(int)
  cfg = config("pixart512_js", files)
  cfg.dataset.update(dict(name="arrays", path=str(tmp_path / "d.npz"), captions="class"))
  exp, _ = compose.build(cfg, str(tmp_path), prepare=False)
  seen = set()
  for step in range(4):
    b = exp.batch(step)
    rows = _rows(cache, b["cond"]["embeddings"])
    assert [LABELS[r] for r in rows] == label_of(b["x"]).tolist()  # a prompt of its class
    assert not any(HELDOUT[r] for r in rows)
    seen |= set(rows)
  assert seen == {0, 1, 2, 3, 4, 5}  # both phrasings of classes 0, 1 get drawn
  cfg.dataset.captions = "row"  # The label is the caption's row.
  exp, _ = compose.build(cfg, str(tmp_path), prepare=False)
  b = exp.batch(0)
  assert _rows(cache, b["cond"]["embeddings"]) == label_of(b["x"]).tolist()
  cfg.dataset.name = "prompts"  # Data-free: training prompts, deterministic in the step.
  exp, _ = compose.build(cfg, str(tmp_path), prepare=False)
  b0, b1 = exp.batch(0), exp.batch(1)
  assert b0["x"].shape == (8, 8, 8, 1) and not b0["x"].any()
  np.testing.assert_array_equal(b0["cond"]["embeddings"], exp.batch(0)["cond"]["embeddings"])
  assert not np.array_equal(b0["cond"]["embeddings"], b1["cond"]["embeddings"])
  assert not any(HELDOUT[r] for r in _rows(cache, b0["cond"]["embeddings"]))


def test_bad_fields_fail_clearly(files):
  cfg = config("pixart512_js", files)
  cfg.diffusion.sigma_min = 0.002
  with pytest.raises(config_checks.ConfigError, match=r"sigma_min.*0\.0100"):
    config_checks.check(cfg, num_devices=8)
  cfg = config("pixart512_js", files)
  cfg.disc.feature_keys = ("enc8",)
  with pytest.raises(config_checks.ConfigError, match="block<i>"):
    config_checks.check(cfg, num_devices=8)
  cfg = config("pixart512_js", files)
  cfg.dataset.update(dict(name="digits", captions="class"))  # 10 classes, the cache labels 4.
  with pytest.raises(ValueError, match=r"no training prompt for classes \[4"):
    compose.build(cfg, "/tmp/unused", prepare=False)
  cfg = config("pixart512_js", files)
  cfg.teacher.max_length = 120  # PixArt's length; the cache was encoded with L = 6.
  with pytest.raises(ValueError, match=r"max_length=6.*re-encode.*--max_length=120"):
    compose.build(cfg, "/tmp/unused", prepare=False)


@pytest.mark.slow
def test_memory_plan_compiles_pixart512_js_tiny_on_two_devices():
  from fdistill_jax.benchmarks import engine_speed, memory_plan
  cfg = engine_speed.synthetic_config(os.path.join(REPO, "configs", "pixart512_js.py"), {}, 4)
  memory_plan.shrink_pixart(cfg)
  # CPU: the cheapest compile; one of shrink_pixart's two blocks (what is measured does not depend
  # on the depth, and the block count sets the step's size to trace and compile).
  cfg.teacher.update(dict(remat=False, compute_dtype="float32"))
  cfg.teacher.pixart_config["num_layers"] = 1
  cfg.disc.feature_keys = ("block0",)
  cfg.mesh.fsdp_min_size = 0  # The tiny net's leaves are all under the default threshold.
  rec = memory_plan.measure(cfg, 2, 2, phases=("generator",))  # Compile only, no execution.
  assert rec["mesh"] == {"data": 1, "fsdp": 2}
  p = rec["phases"]["generator"]
  assert 0 < p["argument"] < 0.75 * rec["state_bytes"] and p["temp"] > 0, (p, rec)


def test_prompt_accuracy_and_captioned_grid(tmp_path):
  from PIL import Image

  from fdistill_jax.evaluation import grids
  from fdistill_jax.experiments import t2i_eval
  pred, classes = np.array([1, 2, 3, 3, 0]), np.array([1, 2, 0, 3, -1])
  held = np.array([False, False, True, True, False])
  assert t2i_eval.prompt_accuracy(pred, classes, held) == {
      "prompt_accuracy": 0.75, "prompt_accuracy_train": 1.0, "prompt_accuracy_heldout": 0.5}
  x = np.linspace(-1, 1, 5 * 8 * 8).reshape(5, 8, 8, 1)
  path = grids.save_captioned_grid(x, ["a very long prompt " * 5] + ["seven"] * 4,
                                   str(tmp_path / "g.png"), ncol=3, upscale=4, title="t")
  w, h = Image.open(path).size
  assert (w, h) == (3 * 124 + 4, 16 + 2 * (32 + 37 + 4) + 4)
