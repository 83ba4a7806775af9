"""Rectified-flow DiT teacher (teachers/flow_dit.py) and its samplers (diffusion/flow_samplers.py)
against diffusers 0.42.1, on a tiny random PixArtTransformer2DModel with out_channels =
in_channels (a velocity model).

(a) The time grid equals FlowMatchEulerDiscreteScheduler.set_timesteps bit for bit (shift 1 and
    3, several step counts, explicit sigmas) and the Heun scheduler's timesteps.
(b) D(x; σ, c) equals x̂0 = x_s − s·v̂ computed by hand from the torch network's v̂ at
    s = σ/(1 + σ), x_s = x/(1 + σ), t = 1000·s, from σ_min to σ_max.
(c) Euler and Heun equal the FlowMatch Euler / Heun schedulers' step loops driving the torch
    transformer (CFG on [∅; c]), with and without guidance.
(d) The exported folder loads in diffusers (transformer + scheduler) and its scheduler loop
    reproduces `sample`; `load_flow_teacher` reads it back. PixArtAlphaPipeline cannot run it
    (pinned below).
(e) Bad input gets clear errors.
"""
import json

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fdistill_jax.diffusion import flow_samplers as fs
from fdistill_jax.teachers import flow_dit as fd

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from fdistill_jax.convert import pixart as conv  # noqa: E402
from fdistill_jax.models import pixart  # noqa: E402

torch.set_num_threads(1)
CFG = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
           num_layers=2, cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=12)
B, H, W, L, DC = 2, 4, 6, 5, 12


def _randomise(model, seed):
  """Redraw every weight (as tests/test_pixart_teacher.py): N(0, 0.3²) matrices, N(0, 0.1²)
  vectors, so that v̂ depends on every part of the network."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.1))
  return model


@pytest.fixture(scope="module")
def setup():
  model = _randomise(diffusers.PixArtTransformer2DModel(**CFG).eval(), 0)
  module = pixart.from_diffusers_config(dict(model.config))
  params = conv.state_dict_to_params({k: v.numpy() for k, v in model.state_dict().items()},
                                     module)
  rng = np.random.default_rng(0)
  mask = np.ones((B, L), np.int32)
  mask[0, 3:] = 0
  cond = {"embeddings": rng.standard_normal((B, L, DC)).astype(np.float32), "mask": mask}
  null_mask = np.zeros((1, L), np.int32)
  null_mask[0, 0] = 1
  null = {"embeddings": rng.standard_normal((1, L, DC)).astype(np.float32), "mask": null_mask}
  teacher = fd.make_flow_teacher(module, params, null_cond=null)
  return model, teacher, cond, null


def _torch_v(model, x_nhwc, t, cond):
  """v̂ of the torch network (NHWC numpy in/out, float64 out), timesteps t [B] (float32)."""
  with torch.no_grad():
    out = model(torch.from_numpy(np.array(x_nhwc.transpose(0, 3, 1, 2), np.float32)),
                encoder_hidden_states=torch.from_numpy(np.array(cond["embeddings"], np.float32)),
                timestep=torch.from_numpy(np.array(t, np.float32)),
                encoder_attention_mask=torch.from_numpy(cond["mask"].astype(np.float32))).sample
  return out.numpy().transpose(0, 2, 3, 1).astype(np.float64)


# ------------------------------------------------------------------------------- (a) grids


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_time_grid_matches_diffusers(shift):
  for n in (1, 2, 4, 20, 28):
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(n)
    ts, s = fs.flow_timesteps(n, shift=shift)
    np.testing.assert_array_equal(ts, sched.timesteps.numpy())
    np.testing.assert_array_equal(s, sched.sigmas.numpy())
    assert s[0] == 1.0 and s[-1] == 0.0 and ts.dtype == s.dtype == np.float32
    heun = diffusers.FlowMatchHeunDiscreteScheduler(shift=shift)
    heun.set_timesteps(n)
    np.testing.assert_array_equal(fs.heun_timesteps(n, shift=shift), heun.timesteps.numpy())
  given = [1.0, 0.75, 0.4, 0.1]
  sched.set_timesteps(sigmas=given)
  ts, s = fs.flow_timesteps(sigmas=given, shift=shift)
  np.testing.assert_array_equal(ts, sched.timesteps.numpy())
  np.testing.assert_array_equal(s, sched.sigmas.numpy())
  # The check can fail: another shift, or the low end shifted only once (diffusers shifts the
  # constructor's grid, then the linspace between its ends again), gives another grid.
  other = fs.flow_timesteps(20, shift=shift + 0.5)[1]
  assert np.abs(other - fs.flow_timesteps(20, shift=shift)[1]).max() > 1e-2
  once = fs.time_shift(np.linspace(1.0, 1e-3, 20), shift).astype(np.float32)
  sched.set_timesteps(20)
  assert (shift == 1.0) == np.array_equal(once, sched.sigmas.numpy()[:-1])


# --------------------------------------------------------------------------- (b) the adapter


def test_denoiser_equals_hand_x0(setup):
  model, teacher, cond, _ = setup
  assert teacher.sigma_min == pytest.approx(1 / 999) and teacher.sigma_max == pytest.approx(999)
  run = jax.jit(lambda x, s, c: teacher(x, s, c))
  sigmas = np.array([[teacher.sigma_min, 0.3], [2.0, 80.0], [157.4, teacher.sigma_max]])
  for k, sig in enumerate(sigmas):
    sig = sig.astype(np.float32).astype(np.float64)  # the σ the teacher is given
    rng = np.random.default_rng(k)
    x0 = rng.standard_normal((B, H, W, 4))
    x = (x0 + sig[:, None, None, None] * rng.standard_normal((B, H, W, 4))).astype(np.float32)
    s = sig / (1 + sig)
    x_s = x.astype(np.float64) / (1 + sig)[:, None, None, None]
    # The network is compared at the adapter's float32 t (within 1 ulp of 1000·s).
    t_ad = np.asarray(teacher.adapter.time.sigma_to_t(jnp.asarray(sig, jnp.float32)))
    assert np.all(np.abs(t_ad - 1000 * s) <= 1.5 * np.spacing(t_ad)), (t_ad, 1000 * s)
    v = _torch_v(model, x_s, t_ad, cond)
    ref = x_s - s[:, None, None, None] * v
    # The floor: the torch network's own change when t moves by one float32 ulp. XLA's and
    # torch's exp differ by 1 ulp on entries of the sinusoid frequency table (f up to 0.5), so
    # the phases t·f differ by up to ~3e-5 rad at t ≈ 1000: the same size of perturbation.
    v_ulp = _torch_v(model, x_s, np.nextafter(t_ad.astype(np.float32), np.float32(2000)), cond)
    d = np.asarray(run(jnp.asarray(x), jnp.asarray(sig, jnp.float32), cond))
    for i in range(B):
      # D = x_s − s v̂: the network's float32 rounding enters with weight s ≤ 1, that of x_s
      # (≈ x/(1+σ), |x_s| ≲ 5) with weight 1: the scale is max|x_s| + s·max|v̂|.
      scale = np.abs(x_s[i]).max() + s[i] * np.abs(v[i]).max()
      err = np.abs(d[i] - ref[i]).max() / scale
      floor = s[i] * np.abs(v_ulp[i] - v[i]).max() / scale
      print(f"σ={sig[i]:.4g} (t={t_ad[i]:.2f}): max|ΔD|/scale = {err:.2e} (1-ulp-t floor "
            f"{floor:.2e})")
      assert err < 1e-5 + 3 * floor, (sig[i], err, floor)
  # The check can fail: a wrong time scale (t = s instead of 1000 s) or σ changes D.
  wrong = fd.make_flow_teacher(teacher.module, teacher.params, num_train_timesteps=1)
  d_wrong = np.asarray(jax.jit(lambda x, s, c: wrong(x, s, c))(
      jnp.asarray(x), jnp.asarray(sig, jnp.float32), cond))
  assert np.abs(d_wrong - ref).max() > 1e-2
  d_sig = np.asarray(run(jnp.asarray(x), jnp.asarray(sig * 1.05, jnp.float32), cond))
  assert np.abs(d_sig - ref).max() > 1e-2


# ----------------------------------------------------------------------------- (c) samplers


def _torch_loop(model, sched, num_steps, lat_nchw, cond, null, w):
  """The flow pipelines' loop (SD3's, and PixArt's less init_noise_sigma / scale_model_input):
  CFG on [∅; c], the timestep (a float T·s) straight to the transformer, scheduler.step.
  Returns x̂0 NHWC float64 and the number of network calls."""
  sched.set_timesteps(num_steps)
  lat = torch.from_numpy(lat_nchw)
  c = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in cond.items()}
  n = {k: torch.from_numpy(np.broadcast_to(np.asarray(v, np.float32), cond[k].shape).copy())
       for k, v in null.items()}
  guided = w != 1.0
  emb = torch.cat([n["embeddings"], c["embeddings"]]) if guided else c["embeddings"]
  mask = torch.cat([n["mask"], c["mask"]]) if guided else c["mask"]
  calls = 0
  with torch.no_grad():
    for t in sched.timesteps:
      inp = torch.cat([lat, lat]) if guided else lat
      v = model(inp, encoder_hidden_states=emb, encoder_attention_mask=mask,
                timestep=t.expand(inp.shape[0])).sample
      calls += 1
      if guided:
        v_u, v_c = v.chunk(2)
        v = v_u + w * (v_c - v_u)
      lat = sched.step(v, t, lat).prev_sample
  return lat.numpy().transpose(0, 2, 3, 1).astype(np.float64), calls


# (solver, steps, guidance w, shift). Measured max|Δ|/max|ref|: see the printed values.
SAMPLER_CASES = {"euler_6_cfg_shift3": ("euler", 6, 4.5, 3.0),
                 "euler_5_noguide": ("euler", 5, 1.0, 1.0),
                 "heun_4_cfg_shift3": ("heun", 4, 4.5, 3.0),
                 "heun_3_noguide": ("heun", 3, 1.0, 1.0)}
_SCHED = {"euler": diffusers.FlowMatchEulerDiscreteScheduler,
          "heun": diffusers.FlowMatchHeunDiscreteScheduler}


@pytest.mark.parametrize("name", sorted(SAMPLER_CASES))
def test_sampler_equals_diffusers_scheduler_loop(setup, name):
  model, teacher, cond, null = setup
  solver, n, w, shift = SAMPLER_CASES[name]
  lat = np.random.default_rng(3).standard_normal((B, 4, H, W)).astype(np.float32)
  ref, calls = _torch_loop(model, _SCHED[solver](shift=shift), n, lat, cond, null, w)
  assert calls == (n if solver == "euler" else 2 * n - 1)
  run = jax.jit(lambda l, c, sh: fd.sample(teacher, l, c, num_steps=n, guidance_scale=w,
                                           solver=solver, shift=sh), static_argnums=2)
  lat_j = jnp.asarray(lat.transpose(0, 2, 3, 1))
  z = np.asarray(run(lat_j, cond, shift))
  err = np.abs(z - ref).max() / np.abs(ref).max()
  print(f"{name}: max|Δ|/max|ref| = {err:.2e}")
  # One network call agrees to ~1e-6 of its scale at t < 700 but only to ~2e-5 near t = 1000
  # (the sinusoid table, test above); CFG multiplies the difference of two calls by w = 4.5.
  # Measured 5e-6 (Euler) to 3.4e-5 (Heun, w = 4.5); the samplers' own maths agree to ~1e-7
  # (test_sampler_maths_exact, which drives both loops with the torch network).
  assert err < 1e-4, err
  # The check can fail: another shift gives other latents, and the sample moved off the noise.
  z_other = np.asarray(run(lat_j, cond, shift + 1.0))
  assert np.abs(z_other - ref).max() / np.abs(ref).max() > 1e-3
  assert np.abs(ref - lat.transpose(0, 2, 3, 1)).max() > 0.5


def test_heun_is_second_order():
  """On v(x, t) = x (exact flow: x_s = x_1·exp(s − 1)), Heun's error shrinks ~4x per halving of
  the step, Euler's ~2x: the correction uses the right slopes at the right times."""
  x1 = jnp.ones((1, 2, 2, 1), jnp.float32)
  exact = float(np.exp(-1.0))
  errs = {}
  for solver in ("euler", "heun"):
    fn = getattr(fs, solver)
    errs[solver] = [abs(float(fn(lambda x, t, c: x, x1, None, n)[0, 0, 0, 0]) - exact)
                    for n in (9, 17)]
  assert 1.7 < errs["euler"][0] / errs["euler"][1] < 2.3, errs
  assert 3.3 < errs["heun"][0] / errs["heun"][1] < 4.7, errs


@pytest.mark.parametrize("solver,w,shift,n", [("euler", 4.5, 3.0, 5), ("heun", 4.5, 3.0, 5),
                                               ("euler", 1.0, 1.0, 1), ("heun", 1.0, 1.0, 2),
                                               ("euler", 4.5, 1.0, 2)])
def test_sampler_maths_exact(setup, solver, w, shift, n):
  """Our samplers driving the *torch* network (jax.pure_callback) against the scheduler loop:
  the same network on both sides, so only the samplers' float32 maths is compared."""
  model, _, cond, null = setup
  lat = np.random.default_rng(4).standard_normal((B, 4, H, W)).astype(np.float32)
  ref, _ = _torch_loop(model, _SCHED[solver](shift=shift), n, lat, cond, null, w)

  def host_v(x, t, emb, mask):
    return _torch_v(model, np.asarray(x), np.asarray(t), {"embeddings": np.asarray(emb),
                                                           "mask": np.asarray(mask)}
                    ).astype(np.float32)

  def v_fn(x, t, c):
    return jax.pure_callback(host_v, jax.ShapeDtypeStruct(x.shape, jnp.float32), x, t,
                             c["embeddings"], c["mask"])

  sampler = getattr(fs, solver)
  z = np.asarray(sampler(v_fn, jnp.asarray(lat.transpose(0, 2, 3, 1)), cond, n,
                         guidance_scale=w, null_cond=null, shift=shift))
  err = np.abs(z - ref).max() / np.abs(ref).max()
  print(f"{solver} maths, torch network on both sides: max|Δ|/max|ref| = {err:.2e}")
  # Float32 rounding, amplified by the random network along the chain: bit-equal after one
  # Euler step, ~1e-7 after two, ~2e-6 after five steps with w = 4.5 (the torch loop in float32
  # differs from the same loop in float64 by 2.5e-6–3e-6 there).
  assert err < (5e-7 if n <= 2 else 5e-6), err


# ------------------------------------------------------------------------------- (d) export


def test_export_loads_in_diffusers_and_reproduces_sample(setup, tmp_path):
  model, teacher, cond, null = setup
  t3 = fd.make_flow_teacher(teacher.module, teacher.params, null_cond=null, shift=3.0)
  out = fd.to_diffusers_folder(t3, tmp_path / "flow")
  assert sorted(p.name for p in (tmp_path / "flow").iterdir()) == ["scheduler", "transformer"]
  sched_cfg = json.loads((tmp_path / "flow" / "scheduler" / "scheduler_config.json").read_text())
  assert sched_cfg["_class_name"] == "FlowMatchEulerDiscreteScheduler"
  assert sched_cfg["shift"] == 3.0 and sched_cfg["num_train_timesteps"] == 1000
  tr = diffusers.PixArtTransformer2DModel.from_pretrained(out, subfolder="transformer").eval()
  sched = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(out, subfolder="scheduler")
  assert tr.config.out_channels == tr.config.in_channels == 4 and sched.config.shift == 3.0
  sd, sd0 = tr.state_dict(), model.state_dict()
  assert set(sd) == set(sd0) and all(torch.equal(sd[k], sd0[k]) for k in sd)
  lat = np.random.default_rng(5).standard_normal((B, 4, H, W)).astype(np.float32)
  n, w = 5, 3.0
  ref, _ = _torch_loop(tr, sched, n, lat, cond, null, w)
  back = fd.load_flow_teacher(out, null_cond=null)
  assert back.shift == 3.0 and back.num_train_timesteps == 1000
  z = np.asarray(jax.jit(lambda l, c: fd.sample(back, l, c, num_steps=n, guidance_scale=w))(
      jnp.asarray(lat.transpose(0, 2, 3, 1)), cond))
  err = np.abs(z - ref).max() / np.abs(ref).max()
  print(f"exported folder, scheduler loop vs sample: max|Δ|/max|ref| = {err:.2e}")
  assert err < 1e-4, err  # as test_sampler_equals_diffusers_scheduler_loop
  # The shift travels with the folder: the default scheduler (shift 1) gives other latents.
  ref1, _ = _torch_loop(tr, diffusers.FlowMatchEulerDiscreteScheduler(), n, lat, cond, null, w)
  assert np.abs(ref1 - ref).max() / np.abs(ref).max() > 1e-3


def test_stock_pixart_pipeline_cannot_run_a_flow_scheduler(setup):
  """Why the export has no model_index.json: PixArtAlphaPipeline scales its initial noise by
  scheduler.init_noise_sigma (and calls scale_model_input), which FlowMatch schedulers lack.
  If a diffusers release adds them, this test fails: then write a pipeline folder."""
  model, _, cond, _ = setup
  pipe = diffusers.PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=None,
                                       transformer=model,
                                       scheduler=diffusers.FlowMatchEulerDiscreteScheduler())
  pipe.set_progress_bar_config(disable=True)
  with pytest.raises(AttributeError, match="init_noise_sigma"):
    pipe(prompt=None, height=8 * H, width=8 * W, num_inference_steps=2, guidance_scale=1.0,
         prompt_embeds=torch.from_numpy(cond["embeddings"]),
         prompt_attention_mask=torch.from_numpy(cond["mask"].astype(np.float32)),
         latents=torch.zeros(B, 4, H, W), output_type="latent", use_resolution_binning=False)


# ------------------------------------------------------------------------- (e) clear errors


def test_guided_denoiser_and_features(setup):
  _, teacher, cond, null = setup
  t = fd.make_flow_teacher(teacher.module, teacher.params, null_cond=null, feature_blocks=(0,))
  x = jnp.asarray(np.random.default_rng(6).standard_normal((B, H, W, 4)), jnp.float32)
  sig = jnp.asarray([0.5, 5.0])
  null_b = {k: np.repeat(v, B, 0) for k, v in null.items()}

  @jax.jit
  def run(x):
    return (t(x, sig, cond, return_features=True), t(x, sig, null_b),
            t(x, sig, cond, guidance_scale=3.0, return_features=True))
  (d1, f_c), d_null, (dg, f_g) = run(x)
  np.testing.assert_allclose(np.asarray(dg), np.asarray(d_null + 3.0 * (d1 - d_null)),
                             rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(dg - d1).max()) > 1e-2  # guidance changes D: the check can fail.
  assert set(f_g) == {"block0"} and f_g["block0"].shape == (B, H * W // 4, 16)
  np.testing.assert_allclose(np.asarray(f_g["block0"]), np.asarray(f_c["block0"]), atol=1e-5)


def test_bad_input_errors(setup, tmp_path):
  _, teacher, cond, _ = setup
  learned = pixart.from_diffusers_config({**CFG, "out_channels": 8})
  with pytest.raises(ValueError, match="learned-σ.*teachers.pixart"):
    fd.make_flow_teacher(learned, teacher.params)
  with pytest.raises(ValueError, match="out_channels"):
    fd.to_diffusers_folder(teacher.params, tmp_path / "x", module=learned)
  with pytest.raises(ValueError, match="shift"):
    fd.make_flow_teacher(teacher.module, teacher.params, shift=0.0)
  x = jnp.zeros((B, H, W, 4))
  with pytest.raises(ValueError, match="null_cond"):
    fd.make_flow_teacher(teacher.module, teacher.params)(x, 1.0, cond, guidance_scale=2.0)
  with pytest.raises(ValueError, match="mask"):
    teacher(x, 1.0, {"embeddings": cond["embeddings"]})
  with pytest.raises(ValueError, match="solver"):
    fd.sample(teacher, x, cond, solver="dpm_solver_pp_2m")
  with pytest.raises(ValueError, match="sigmas"):
    fd.sample(teacher, x, cond, solver="heun", sigmas=[1.0, 0.5])
  with pytest.raises(ValueError, match="latents"):
    fd.sample(teacher, jnp.zeros((B, H, W, 3)), cond)
  with pytest.raises(ValueError, match="decrease"):
    fs.flow_timesteps(sigmas=[0.5, 1.0])
  with pytest.raises(ValueError, match="num_steps"):
    fs.flow_timesteps(0)
  # A DDPM-family pipeline folder is not a flow teacher.
  (tmp_path / "ddpm" / "scheduler").mkdir(parents=True)
  (tmp_path / "ddpm" / "scheduler" / "scheduler_config.json").write_text(
      json.dumps({"_class_name": "DPMSolverMultistepScheduler"}))
  with pytest.raises(ValueError, match="FlowMatch"):
    fd.load_flow_teacher(str(tmp_path / "ddpm"))
