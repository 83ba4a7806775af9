"""T5 encoder (transformers' `T5EncoderModel`, 5.23) in Flax linen: the text side of PixArt-α.

Written from the architecture of transformers' PyTorch module (parity: tests/test_t5.py):

  ids [B,L] int --shared embedding [V,D]--> h [B,L,D]   (no scaling, no absolute positions)
  each block: h += SelfAttention(T5LayerNorm(h))  then  h += FF(T5LayerNorm(h))
  final: T5LayerNorm(h) -> [B,L,D] float32 (the "last hidden state" PixArt reads)

* T5LayerNorm is RMS normalisation with a scale and no bias: x·rsqrt(mean(x²) + ε)·w.
* Attention has no 1/√d_kv scaling (T5 folds it into the q initialisation) and no biases; its
  logits get a relative position bias, a learnt [num_buckets, heads] table indexed by the
  bucket of (key − query) (bidirectional buckets, logarithmic beyond num_buckets/4), computed
  once in block 0 and shared by every block; padded keys (mask 0) are excluded.
* FF: 'relu' is wo(relu(wi x)); 'gated-gelu' (T5 v1.1, PixArt's T5-XXL) is
  wo(gelu_tanh(wi_0 x) · wi_1 x), gelu_tanh = transformers' gelu_new.
Rows at padded positions are computed like transformers' but carry no meaning.

Parameter names mirror the PyTorch state_dict (`block_0/layer_0_SelfAttention/q/kernel` <->
`encoder.block.0.layer.0.SelfAttention.q.weight`, `shared/embedding` <-> `shared.weight`), see
`fdistill_jax.convert.t5`; Dense kernels are [in, out]. Initialisation is transformers'
(`T5PreTrainedModel._init_weights`, initializer_factor 1): embedding N(0, 1), q N(0, 1/(D·d_kv)),
k and v N(0, 1/D), o N(0, 1/(H·d_kv)), relative bias N(0, 1/D), wi N(0, 1/D), wo N(0, 1/d_ff),
norms 1.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEED_FORWARD = ("relu", "gated-gelu")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """The fields of transformers' T5Config that an encoder uses (same names and defaults as a
  T5 v1.1 config, small sizes)."""
  vocab_size: int = 259
  d_model: int = 64
  d_kv: int = 16
  d_ff: int = 128
  num_layers: int = 2
  num_heads: int = 4
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "gated-gelu"

  def __post_init__(self):
    if self.feed_forward_proj not in FEED_FORWARD:
      raise ValueError(f"T5Config.feed_forward_proj={self.feed_forward_proj!r}: allowed "
                       f"{FEED_FORWARD}")
    if self.relative_attention_num_buckets < 4:
      raise ValueError("T5Config.relative_attention_num_buckets must be >= 4, got "
                       f"{self.relative_attention_num_buckets}")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "T5Config":
    """From a transformers config.json dict (other keys ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: d[k] for k in names if k in d})

  def to_transformers(self) -> dict:
    """config.json fields of a transformers T5EncoderModel with this architecture."""
    gated = self.feed_forward_proj == "gated-gelu"
    return {"architectures": ["T5EncoderModel"], "model_type": "t5",
            "vocab_size": self.vocab_size, "d_model": self.d_model, "d_kv": self.d_kv,
            "d_ff": self.d_ff, "num_layers": self.num_layers, "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "feed_forward_proj": self.feed_forward_proj,
            "dense_act_fn": "gelu_new" if gated else "relu", "is_gated_act": gated,
            "dropout_rate": 0.0, "initializer_factor": 1.0, "is_encoder_decoder": False,
            "is_decoder": False, "use_cache": False, "pad_token_id": 0, "eos_token_id": 1,
            "decoder_start_token_id": 0, "tie_word_embeddings": True, "dtype": "float32"}


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int,
                             max_distance: int) -> np.ndarray:
  """Bidirectional T5 bucket of each relative position (key − query), int32, same shape.

  Half the buckets for keys after the query; of each half, distances below num_buckets/4 get
  a bucket each, larger ones share log-spaced buckets up to max_distance (then the last one).
  The logarithm is taken in float32, as transformers does, so the truncation agrees.
  """
  rp = np.asarray(relative_position, np.int64)
  half = num_buckets // 2
  out = (rp > 0).astype(np.int64) * half
  rp = np.abs(rp)
  max_exact = half // 2
  with np.errstate(divide="ignore"):  # log(0) for rp = 0: discarded by is_small below.
    scaled = (np.log(rp.astype(np.float32) / np.float32(max_exact))
              / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact))
  large = max_exact + np.where(np.isfinite(scaled), scaled, 0).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (out + np.where(rp < max_exact, rp, large)).astype(np.int32)


def position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bucket [L, L] of (query i, key j), a constant of the sequence length."""
  pos = np.arange(length)
  return relative_position_bucket(pos[None, :] - pos[:, None], num_buckets, max_distance)


class T5LayerNorm(nn.Module):
  """RMS norm with a scale and no bias or centring; float32 statistics."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.param("weight", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x = x.astype(jnp.float32)
    return w * (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + self.eps))


def _dense(features: int, std: float, name: str, dtype) -> nn.Dense:
  return nn.Dense(features, use_bias=False, name=name, dtype=dtype,
                  kernel_init=nn.initializers.normal(std))


class T5Attention(nn.Module):
  """Unscaled multi-head self-attention with the (given or own) relative position bias."""
  config: T5Config
  has_relative_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array | None):
    """x [B,L,D], mask [B,L] (1 = token), bias [1,H,L,L] or None (block 0 builds it) ->
    (out [B,L,D] float32, bias [1,H,L,L])."""
    c = self.config
    b, length, d = x.shape
    inner = c.num_heads * c.d_kv
    split = lambda t: t.reshape(b, length, c.num_heads, c.d_kv)
    q = split(_dense(inner, (d * c.d_kv) ** -0.5, "q", self.dtype)(x))
    k = split(_dense(inner, d ** -0.5, "k", self.dtype)(x))
    v = split(_dense(inner, d ** -0.5, "v", self.dtype)(x))
    if bias is None:
      if self.has_relative_bias:
        table = nn.Embed(c.relative_attention_num_buckets, c.num_heads,
                         embedding_init=nn.initializers.normal(d ** -0.5),
                         name="relative_attention_bias")
        buckets = position_buckets(length, c.relative_attention_num_buckets,
                                   c.relative_attention_max_distance)
        bias = jnp.transpose(table(jnp.asarray(buckets)), (2, 0, 1))[None].astype(jnp.float32)
      else:
        bias = jnp.zeros((1, c.num_heads, length, length), jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias
    # transformers adds finfo.min at padded keys: the same softmax wherever a key is real.
    keep = (mask > 0)[:, None, None, :]
    logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v).reshape(b, length, inner)
    out = _dense(d, inner ** -0.5, "o", self.dtype)(out)
    return out.astype(jnp.float32), bias


class T5FeedForward(nn.Module):
  config: T5Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = self.config
    if c.feed_forward_proj == "gated-gelu":
      h = (jax.nn.gelu(_dense(c.d_ff, c.d_model ** -0.5, "wi_0", self.dtype)(x), approximate=True)
           * _dense(c.d_ff, c.d_model ** -0.5, "wi_1", self.dtype)(x))
    else:
      h = jax.nn.relu(_dense(c.d_ff, c.d_model ** -0.5, "wi", self.dtype)(x))
    return _dense(c.d_model, c.d_ff ** -0.5, "wo", self.dtype)(h).astype(jnp.float32)


class T5Block(nn.Module):
  config: T5Config
  has_relative_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, mask, bias):
    eps = self.config.layer_norm_epsilon
    # layer_0 / layer_1 are transformers' T5LayerSelfAttention / T5LayerFF (their names).
    a, bias = T5Attention(self.config, self.has_relative_bias, self.dtype,
                          name="layer_0_SelfAttention")(
                              T5LayerNorm(eps, name="layer_0_layer_norm")(h), mask, bias)
    h = h + a
    f = T5FeedForward(self.config, self.dtype, name="layer_1_DenseReluDense")(
        T5LayerNorm(eps, name="layer_1_layer_norm")(h))
    return h + f, bias


class T5Encoder(nn.Module):
  """transformers' `T5EncoderModel` (see the module docstring).

  __call__(ids [B,L] int (0 = pad, 1 = </s>), mask [B,L] (1 = token, 0 = padding))
    -> last hidden state [B,L,d_model] float32.
  dtype: compute dtype of the matmuls (weights, norms and softmax stay float32).
  """
  config: T5Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    h = nn.Embed(c.vocab_size, c.d_model, embedding_init=nn.initializers.normal(1.0),
                 name="shared")(jnp.asarray(ids, jnp.int32)).astype(jnp.float32)
    bias = None
    for i in range(c.num_layers):
      h, bias = T5Block(c, i == 0, self.dtype, name=f"block_{i}")(h, mask, bias)
    return T5LayerNorm(c.layer_norm_epsilon, name="final_layer_norm")(h)


def init_params(config: T5Config, key: jax.Array, length: int = 8) -> dict:
  """transformers-style random parameters of `config` (the 'params' collection)."""
  ids = jnp.ones((1, length), jnp.int32)
  return T5Encoder(config).init(key, ids, jnp.ones((1, length)))["params"]
