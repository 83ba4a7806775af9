"""Discriminator heads that turn denoiser features into logits ℓ(x_σ, σ) ≈ log p_σ/q_σ.

* MLPHead: for vector features (toy problems); σ enters through its own embedding.
* ConvHead: FastGen's `Discriminator_EDM` head for image features: per feature map, repeat
  [Conv 4×4/s2/p1 → GroupNorm(32) → SiLU] down to 8×8, then Conv 4×4/s2/p1 (8→4) → GN → SiLU,
  Conv 4×4/s4/p0 (4→1) → GN → SiLU, Conv 1×1 → one logit; channels constant. One head per
  selected feature map; logits are stacked to [B, heads] (the ratio averages them).
* TokenHead: for transformer token features [B, N, D] (a DiT block's output): per token
  LayerNorm → Dense → SiLU → Dense → SiLU, mean over tokens, Dense → one logit. MultiConvHead
  routes a [B, N, D] feature to a TokenHead and a [B, R, R, C] map to a ConvHead.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdistill_jax.models.mlp import fourier_embedding


class MLPHead(nn.Module):
  """features [B, F], sigma [B] -> logits [B, 1]."""
  hidden: int = 128
  depth: int = 2

  @nn.compact
  def __call__(self, feats, sigma):
    b = feats.shape[0]
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32).reshape(-1), (b,))
    emb = fourier_embedding(jnp.log(sigma) / 4.0, 32)
    h = jnp.concatenate([feats.astype(jnp.float32), emb], axis=-1)
    for i in range(self.depth):
      h = nn.silu(nn.Dense(self.hidden, name=f"dense{i}")(h))
    return nn.Dense(1, name="logit")(h)


def _gn(channels: int) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=min(32, channels // 4) or 1, epsilon=1e-5)


class ConvHead(nn.Module):
  """One FastGen-style conv head: feature map [B, R, R, C] (R ≥ 4, power of 2) -> logit [B]."""
  channels: int

  @nn.compact
  def __call__(self, x):
    x = x.astype(jnp.float32)
    res = x.shape[1]
    if x.shape[1] != x.shape[2] or res < 4 or res & (res - 1):
      raise ValueError(f"ConvHead needs square power-of-two maps ≥ 4, got {x.shape}")
    i = 0
    while res > 8:
      x = nn.silu(_gn(self.channels)(nn.Conv(self.channels, (4, 4), (2, 2), ((1, 1), (1, 1)),
                                             name=f"down{i}")(x)))
      res //= 2
      i += 1
    if res == 8:
      x = nn.silu(_gn(self.channels)(nn.Conv(self.channels, (4, 4), (2, 2), ((1, 1), (1, 1)),
                                             name="to4")(x)))
    x = nn.silu(_gn(self.channels)(nn.Conv(self.channels, (4, 4), (4, 4), "VALID", name="to1")(x)))
    return nn.Conv(1, (1, 1), name="logit")(x).reshape(x.shape[0])


class TokenHead(nn.Module):
  """One head over transformer tokens: [B, N, D] -> logit [B] (mean-pooled over the N tokens)."""
  channels: int

  @nn.compact
  def __call__(self, x):
    if x.ndim != 3:
      raise ValueError(f"TokenHead needs token features [B, N, D], got {x.shape}")
    h = nn.LayerNorm(name="norm")(x.astype(jnp.float32))
    h = nn.silu(nn.Dense(self.channels, name="dense0")(h))
    h = nn.silu(nn.Dense(self.channels, name="dense1")(h))
    return nn.Dense(1, name="logit")(jnp.mean(h, axis=1)).reshape(x.shape[0])


class MultiConvHead(nn.Module):
  """Heads over several named features: dict name -> map [B, R, R, C] (a ConvHead) or tokens
  [B, N, D] (a TokenHead) -> logits [B, heads]."""
  keys: Sequence[str]
  channels: int

  @nn.compact
  def __call__(self, feats: dict, sigma=None):
    del sigma  # The teacher's features already encode σ.
    missing = [k for k in self.keys if k not in feats]
    if missing:
      raise KeyError(f"discriminator head: feature maps {missing} not provided; "
                     f"available: {sorted(feats)}")
    head = lambda k: (TokenHead if feats[k].ndim == 3 else ConvHead)(self.channels, name=f"head_{k}")
    return jnp.stack([head(k)(feats[k]) for k in self.keys], axis=1)
