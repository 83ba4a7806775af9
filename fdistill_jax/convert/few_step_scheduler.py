"""FewStepScheduler: a diffusers scheduler that runs a distilled K-step student's chain exactly.

This file stands alone (torch, numpy and diffusers only, nothing of fdistill_jax): export copies
it verbatim into a student's pipeline folder as `scheduler/fdistill_few_step.py`, so that

  pipe = PixArtAlphaPipeline.from_pretrained(folder, trust_remote_code=True)
  latents = pipe(prompt_embeds=..., prompt_attention_mask=..., num_inference_steps=K,
                 guidance_scale=1.0, use_resolution_binning=False, output_type="latent").images

samples the student as fdistill_jax's `--mode=sample` does, with or without fdistill_jax
installed. Why not a stock scheduler: the student was trained at the EDM noise levels σ_1 > … > σ_K
of its config, whose DDPM timesteps t_k are generally not integers (DDPM/LCM/DDIM schedulers
index ᾱ by integer t), its pure-noise input at σ_1 is scaled by √(1−ᾱ(t_1)) where the stock
schedulers use 1, and between steps it re-noises with its own rule.

The chain, in the network's input units L = a·x (x the EDM-units state):
  L_1 = b_1 z                                   (init_noise_sigma = b_1)
  F_k = transformer(L_k, t_k, text)             (the pipeline; learned-σ channels dropped)
  x0_k, ε̂_k from F_k:  'epsilon': ε̂_k = F_k, x0_k = (L_k − b_k ε̂_k) / a_k
                        'flow' (velocity F = ε − x0): x0_k = L_k − b_k F_k, ε̂_k = F_k + x0_k
  L_{k+1} = a_{k+1} x0_k + b_{k+1} n_k          n_k: fresh N(0, I) ('stochastic')
                                                 or ε̂_k ('deterministic': the DDIM step; for a
                                                 flow student, the Euler step)
  output x0_K
with, for an ε-prediction (VP) student, a_k = 1/√(1+σ_k²) = √ᾱ(t_k), b_k = σ_k a_k = √(1−ᾱ(t_k));
for a rectified-flow student, a_k = 1/(1+σ_k) = 1 − s_k, b_k = σ_k a_k = s_k. In EDM units this
is exactly fdistill_jax.diffusion.few_step: x^(k+1) = x0 + σ_{k+1} n or x0 + σ_{k+1}(x^(k) − x0)/σ_k.

Reproducing a given chain: the pipeline draws the first noise from its `generator` (or takes
`latents=z`, unscaled) and the re-noising noise with the generator passed to `step`; to replay
noise drawn elsewhere, call `scheduler.set_renoise_noise([n_1, …, n_{K−1}])` (NCHW tensors)
before the pipeline call.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

RENOISE = ("stochastic", "deterministic")
PREDICTIONS = ("epsilon", "flow")  # ε on a VP process; velocity ε − x0 on a rectified flow.


@dataclasses.dataclass
class FewStepSchedulerOutput(BaseOutput):
  """prev_sample: the next state L_{k+1} (x0 after the last step); pred_original_sample: x0_k."""
  prev_sample: torch.Tensor
  pred_original_sample: torch.Tensor


class FewStepScheduler(SchedulerMixin, ConfigMixin):
  """The K-step chain of a distilled student (module docstring).

  sigmas: σ_1 > … > σ_K in EDM units; timesteps: the network's t_k for each (floats, the values
  the student was trained with); renoise: 'stochastic' or 'deterministic' (unused for K = 1);
  prediction_type: 'epsilon' (VP process) or 'flow' (rectified flow, velocity output).
  """
  order = 1
  _compatibles: list = []

  @register_to_config
  def __init__(self, sigmas: Sequence[float] = (2.5,), timesteps: Sequence[float] = (440.0,),
               renoise: Optional[str] = "stochastic", num_train_timesteps: int = 1000,
               prediction_type: str = "epsilon"):
    s = [float(v) for v in sigmas]
    if not s or len(s) != len(timesteps):
      raise ValueError(f"FewStepScheduler: sigmas {sigmas} and timesteps {timesteps} must be "
                       "non-empty and of one length")
    if any(b >= a for a, b in zip(s, s[1:])) or s[-1] <= 0:
      raise ValueError(f"FewStepScheduler: sigmas {sigmas} must decrease and stay > 0")
    if len(s) > 1 and renoise not in RENOISE:
      raise ValueError(f"FewStepScheduler: renoise={renoise!r}; allowed: {RENOISE}")
    if prediction_type not in PREDICTIONS:
      raise ValueError(f"FewStepScheduler: prediction_type={prediction_type!r}; allowed: "
                       f"{PREDICTIONS}")
    sig = np.asarray(s, np.float64)
    a = 1.0 / (np.sqrt(1.0 + sig ** 2) if prediction_type == "epsilon" else 1.0 + sig)
    self._a, self._b = a.tolist(), (sig * a).tolist()
    self._noise: list = []
    self.set_timesteps()  # register_to_config has stored the config before this body runs.

  @property
  def init_noise_sigma(self) -> float:
    """b_1 (σ_1/√(1+σ_1²), or s_1 for a flow student): the scale of the pure-noise input."""
    return self._b[0]

  @property
  def step_index(self) -> Optional[int]:
    return self._step_index

  @property
  def begin_index(self) -> Optional[int]:
    return self._begin_index

  def set_begin_index(self, begin_index: int = 0) -> None:
    self._begin_index = begin_index

  def set_timesteps(self, num_inference_steps: Optional[int] = None,
                    device: Optional[torch.device | str] = None) -> None:
    """The student's own K timesteps; num_inference_steps must be K (or None)."""
    k = len(self.config.sigmas)
    if num_inference_steps not in (None, k):
      raise ValueError(
          f"this student samples in exactly {k} step(s), at timesteps "
          f"{[round(float(t), 4) for t in self.config.timesteps]} (σ {list(self.config.sigmas)}); "
          f"call the pipeline with num_inference_steps={k} and guidance_scale=1.0 (the "
          f"distilled student is already guided), not {num_inference_steps}")
    self.timesteps = torch.tensor([float(t) for t in self.config.timesteps],
                                  dtype=torch.float32, device=device)
    self.num_inference_steps = k
    self._step_index: Optional[int] = None
    self._begin_index: Optional[int] = None

  def set_renoise_noise(self, noise: Sequence[torch.Tensor]) -> None:
    """Replays given re-noising noise n_1 … n_{K−1} ([B, C, H, W] each) in the next chain
    instead of drawing it (to reproduce a chain sampled elsewhere)."""
    self._noise = list(noise)

  def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
    del timestep  # The state already is the network's input.
    return sample

  def _index_for(self, timestep) -> int:
    if self._begin_index is None and self._step_index is None:
      hits = (self.timesteps.to(torch.as_tensor(timestep).device)
              == torch.as_tensor(timestep, dtype=torch.float32)).nonzero()
      if len(hits) == 0:
        raise ValueError(f"timestep {timestep} is not one of the student's "
                         f"{self.timesteps.tolist()}")
      return int(hits[0])
    return self._begin_index if self._step_index is None else self._step_index

  def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
           generator: Optional[torch.Generator] = None, return_dict: bool = True):
    """One chain step from L_k (sample) and F_k (model_output, C channels: ε̂ or the velocity):
    returns (L_{k+1}, x0_k); at the last step L_{k+1} = x0_k."""
    k = self._index_for(timestep)
    a, b = self._a[k], self._b[k]
    if self.config.prediction_type == "epsilon":
      eps = model_output
      x0 = (sample - b * eps) / a
    else:
      x0 = sample - b * model_output
      eps = model_output + x0
    if k + 1 >= len(self._a):
      prev = x0
    else:
      if self.config.renoise == "deterministic":
        n = eps
      elif self._noise:
        n = self._noise.pop(0).to(device=sample.device, dtype=sample.dtype)
      else:
        n = randn_tensor(sample.shape, generator=generator, device=sample.device,
                         dtype=sample.dtype)
      prev = self._a[k + 1] * x0 + self._b[k + 1] * n
    self._step_index = k + 1
    if not return_dict:
      return prev, x0
    return FewStepSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

  def __len__(self) -> int:
    return self.config.num_train_timesteps
