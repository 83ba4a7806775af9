"""The rectified-flow teacher family ('flow_dit', issue 26 §2) through the text-to-image problem:
the registry hands the problem its adapter, wrapper, solvers and sampler, and nothing else is
particular to it. On configs/digits_t2i_flow_*.py with a tiny transformer (8×8 pixels, one
block, hidden 32, velocity head) and a prompt cache written here:

* each config builds and traces both train steps (jax.eval_shape), and its teacher net is
  teachers/flow_dit's D on the same weights (1e-6);
* the exported student folder is a PixArtAlphaPipeline whose FewStepScheduler (prediction
  'flow') reproduces our sampler for K = 1 and K = 4 (both re-noising rules), ≤ 1e-4 relative;
* a teacher trained here (edm_training, velocity loss) exports as transformer/ + diffusers'
  FlowMatchEulerDiscreteScheduler, which load_flow_teacher and diffusers read back;
* the teacher's Euler reference sampler is what the evaluation runs;
* a learned-σ transformer, an unknown schedule key and a DDPM solver name are refused by name.
Parity of the teacher, its samplers and export with diffusers: tests/test_flow_dit.py.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import compose, config_checks, defaults, teachers, testing
from fdistill_jax.convert import pixart as conv
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.models import pixart
from fdistill_jax.teachers import flow_dit
from fdistill_jax.validation import ConfigError
from tests.test_t2i_engine import build_and_trace

P, L, D = 12, 6, 8
LABELS = list(range(10)) + [3, 7]  # Every digit class has a training prompt; two held out.
TINY = dict(defaults.TINY_PIXART, sample_size=8, caption_channels=D, num_layers=1,
            out_channels=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("flow")
  rng = np.random.default_rng(0)
  mask = np.ones((P, L), np.uint8)
  mask[:, 4:] = 0
  null_mask = np.zeros((1, L), np.uint8)
  null_mask[0, 0] = 1
  pc.write_cache(root / "cache", rng.normal(size=(P, L, D)).astype(np.float32), mask,
                 [f"the digit {c}, phrasing {i}" for i, c in enumerate(LABELS)],
                 rng.normal(size=(1, L, D)).astype(np.float32), null_mask, labels=LABELS,
                 heldout=[False] * 10 + [True] * 2)
  module = pixart.from_diffusers_config(TINY)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32),
                        conv.abstract_params(module))
  flow_dit.to_diffusers_folder(params, root / "teacher", module=module)
  return str(root / "cache"), str(root / "teacher"), module, params


shipped = testing.shipped_config


def config(name, files, **over):
  cfg = shipped(name)
  cfg.teacher.update(dict(checkpoint=files[1], prompt_cache=files[0], pixart_config=dict(TINY),
                          max_length=L))
  cfg.dataset.resolution = 8
  cfg.disc.update(dict(feature_keys=("block0",), channels=16))
  cfg.train.update(dict(steps=2, batch_size=8, log_every=1, ckpt_every=2, eval_every=0,
                        async_checkpoints=False))
  cfg.eval.update(dict(num_samples=8, batch_size=0, teacher_nfes=(2,), nfe=2, grid_size=4,
                       per_prompt_samples=0))
  cfg.update(over)
  config_checks.check(cfg, num_devices=1)
  return cfg


FLOW_CONFIGS = ["digits_t2i_flow_js", "digits_t2i_flow_dmd2", "digits_t2i_flow_sid_lsg"]


@pytest.mark.parametrize("name", FLOW_CONFIGS)
def test_flow_configs_build_trace_and_hold_the_flow_teacher(files, name):
  cfg = config(name, files)
  assert teachers.of(cfg).kind == "flow_dit" and cfg.method.dsm_weighting == "velocity"
  # Guidance 1.3 in the loss (SiD-LSG: every κ), scored against the teacher's sampler at the
  # PixArt students' 1.5 (defaults.DIGITS_T2I_FLOW_GUIDANCE); twice their 600 iterations.
  w, ship = defaults.DIGITS_T2I_FLOW_GUIDANCE, shipped(name)
  assert w == 1.3 and ship.eval.guidance_scale == defaults.DIGITS_T2I_GUIDANCE == 1.5
  m = ship.method
  trained = ([m.kappa_real, m.kappa_fake, m.kappa_train_fake] if "kappa_real" in m
             else [m.guidance_scale])
  assert trained == [w] * len(trained) and ship.train.steps == 1200
  exp = build_and_trace(cfg)
  # The problem's teacher net is the family's D on the teacher's weights.
  _, _, module, params = files
  ref = flow_dit.make_flow_teacher(module, params)
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal((4, 8, 8, 1)), jnp.float32) * 3.0
  sigma = jnp.asarray([0.05, 1.0, 10.0, 80.0], jnp.float32)
  cond = exp.nets.cond.from_index(jnp.arange(4))
  got = jax.jit(exp.nets.teacher)(exp.frozen, x, sigma, cond)
  want = jax.jit(ref.__call__)(x, sigma, cond)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
  # And not the ε family's reading of the same weights (the check can fail).
  assert exp.nets.time.time_scale == 1000.0 and not hasattr(exp.nets.time, "alphas_cumprod")


def test_the_evaluation_runs_the_flow_teachers_euler_sampler(files, tmp_path):
  cfg = config("digits_t2i_flow_js", files)
  exp, _ = compose.build(cfg, str(tmp_path / "wd"), prepare=False)
  _, _, module, params = files
  null = jax.tree.map(jnp.asarray, exp.nets.cond.null(1))
  teacher = flow_dit.make_flow_teacher(module, params, null_cond=null)
  cond = exp.nets.cond.from_index(jnp.arange(2))
  z = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
  want = flow_dit.sample(teacher, z, cond, num_steps=2, guidance_scale=1.5, solver="euler")
  got = exp.sample_cond(params, z, cond, teacher=True)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def _pipeline_latents(folder, cond, z, k_steps, noise=None):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  pipe = diffusers.PixArtAlphaPipeline.from_pretrained(str(folder), trust_remote_code=True,
                                                       vae=None)
  nchw = lambda a: torch.from_numpy(np.array(np.asarray(a).transpose(0, 3, 1, 2)))
  if noise is not None:
    pipe.scheduler.set_renoise_noise([nchw(n) for n in noise])
  s = z.shape[1]
  return pipe(prompt_embeds=torch.from_numpy(cond["embeddings"]),
              prompt_attention_mask=torch.from_numpy(cond["mask"]), latents=nchw(z),
              num_inference_steps=k_steps, guidance_scale=1.0, use_resolution_binning=False,
              height=s * pipe.vae_scale_factor, width=s * pipe.vae_scale_factor,
              output_type="latent").images.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("k_steps,renoise", [(1, None), (4, "stochastic"), (4, "deterministic")])
def test_the_exported_flow_student_samples_as_we_do(files, tmp_path, monkeypatch, k_steps,
                                                    renoise):
  """PixArtAlphaPipeline.from_pretrained(export/diffusers) with FewStepScheduler('flow') gives
  nets.generate's latents (what --mode=sample runs): ≤ 1e-4 relative, float32."""
  pytest.importorskip("diffusers")
  from diffusers.utils import dynamic_modules_utils
  from fdistill_jax import export
  from fdistill_jax.diffusion import few_step
  monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
  cfg = config("digits_t2i_flow_dmd2", files)
  if k_steps > 1:
    cfg.few_step.update(dict(sigmas=(80.0, 10.0, 2.0, 0.5), renoise=renoise))
  exp, _ = compose.build(cfg, str(tmp_path / "wd"), prepare=False)
  rng = np.random.default_rng(1)  # A "student": the teacher's weights, moved.
  params = jax.tree.map(lambda p: p + 0.02 * rng.standard_normal(p.shape).astype(p.dtype),
                        jax.device_get(files[3]))
  export.write_export(cfg, params, str(tmp_path / "ex"), step=3, which="raw")
  folder = tmp_path / "ex" / "diffusers"
  sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
  assert sched["prediction_type"] == "flow" and len(sched["timesteps"]) == k_steps
  meta = json.loads((tmp_path / "ex" / "metadata.json").read_text())
  assert meta["architecture"]["prediction"] == "flow"
  np.testing.assert_allclose(meta["architecture"]["input_scale"], 80.0 / 81.0, rtol=1e-12)
  z = jax.random.normal(jax.random.key(5), (3, 8, 8, 1))
  noise_key = jax.random.key(6)
  cond = {k: np.array(v) for k, v in exp.nets.cond.from_index(jnp.arange(3)).items()}
  want = np.asarray(jax.jit(exp.nets.generate)(params, z, cond, noise_key=noise_key))
  noise = (few_step.renoise_noise(noise_key, k_steps, z.shape)
           if renoise == "stochastic" else None)
  got = _pipeline_latents(folder, cond, z, k_steps, noise)
  err = np.linalg.norm(got - want) / np.linalg.norm(want)
  assert err <= 1e-4, err


def test_a_trained_flow_teacher_exports_with_its_flowmatch_scheduler(files, tmp_path):
  diffusers = pytest.importorskip("diffusers")
  from fdistill_jax import export
  cfg = config("teachers/digits_t2i_flow", files)
  assert cfg.method.name == "edm_training" and cfg.method.loss_weighting == "velocity"
  cfg.teacher.schedule.shift = 3.0
  _, _, module, params = files
  export.write_export(cfg, params, str(tmp_path / "ex"), step=1, which="raw")
  folder = tmp_path / "ex" / "diffusers"
  assert not (folder / "model_index.json").exists()
  sched = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder),
                                                                    subfolder="scheduler")
  assert sched.config.shift == 3.0 and sched.config.num_train_timesteps == 1000
  back = flow_dit.load_flow_teacher(str(folder))
  assert back.shift == 3.0
  for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flow_fields_are_checked_by_name(files):
  cfg = config("digits_t2i_flow_js", files)  # Valid as it is (config() checks it).
  cfg.teacher.pixart_config.out_channels = 2
  with pytest.raises(ConfigError, match=r"teacher.pixart_config.out_channels=2.*'pixart'"):
    config_checks.check(cfg, num_devices=1)
  cfg = config("digits_t2i_flow_js", files)
  cfg.teacher.schedule.beta_end = 0.02
  with pytest.raises(ConfigError, match=r"teacher.schedule.*beta_end"):
    config_checks.check(cfg, num_devices=1)
  cfg = config("digits_t2i_flow_js", files)
  cfg.eval.teacher_solver = "dpm_solver_pp_2m"
  with pytest.raises(ConfigError, match=r"eval.teacher_solver.*'euler', 'heun'"):
    config_checks.check(cfg, num_devices=1)
  cfg = config("digits_t2i_flow_js", files)
  cfg.diffusion.sigma_init = cfg.diffusion.sigma_max = 5000.0
  with pytest.raises(ConfigError, match=r"rectified-flow DiT teacher"):
    config_checks.check(cfg, num_devices=1)
