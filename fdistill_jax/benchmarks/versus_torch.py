"""The same f-distill iteration in this JAX engine and in PyTorch, on the same device.

  python -m fdistill_jax.benchmarks.versus_torch --config=configs/cifar10_kl.py --batch=256 \
      [--steps=10] [--tiny] [--torch_amp=auto] [--torch_compile=auto] [--out=...]

Both sides get the same architecture, the same initial weights (our teacher's random init and
FastGen head, moved to PyTorch through fdistill_jax.convert.edm_state_dict), synthetic data and
the global batch --batch. Order: ours, theirs, then theirs, ours again (the second round re-times
the already compiled steps, so neither side profits from running second). Reported per side and
round: generator and critic step time and images/s, the iteration at FastGen's 1 generator : 4
critic schedule, compile time (JAX: lower+compile of both steps; torch: first call minus a
timed step, which is torch.compile's cost when it is on), peak device memory (GPU only; this
process's allocator for each side); then sampling: one-step student vs the teacher's 35- and
79-NFE Heun sampler, images/s. The ratio is ours/theirs images/s.

PyTorch runs FastGen's step (fdistill_jax/benchmarks/torch_reference) with, by default ('auto'),
bf16 autocast when our config computes in bf16, and on CUDA channels_last, fused AdamW and
torch.compile (FastGen's EDM configs themselves run float32 eager with unfused AdamW: pass
--torch_amp=fp32 --torch_compile=off --fused_adam=off --channels_last=off for that). --tiny
swaps in a small architecture of the same family (seconds on CPU; tests use it). Prints a
markdown table and writes <out>/versus_torch.json.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time

import ml_collections
import numpy as np
from absl import app, flags, logging

# JAX must not take 75 % of the GPU up front: PyTorch shares the device in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from fdistill_jax.benchmarks import engine_speed  # noqa: E402
from fdistill_jax.benchmarks.common import parse_entry, set_key, shared_flag  # noqa: E402

_CONFIG, _TINY = shared_flag("config"), shared_flag("tiny")
_BATCH, _STEPS, _OUT = shared_flag("batch"), shared_flag("steps"), shared_flag("out")
_AMP = flags.DEFINE_enum("torch_amp", "auto", ["auto", "bf16", "fp32"],
                         "PyTorch autocast; auto = bf16 iff config.teacher.dtype is bfloat16.")
_COMPILE = flags.DEFINE_enum("torch_compile", "auto", ["auto", "on", "off"], "auto: on for CUDA.")
_CL = flags.DEFINE_enum("channels_last", "auto", ["auto", "on", "off"], "auto: on for CUDA.")
_FUSED = flags.DEFINE_enum("fused_adam", "auto", ["auto", "on", "off"], "auto: on for CUDA.")
_CKPT = flags.DEFINE_bool("torch_checkpointing", False,
                          "Activation checkpointing of every UNet block (FastGen: off for EDM).")
_SAMPLE_BATCH = flags.DEFINE_integer("sample_batch", 0, "Sampling batch (0: --batch).")
_NFES = flags.DEFINE_list("teacher_nfes", ["35", "79"], "Heun NFEs of the teacher to time.")


def shrink(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """In place: a 16x16 SongUNet (DDPM++) or DhariwalUNet of the config's family, small heads."""
  kw = cfg.teacher.precond_kwargs
  common = dict(img_resolution=16, img_channels=3, label_dim=10, augment_dim=0,
                dropout=kw.get("dropout", 0.0), sigma_data=0.5)
  if kw.model_type == "SongUNet":
    new = dict(model_type="SongUNet", model_channels=16, channel_mult=(1, 2, 2), num_blocks=1,
               attn_resolutions=(8,), embedding_type="positional", encoder_type="standard",
               decoder_type="standard", channel_mult_noise=1, resample_filter=(1, 1))
    keys = ("enc16", "enc8", "enc4")
  else:
    new = dict(model_type="DhariwalUNet", model_channels=64, channel_mult=(1, 2), num_blocks=1,
               attn_resolutions=(8,))
    keys = ("bottleneck",)
  cfg.teacher.precond_kwargs = ml_collections.ConfigDict({**common, **new})
  cfg.dataset.resolution = 16
  cfg.disc.feature_keys, cfg.disc.channels = keys, 32
  return cfg


def _auto(flag, on_cuda: bool) -> bool:
  return flag.value == "on" or (flag.value == "auto" and on_cuda)


def _median_time(fn, reps: int, sync) -> float:
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _summary(phases: dict, batch: int, crit: int) -> dict:
  g, c = phases["generator"]["step_s"], phases["critic"]["step_s"]
  it = (g + crit * c) / (crit + 1)
  return {"iteration_s": it, "images_per_s": batch / it,
          "generator_images_per_s": batch / g, "critic_images_per_s": batch / c}


# ------------------------------------------------------------------------------------ ours
class Ours:
  """The engine's compiled steps (loop.Run) on synthetic data, on one device."""

  def __init__(self, cfg, workdir: str):
    import jax
    from fdistill_jax import compose
    from fdistill_jax.models.edm import build_edm_precond
    self.cfg, t0 = cfg, time.time()
    # One device against PyTorch's one: on a multi-chip host the default (every device) would
    # compare a data-parallel mesh with a single GPU.
    self.run = compose.Run(cfg, workdir, devices=jax.devices()[:1], restore=False)
    self.build_s = time.time() - t0
    self.batch = self.run.global_batch(0)
    kwargs = cfg.teacher.precond_kwargs.to_dict()
    teacher = jax.device_get(self.run.frozen["teacher"])
    from fdistill_jax.convert import edm_state_dict as esd
    from fdistill_jax.benchmarks.torch_reference import fdistill as tfd
    self.teacher_sd = esd.variables_to_state_dict({"params": teacher}, build_edm_precond(kwargs))
    self.head_sd = tfd.head_state_dict(jax.device_get(self.run.state["params"]["discriminator"]))
    x, l = self.batch["x"][:1], self.batch["cond"][:1]
    feats = jax.eval_shape(lambda: self.run.exp.nets.teacher(
        self.run.frozen, x, jax.numpy.ones((1,)), l, features=True)[1])
    self.head_shapes = {k: (feats[k].shape[-1], feats[k].shape[1]) for k in cfg.disc.feature_keys}

  def time_steps(self, steps: int) -> dict:
    import jax
    out = {"phases": {}}
    engine_speed._time_phases(self.run, self.batch, steps, out)  # pylint: disable=protected-access
    for p, v in out["phases"].items():
      v["compile_s"] = self.run.compile_times[p]
    stats = jax.local_devices()[0].memory_stats() or {}
    out["peak_gib"] = stats["peak_bytes_in_use"] / 2 ** 30 if "peak_bytes_in_use" in stats else None
    return out

  def sampling(self, n: int, nfes, reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    from fdistill_jax.diffusion import samplers
    nets, cfg = self.run.exp.nets, self.cfg
    z = jax.random.normal(jax.random.PRNGKey(0), (n,) + nets.data_shape)
    labels = nets.cond.from_index(jnp.arange(n))  # class i mod C, as the PyTorch side draws
    gen = self.run.state["params"]["generator"]
    # Jitted once per (batch, sampler): a second call (another PyTorch setting against the same
    # Ours) re-times without compiling again.
    jitted = self.__dict__.setdefault("_samplers", {})
    if (n, "one_step") not in jitted:
      jitted[n, "one_step"] = jax.jit(lambda p, z: nets.generate(p, z, labels))
    one = jitted[n, "one_step"]
    res = {"one_step": _time_sampler(lambda: one(gen, z), reps, jax.block_until_ready, n)}
    for nfe in nfes:
      if (n, nfe) not in jitted:
        den = lambda x, s, fr: nets.teacher(fr, x, jnp.broadcast_to(s, (n,)), labels)
        jitted[n, nfe] = jax.jit(lambda fr, z, nfe=nfe: samplers.edm_sampler(
            lambda x, s: den(x, s, fr), z, samplers.steps_for_nfe(nfe), cfg.diffusion.sigma_min,
            cfg.diffusion.sigma_max))
      fn = jitted[n, nfe]
      res[f"heun_{nfe}"] = _time_sampler(lambda fn=fn: fn(self.run.frozen, z), max(reps // 3, 1),
                                         jax.block_until_ready, n)
    return res


def _time_sampler(fn, reps: int, sync, n: int) -> dict:
  t0 = time.perf_counter()
  sync(fn())
  first = time.perf_counter() - t0
  sec = _median_time(fn, reps, sync)
  return {"first_call_s": first, "batch_s": sec, "images_per_s": n / sec}


# ------------------------------------------------------------------------------------ theirs
class Theirs:
  """FastGen's step in PyTorch (torch_reference) with the weights of `ours`."""

  def __init__(self, cfg, ours: Ours, device: str, opts: dict):
    import torch
    from fdistill_jax.benchmarks.torch_reference import fdistill as tfd
    self.torch, self.tfd, self.cfg, self.device = torch, tfd, cfg, device
    t0 = time.time()
    self.ref = tfd.TorchFDistill(cfg, cfg.teacher.precond_kwargs.to_dict(), ours.teacher_sd,
                                 ours.head_sd, ours.head_shapes, device=device, **opts)
    self.build_s = time.time() - t0
    x = np.asarray(ours.batch["x"]).transpose(0, 3, 1, 2)
    self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device, memory_format=self.ref.fmt)
    self.labels = torch.from_numpy(np.asarray(ours.batch["cond"])).to(device)
    self.first_call_s = {}

  def _sync(self, _=None):
    self.tfd.sync(self.device)

  def time_steps(self, steps: int) -> dict:
    torch = self.torch
    if self.device.startswith("cuda"):
      torch.cuda.reset_peak_memory_stats()
    out = {"phases": {}}
    for phase, fn in (("generator", self.ref.generator_step), ("critic", self.ref.critic_step)):
      if phase not in self.first_call_s:
        t0 = time.perf_counter()
        self._sync(fn(self.x, self.labels))
        self.first_call_s[phase] = time.perf_counter() - t0
      for _ in range(2):
        self._sync(fn(self.x, self.labels))
      times = []
      for _ in range(steps):
        t0 = time.perf_counter()
        fn(self.x, self.labels)
        self._sync()
        times.append(time.perf_counter() - t0)
      sec = float(np.median(times))
      out["phases"][phase] = {"step_s": sec, "step_s_min": float(np.min(times)),
                              "first_call_s": self.first_call_s[phase],
                              "compile_s": max(self.first_call_s[phase] - sec, 0.0)}
    out["peak_gib"] = (torch.cuda.max_memory_allocated() / 2 ** 30
                       if self.device.startswith("cuda") else None)
    return out

  def sampling(self, n: int, nfes, reps: int) -> dict:
    torch = self.torch
    shape = tuple(self.x.shape[1:])
    g = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn((n,) + shape, generator=g).to(self.device, memory_format=self.ref.fmt)
    ld = self.labels.shape[1]
    labels = torch.nn.functional.one_hot(torch.arange(n) % max(ld, 1), ld).float().to(self.device)
    res = {"one_step": _time_sampler(lambda: self.ref.one_step(z, labels), reps, self._sync, n)}
    for nfe in nfes:
      res[f"heun_{nfe}"] = _time_sampler(lambda nfe=nfe: self.ref.heun(z, labels, nfe),
                                         max(reps // 3, 1), self._sync, n)
    return res


# ------------------------------------------------------------------------------------ main
def compare(cfg, steps: int, sample_batch: int, nfes, torch_opts: dict, device: str,
            ours: Ours | None = None, sample: bool = True) -> dict:
  """Runs both sides (ours, theirs, theirs, ours) and, with `sample`, sampling; returns the JSON
  record. `ours`: an Ours already built from cfg (compiled once, reused against several PyTorch
  settings), else one is built here."""
  import jax
  import torch
  crit = int(cfg.method.critic_steps)
  b = cfg.train.batch_size
  rec = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
         "host": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".strip(),
         "jax": jax.__version__, "torch": torch.__version__, "batch": b, "critic_steps": crit,
         "dtype": cfg.teacher.dtype, "remat": bool(cfg.teacher.get("remat", False)),
         "torch_options": {k: str(v) for k, v in torch_opts.items()}, "rounds": []}
  with tempfile.TemporaryDirectory() as wd:
    ours = ours or Ours(cfg, wd)
    theirs = Theirs(cfg, ours, device, torch_opts)
    rec["build_s"] = {"ours": ours.build_s, "theirs": theirs.build_s}
    for side in ("ours", "theirs", "theirs", "ours"):
      r = (ours if side == "ours" else theirs).time_steps(steps)
      r.update(side=side, **_summary(r["phases"], b, crit))
      rec["rounds"].append(r)
      logging.warning("%s: %.1f images/s", side, r["images_per_s"])
    if sample:
      n = sample_batch or b
      rec["sampling"] = {"batch": n, "ours": ours.sampling(n, nfes, 10),
                         "theirs": theirs.sampling(n, nfes, 10)}
    del theirs
    if device.startswith("cuda"):  # Hand PyTorch's cached blocks back for what runs next.
      torch.cuda.empty_cache()
  for side in ("ours", "theirs"):
    rs = [r for r in rec["rounds"] if r["side"] == side]
    rec[side] = {k: float(np.mean([r[k] for r in rs]))
                 for k in ("iteration_s", "images_per_s", "generator_images_per_s",
                           "critic_images_per_s")}
    rec[side]["compile_s"] = {p: rs[0]["phases"][p]["compile_s"] for p in ("generator", "critic")}
    rec[side]["peak_gib"] = max((r["peak_gib"] or 0) for r in rs) or None
  rec["ratio_images_per_s"] = rec["ours"]["images_per_s"] / rec["theirs"]["images_per_s"]
  return rec


def table(rec: dict) -> str:
  o, t = rec["ours"], rec["theirs"]
  f = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"
  rows = [f"device: {rec['device']} ({rec['host']}), jax {rec['jax']}, torch {rec['torch']}, "
          f"{rec['date_utc']}; batch {rec['batch']}, {rec['dtype']}, torch "
          + ", ".join(f"{k}={v}" for k, v in rec["torch_options"].items()),
          "", "| | ours (JAX) | PyTorch | ours / PyTorch |", "|---|---|---|---|"]
  for key, name in (("generator_images_per_s", "generator step, images/s"),
                    ("critic_images_per_s", "critic step, images/s"),
                    ("images_per_s", f"iteration at 1:{rec['critic_steps']}, images/s")):
    rows.append(f"| {name} | {f(o[key])} | {f(t[key])} | {o[key] / t[key]:.2f} |")
  rows.append(f"| iteration, ms | {f(o['iteration_s'] * 1e3)} | {f(t['iteration_s'] * 1e3)} | |")
  for p in ("generator", "critic"):
    rows.append(f"| compile {p}, s | {f(o['compile_s'][p])} | {f(t['compile_s'][p])} | |")
  rows.append(f"| peak memory, GiB | {f(o['peak_gib'], 2)} | {f(t['peak_gib'], 2)} | |")
  if "sampling" not in rec:
    return "\n".join(rows)
  s = rec["sampling"]
  for k in s["ours"]:
    a, b = s["ours"][k]["images_per_s"], s["theirs"][k]["images_per_s"]
    name = "one-step student" if k == "one_step" else f"teacher Heun {k[5:]} NFE"
    rows.append(f"| sampling {name}, images/s (batch {s['batch']}) | {f(a)} | {f(b)} | "
                f"{a / b:.2f} |")
  for side in ("ours", "theirs"):
    one = s[side]["one_step"]["images_per_s"]
    rows.append(f"| {side}: one-step / Heun-79 images/s | "
                + (f"{one / s[side]['heun_79']['images_per_s']:.0f}×" if "heun_79" in s[side]
                   else "–") + " | | |")
  return "\n".join(rows)


def main(argv):
  del argv
  import torch
  logging.set_verbosity(logging.WARNING)
  name, path, over = parse_entry(_CONFIG.value)
  cfg = engine_speed.synthetic_config(path, {}, 0)
  if _TINY.value:
    shrink(cfg)
  if _BATCH.value:
    cfg.train.batch_size = _BATCH.value
  for k, v in over.items():
    set_key(cfg, k, v)
  cfg.eval.num_samples = min(cfg.eval.num_samples, cfg.train.batch_size)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  cuda = device == "cuda"
  amp = _AMP.value if _AMP.value != "auto" else (
      "bf16" if cfg.teacher.dtype == "bfloat16" else "fp32")
  opts = dict(amp=torch.bfloat16 if amp == "bf16" else None, compile=_auto(_COMPILE, cuda),
              channels_last=_auto(_CL, cuda), fused_adam=_auto(_FUSED, cuda),
              checkpointing=_CKPT.value)
  rec = compare(cfg, _STEPS.value, _SAMPLE_BATCH.value,
                [int(n) for n in _NFES.value], opts, device)
  rec["config"] = name + (" (tiny)" if _TINY.value else "")
  out = _OUT.value
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "versus_torch.json"), "w") as f:
    json.dump(rec, f, indent=1)
  print(f"\n{rec['config']}\n" + table(rec))


if __name__ == "__main__":
  flags.FLAGS.set_default("out", "benchmark_results/versus_torch")
  app.run(main)
