"""EDM-preconditioned MLP denoiser for vector data (the toy problems' student and fake score).

D(x, σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)), the same preconditioning as EDM's
image networks, so the toy generator and fake score are built exactly like the real ones.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdistill_jax.diffusion import edm


def fourier_embedding(c_noise: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal embedding of c_noise = ln(σ)/4: [B] -> [B, dim] (cos, sin)."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  ang = c_noise.astype(jnp.float32)[:, None] * freqs[None] * 100.0
  return jnp.concatenate([jnp.cos(ang), jnp.sin(ang)], axis=-1)


class MLPDenoiser(nn.Module):
  """Residual MLP with EDM preconditioning.

  Attributes: dim (data dimension d), hidden width, depth (residual blocks), emb_dim of the noise
  embedding, label_dim (0 = unconditional), sigma_data (data std for preconditioning).
  __call__(x [B, d], sigma scalar or [B], labels [B, label_dim] | None, return_features)
  -> D(x) [B, d] float32, or (D(x), features [B, hidden]) where features are the last hidden
  activations (used by discriminator heads).
  """
  dim: int
  hidden: int = 128
  depth: int = 3
  emb_dim: int = 64
  label_dim: int = 0
  sigma_data: float = 1.0

  @nn.compact
  def __call__(self, x, sigma, labels=None, return_features: bool = False):
    b = x.shape[0]
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32).reshape(-1), (b,))
    c_skip, c_out, c_in, c_noise = edm.edm_precond_coeffs(sigma, self.sigma_data)
    emb = nn.silu(nn.Dense(self.hidden, name="emb0")(fourier_embedding(c_noise, self.emb_dim)))
    if self.label_dim:
      if labels is None:
        labels = jnp.zeros((b, self.label_dim), jnp.float32)
      emb = emb + nn.Dense(self.hidden, use_bias=False, name="label")(labels)
    emb = nn.Dense(self.hidden, name="emb1")(emb)
    h = nn.Dense(self.hidden, name="inp")(c_in[:, None] * x) + emb
    for i in range(self.depth):
      r = nn.Dense(self.hidden, name=f"block{i}_0")(nn.silu(nn.LayerNorm(name=f"norm{i}")(h)))
      r = r + nn.Dense(self.hidden, name=f"block{i}_emb")(nn.silu(emb))
      h = h + nn.Dense(self.hidden, name=f"block{i}_1")(nn.silu(r))
    feats = nn.silu(nn.LayerNorm(name="out_norm")(h))
    f = nn.Dense(self.dim, name="out")(feats)
    d = c_skip[:, None] * x + c_out[:, None] * f
    return (d, feats) if return_features else d
