"""The toy students (models/mlp.py MLPDenoiser) in PyTorch, loaded from an export folder.

    net = mlp_torch.load("runs/toy/export")          # metadata.json + params.safetensors
    x = net(sigma_init * z, torch.full((B,), sigma_init))   # one-step sample, z [B, dim]

A line-for-line PyTorch twin of the Flax module (torch is an interop dependency, never imported by
training). Flax Dense kernels are [in, out]; torch.nn.Linear weights are [out, in].
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch
from etils import epath
from torch import nn


class MLPDenoiser(nn.Module):
  """D(x, σ) = c_skip x + c_out F(c_in x, c_noise) with the Flax module's layer names."""

  def __init__(self, dim: int, hidden: int = 128, depth: int = 3, emb_dim: int = 64,
               label_dim: int = 0, sigma_data: float = 1.0):
    super().__init__()
    self.emb_dim, self.label_dim, self.sigma_data, self.depth = emb_dim, label_dim, sigma_data, depth
    self.emb0 = nn.Linear(emb_dim, hidden)
    self.label = nn.Linear(label_dim, hidden, bias=False) if label_dim else None
    self.emb1 = nn.Linear(hidden, hidden)
    self.inp = nn.Linear(dim, hidden)
    ln = lambda: nn.LayerNorm(hidden, eps=1e-6)  # Flax LayerNorm's epsilon.
    self.norms = nn.ModuleList(ln() for _ in range(depth))
    self.b0 = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
    self.bemb = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
    self.b1 = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
    self.out_norm = ln()
    self.out = nn.Linear(hidden, dim)

  def _fourier(self, c_noise):
    half = self.emb_dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    ang = c_noise[:, None] * freqs[None] * 100.0
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)

  def forward(self, x, sigma, labels=None):
    """x [B, dim] float32, sigma [B] (or scalar), labels [B, label_dim] | None -> D(x) [B, dim]."""
    b = x.shape[0]
    sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(b)
    s2, d2 = sigma ** 2, self.sigma_data ** 2
    c_skip, c_out = d2 / (s2 + d2), sigma * self.sigma_data / torch.sqrt(s2 + d2)
    c_in, c_noise = 1.0 / torch.sqrt(d2 + s2), torch.log(sigma) / 4.0
    silu = nn.functional.silu
    emb = silu(self.emb0(self._fourier(c_noise)))
    if self.label is not None:
      emb = emb + self.label(labels if labels is not None else x.new_zeros(b, self.label_dim))
    emb = self.emb1(emb)
    h = self.inp(c_in[:, None] * x) + emb
    for i in range(self.depth):
      r = self.b0[i](silu(self.norms[i](h))) + self.bemb[i](silu(emb))
      h = h + self.b1[i](silu(r))
    return c_skip[:, None] * x + c_out[:, None] * self.out(silu(self.out_norm(h)))


def _torch_names(depth: int) -> dict[str, str]:
  """Flax path prefix -> torch module name."""
  names = {n: n for n in ("emb0", "label", "emb1", "inp", "out_norm", "out")}
  for i in range(depth):
    names.update({f"norm{i}": f"norms.{i}", f"block{i}_0": f"b0.{i}",
                  f"block{i}_emb": f"bemb.{i}", f"block{i}_1": f"b1.{i}"})
  return names


def state_dict_from_flat(flat: dict[str, np.ndarray], depth: int) -> dict[str, torch.Tensor]:
  """Flat Flax params ('inp/kernel', 'norm0/scale', ...) -> this module's state_dict."""
  names, sd = _torch_names(depth), {}
  for key, a in flat.items():
    layer, leaf = key.rsplit("/", 1)
    if layer not in names:
      raise ValueError(f"params.safetensors: unexpected tensor {key!r} for an MLPDenoiser")
    t = torch.from_numpy(np.array(a, np.float32))
    if leaf == "kernel":
      sd[f"{names[layer]}.weight"] = t.T.contiguous()
    else:  # Dense/LayerNorm bias, LayerNorm scale.
      sd[f"{names[layer]}.{'weight' if leaf == 'scale' else 'bias'}"] = t
  return sd


def load(folder: str) -> MLPDenoiser:
  """The exported MLP student of `folder` (from fdistill_jax.export), in eval mode."""
  from safetensors.numpy import load as load_bytes
  folder = epath.Path(folder)
  meta = json.loads((folder / "metadata.json").read_text())
  arch = meta["architecture"]
  if arch["kind"] != "MLPDenoiser":
    raise ValueError(f"{folder}/metadata.json: architecture {arch['kind']!r} is not MLPDenoiser")
  net = MLPDenoiser(**arch["kwargs"])
  flat = load_bytes((folder / "params.safetensors").read_bytes())
  net.load_state_dict(state_dict_from_flat(flat, arch["kwargs"]["depth"]), strict=True)
  return net.eval()
