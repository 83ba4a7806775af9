"""DPM-Solver++(2M) and DDIM against diffusers' schedulers, step by step.

The ε model is a fixed nonlinear function of (x, t, text condition), written identically in
numpy-fed torch and JAX; the PyTorch loop is PixArtAlphaPipeline's (CFG on the concatenated
[∅; c] batch, scheduler.step per timestep). Same latents in; every intermediate x_t and the
output must agree to float32 rounding (max |Δ| / max |ref| ≤ 2e-6; measured 4e-7 to 1e-6).
"""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from fdistill_jax.diffusion import ddpm_samplers as ds

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# scheduler/scheduler_config.json shipped with PixArt-XL-2-512x512 / -1024-MS (diffusers 0.22):
# identical to DPMSolverMultistepScheduler()'s defaults; final_sigmas_type absent -> "zero".
PIXART_SCHEDULER = dict(algorithm_type="dpmsolver++", beta_end=0.02, beta_schedule="linear",
                        beta_start=0.0001, euler_at_final=False, lower_order_final=True,
                        num_train_timesteps=1000, prediction_type="epsilon", solver_order=2,
                        solver_type="midpoint", steps_offset=0, thresholding=False,
                        timestep_spacing="linspace", use_karras_sigmas=False, use_lu_lambdas=False)

B, H, W, C, L, D = 3, 4, 5, 4, 6, 8
_rng = np.random.default_rng(0)
WX = (_rng.standard_normal((C, C)) / 2).astype(np.float32)
WC = (_rng.standard_normal((D, C)) / 2).astype(np.float32)


ALPHAS = diffusers.DPMSolverMultistepScheduler(**PIXART_SCHEDULER).alphas_cumprod.numpy()


def _eps(x, t, cond, lib):
  """0.9·sqrt(1−ᾱ_t)·x + 0.3·tanh(x·Wx·(1 + t/1000) + pooled(cond)·Wc + sin(t/100)).

  The linear part is the exact ε of N(0, I) data, which keeps the sampling ODE as well
  conditioned as a trained model's (an arbitrary ε field amplifies rounding 10x per step).
  """
  emb, mask = cond["embeddings"], cond["mask"]
  if lib is jnp:
    tf, sb, wx, wc = t / 1000.0, jnp.sqrt(1 - jnp.asarray(ALPHAS))[t], WX, WC
  else:
    tf, sb = t.float() / 1000.0, torch.from_numpy(np.sqrt(1 - ALPHAS))[t]
    wx, wc = torch.from_numpy(WX), torch.from_numpy(WC)
  tf, sb = tf.reshape(-1, 1, 1, 1), sb.reshape(-1, 1, 1, 1)
  pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  h = (x @ wx) * (1 + tf) + (pooled @ wc)[:, None, None, :] + lib.sin(tf * 10.0)
  return 0.9 * sb * x + 0.3 * lib.tanh(h)


def _inputs():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((B, H, W, C)).astype(np.float32)
  mask = np.zeros((B, L), np.float32)
  for i, n in enumerate((2, 6, 4)):
    mask[i, :n] = 1
  cond = {"embeddings": rng.standard_normal((B, L, D)).astype(np.float32), "mask": mask}
  null_mask = np.zeros((1, L), np.float32)
  null_mask[0, 0] = 1  # "" -> just </s>
  null = {"embeddings": rng.standard_normal((1, L, D)).astype(np.float32), "mask": null_mask}
  return x, cond, null


def _torch_loop(scheduler, num_steps, x, cond, null, w):
  scheduler.set_timesteps(num_steps)
  lat = torch.from_numpy(x)
  c = {k: torch.from_numpy(v) for k, v in cond.items()}
  n = {k: torch.from_numpy(np.broadcast_to(v, cond[k].shape).copy()) for k, v in null.items()}
  both = {k: torch.cat([n[k], c[k]]) for k in c}
  traj = []
  for t in scheduler.timesteps:
    if w != 1.0:
      e = _eps(torch.cat([lat, lat]), t.expand(2 * B), both, torch)
      e_u, e_c = e.chunk(2)
      e = e_u + w * (e_c - e_u)
    else:
      e = _eps(lat, t.expand(B), c, torch)
    lat = scheduler.step(e, t, lat).prev_sample
    traj.append(lat.numpy())
  return scheduler.timesteps.numpy(), np.stack(traj)


def _rel(a, b):
  return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


CASES = {
    # PixArt's pipeline: 20 steps, guidance 4.5.
    "dpm_pixart_20_cfg": ("dpm", 20, 4.5, {}),
    # < 15 steps (lower_order_final path), trailing spacing, sigma_min final, no guidance.
    "dpm_trailing_8": ("dpm", 8, 1.0, dict(timestep_spacing="trailing",
                                           final_sigmas_type="sigma_min")),
    "ddim_linspace_20_cfg": ("ddim", 20, 3.0, dict(clip_sample=False)),
    # SD-style DDIM: leading spacing, offset 1, ᾱ_0 at the end, x̂0 clipping.
    "ddim_leading_10_clip": ("ddim", 10, 1.0, dict(timestep_spacing="leading", steps_offset=1,
                                                   set_alpha_to_one=False, clip_sample=True,
                                                   clip_sample_range=0.5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_diffusers(name):
  kind, n, w, kw = CASES[name]
  x, cond, null = _inputs()
  if kind == "dpm":
    sched = diffusers.DPMSolverMultistepScheduler(**{**PIXART_SCHEDULER, **kw})
    sampler, jkw = ds.dpm_solver_pp_2m, dict(kw)
  else:
    base = {k: v for k, v in PIXART_SCHEDULER.items() if k in (
        "beta_end", "beta_schedule", "beta_start", "num_train_timesteps", "prediction_type",
        "timestep_spacing", "steps_offset")}
    sched = diffusers.DDIMScheduler(**{**base, **kw})
    jkw = {k: v for k, v in kw.items() if k not in ("clip_sample", "clip_sample_range")}
    jkw["clip_sample"] = kw.get("clip_sample_range", 1.0) if kw.get("clip_sample") else None
    sampler = ds.ddim
  alphas = sched.alphas_cumprod.numpy()
  ts_ref, traj_ref = _torch_loop(sched, n, x, cond, null, w)

  run = jax.jit(lambda x, c, nc: sampler(lambda a, t, cc: _eps(a, t, cc, jnp), x, c, alphas, n,
                                         guidance_scale=w, null_cond=nc, return_trajectory=True,
                                         **jkw))
  out, traj = run(jnp.asarray(x), jax.tree_util.tree_map(jnp.asarray, cond),
                  jax.tree_util.tree_map(jnp.asarray, null))
  np.testing.assert_array_equal(np.asarray(traj["t"]), ts_ref)
  errs = [_rel(traj["x"][i], traj_ref[i]) for i in range(n)]
  print(name, "max rel. error over steps:", max(errs))
  assert max(errs) <= 2e-6, errs
  np.testing.assert_array_equal(np.asarray(out), np.asarray(traj["x"][-1]))
  assert np.std(traj_ref[-1] - x) > 0.1  # the trajectory moved: the comparison is not vacuous.


def test_timesteps_pixart_default():
  sched = diffusers.DPMSolverMultistepScheduler(**PIXART_SCHEDULER)
  sched.set_timesteps(20)
  ts, sig = ds.dpm_solver_timesteps(sched.alphas_cumprod.numpy(), 20)
  np.testing.assert_array_equal(ts, sched.timesteps.numpy())
  # torch's vectorised CPU sqrt differs from numpy's correctly rounded one by 1 ulp at places.
  np.testing.assert_allclose(sig, sched.sigmas.numpy(), rtol=2.5e-7, atol=0)
  assert ts[0] == 999 and sig[-1] == 0


def test_guidance_needs_null_cond():
  with pytest.raises(ValueError, match="null_cond"):
    ds.guided_eps(lambda x, t, c: x, 4.5)
  with pytest.raises(ValueError, match="timestep_spacing"):
    ds.dpm_solver_timesteps(np.linspace(0.99, 0.01, 10), 4, timestep_spacing="karras")
