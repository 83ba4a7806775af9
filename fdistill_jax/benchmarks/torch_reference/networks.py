"""EDM's SongUNet (DDPM++) and DhariwalUNet (ADM) with EDMPrecond in PyTorch, NCHW.

Module and parameter names are EDM's state_dict names (`model.enc.16x16_block0.conv0.weight`),
so `load_state_dict(edm_state_dict.variables_to_state_dict(flax_variables, flax_module))` shares
weights with the Flax port. Parameters start at zero: they are always loaded.
Supported: SongUNet with positional embedding and standard encoder/decoder (EDM's CIFAR-10
DDPM++ config) and DhariwalUNet; other SongUNet variants (NCSN++) raise ValueError.

`forward(..., return_features=True)` also returns the discriminator features under the names the
Flax experiment uses (`enc<res>`: encoder output after the last block at resolution res,
`bottleneck`: output of the two middle blocks), see fdistill_jax/models/edm/songunet.py.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import checkpoint as torch_checkpoint


class Linear(nn.Module):
  """x [..., in] -> [..., out]; weight [out, in]."""

  def __init__(self, cin: int, cout: int, bias: bool = True):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(cout, cin))
    self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

  def forward(self, x):
    return F.linear(x, self.weight.to(x.dtype),
                    None if self.bias is None else self.bias.to(x.dtype))


class Conv2d(nn.Module):
  """Optional 2x up/down resampling with a FIR filter buffer, then a 'same' k x k conv (k=0: none)."""

  def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True, up: bool = False,
               down: bool = False, resample_filter=(1, 1)):
    super().__init__()
    self.cin, self.cout, self.kernel, self.up, self.down = cin, cout, kernel, up, down
    self.weight = nn.Parameter(torch.zeros(cout, cin, kernel, kernel)) if kernel else None
    self.bias = nn.Parameter(torch.zeros(cout)) if kernel and bias else None
    f = torch.as_tensor(resample_filter, dtype=torch.float32)
    f = (f.ger(f) / f.sum().square())[None, None]
    self.register_buffer("resample_filter", f if up or down else None)

  def forward(self, x):
    w = None if self.weight is None else self.weight.to(x.dtype)
    f = self.resample_filter
    f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
    c = x.shape[1]
    if self.up:
      x = F.conv_transpose2d(x, (f * 4).to(x.dtype).tile(c, 1, 1, 1), groups=c, stride=2,
                             padding=f_pad)
    if self.down:
      x = F.conv2d(x, f.to(x.dtype).tile(c, 1, 1, 1), groups=c, stride=2, padding=f_pad)
    if w is not None:
      x = F.conv2d(x, w, padding=self.kernel // 2)
    if self.bias is not None:
      x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
    return x


class GroupNorm(nn.Module):
  """min(32, C // 4) groups, affine."""

  def __init__(self, channels: int, eps: float = 1e-5):
    super().__init__()
    self.groups, self.eps = min(32, channels // 4), eps
    self.weight = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))

  def forward(self, x):
    return F.group_norm(x, self.groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
  """Residual block with optional up/down and self-attention (q, k, v interleaved per channel)."""

  def __init__(self, cin: int, cout: int, emb_channels: int, up=False, down=False,
               attention=False, num_heads=None, channels_per_head=64, dropout=0.0,
               skip_scale=1.0, eps=1e-5, resample_filter=(1, 1), resample_proj=False,
               adaptive_scale=True):
    super().__init__()
    self.in_channels, self.out_channels = cin, cout
    self.num_heads = 0 if not attention else (
        num_heads if num_heads is not None else cout // channels_per_head)
    self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
    self.checkpoint = False  # Activation checkpointing (set by TorchFDistill).
    self.norm0 = GroupNorm(cin, eps)
    self.conv0 = Conv2d(cin, cout, 3, up=up, down=down, resample_filter=resample_filter)
    self.affine = Linear(emb_channels, cout * (2 if adaptive_scale else 1))
    self.norm1 = GroupNorm(cout, eps)
    self.conv1 = Conv2d(cout, cout, 3)
    self.skip = None
    if cout != cin or up or down:
      kernel = 1 if resample_proj or cout != cin else 0
      self.skip = Conv2d(cin, cout, kernel, up=up, down=down, resample_filter=resample_filter)
    if self.num_heads:
      self.norm2 = GroupNorm(cout, eps)
      self.qkv = Conv2d(cout, cout * 3, 1)
      self.proj = Conv2d(cout, cout, 1)

  def forward(self, x, emb):
    if self.checkpoint and self.training and torch.is_grad_enabled():
      return torch_checkpoint.checkpoint(self._forward, x, emb, use_reentrant=False)
    return self._forward(x, emb)

  def _forward(self, x, emb):
    orig = x
    x = self.conv0(F.silu(self.norm0(x)))
    params = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype)
    if self.adaptive_scale:
      scale, shift = params.chunk(2, dim=1)
      x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
    else:
      x = F.silu(self.norm1(x + params))
    x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
    x = (x + (self.skip(orig) if self.skip is not None else orig)) * self.skip_scale
    if self.num_heads:
      n, c, h, w = x.shape
      ch = c // self.num_heads
      q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, ch, 3, h * w).unbind(2)
      with torch.autocast(x.device.type, enabled=False):  # Logits and softmax in float32.
        logits = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(ch))
        wts = torch.softmax(logits, dim=2)
      a = torch.einsum("nqk,nck->ncq", wts.to(v.dtype), v)
      x = (self.proj(a.reshape(n, c, h, w)) + x) * self.skip_scale
    return x


class PositionalEmbedding(nn.Module):
  """[cos(x f), sin(x f)], f_i = (1/max_positions)^(i / (N/2 - endpoint)), table in float32."""

  def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
    super().__init__()
    self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

  def forward(self, x):
    half = self.num_channels // 2
    f = torch.arange(half, dtype=torch.float32, device=x.device) / (half - int(self.endpoint))
    f = (1 / self.max_positions) ** f
    x = x.ger(f.to(x.dtype))
    return torch.cat([x.cos(), x.sin()], dim=1)


def _run(blocks: nn.ModuleDict, x, emb, skips=None, feats=None, num_blocks=0, unet="enc"):
  """Runs an encoder (skips filled, features recorded) or a decoder (skips consumed)."""
  for name, block in blocks.items():
    if isinstance(block, UNetBlock):
      if unet == "dec" and x.shape[1] != block.in_channels:
        x = torch.cat([x, skips.pop().to(x.dtype)], dim=1)
      x = block(x, emb)
    elif unet == "dec":
      return x, name  # The output head, handled by the caller.
    else:
      x = block(x)
    if unet == "enc":
      skips.append(x)
      if name.endswith(f"_block{num_blocks - 1}"):
        feats[f"enc{int(name.split('x')[0])}"] = x
    elif name.endswith("_in1"):
      feats["bottleneck"] = x
  return x, None


def _unet_levels(in_channels, img_resolution, model_channels, first_out, channel_mult,
                 num_blocks, attn_resolutions, dec_attention, kw):
  """(encoder, decoder, channels out) of EDM's UNet layout, in its ModuleDict order.

  The two UNets differ only in the first conv's width (first_out) and in which decoder blocks
  attend (dec_attention(idx, res)); the encoder attends at every block of attn_resolutions.
  """
  enc, dec, cout = nn.ModuleDict(), nn.ModuleDict(), in_channels
  for level, mult in enumerate(channel_mult):
    res = img_resolution >> level
    if level == 0:
      cin, cout = cout, first_out
      enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
    else:
      enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **kw)
    for idx in range(num_blocks):
      cin, cout = cout, model_channels * mult
      enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions,
                                                 **kw)
  skips = [getattr(b, "out_channels", getattr(b, "cout", None)) for b in enc.values()]
  for level, mult in reversed(list(enumerate(channel_mult))):
    res = img_resolution >> level
    if level == len(channel_mult) - 1:
      dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **kw)
      dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **kw)
    else:
      dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **kw)
    for idx in range(num_blocks + 1):
      cin, cout = cout + skips.pop(), model_channels * mult
      dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=dec_attention(idx, res),
                                                 **kw)
  return enc, dec, cout


class SongUNet(nn.Module):
  """DDPM++ (positional embedding, standard encoder and decoder) with EDM's arguments."""

  def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
               model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4,
               attn_resolutions=(16,), dropout=0.10, label_dropout=0.0,
               embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
               decoder_type="standard", resample_filter=(1, 1)):
    super().__init__()
    if (embedding_type, encoder_type, decoder_type) != ("positional", "standard", "standard"):
      raise ValueError("torch reference SongUNet: only embedding_type='positional', "
                       "encoder_type='standard', decoder_type='standard' (DDPM++) are written, "
                       f"got {embedding_type!r}, {encoder_type!r}, {decoder_type!r}")
    self.label_dim, self.label_dropout, self.num_blocks = label_dim, label_dropout, num_blocks
    emb_ch, noise_ch = model_channels * channel_mult_emb, model_channels * channel_mult_noise
    kw = dict(emb_channels=emb_ch, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5),
              eps=1e-6, resample_filter=resample_filter, resample_proj=True,
              adaptive_scale=False)
    self.map_noise = PositionalEmbedding(noise_ch, endpoint=True)
    self.map_label = Linear(label_dim, noise_ch) if label_dim else None
    self.map_augment = Linear(augment_dim, noise_ch, bias=False) if augment_dim else None
    self.map_layer0 = Linear(noise_ch, emb_ch)
    self.map_layer1 = Linear(emb_ch, emb_ch)
    self.enc, self.dec, cout = _unet_levels(
        in_channels, img_resolution, model_channels, model_channels, channel_mult, num_blocks,
        attn_resolutions, lambda idx, res: idx == num_blocks and res in attn_resolutions, kw)
    res = img_resolution  # The output head follows the last full-resolution decoder block.
    self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
    self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3)

  def forward(self, x, noise_labels, class_labels=None, augment_labels=None,
              return_features=False):
    emb = self.map_noise(noise_labels)
    emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)  # [sin, cos]
    if self.map_label is not None:
      emb = emb + self.map_label(_labels(self, class_labels, x) * math.sqrt(self.label_dim))
    if self.map_augment is not None and augment_labels is not None:
      emb = emb + self.map_augment(augment_labels)
    emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
    skips, feats = [], {}
    x, _ = _run(self.enc, x, emb, skips, feats, self.num_blocks, "enc")
    x, head = _run(self.dec, x, emb, skips, feats, unet="dec")
    res = head.split("_")[0]
    x = self.dec[f"{res}_aux_conv"](F.silu(self.dec[f"{res}_aux_norm"](x)))
    return (x, feats) if return_features else x


class DhariwalUNet(nn.Module):
  """ADM with EDM's arguments; attention heads = out_channels // 64."""

  def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
               model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
               attn_resolutions=(32, 16, 8), dropout=0.10, label_dropout=0.0):
    super().__init__()
    self.label_dim, self.label_dropout, self.num_blocks = label_dim, label_dropout, num_blocks
    emb_ch = model_channels * channel_mult_emb
    kw = dict(emb_channels=emb_ch, channels_per_head=64, dropout=dropout, eps=1e-5,
              adaptive_scale=True)
    self.map_noise = PositionalEmbedding(model_channels, endpoint=False)
    self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
    self.map_layer0 = Linear(model_channels, emb_ch)
    self.map_layer1 = Linear(emb_ch, emb_ch)
    self.map_label = Linear(label_dim, emb_ch, bias=False) if label_dim else None
    self.enc, self.dec, cout = _unet_levels(
        in_channels, img_resolution, model_channels, model_channels * channel_mult[0],
        channel_mult, num_blocks, attn_resolutions, lambda idx, res: res in attn_resolutions, kw)
    self.out_norm = GroupNorm(cout, eps=1e-5)
    self.out_conv = Conv2d(cout, out_channels, 3)

  def forward(self, x, noise_labels, class_labels=None, augment_labels=None,
              return_features=False):
    emb = self.map_noise(noise_labels)
    if self.map_augment is not None and augment_labels is not None:
      emb = emb + self.map_augment(augment_labels)
    emb = self.map_layer1(F.silu(self.map_layer0(emb)))
    if self.map_label is not None:
      emb = emb + self.map_label(_labels(self, class_labels, x))
    emb = F.silu(emb)
    skips, feats = [], {}
    x, _ = _run(self.enc, x, emb, skips, feats, self.num_blocks, "enc")
    x, _ = _run(self.dec, x, emb, skips, feats, unet="dec")
    x = self.out_conv(F.silu(self.out_norm(x)))
    return (x, feats) if return_features else x


def _labels(net, class_labels, x):
  """Class labels [B or 1, label_dim] (zeros if None), with label dropout in training."""
  if class_labels is None:
    class_labels = torch.zeros(1, net.label_dim, device=x.device)
  if net.training and net.label_dropout:
    keep = torch.rand(class_labels.shape[0], 1, device=x.device) >= net.label_dropout
    class_labels = class_labels * keep.to(class_labels.dtype)
  return class_labels


class EDMPrecond(nn.Module):
  """D(x; σ) = c_skip x + c_out F(c_in x, ln(σ)/4, labels), wrapper in float32 like EDM.

  x [B, C, H, W]; sigma [B] or []; class_labels [B, label_dim] one-hot or None;
  returns D [B, C, H, W] float32 (and the features dict with return_features).
  """

  def __init__(self, model: nn.Module, label_dim: int = 0, sigma_data: float = 0.5):
    super().__init__()
    self.model, self.label_dim, self.sigma_data = model, label_dim, sigma_data

  def forward(self, x, sigma, class_labels=None, augment_labels=None, return_features=False):
    x = x.float()
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
    if self.label_dim == 0:
      class_labels = None
    elif class_labels is not None:
      class_labels = class_labels.float().reshape(-1, self.label_dim)
    sd = self.sigma_data
    c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
    c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
    c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
    c_noise = sigma.log() / 4
    out = self.model(c_in * x, c_noise.flatten(), class_labels, augment_labels,
                     return_features=return_features)
    f_x, feats = out if return_features else (out, None)
    d_x = c_skip * x + c_out * f_x.float()
    return (d_x, feats) if return_features else d_x


_PRECOND_KEYS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min",
                 "sigma_max", "sigma_data", "model_type")


def build_edm_precond(precond_kwargs: Mapping[str, Any]) -> EDMPrecond:
  """EDMPrecond(**precond_kwargs) as EDM's constructor takes them (the Flax builder's contract)."""
  kw = dict(precond_kwargs)
  model_type = kw.get("model_type", "DhariwalUNet")
  classes = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
  if model_type not in classes:
    raise ValueError(f"precond_kwargs['model_type']={model_type!r}: expected one of "
                     f"{sorted(classes)}")
  model_kw = {k: (tuple(v) if isinstance(v, (list, np.ndarray)) else v)
              for k, v in kw.items() if k not in _PRECOND_KEYS}
  ch, label_dim = int(kw["img_channels"]), int(kw.get("label_dim", 0))
  model = classes[model_type](img_resolution=int(kw["img_resolution"]), in_channels=ch,
                              out_channels=ch, label_dim=label_dim, **model_kw)
  return EDMPrecond(model, label_dim=label_dim, sigma_data=float(kw.get("sigma_data", 0.5)))


def set_activation_checkpointing(net: nn.Module, enabled: bool = True) -> None:
  """Recompute every UNetBlock in the backward pass (torch.utils.checkpoint)."""
  for m in net.modules():
    if isinstance(m, UNetBlock):
      m.checkpoint = enabled
