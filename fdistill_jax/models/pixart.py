"""PixArt-α transformer (diffusers' `PixArtTransformer2DModel`, 0.42.1) in Flax linen, NHWC.

DiT with adaLN-single (Chen et al. 2023, arXiv 2310.00426), written from the architecture of
diffusers' PyTorch module (parity: tests/test_pixart.py):

  x [B,H,W,C] --patch conv p×p/s p--> tokens [B,N,D] + fixed 2-D sin-cos position embedding
  t [B] --sinusoid(256, [cos,sin])--> timestep_embedder MLP --(+ micro-conditions)--> e [B,D]
  adaln_single.linear(silu(e)) -> [B,6D]; text [B,L,Dc] --caption_projection MLP--> [B,L,D]
  each block: self-attn (modulated LN, gated) -> cross-attn to the text (padding mask, no norm)
              -> tanh-GELU MLP (modulated LN, gated); per-block scale_shift_table [6,D]
  final: LN modulated by scale_shift_table [2,D] + e -> proj_out -> unpatchify [B,H,W,C_out]

Learned sigma: C_out = 8 = [ε (4 channels), variance interpolation v (4 channels)].

Micro-conditions (1024-MS, `use_additional_conditions`, on by default iff sample_size == 128):
`added_cond_kwargs = {'resolution': [B,2] (H, W in pixels), 'aspect_ratio': [B] or [B,1] (H/W)}`,
see `micro_conditions`.

Parameter names mirror diffusers' state_dict (`transformer_blocks_3/attn1/to_q/kernel` <->
`transformer_blocks.3.attn1.to_q.weight`), see `fdistill_jax.convert.pixart`; kernels are
[in, out] ([p,p,C,D] for the patch conv). `sharding_rules()` lists regex tactics for
`engine/sharding.py` (tensor parallelism over the attention heads and the MLP hidden units).

Dtypes: `dtype` is the compute dtype of the matmuls/convolution (bf16 with float32 weights:
`dtype=jnp.bfloat16, param_dtype=jnp.float32`); the residual stream, layer norms, modulation,
embeddings' sinusoids and the attention softmax stay float32. The output is float32.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# diffusers config fields this port implements with fixed values (anything else is refused).
FIXED_CONFIG = {"activation_fn": "gelu-approximate", "norm_type": "ada_norm_single",
                "norm_elementwise_affine": False, "attention_type": "default", "dropout": 0.0}
# Fields of older `Transformer2DModel` configs (the first PixArt releases): only these values.
LEGACY_DEFAULTS = {"double_self_attention": False, "only_cross_attention": False,
                   "num_vector_embeds": None, "use_linear_projection": False}
# diffusers config fields without effect on this architecture.
IGNORED_CONFIG = ("norm_num_groups", "num_embeds_ada_norm", "upcast_attention", "_class_name",
                  "_diffusers_version", "_name_or_path", "_use_default_values")


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  """[sin(pos ω), cos(pos ω)], ω_i = 10000^(-2i/dim), computed in float64. pos [M] -> [M, dim]."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.outer(pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_hw: tuple[int, int], base_size: int,
              interpolation_scale: float) -> np.ndarray:
  """Fixed position embedding of a token grid, float32 [h·w, dim] (tokens row-major in (h, w)).

  Positions are arange(n) / (n / base_size) / interpolation_scale per axis (float32 like
  diffusers); the first dim/2 channels embed the column (w) coordinate, the rest the row (h).
  """
  if dim % 4:
    raise ValueError(f"sin-cos position embedding needs inner_dim % 4 == 0, got {dim}")
  h, w = grid_hw
  gh = np.arange(h, dtype=np.float32) / np.float32(h / base_size) / np.float32(interpolation_scale)
  gw = np.arange(w, dtype=np.float32) / np.float32(w / base_size) / np.float32(interpolation_scale)
  pos_w, pos_h = np.meshgrid(gw, gh, indexing="xy")          # both [h, w]
  emb = np.concatenate([sincos_1d(dim // 2, pos_w), sincos_1d(dim // 2, pos_h)], axis=1)
  return emb.astype(np.float32)


TIMESTEP_SINUSOID_DIM = 256


def timestep_sinusoid(t: jax.Array, dim: int = TIMESTEP_SINUSOID_DIM,
                      max_period: float = 10000.0) -> jax.Array:
  """diffusers `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`: t [M] -> [M, dim]
  = [cos(t f), sin(t f)], f_i = exp(-ln(max_period) i / (dim/2)), float32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  arg = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=-1)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
  """LayerNorm without affine parameters, float32 statistics (biased variance, like torch)."""
  x = x.astype(jnp.float32)
  xc = x - jnp.mean(x, axis=-1, keepdims=True)
  return xc * jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)


def micro_conditions(batch: int, height_px: int, width_px: int) -> dict[str, jax.Array]:
  """`added_cond_kwargs` of PixArtAlphaPipeline for a [batch] of height×width-pixel images."""
  res = jnp.tile(jnp.asarray([[height_px, width_px]], jnp.float32), (batch, 1))
  return {"resolution": res, "aspect_ratio": jnp.full((batch, 1), height_px / width_px,
                                                      jnp.float32)}


def _dense(features: int, name: str, dtype, param_dtype, precision, zero: bool = False):
  init = nn.initializers.zeros_init() if zero else nn.initializers.xavier_uniform()
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, precision=precision,
                  kernel_init=init, name=name)


class Mlp2(nn.Module):
  """linear_1 -> act -> linear_2 (TimestepEmbedding: silu; PixArtAlphaTextProjection: tanh-GELU)."""
  hidden: int
  out: int
  act: str = "silu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None
  zero_out: bool = False  # linear_2 starts at zero (an added embedding that starts as a no-op).

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = _dense(self.hidden, "linear_1", self.dtype, self.param_dtype, self.precision)(x)
    h = nn.silu(h) if self.act == "silu" else jax.nn.gelu(h, approximate=True)
    return _dense(self.out, "linear_2", self.dtype, self.param_dtype, self.precision,
                  zero=self.zero_out)(h)


class Attention(nn.Module):
  """Multi-head attention (diffusers `Attention`): to_q/to_k/to_v [in, heads·head_dim], to_out.

  x [B,T,D], context [B,S,Dc] (None: self-attention), mask [B,S] (True/1 = attend) -> [B,T,D].
  """
  heads: int
  head_dim: int
  use_bias: bool = True
  zero_out: bool = False
  attention_impl: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x, context=None, mask=None):
    inner = self.heads * self.head_dim
    dense = lambda n, name, zero=False: nn.Dense(
        n, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
        precision=self.precision, name=name,
        kernel_init=nn.initializers.zeros_init() if zero else nn.initializers.xavier_uniform())
    context = x if context is None else context
    split = lambda a: a.reshape(a.shape[:2] + (self.heads, self.head_dim))
    q = split(dense(inner, "to_q")(x))
    k = split(dense(inner, "to_k")(context))
    v = split(dense(inner, "to_v")(context))
    if mask is not None:
      mask = jnp.asarray(mask).astype(bool)[:, None, None, :]          # [B,1,1,S]
    # The attention matmuls take no precision argument: HIGHEST on the module sets the default.
    exact = self.precision in (jax.lax.Precision.HIGHEST, "highest")
    with jax.default_matmul_precision("highest") if exact else contextlib.nullcontext():
      o = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=self.attention_impl)
    o = o.reshape(o.shape[:2] + (inner,))
    return nn.Dense(x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype,
                    precision=self.precision, name="to_out",
                    kernel_init=(nn.initializers.zeros_init() if self.zero_out
                                 else nn.initializers.xavier_uniform()))(o)


class PixArtBlock(nn.Module):
  """BasicTransformerBlock(norm_type='ada_norm_single'): x [B,N,D] float32, temb [B,6D],
  context [B,L,D] (or None without cross-attention), mask [B,L] -> [B,N,D] float32."""
  heads: int
  head_dim: int
  cross_attention: bool = True
  use_bias: bool = True
  norm_eps: float = 1e-6
  attention_impl: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x, temb, context, mask):
    dim = x.shape[-1]
    table = self.param("scale_shift_table", lambda k, s, d: jax.random.normal(k, s, d) / dim**0.5,
                       (6, dim), self.param_dtype)
    mod = table.astype(jnp.float32)[None] + temb.astype(jnp.float32).reshape(-1, 6, dim)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=1)
    kw = dict(heads=self.heads, head_dim=self.head_dim, use_bias=self.use_bias,
              attention_impl=self.attention_impl, dtype=self.dtype,
              param_dtype=self.param_dtype, precision=self.precision)
    h = layer_norm(x, self.norm_eps) * (1 + scale_msa) + shift_msa
    x = x + gate_msa * Attention(**kw, name="attn1")(h).astype(jnp.float32)
    if self.cross_attention:   # PixArt applies no norm before the cross-attention.
      x = x + Attention(**kw, zero_out=True, name="attn2")(x, context, mask).astype(jnp.float32)
    h = layer_norm(x, self.norm_eps) * (1 + scale_mlp) + shift_mlp
    h = _dense(4 * dim, "net_0_proj", self.dtype, self.param_dtype, self.precision)(h)
    h = _dense(dim, "net_2", self.dtype, self.param_dtype, self.precision)(
        jax.nn.gelu(h, approximate=True))
    return x + gate_mlp * h.astype(jnp.float32)


class PixArtTransformer(nn.Module):
  """diffusers `PixArtTransformer2DModel` (fields = its config names; see `from_diffusers_config`).

  __call__(x [B,H,W,in_channels] latents (NHWC), timestep [B] (DDPM t in [0, 1000), float),
           encoder_hidden_states [B,L,caption_channels] (T5 embeddings),
           encoder_attention_mask [B,L] (1 = token, 0 = padding) or None,
           added_cond_kwargs {'resolution': [B,2], 'aspect_ratio': [B,1]} (micro-conditions only),
           *, return_features=False)
    -> out [B,H,W,out_channels] float32 (ε = out[..., :in_channels] with learned sigma);
       with return_features: (out, {f"block{i}": tokens [B, N=H·W/p², D] float32}) after the
       blocks in `feature_blocks` (None: the last block; negative indices count from the end).

  H and W must be multiples of `patch_size`; any grid size works (the position embedding is
  computed for the actual grid, as diffusers does).
  Options: `remat` rematerialises each block in the backward pass; `attention_impl` is passed to
  `jax.nn.dot_product_attention` ('cudnn' for the fused GPU kernel, None = backend default);
  `final_float32` computes the output norm and projection in float32 whatever `dtype` is: an
  ε-prediction output rounded to bfloat16 (relative 2⁻⁹) becomes σ times that error in x0.
  """
  num_attention_heads: int = 16
  attention_head_dim: int = 72
  in_channels: int = 4
  out_channels: int | None = 8
  num_layers: int = 28
  cross_attention_dim: int | None = 1152
  attention_bias: bool = True
  sample_size: int = 128
  patch_size: int = 2
  norm_eps: float = 1e-6
  interpolation_scale: float | None = None
  use_additional_conditions: bool | None = None
  caption_channels: int | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None
  remat: bool = False
  feature_blocks: Sequence[int] | None = None
  attention_impl: str | None = None
  final_float32: bool = False
  # A student that takes the guidance scale w [B] as an input (`guidance=`): sinusoid(1000·w) →
  # MLP whose last layer starts at zero, added to the timestep embedding; not a diffusers field.
  guidance_embedding: bool = False

  # ------------------------------------------------------------------ derived configuration
  @property
  def inner_dim(self) -> int:
    return self.num_attention_heads * self.attention_head_dim

  @property
  def out_dim(self) -> int:
    return self.in_channels if self.out_channels is None else self.out_channels

  @property
  def micro_conditioned(self) -> bool:
    if self.use_additional_conditions is None:
      return self.sample_size == 128
    return bool(self.use_additional_conditions)

  @property
  def pos_interpolation_scale(self) -> float:
    if self.interpolation_scale is not None:
      return self.interpolation_scale
    return max(self.sample_size // 64, 1)

  def diffusers_config(self) -> dict:
    """The `PixArtTransformer2DModel` config (config.json fields) of this module."""
    return {"num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim, "in_channels": self.in_channels,
            "out_channels": self.out_channels, "num_layers": self.num_layers,
            "cross_attention_dim": self.cross_attention_dim,
            "attention_bias": self.attention_bias, "sample_size": self.sample_size,
            "patch_size": self.patch_size, "norm_eps": self.norm_eps,
            "interpolation_scale": self.interpolation_scale,
            "use_additional_conditions": self.use_additional_conditions,
            "caption_channels": self.caption_channels, **FIXED_CONFIG,
            "num_embeds_ada_norm": 1000, "upcast_attention": False, "norm_num_groups": 32}

  def _check(self):
    d = self.inner_dim
    if self.caption_channels is not None and self.cross_attention_dim not in (None, d):
      raise ValueError(f"PixArt config: cross_attention_dim={self.cross_attention_dim} must equal "
                       f"num_attention_heads·attention_head_dim={d} when caption_channels is set")
    if self.micro_conditioned and d % 3:
      raise ValueError(f"PixArt config: micro-conditions need inner_dim % 3 == 0, got {d}")

  # ------------------------------------------------------------------------------- forward
  @nn.compact
  def __call__(self, x, timestep, encoder_hidden_states, encoder_attention_mask=None,
               added_cond_kwargs: Mapping[str, jax.Array] | None = None, *,
               return_features: bool = False, guidance: jax.Array | None = None):
    self._check()
    b, hh, ww, c = x.shape
    p, d = self.patch_size, self.inner_dim
    if c != self.in_channels or hh % p or ww % p:
      raise ValueError(f"PixArt: x must be [B,H,W,{self.in_channels}] with H, W multiples of "
                       f"{p}, got {x.shape}")
    gh, gw = hh // p, ww // p
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)

    # 1. Input: patch embedding + fixed position embedding.
    tok = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", name="pos_embed_proj",
                  kernel_init=nn.initializers.xavier_uniform(), **common)(x)
    pos = sincos_2d(d, (gh, gw), self.sample_size // p, self.pos_interpolation_scale)
    h = tok.reshape(b, gh * gw, d).astype(jnp.float32) + jnp.asarray(pos)[None]

    # 2. adaLN-single: timestep (+ micro-conditions) embedding and the shared modulation.
    t = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32).reshape(-1), (b,))
    emb = Mlp2(d, d, "silu", name="timestep_embedder", **common)(timestep_sinusoid(t))
    emb = emb.astype(jnp.float32)
    if self.guidance_embedding:
      if guidance is None:
        raise ValueError("PixArt with guidance_embedding needs guidance=[B] (the scale w)")
      g = jnp.broadcast_to(jnp.asarray(guidance, jnp.float32).reshape(-1), (b,))
      emb = emb + Mlp2(d, d, "silu", zero_out=True, name="guidance_embedder", **common)(
          timestep_sinusoid(1000.0 * g)).astype(jnp.float32)
    elif guidance is not None:
      raise ValueError("PixArt: guidance= given to a transformer without guidance_embedding")
    if self.micro_conditioned:
      if not added_cond_kwargs or "resolution" not in added_cond_kwargs \
          or "aspect_ratio" not in added_cond_kwargs:
        raise ValueError("PixArt with use_additional_conditions needs added_cond_kwargs="
                         "{'resolution': [B,2], 'aspect_ratio': [B,1]} (see micro_conditions)")
      s = d // 3
      res = jnp.asarray(added_cond_kwargs["resolution"], jnp.float32).reshape(-1)
      ar = jnp.asarray(added_cond_kwargs["aspect_ratio"], jnp.float32).reshape(-1)
      res_emb = Mlp2(s, s, "silu", name="resolution_embedder", **common)(timestep_sinusoid(res))
      ar_emb = Mlp2(s, s, "silu", name="aspect_ratio_embedder", **common)(timestep_sinusoid(ar))
      emb = emb + jnp.concatenate([res_emb.reshape(b, -1), ar_emb.reshape(b, -1)],
                                  axis=1).astype(jnp.float32)
    temb = _dense(6 * d, "adaln_single_linear", **common)(nn.silu(emb))

    # 3. Text tokens.
    ctx = encoder_hidden_states
    if ctx is not None and self.caption_channels is not None:
      ctx = Mlp2(d, d, "gelu_tanh", name="caption_projection", **common)(ctx)

    # 4. Blocks.
    block_cls = nn.remat(PixArtBlock) if self.remat else PixArtBlock
    requested = tuple(self.feature_blocks or (-1,))
    if any(not -self.num_layers <= i < self.num_layers for i in requested):
      raise ValueError(f"PixArt feature_blocks={requested}: indices must lie in "
                       f"[-{self.num_layers}, {self.num_layers})")
    wanted = {i % self.num_layers for i in requested}
    feats = {}
    for i in range(self.num_layers):
      h = block_cls(self.num_attention_heads, self.attention_head_dim,
                    cross_attention=self.cross_attention_dim is not None,
                    use_bias=self.attention_bias, norm_eps=self.norm_eps,
                    attention_impl=self.attention_impl, name=f"transformer_blocks_{i}",
                    **common)(h, temb, ctx, encoder_attention_mask)
      if return_features and i in wanted:
        feats[f"block{i}"] = h

    # 5. Output: modulated LN, projection, unpatchify to NHWC.
    table = self.param("scale_shift_table", lambda k, s, dt: jax.random.normal(k, s, dt) / d**0.5,
                       (2, d), self.param_dtype)
    shift, scale = jnp.split(table.astype(jnp.float32)[None] + emb[:, None], 2, axis=1)
    out_common = dict(common, dtype=jnp.float32) if self.final_float32 else common
    h = layer_norm(h, 1e-6) * (1 + scale) + shift  # float32
    h = nn.Dense(p * p * self.out_dim, name="proj_out", kernel_init=nn.initializers.zeros_init(),
                 **out_common)(h).astype(jnp.float32)
    out = h.reshape(b, gh, gw, p, p, self.out_dim).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, hh, ww, self.out_dim)
    return (out, feats) if return_features else out


def from_diffusers_config(config: Mapping[str, Any], **options) -> PixArtTransformer:
  """PixArtTransformer from a diffusers config.json dict; `options` set dtype, remat, etc.

  Raises ValueError naming the field for settings this port does not implement.
  """
  fields = set(PixArtTransformer.__dataclass_fields__) - {"parent", "name"}
  kw = {}
  for k, v in config.items():
    fixed = FIXED_CONFIG.get(k, LEGACY_DEFAULTS.get(k, "free"))
    if fixed != "free":
      if v != fixed and not (k == "dropout" and float(v) == 0.0):
        raise ValueError(f"PixArt config field {k}={v!r} is not supported (only {fixed!r})")
    elif k in fields:
      kw[k] = v
    elif k not in IGNORED_CONFIG:
      raise ValueError(f"PixArt config: unknown field {k!r}")
  return PixArtTransformer(**kw, **options)


def sharding_rules() -> list[tuple[str, str]]:
  """(regex, tactic) rules for `engine/sharding.py` over PixArt parameter paths.

  'tp_out': the output (last) dim of a kernel/bias over the `tensor` mesh axis (heads of
  to_q/k/v, MLP hidden units), the other dim FSDP; 'tp_in': the input (first) dim of to_out /
  the MLP down-projection over `tensor`. Without a tensor axis both reduce to 'fsdp'.
  Modulation tables and small vectors replicate.
  """
  blk = r"transformer_blocks_\d+/"
  return [(blk + r"attn[12]/to_[qkv]/(kernel|bias)$", "tp_out"),
          (blk + r"attn[12]/to_out/kernel$", "tp_in"),
          (blk + r"net_0_proj/(kernel|bias)$", "tp_out"),
          (blk + r"net_2/kernel$", "tp_in"),
          (r"scale_shift_table$", "replicate"),
          (r"/bias$", "replicate")]
