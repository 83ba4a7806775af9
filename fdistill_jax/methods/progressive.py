"""Progressive distillation (Salimans & Ho 2022) in the EDM σ convention, and its round driver.

Adaptation to EDM (VE, x_σ = x0 + σ ε): the DDIM step of the paper becomes the Euler step of the
probability-flow ODE in σ, which for a denoiser D is
  ddim(x, σ → σ') = D(x, σ) + (σ'/σ)(x − D(x, σ))                 (σ' = 0 gives D(x, σ)).
Time grids are nested: round 0's teacher takes K = pd_base_steps steps on the Karras ρ=7 grid
σ_0 = σ_max > … > σ_{K−1} = σ_min followed by σ_K = 0; an N-step sampler uses every (K/N)-th
point of that grid, so the 2N-step teacher visits exactly the student's points plus midpoints.
A 1-step student is x = D(σ_max z, σ_max), i.e. the one-step generator with σ_init = σ_max.

Training step of a round with N student steps (student initialised from its teacher):
  x0 ~ data, i ~ U{0..N−1}, σ_t = grid_N[i], σ'' = grid_N[i+1], σ' = grid_2N[2i+1], z_t = x0 + σ_t ε
  z' = ddim_T(z_t, σ_t → σ'), z'' = ddim_T(z', σ' → σ'')          (two teacher steps)
  x̃ = (z'' − (σ''/σ_t) z_t)/(1 − σ''/σ_t)                          (one student step lands on z'')
(the VP formula with α ≡ 1). Loss, config.method.prediction:
  'x': w(σ_t)·mean(D_S(z_t, σ_t) − sg x̃)² with weighting 'truncated_snr' w = max(σ_d²/σ², 1)
       (SNR = σ_d²/σ² for data of scale σ_d), 'snr_plus_one' w = σ_d²/σ² + 1, or 'none';
  'v': mean(v̂ − ṽ)² with v = α ε − σ_v x0/σ_d, α = σ_d/√(σ²+σ_d²), σ_v = σ/√(σ²+σ_d²),
       ε = (z_t − x0)/σ, computed from the student's x0 (the EDM-preconditioned network is
       already a v-type parameterisation); this equals the x-loss weighted by λ_EDM(σ).
The round's teacher is the experiment's teacher (round 0) or the previous round's student,
loaded in `prepare` from config.method.teacher_params into frozen['pd_teacher']. That file is a
fileio.write_cache envelope (save_params / load_params) whose key (student_key) names the 2N-step
student it holds and a digest of the problem, so a flipped byte, a foreign file or another round's
student is refused (fileio.CacheError naming the file) instead of becoming a teacher.
The round driver (K → K/2 → … → pd_final_steps, one training run per round) is
fdistill_jax/pd_rounds.py; this module holds only the loss, grids, sampler and hooks.
`prepare` replaces the experiment's `sample` by the N-step sampler, so the engine's evaluation
(eval metrics, final_metrics.json 'student', samples PNG) is that of the N-step student; the
'init_generator' reference stays one-step.
Config keys (config.method): pd_base_steps, pd_final_steps, student_steps, teacher_params,
prediction, weighting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fdistill_jax import fileio
from fdistill_jax.diffusion import edm
from fdistill_jax.nets import Nets
from fdistill_jax.methods import common
from fdistill_jax import validation as V
from fdistill_jax.validation import need

# Progressive distillation halves its own sampler round by round (pd_rounds); config.few_step
# stays one step.
FEW_STEP_STUDENTS = False
GENERATOR_NETS = ("generator",)
CRITIC_NETS = ()
PREDICTIONS = ("x", "v")
WEIGHTINGS = ("truncated_snr", "snr_plus_one", "none")

sg = common.sg


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  del cfg
  return {}


def method_config(**overrides) -> ml_collections.ConfigDict:
  """config.method for progressive distillation (student_steps/teacher_params set per round)."""
  m = dict(name="progressive", pd_base_steps=8, pd_final_steps=1, student_steps=4,
           teacher_params="", prediction="x", weighting="truncated_snr")
  m.update(overrides)
  return ml_collections.ConfigDict(m)


FIELDS = {  # Every field (fdistill.FIELDS says why).
    "method.pd_base_steps": V.Rule(lambda b: 2 <= b <= 4096 and not b & (b - 1),
                                   "a power of 2 in [2, 4096]"),
    "method.pd_final_steps": V.within(1, 4096, "an int"),
    "method.student_steps": V.within(1, 4096, "an int"),
    "method.teacher_params": V.text("a parameter file ('' in round 0)"),
    "method.prediction": V.one_of(*PREDICTIONS),
    "method.weighting": V.one_of(*WEIGHTINGS),
}
REQUIRED = ("pd_base_steps", "pd_final_steps", "prediction", "student_steps", "teacher_params",
            "weighting")


def check_config(cfg) -> None:
  """Validates progressive distillation's keys of cfg.method; raises ConfigError."""
  m = cfg.method
  V.check_fields(cfg, {"method.pd_base_steps": V.within(2, 4096, "an int")})
  V.check_fields(cfg, FIELDS)
  b = m.pd_base_steps
  need(b >= 2 and not b & (b - 1), "method.pd_base_steps", b, "a power of 2 >= 2")
  need(m.student_steps >= 1 and b % m.student_steps == 0, "method.student_steps",
       m.student_steps, f"must divide pd_base_steps={b}")
  need(m.pd_final_steps >= 1 and b % m.pd_final_steps == 0, "method.pd_final_steps",
       m.pd_final_steps, f"must divide pd_base_steps={b}")
  need(m.prediction in PREDICTIONS, "method.prediction", m.prediction, f"allowed: {PREDICTIONS}")
  need(m.weighting in WEIGHTINGS, "method.weighting", m.weighting, f"allowed: {WEIGHTINGS}")
  need(cfg.diffusion.sigma_init == cfg.diffusion.sigma_max, "diffusion.sigma_init",
       cfg.diffusion.sigma_init, "progressive students start at sigma_max: set it equal")


# ----------------------------------------------------------------------------- grids & sampler
def nested_grid(base_steps: int, steps: int, sigma_min: float, sigma_max: float) -> np.ndarray:
  """σ grid [steps + 1] (last 0) of an N-step sampler nested in the base Karras grid. float64."""
  if base_steps < 1 or base_steps & (base_steps - 1):
    raise ValueError(f"config.method.pd_base_steps={base_steps} must be a power of 2")
  if steps < 1 or base_steps % steps:
    raise ValueError(f"config.method.student_steps={steps} must divide pd_base_steps={base_steps}")
  base = edm.karras_sigmas(base_steps, sigma_min, sigma_max)  # [K + 1], last 0
  return base[:: base_steps // steps]


def ddim_step(denoise, x, sigma, sigma_next):
  """Euler step of the PF-ODE: D + (σ'/σ)(x − D). sigma, sigma_next: [B] or 0-d."""
  d = denoise(x, sigma)
  return d + common.bcast(jnp.asarray(sigma_next / sigma), x) * (x - d)


def sample(denoise, z: jax.Array, grid) -> jax.Array:
  """Deterministic multi-step sample from z [B, ...] over grid [N+1]; denoise(x, σ [B])."""
  grid = np.asarray(grid, np.float64)
  b = z.shape[0]
  x = grid[0] * z
  for s, s_next in zip(grid[:-1], grid[1:]):
    x = ddim_step(denoise, x, jnp.full((b,), s, jnp.float32), jnp.full((b,), s_next, jnp.float32))
  return x


# ----------------------------------------------------------------------------- prepare
STUDENT_FILE = "progressive distillation student"  # The kind named in a student file's key.


def student_key(cfg, steps: int) -> dict:
  """Settings key of the file holding the `steps`-step student of a PD run of cfg: the kind, the
  base grid and the step count (which fix the round: round r has pd_base_steps / 2^(r+1) steps),
  and a digest of the teacher / student / diffusion configs the round distils, so a file is used
  only as the teacher of the round right after its own, in a run of the same problem."""
  m = cfg.method
  problem = {k: (cfg[k].to_dict() if hasattr(cfg[k], "to_dict") else cfg[k])
             for k in ("teacher", "student", "diffusion") if k in cfg}
  digest = hashlib.sha256(json.dumps(problem, sort_keys=True, default=str).encode()).hexdigest()
  return {"file": STUDENT_FILE, "pd_base_steps": int(m.pd_base_steps), "steps": int(steps),
          "problem": digest[:16]}


def save_params(path: str, params, key: dict) -> None:
  """Writes generator params (all-or-nothing) as a fileio.write_cache envelope for `key`
  (student_key): the file run_rounds writes and load_params reads."""
  payload = flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params))
  fileio.write_cache(path, payload, key)


def load_params(path: str, template, key: dict):
  """Generator params saved by save_params for settings `key` (student_key), checked against the
  template's tree and shapes. fileio.CacheError (naming the file) when the file fails its sha256
  (a flipped byte), is not such an envelope, or was written for another round or problem;
  ValueError when its tree or shapes do not fit the student."""
  params = flax.serialization.msgpack_restore(fileio.read_cache(path, key))  # Local or gs://.
  want = jax.tree_util.tree_structure(template)
  if jax.tree_util.tree_structure(params) != want:
    raise ValueError(f"config.method.teacher_params={path!r}: parameter tree does not match the "
                     f"student architecture")
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(template)):
    if a.shape != b.shape:
      raise ValueError(f"config.method.teacher_params={path!r}: shape {a.shape} != {b.shape}")
  return jax.tree.map(jnp.asarray, params)


def multistep_sampler(cfg, nets: Nets):
  """jit fn(gen_params, key) -> cfg.eval.num_samples N-step student samples (N = student_steps).

  Conditions are drawn by the problem's spec (uniform classes or prompts).
  """
  m, d = cfg.method, cfg.diffusion
  grid = nested_grid(m.pd_base_steps, m.student_steps, d.sigma_min, d.sigma_max)
  n = cfg.eval.num_samples

  @jax.jit
  def run(gen_params, key):
    kz, kl = jax.random.split(key)
    z = jax.random.normal(kz, (n,) + tuple(nets.data_shape), jnp.float32)
    cond = nets.cond.sample(kl, n)
    return sample(lambda x, s: nets.student(gen_params, x, s, cond), z, grid)

  return run


def prepare(cfg, exp, workdir: str):
  """Engine hook: evaluate with the N-step sampler; put the round's teacher (the previous
  student, config.method.teacher_params) in frozen['pd_teacher'] and start from it."""
  del workdir
  exp = dataclasses.replace(exp, sample=multistep_sampler(cfg, exp.nets))
  path = cfg.method.teacher_params
  if not path:
    return exp
  template = jax.eval_shape(exp.init_params, jax.random.PRNGKey(0))["generator"]
  try:  # The teacher of the N-step round is the 2N-step student.
    prev = load_params(path, template, student_key(cfg, 2 * cfg.method.student_steps))
  except fileio.CacheError as e:
    raise fileio.CacheError(f"{e}; config.method.teacher_params must be the previous round's "
                            "student.msgpack as written by pd_rounds (rerun pd_rounds, which "
                            "re-exports a damaged one from its round's checkpoint)") from None
  base_init = exp.init_params

  def init_params(key):
    return {**base_init(key), "generator": jax.tree.map(jnp.copy, prev)}

  return dataclasses.replace(exp, frozen={**exp.frozen, "pd_teacher": prev},
                             init_params=init_params)


def teacher_denoiser(frozen, nets: Nets, cond):
  if "pd_teacher" in frozen:
    return lambda x, s: nets.student(frozen["pd_teacher"], x, s, cond)
  return lambda x, s: nets.teacher(frozen, x, s, cond)


# ----------------------------------------------------------------------------- loss
def pd_target(teacher, z_t, s_t, s_mid, s_next):
  """x̃ such that one student DDIM step from (z_t, σ_t) lands where two teacher steps land."""
  z1 = ddim_step(teacher, z_t, s_t, s_mid)
  z2 = ddim_step(teacher, z1, s_mid, s_next)
  ratio = common.bcast(s_next / s_t, z_t)
  return (z2 - ratio * z_t) / (1.0 - ratio)


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(PD loss, (metrics, extras)); w.r.t. params['generator']."""
  m, d = cfg.method, cfg.diffusion
  x0, cond = batch["x"].astype(jnp.float32), batch["cond"]
  n = m.student_steps
  g_s = jnp.asarray(nested_grid(m.pd_base_steps, n, d.sigma_min, d.sigma_max), jnp.float32)
  g_t = jnp.asarray(nested_grid(m.pd_base_steps, 2 * n, d.sigma_min, d.sigma_max), jnp.float32)
  ki, ke = jax.random.split(key)
  i = jax.random.randint(ki, (x0.shape[0],), 0, n)
  s_t, s_next, s_mid = g_s[i], g_s[i + 1], g_t[2 * i + 1]
  eps = jax.random.normal(ke, x0.shape, jnp.float32)
  z_t = x0 + common.bcast(s_t, x0) * eps
  target = sg(pd_target(teacher_denoiser(frozen, nets, cond), z_t, s_t, s_mid, s_next))
  pred = nets.student(params["generator"], z_t, s_t, cond).astype(jnp.float32)
  sd = d.sigma_data
  if m.prediction == "x":
    if m.weighting == "truncated_snr":
      w = jnp.maximum(sd ** 2 / s_t ** 2, 1.0)
    elif m.weighting == "snr_plus_one":
      w = sd ** 2 / s_t ** 2 + 1.0
    elif m.weighting == "none":
      w = jnp.ones_like(s_t)
    else:
      raise ValueError(f"config.method.weighting={m.weighting!r}; allowed: {WEIGHTINGS}")
    per = w * common.per_sample_mean(jnp.square(pred - target))
  elif m.prediction == "v":
    sb = common.bcast(s_t, z_t)
    alpha, sig_v = sd / jnp.sqrt(sb ** 2 + sd ** 2), sb / jnp.sqrt(sb ** 2 + sd ** 2)
    v = lambda x: alpha * (z_t - x) / sb - sig_v * x / sd
    per = common.per_sample_mean(jnp.square(v(pred) - v(target)))
  else:
    raise ValueError(f"config.method.prediction={m.prediction!r}; allowed: {PREDICTIONS}")
  loss = jnp.mean(per)
  return loss, ({"pd": loss, "x_rmse": jnp.sqrt(jnp.mean(jnp.square(pred - target)))}, extras)


def critic_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  raise NotImplementedError("progressive has no critic (CRITIC_NETS = ()); never called")


# ----------------------------------------------------------------------------- rounds
def round_steps(m) -> list[int]:
  """Student steps of each round: pd_base_steps/2, /4, … down to pd_final_steps (config.method)."""
  if m.pd_final_steps < 1 or m.pd_base_steps % m.pd_final_steps:
    raise ValueError(f"config.method.pd_final_steps={m.pd_final_steps} must divide "
                     f"pd_base_steps={m.pd_base_steps}")
  out, n = [], m.pd_base_steps
  while n > m.pd_final_steps:
    n //= 2
    out.append(n)
  return out
