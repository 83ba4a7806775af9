"""Per-σ diagnostics of guided distribution matching (issue 25 §2).

A guided method pushes the student along g(σ) = D_fake − D_w, where D_w = D_∅ + w (D_c − D_∅) is
the teacher guided at w and D_fake the fake score (the student's own denoiser). At the fixed
point D_fake = D_w at every σ. Where the fake score has not learnt the student (it is still the
teacher copy it started from, D_fake ≈ D_c), the push is the full guidance direction
(w − 1)(D_c − D_∅), which nothing cancels. Per σ this module measures, on the student's samples:

  matched    ⟨D_fake − D_c, D_w − D_c⟩ / ‖D_w − D_c‖²: how much of the guidance push the fake
             score has matched, along the push (0 = none, the fake is still the conditional
             teacher; 1 = all of it);
  deviation  ‖D_fake − D_c‖ / ‖D_w − D_c‖: the fake's whole distance from the conditional
             teacher in units of the push (its errors in other directions included);
  residual   ‖D_fake − D_w‖ / ‖D_w − D_c‖: the push still left, relative to the guidance push;
  fake_err   rms(D_fake(x_g + σn) − x_g), the fake score's x0 error on the samples it learns;
and on real data x0 (with conditions of their class), the teacher's own x0 error:
  teacher_err / teacher_err_guided   rms(D_c(x0 + σn) − x0), rms(D_w(x0 + σn) − x0).
Norms are over the whole batch (root of summed squares), so a bin is one ratio of sums.
All functions take the experiment's `Nets`; nothing here trains.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax import conditioning
from fdistill_jax.diffusion import few_step
from fdistill_jax.nets import Nets

SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 14.6, 20.0, 40.0, 80.0, 157.0)


def _rms(a: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.mean(jnp.square(a.astype(jnp.float32))))


def _norm(a: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(a.astype(jnp.float32))))


def push_at(nets: Nets, fake_params, frozen, x_g: jax.Array, cond, sigma: float, key,
            w: float, fake_scale: float = 1.0) -> dict[str, jax.Array]:
  """The push statistics at one σ for samples x_g [B, ...] with conditions cond [B].

  fake_scale: the guidance the method applies to the fake score in its generator loss
  (SiD-LSG's κ2; 1 for f-distill, DMD2 and SIM)."""
  n = jax.random.normal(key, x_g.shape, jnp.float32)
  s = jnp.full((x_g.shape[0],), sigma, jnp.float32)
  x_t = x_g + s.reshape((-1,) + (1,) * (x_g.ndim - 1)) * n
  teacher = lambda x, ss, c: nets.teacher(frozen, x, ss, c)
  fake = lambda x, ss, c: nets.student(fake_params, x, ss, c)
  d_c = teacher(x_t, s, cond)
  d_u = teacher(x_t, s, nets.cond.null_like(cond))
  d_w = conditioning.combine(d_c, d_u, w)
  d_f = conditioning.guided(fake, x_t, s, cond, fake_scale, nets.cond)
  g = (d_w - d_c).astype(jnp.float32)
  push = _norm(g) + 1e-12
  return {"matched": jnp.sum((d_f - d_c).astype(jnp.float32) * g) / push ** 2,
          "deviation": _norm(d_f - d_c) / push, "residual": _norm(d_f - d_w) / push,
          "fake_err": _rms(d_f - x_g), "teacher_err_on_samples": _rms(d_c - x_g),
          "guidance_push_rms": _rms(d_w - d_c)}


def teacher_error_at(nets: Nets, frozen, x0: jax.Array, cond, sigma: float, key,
                     w: float) -> dict[str, jax.Array]:
  """rms x0 error of the teacher, conditional and guided at w, on real data x0 [B, ...]."""
  n = jax.random.normal(key, x0.shape, jnp.float32)
  s = jnp.full((x0.shape[0],), sigma, jnp.float32)
  x_t = x0 + s.reshape((-1,) + (1,) * (x0.ndim - 1)) * n
  d_c = nets.teacher(frozen, x_t, s, cond)
  d_u = nets.teacher(frozen, x_t, s, nets.cond.null_like(cond))
  return {"teacher_err": _rms(d_c - x0),
          "teacher_err_guided": _rms(conditioning.combine(d_c, d_u, w) - x0)}


def diagnose(nets: Nets, params: dict, frozen, batch: dict, key: jax.Array, w: float,
             fake_scale: float = 1.0, sigmas=SIGMAS, real: bool = True) -> dict[str, Any]:
  """Per-σ table {σ: {stat: float}} for the generator and fake score of `params` on the
  conditions of `batch` ({"x": real data [B, ...], "cond"}); real=False skips the teacher's
  error on real data (data-free runs carry no images)."""
  cond = batch["cond"]
  kz, ks = jax.random.split(key)
  z = jax.random.normal(kz, batch["x"].shape, jnp.float32)
  x_g = jax.jit(nets.generate)(params["generator"], z, cond, noise_key=few_step.chain_key(kz))
  # σ is traced (one compile for every σ).
  push = jax.jit(lambda x, c, s, k: push_at(nets, params["fake_score"], frozen, x, c, s, k, w,
                                            fake_scale))
  terr = jax.jit(lambda x, c, s, k: teacher_error_at(nets, frozen, x, c, s, k, w))
  out = {}
  for i, sigma in enumerate(sigmas):
    k = jax.random.fold_in(ks, i)
    row = push(x_g, cond, jnp.float32(sigma), k)
    if real:
      row = {**row, **terr(jnp.asarray(batch["x"], jnp.float32), cond, jnp.float32(sigma), k)}
    out[float(sigma)] = {name: float(v) for name, v in jax.device_get(row).items()}
  return out


def table(rows: dict[float, dict[str, float]]) -> str:
  """A plain-text table of `diagnose`'s output, one line per σ."""
  cols = sorted({c for r in rows.values() for c in r})
  lines = ["sigma    " + "  ".join(f"{c:>22}" for c in cols)]
  for s, r in rows.items():
    lines.append(f"{s:<8g} " + "  ".join(f"{r.get(c, np.nan):>22.4f}" for c in cols))
  return "\n".join(lines)
