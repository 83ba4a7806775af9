"""FastGen's f-distill generator and critic steps in PyTorch (the maths of methods/fdistill.py).

Random draws are explicit inputs of the loss functions (`z`, `sigma`, `eps`, and `sigma_r`,
`eps_r` for the real branch), so a test can feed the draws the JAX loss makes and compare the
values. `TorchFDistill` owns the networks and optimizers and runs the two steps the way FastGen
runs them: AdamW per network (generator gradient clipped), EMA tracks updated on generator steps,
requires_grad toggled per phase. FastGen's EDM f-distill configs use float32 without autocast,
unfused AdamW, no torch.compile and no activation checkpointing; each of those is an option here
(`amp`, `fused_adam`, `compile`, `channels_last`, `checkpointing`) so that the benchmark can also
run the tuned PyTorch step at the precision of our bf16 configs.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fdistill_jax.benchmarks.torch_reference.networks import (build_edm_precond,
                                                              set_activation_checkpointing)

# h(r) of every divergence, FastGen's constant convention (fdistill_jax/divergences.py).
H_FUNCTIONS = {
    "rkl": torch.ones_like, "kl": lambda r: r, "js": lambda r: 1 - 1 / (1 + r),
    "sf": lambda r: 1 / (1 + r), "sh": torch.sqrt, "jf": lambda r: 1 + r,
    "neyman": lambda r: 1 / r.clamp_min(1e-8)}


# ------------------------------------------------------------------------------------ head
def _gn(channels: int) -> nn.GroupNorm:
  return nn.GroupNorm(min(32, channels // 4) or 1, channels, eps=1e-5)


class ConvHead(nn.Module):
  """FastGen's conv head: [Conv 4x4/s2 → GN → SiLU] down to 4x4, Conv 4x4/s4 → GN → SiLU, 1x1."""

  def __init__(self, cin: int, channels: int, res: int):
    super().__init__()
    convs, norms, c = [], [], cin
    while res > 4:
      convs.append(nn.Conv2d(c, channels, 4, 2, 1))
      norms.append(_gn(channels))
      c, res = channels, res // 2
    convs.append(nn.Conv2d(c, channels, 4, 4, 0))
    norms.append(_gn(channels))
    self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
    self.logit = nn.Conv2d(channels, 1, 1)

  def forward(self, x):
    for conv, norm in zip(self.convs, self.norms):
      x = F.silu(norm(conv(x)))
    return self.logit(x).flatten()


class MultiConvHead(nn.Module):
  """One head per named feature map; logits [B, heads]. Runs in float32 like the Flax head."""

  def __init__(self, shapes: dict, channels: int):
    super().__init__()
    self.keys = list(shapes)
    self.heads = nn.ModuleDict({k: ConvHead(c, channels, r) for k, (c, r) in shapes.items()})

  def forward(self, feats: dict):
    with torch.autocast(next(self.parameters()).device.type, enabled=False):
      return torch.stack([self.heads[k](feats[k].float()) for k in self.keys], dim=1)


def head_state_dict(flax_params: dict) -> dict:
  """Flax MultiConvHead params -> MultiConvHead.state_dict() (numpy)."""
  out = {}
  for name, p in flax_params.items():
    key = name[len("head_"):]
    convs = [n for n in ("down0", "down1", "down2", "down3", "down4", "to4", "to1") if n in p]
    for j, conv in enumerate(convs):
      out[f"heads.{key}.convs.{j}.weight"] = np.transpose(np.asarray(p[conv]["kernel"]),
                                                          (3, 2, 0, 1))
      out[f"heads.{key}.convs.{j}.bias"] = np.asarray(p[conv]["bias"])
      gn = p[f"GroupNorm_{j}"]
      out[f"heads.{key}.norms.{j}.weight"] = np.asarray(gn["scale"])
      out[f"heads.{key}.norms.{j}.bias"] = np.asarray(gn["bias"])
    out[f"heads.{key}.logit.weight"] = np.transpose(np.asarray(p["logit"]["kernel"]), (3, 2, 0, 1))
    out[f"heads.{key}.logit.bias"] = np.asarray(p["logit"]["bias"])
  return out


# ------------------------------------------------------------------------------------ losses
@dataclasses.dataclass(frozen=True)
class Spec:
  """The method and diffusion settings the losses read (from config.method / config.diffusion)."""
  divergence: str = "kl"
  ratio_normalization: bool = True
  ratio_ema: float = 0.0
  ratio_bins: int = 10
  ratio_lower: float = 0.1
  ratio_upper: float = 20.0
  logit_clip: float = 10.0
  gan_weight_gen: float = 1e-3
  gan_weight_disc: float = 1.0
  dm_normalize: bool = True
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  sigma_init: float = 80.0

  @classmethod
  def from_config(cls, cfg) -> "Spec":
    m, d = cfg.method, cfg.diffusion
    if m.get("disc_features", "teacher") != "teacher" or m.get("r1_weight", 0) or (
        m.get("dsm_weighting", "none") != "none"):
      raise ValueError("torch reference: only FastGen's f-distill (disc_features='teacher', "
                       "r1_weight=0, dsm_weighting='none') is written")
    return cls(m.divergence, m.ratio_normalization, m.ratio_ema, m.ratio_bins, m.ratio_lower,
               m.ratio_upper, m.logit_clip, m.gan_weight_gen, m.gan_weight_disc,
               m.get("dm_normalize", True), d.sigma_min, d.sigma_max, d.sigma_init)


def fdistill_weight(logits, sigma, bins, s: Spec):
  """(h̃ [B], new bins): ratio → time-bin normalisation → h → / mean h (no gradient)."""
  logits = logits.detach().float()
  if logits.ndim == 2:
    logits = logits.mean(1)
  ratio = logits.clamp(-s.logit_clip, s.logit_clip).exp().clamp(s.ratio_lower, s.ratio_upper)
  if s.ratio_normalization:
    n = bins.shape[0]
    width = (s.sigma_max - s.sigma_min) / n
    idx = torch.floor((sigma.detach().float() - s.sigma_min) / width).long().clamp(0, n - 1)
    onehot = F.one_hot(idx, n).float()
    count = onehot.sum(0)
    mean = (onehot * ratio[:, None]).sum(0) / (count + 1e-6)
    bins = torch.where(count > 0, bins * s.ratio_ema + (1 - s.ratio_ema) * mean, bins)
    ratio = ratio / (bins[idx] + 1e-6)
  h = H_FUNCTIONS[s.divergence](ratio).float()
  return h / (h.mean() + 1e-6), bins


def _bc(v, x):
  return v.reshape(-1, *([1] * (x.ndim - 1)))


def generator_loss(gen, fake, teacher, disc, labels, z, sigma, eps, bins, s: Spec):
  """L_G = ½ mean((x_g − sg(x_g − g))²) + λ_G mean softplus(−ℓ); returns (loss, metrics, bins).

  z, eps: [B, C, H, W]; sigma: [B]; labels [B, label_dim]. Gradients reach only `gen` through
  x_g (callers freeze `disc` and `teacher`; `fake` runs without gradient).
  """
  b = z.shape[0]
  x_g = gen(s.sigma_init * z, torch.full((b,), s.sigma_init, device=z.device), labels)
  x_t = x_g + _bc(sigma, x_g) * eps
  with torch.no_grad():
    fake_x0 = fake(x_t, sigma, labels).float()
  teacher_x0, feats = teacher(x_t, sigma, labels, return_features=True)
  teacher_x0 = teacher_x0.detach().float()
  logits = disc(feats)
  h, bins = fdistill_weight(logits, sigma, bins, s)
  gan = F.softplus(-logits.float()).mean()
  w = h
  if s.dm_normalize:
    w = w / ((x_g.detach().float() - teacher_x0).abs().flatten(1).mean(1) + 1e-6)
  grad = (fake_x0 - teacher_x0) * _bc(w, fake_x0)
  dm = 0.5 * (x_g.float() - (x_g.detach().float() - grad)).square().mean()
  loss = dm + s.gan_weight_gen * gan
  return loss, {"dm": dm.detach(), "gan_gen": gan.detach()}, bins


def critic_loss(gen, fake, teacher, disc, x_real, labels, z, sigma, eps, sigma_r, eps_r,
                s: Spec):
  """L = mean‖D_ψ(x_t) − x_g‖² + λ_D [softplus(ℓ_fake) + softplus(−ℓ_real)]; (loss, metrics)."""
  b = z.shape[0]
  with torch.no_grad():
    x_g = gen(s.sigma_init * z, torch.full((b,), s.sigma_init, device=z.device), labels).float()
  x_t = x_g + _bc(sigma, x_g) * eps
  dsm = (fake(x_t, sigma, labels).float() - x_g).square().mean()
  xr_t = x_real + _bc(sigma_r, x_real) * eps_r
  with torch.no_grad():
    feats_fake = teacher(x_t, sigma, labels, return_features=True)[1]
    feats_real = teacher(xr_t, sigma_r, labels, return_features=True)[1]
  lf, lr = disc(feats_fake).float(), disc(feats_real).float()
  gan = F.softplus(lf).mean() + F.softplus(-lr).mean()
  return dsm + s.gan_weight_disc * gan, {"dsm": dsm.detach(), "gan_disc": gan.detach()}


def karras_index_grid(s: Spec, num_levels: int = 1000, rho: float = 7.0) -> np.ndarray:
  """FastGen's ascending 1000-level Karras grid (float32)."""
  i = np.arange(num_levels, dtype=np.float64) / (num_levels - 1)
  a, b = s.sigma_max ** (1 / rho), s.sigma_min ** (1 / rho)
  return ((a + i * (b - a)) ** rho)[::-1].astype(np.float32).copy()


# ------------------------------------------------------------------------------------ steps
class TorchFDistill:
  """Generator, fake score, frozen teacher and head with AdamW, run as FastGen runs them.

  teacher_sd / head_sd: state_dicts (numpy or tensors) shared with the Flax run; precond_kwargs
  and head_shapes ({key: (channels, res)}) give the architectures; cfg: the run's config
  (optimizers, EMA decays, method). amp: None (float32) or torch.bfloat16.
  """

  def __init__(self, cfg, precond_kwargs, teacher_sd, head_sd, head_shapes, device="cpu",
               amp=None, channels_last=False, compile=False, fused_adam=False,
               checkpointing=False):
    self.s, self.device, self.amp = Spec.from_config(cfg), torch.device(device), amp
    t = lambda sd: {k: torch.tensor(np.asarray(v)) for k, v in sd.items()}
    self.teacher = build_edm_precond(precond_kwargs)
    self.teacher.load_state_dict(t(teacher_sd), strict=True)
    self.teacher.requires_grad_(False).eval()
    self.gen, self.fake = copy.deepcopy(self.teacher), copy.deepcopy(self.teacher)
    self.disc = MultiConvHead(head_shapes, cfg.disc.channels)
    self.disc.load_state_dict(t(head_sd), strict=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for net in (self.teacher, self.gen, self.fake, self.disc):
      net.to(self.device, memory_format=fmt)
    for net in (self.gen, self.fake):
      net.requires_grad_(True)
      set_activation_checkpointing(net, checkpointing)
    self.fmt = fmt
    self.opts = {}
    for name, net in (("generator", self.gen), ("fake_score", self.fake),
                      ("discriminator", self.disc)):
      o = cfg.optim[name]
      kw = {"fused": True} if fused_adam else {}
      self.opts[name] = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=(o.b1, o.b2),
                                          eps=o.eps, weight_decay=o.weight_decay, **kw)
    self.clip = {n: cfg.optim[n].clip for n in self.opts}
    self.ema = {float(d): [p.detach().clone() for p in self.gen.parameters()]
                for d in cfg.train.ema_decays}
    self.bins = torch.ones(self.s.ratio_bins, device=self.device)
    self.grid = torch.as_tensor(karras_index_grid(self.s), device=self.device)
    lo_hi = (int(np.floor(cfg.method.time_lo * 1000)), int(np.ceil(cfg.method.time_hi * 1000)))
    self.lo, self.hi = lo_hi[0], max(lo_hi[1], lo_hi[0] + 1)
    run = lambda m: torch.compile(m) if compile else m
    self.f_teacher, self.f_gen, self.f_fake, self.f_disc = map(
        run, (self.teacher, self.gen, self.fake, self.disc))

  def _draw(self, x):
    sigma = self.grid[torch.randint(self.lo, self.hi, (x.shape[0],), device=self.device)]
    return sigma, torch.randn_like(x)

  def _autocast(self):
    return torch.autocast(self.device.type, dtype=self.amp or torch.float32,
                          enabled=self.amp is not None)

  def _update(self, names, loss):
    for n in names:
      self.opts[n].zero_grad(set_to_none=True)
    loss.backward()
    for n in names:
      if self.clip[n] > 0:
        torch.nn.utils.clip_grad_norm_(self._net(n).parameters(), self.clip[n])
      self.opts[n].step()

  def _net(self, name):
    return {"generator": self.gen, "fake_score": self.fake, "discriminator": self.disc}[name]

  def generator_step(self, x, labels):
    """One generator update on real images x [B, C, H, W] (only their shape is used)."""
    self.gen.train(), self.fake.eval(), self.disc.requires_grad_(False)
    z = torch.randn_like(x).contiguous(memory_format=self.fmt)
    sigma, eps = self._draw(x)
    with self._autocast():
      loss, m, self.bins = generator_loss(self.f_gen, self.f_fake, self.f_teacher, self.f_disc,
                                          labels, z, sigma, eps, self.bins, self.s)
    self._update(("generator",), loss)
    with torch.no_grad():
      params = [p.detach() for p in self.gen.parameters()]
      for d, e in self.ema.items():
        torch._foreach_lerp_(e, params, 1.0 - d)
    return loss.detach(), m

  def critic_step(self, x, labels):
    """One fake-score + discriminator update on real images x [B, C, H, W]."""
    self.gen.eval(), self.fake.train(), self.disc.requires_grad_(True)
    z = torch.randn_like(x).contiguous(memory_format=self.fmt)
    sigma, eps = self._draw(x)
    sigma_r, eps_r = self._draw(x)
    with self._autocast():
      loss, m = critic_loss(self.f_gen, self.f_fake, self.f_teacher, self.f_disc, x, labels, z,
                            sigma, eps, sigma_r, eps_r, self.s)
    self._update(("fake_score", "discriminator"), loss)
    return loss.detach(), m

  @torch.no_grad()
  def one_step(self, z, labels):
    """Student samples G(σ_init z) [B, C, H, W]."""
    with self._autocast():
      sig = torch.full((z.shape[0],), self.s.sigma_init, device=z.device)
      return self.f_gen(self.s.sigma_init * z, sig, labels)

  @torch.no_grad()
  def heun(self, z, labels, nfe: int):
    """Teacher samples with EDM's deterministic Heun sampler, nfe = 2·steps − 1 evaluations."""
    with self._autocast():
      den = lambda x, t: self.f_teacher(x, t.expand(x.shape[0]), labels)
      return heun_sampler(den, z, (nfe + 1) // 2, self.s.sigma_min, self.s.sigma_max)


@torch.no_grad()
def heun_sampler(denoise, latents, num_steps: int, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0):
  """EDM Algorithm 1 (deterministic Heun) with a float64 state around a float32 denoiser.

  denoise(x float32 [B, ...], sigma float32 0-d) -> x0 [B, ...]; returns float32 samples.
  """
  dev = latents.device
  i = torch.arange(num_steps, dtype=torch.float64, device=dev) / max(num_steps - 1, 1)
  a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
  ts = torch.cat([(a + i * (b - a)) ** rho, torch.zeros(1, dtype=torch.float64, device=dev)])
  den = lambda x, t: denoise(x.float(), t.float()).double()
  x = latents.double() * ts[0]
  for k in range(num_steps):
    t0, t1 = ts[k], ts[k + 1]
    d = (x - den(x, t0)) / t0
    x_next = x + (t1 - t0) * d
    if k < num_steps - 1:
      x_next = x + (t1 - t0) * (0.5 * d + 0.5 * (x_next - den(x_next, t1)) / t1)
    x = x_next
  return x.float()


def sync(device) -> None:
  if torch.device(device).type == "cuda":
    torch.cuda.synchronize()
