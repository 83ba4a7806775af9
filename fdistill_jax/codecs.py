"""Frozen encoder/decoder pairs between image space and the space a teacher works in.

A latent-space experiment (e.g. an SD-VAE with a PixArt-α teacher) holds a `Codec`: real images
are encoded before the real-data branches (f-distill's discriminator, DMD2's GAN), and samples are
decoded before grids and metrics. Methods never see it: they work on whatever `Nets.data_shape`
is. Pixel space uses `IDENTITY`, which costs nothing (no jit, no copy).

  encode(params, images [B, H, W, C] in [-1, 1]) -> latents [B, ...latent_shape]
  decode(params, latents) -> images [B, H, W, C] in about [-1, 1]
  image_shape(latent_shape) -> (H, W, C) of the images that encode to latent_shape
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@dataclasses.dataclass(frozen=True)
class Codec:
  encode: Callable[[Any, jax.Array], jax.Array]
  decode: Callable[[Any, jax.Array], jax.Array]
  image_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
  params: Any = None
  identity: bool = False

  def jit_encode(self) -> Callable[[Any], Any]:
    """images -> latents (jitted over the frozen params), or the identity function."""
    if self.identity:
      return lambda x: x
    fn = jax.jit(self.encode)
    return lambda x: fn(self.params, x)

  def jit_decode(self) -> Callable[[Any], Any]:
    """latents -> images (jitted over the frozen params), or the identity function."""
    if self.identity:
      return lambda z: z
    fn = jax.jit(self.decode)
    return lambda z: fn(self.params, z)


IDENTITY = Codec(encode=lambda p, x: x, decode=lambda p, z: z, image_shape=tuple, identity=True)
