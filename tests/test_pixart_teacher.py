"""PixArt-α as a teacher (fdistill_jax/teachers/pixart.py) against diffusers, tiny random weights.

(a) D(x; σ, c) equals the x̂0 that diffusers' PixArtTransformer2DModel gives in PyTorch: EDM's
    x = x0 + σ ε is DDPM's x_t = √ᾱ x0 + √(1−ᾱ) ε divided by √ᾱ with ᾱ = 1/(1+σ²), so the network
    sees x_t = x/√(1+σ²) at the timestep t(σ) (an integer on the grid σ_t = √((1−ᾱ_t)/ᾱ_t), the
    log-σ interpolation between grid points) and x̂0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ.
(b) Our sampler with the JAX port equals PixArtAlphaPipeline (DPM-Solver++ 2M, w = 4.5,
    output_type='latent', same initial latents) to float32 rounding.
(c) Guidance scale 1 (or None) costs one network call on B rows, w ≠ 1 one call on 2B rows.
"""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fdistill_jax.teachers import pixart as tp

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from fdistill_jax.convert import pixart as conv  # noqa: E402
from fdistill_jax.models import pixart  # noqa: E402

CFG = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
           num_layers=2, cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=12)
B, H, W, L, DC = 2, 4, 6, 5, 12
# PixArt-XL-2's scheduler_config.json (= DPMSolverMultistepScheduler defaults).
SCHED = dict(algorithm_type="dpmsolver++", beta_end=0.02, beta_schedule="linear",
             beta_start=0.0001, num_train_timesteps=1000, prediction_type="epsilon",
             solver_order=2, solver_type="midpoint", timestep_spacing="linspace")


def _randomise(model, seed):
  """Redraw every weight (N(0, 0.3²) matrices, N(0, 0.1²) vectors): diffusers' default
  init is small, which makes ε̂ nearly affine in its inputs; these
  weights make the checks sensitive to every part of the network."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.1))
  return model


@pytest.fixture(scope="module")
def setup():
  torch.manual_seed(0)
  model = _randomise(diffusers.PixArtTransformer2DModel(**CFG).eval(), 0)
  module = pixart.from_diffusers_config(dict(model.config))
  params = conv.state_dict_to_params({k: v.numpy() for k, v in model.state_dict().items()},
                                     module)
  rng = np.random.default_rng(0)
  mask = np.ones((B, L), np.int32)
  mask[0, 3:] = 0
  cond = {"embeddings": rng.standard_normal((B, L, DC)).astype(np.float32), "mask": mask}
  null_mask = np.zeros((1, L), np.int32)
  null_mask[0, 0] = 1  # "" -> just </s>, as the prompt cache stores it
  null = {"embeddings": rng.standard_normal((1, L, DC)).astype(np.float32), "mask": null_mask}
  teacher = tp.make_pixart_teacher(module, params, null_cond=null, guidance_scale=None)
  return model, teacher, cond, null, jax.jit(teacher)


def _torch_x0(model, x_nhwc, sigma, t, cond):
  """x̂0 in PyTorch/float64 maths from diffusers' ε̂ at DDPM time t (NHWC in, NHWC out)."""
  abar = 1.0 / (1.0 + sigma.astype(np.float64) ** 2)
  x_t = x_nhwc * np.sqrt(abar)[:, None, None, None]  # = √ᾱ x0 + √(1−ᾱ) ε
  with torch.no_grad():
    out = model(torch.from_numpy(x_t.transpose(0, 3, 1, 2).astype(np.float32)),
                encoder_hidden_states=torch.from_numpy(cond["embeddings"]),
                timestep=torch.from_numpy(t.astype(np.float32)),
                encoder_attention_mask=torch.from_numpy(cond["mask"].astype(np.float32))).sample
  eps = out.numpy()[:, :4].transpose(0, 2, 3, 1).astype(np.float64)
  x0 = (x_t - np.sqrt(1 - abar)[:, None, None, None] * eps) / np.sqrt(abar)[:, None, None, None]
  return x0, eps


def _grid_sigmas():
  abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
  return np.sqrt((1 - abar) / abar)


@pytest.mark.parametrize("where", ["on_grid", "between"])
def test_denoiser_equals_diffusers_x0(setup, where):
  model, teacher, cond, *_ = setup
  s = _grid_sigmas()
  ts = np.array([[0, 999], [137, 611]])  # two batches of B = 2
  teacher_jit = setup[-1]
  for tb in ts:
    if where == "on_grid":
      sigma, t_ref = s[tb], tb.astype(np.float64)
    else:  # 30 % of the way in log σ from t to t+1 (t = 999: clamped to the grid end).
      tb = np.minimum(tb, 998)
      sigma = np.exp(np.log(s[tb]) + 0.3 * (np.log(s[tb + 1]) - np.log(s[tb])))
      t_ref = tb + 0.3
    rng = np.random.default_rng(int(tb[0]))
    x0 = rng.standard_normal((B, H, W, 4))
    x = (x0 + sigma[:, None, None, None] * rng.standard_normal((B, H, W, 4))).astype(np.float32)
    sigma = sigma.astype(np.float32).astype(np.float64)  # the σ the teacher is given
    # σ → t: float64 log-σ interpolation on the float64 grid vs the adapter's float32 map. Near
    # t = 999 the grid is dense in log σ (Δ log σ ≈ 0.007/step), so float32 log σ is worth
    # ~1e-4 steps; the network is then compared at the adapter's t (the map itself here).
    t_ref = np.interp(np.log(sigma), np.log(s), np.arange(1000.0))
    t_ad = np.asarray(teacher.adapter.time.sigma_to_t(jnp.asarray(sigma, jnp.float32)))
    print(f"{where}: t {t_ref} |Δt| {np.abs(t_ad - t_ref)}")
    assert np.abs(t_ad - t_ref).max() < 2e-4
    ref, eps = _torch_x0(model, x.astype(np.float64), sigma, t_ad.astype(np.float64), cond)
    d = np.asarray(teacher_jit(jnp.asarray(x), jnp.asarray(sigma, jnp.float32), cond))
    for i in range(B):
      # D = x − σ ε̂: float32 rounding of the network (ε̂) enters D multiplied by σ, so the
      # scale of the error is max|D| + σ·max|ε̂| (at σ = 157, D is a 1e-2 difference of x and σ ε̂).
      scale = np.abs(ref[i]).max() + sigma[i] * np.abs(eps[i]).max()
      err = np.abs(d[i] - ref[i]).max() / scale
      print(f"{where} t={t_ref[i]:.1f} σ={sigma[i]:.4g}: max|ΔD|/(max|D| + σ max|ε̂|) = "
            f"{err:.2e}, max|ε̂| = {np.abs(eps[i]).max():.3g}")
      assert err < 1e-5, (where, t_ref[i], err)
  # The check can fail: D at a neighbouring σ, or without the padding mask, differs.
  d2 = teacher_jit(jnp.asarray(x), jnp.asarray(sigma * 1.05, jnp.float32), cond)
  assert np.abs(np.asarray(d2) - ref).max() > 1e-3
  d3 = teacher_jit(jnp.asarray(x), jnp.asarray(sigma, jnp.float32),
                   dict(cond, mask=np.ones_like(cond["mask"])))
  assert np.abs(np.asarray(d3) - ref).max() > 1e-3


def _tiny_vae():
  # Four levels: vae_scale_factor 8, so the pipeline accepts height = 8·H.
  return diffusers.AutoencoderKL(block_out_channels=(2,) * 4, norm_num_groups=2,
                                 down_block_types=("DownEncoderBlock2D",) * 4,
                                 up_block_types=("UpDecoderBlock2D",) * 4,
                                 latent_channels=4, layers_per_block=1).eval()


def _pipeline(model, vae, sched, cond, null, lat, steps, w, output_type):
  """PixArtAlphaPipeline on cached embeddings (no tokenizer/T5), NHWC numpy output."""
  pipe = diffusers.PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                       transformer=model, scheduler=sched)
  pipe.set_progress_bar_config(disable=True)
  nb = {k: np.repeat(v, B, 0) for k, v in null.items()}
  with torch.no_grad():
    out = pipe(prompt=None, negative_prompt=None, height=8 * H, width=8 * W,
               num_inference_steps=steps, guidance_scale=w,
               prompt_embeds=torch.from_numpy(cond["embeddings"]),
               prompt_attention_mask=torch.from_numpy(cond["mask"].astype(np.float32)),
               negative_prompt_embeds=torch.from_numpy(nb["embeddings"]),
               negative_prompt_attention_mask=torch.from_numpy(nb["mask"].astype(np.float32)),
               latents=torch.from_numpy(lat), output_type=output_type,
               use_resolution_binning=False)
  return out.images.numpy().transpose(0, 2, 3, 1)


def test_sampler_equals_pixart_pipeline(setup):
  model, teacher, cond, null, _ = setup
  lat = np.random.default_rng(3).standard_normal((B, 4, H, W)).astype(np.float32)
  steps, w = 6, 4.5
  ref = _pipeline(model, _tiny_vae(), diffusers.DPMSolverMultistepScheduler(**SCHED), cond, null,
                  lat, steps, w, "latent")  # latents out: the VAE is never run.
  z = np.asarray(jax.jit(lambda l, c: tp.sample(teacher, l, c, num_steps=steps,
                                                guidance_scale=w))(
      jnp.asarray(lat.transpose(0, 2, 3, 1)), cond))
  err = np.abs(z - ref).max() / np.abs(ref).max()
  print(f"pipeline parity ({steps} steps, w={w}): max|Δ|/max|ref| = {err:.2e}")
  # One network call agrees to ~5e-6 of its scale (test above); guidance multiplies the
  # difference of two such calls by w = 4.5, so each step is exact to ~2e-5: measured 1.5e-5.
  assert err < 4e-5, err
  z1 = np.asarray(tp.sample(teacher, jnp.asarray(lat.transpose(0, 2, 3, 1)), cond,
                            num_steps=steps, guidance_scale=1.0))
  assert np.abs(z1 - ref).max() / np.abs(ref).max() > 1e-3  # guidance matters: can fail.


class _Counting(tp.PixArtTeacher):
  def network(self, x_t, t, cond, **kw):
    self.calls.append(x_t.shape[0])
    return super().network(x_t, t, cond, **kw)


def test_guidance_call_count_and_features(setup):
  _, teacher, cond, null, _ = setup
  t = _Counting(teacher.module.clone(feature_blocks=(0, -1)), teacher.params, teacher.adapter,
                teacher.null_cond, None)
  object.__setattr__(t, "calls", [])
  x = jnp.asarray(np.random.default_rng(5).standard_normal((B, H, W, 4)), jnp.float32)
  sig = jnp.asarray([0.5, 3.0])
  # Calls counted while tracing (eval_shape: no compilation, no execution).
  jax.eval_shape(lambda x: t(x, sig, cond), x)
  jax.eval_shape(lambda x: t(x, sig, cond, guidance_scale=1.0), x)
  assert t.calls == [B, B]
  jax.eval_shape(lambda x: t(x, sig, cond, guidance_scale=4.5, return_features=True), x)
  assert t.calls == [B, B, 2 * B]
  tb = tp.make_pixart_teacher(teacher.module, teacher.params, compute_dtype=jnp.bfloat16)
  null_b = {k: np.repeat(v, B, 0) for k, v in null.items()}

  @jax.jit
  def run(x):
    return (t(x, sig, cond, return_features=True), t(x, sig, null_b),
            t(x, sig, cond, guidance_scale=4.5, return_features=True), tb(x, sig, cond))
  (d1, f_c), d_null, (dg, feats), db = run(x)
  assert set(feats) == {"block0", "block1"} and feats["block1"].shape == (B, H * W // 4, 16)
  # Guided D = D(∅) + w (D(c) − D(∅)), from separate unguided calls.
  want = d_null + 4.5 * (d1 - d_null)
  np.testing.assert_allclose(np.asarray(dg), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(dg - d1).max()) > 1e-2  # guidance changes D: the check can fail.
  # Features of the guided call are those of the conditional half.
  np.testing.assert_allclose(np.asarray(feats["block0"]), np.asarray(f_c["block0"]), atol=1e-5)
  assert t.sigma_min == pytest.approx(0.01, rel=1e-3)
  assert t.sigma_max == pytest.approx(157.4, rel=1e-3)
  with pytest.raises(ValueError, match="null_cond"):
    jax.eval_shape(lambda x: tp.make_pixart_teacher(teacher.module, teacher.params)(
        x, sig, cond, guidance_scale=2.0), x)
  with pytest.raises(ValueError, match="mask"):
    jax.eval_shape(lambda x: t(x, sig, {"embeddings": cond["embeddings"]}), x)
  # bf16 compute: close to float32, not identical.
  rel = float(jnp.linalg.norm(db - d1) / jnp.linalg.norm(d1))
  assert 0 < rel < 5e-2, rel


def test_ddim_with_vae_decode_equals_pipeline(setup):
  """solver='ddim' (η = 0, linspace, no clipping) and vae= decoding, against the pipeline's
  DDIMScheduler and its decoded output (output_type='pt': (image/2 + 0.5) clipped to [0, 1])."""
  from fdistill_jax.convert import vae as cvae
  model, teacher, cond, null, _ = setup
  torch.manual_seed(1)
  vae = _tiny_vae()
  sched = diffusers.DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  clip_sample=False, timestep_spacing="linspace",
                                  set_alpha_to_one=True)
  lat = np.random.default_rng(4).standard_normal((B, 4, H, W)).astype(np.float32)
  steps, w = 4, 4.5
  ref = _pipeline(model, vae, sched, cond, null, lat, steps, w, "pt")
  vmod = cvae.vae_from_config(dict(vae.config))
  vvars = cvae.state_dict_to_params({k: v.numpy() for k, v in vae.state_dict().items()}, vmod)
  img = jax.jit(lambda l, c: tp.sample(teacher, l, c, num_steps=steps, guidance_scale=w,
                                       solver="ddim", vae=(vmod, vvars)))(
      jnp.asarray(lat.transpose(0, 2, 3, 1)), cond)
  ours = np.clip(np.asarray(img) / 2 + 0.5, 0, 1)
  assert ours.shape == ref.shape == (B, 8 * H, 8 * W, 3)
  err = np.abs(ours - ref).max()
  print(f"DDIM + VAE pipeline parity ({steps} steps, w={w}): max|Δ| = {err:.2e} "
        f"(images in [0, 1], range {ref.min():.3f}..{ref.max():.3f})")
  assert err < 4e-5, err  # measured 1.2e-5: w = 4.5 amplifies per-call rounding, as above.
  assert ref.max() - ref.min() > 1e-2  # a non-constant image: the check can fail.
