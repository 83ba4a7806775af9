"""Every missing GPU figure of the project in one process, one JSON and one table (issue 31).

  python -m fdistill_jax.benchmarks.gpu_suite --out=DIR [--budget_s=600] [--stages=...]
      [--dry_run] [--tiny] [--allow_cpu] [--compile_mode=auto] [--trace_dir=DIR] [--cache_dir=DIR]
  bash fdistill_jax/benchmarks/gpu_suite.sh DIR [flags]     (the device machine: checks first)

Stages, in priority order; each one's figures are written to DIR/gpu_suite.json (atomically,
the whole file rewritten) as soon as they are measured, so a kill keeps everything so far:
 1 versus_torch  CIFAR-10 f-distill (configs/cifar10_kl.py, batch 256): our engine against
                 FastGen's step in PyTorch (benchmarks/versus_torch.py) on the same GPU, images/s
                 per phase and at the 1:4 iteration, ratio (target ≥ 1.5×), first against the tuned
                 PyTorch step (bf16 autocast, channels_last, fused AdamW, torch.compile), then
                 against FastGen's own settings (fp32 eager, unfused AdamW), our side compiled once
                 for both; one-step vs the teacher's 35/79-NFE Heun sampler (target ≥ 70×).
 2 mfu           ImageNet-64 ADM f-distill step (configs/imagenet64_js.py, batch 64, one chip,
                 benchmarks/engine_speed.py): HLO FLOP rate of each phase over the card's dense
                 bf16 peak (benchmarks/common.py PEAK_BF16: H100 SXM/PCIe/NVL, H200, A100, with
                 sources; an unknown card gives MFU null and the reason). Two figures: HFU (the
                 step's own FLOPs, remat recomputation included) and MFU (the FLOPs of the same
                 step lowered without remat, i.e. the model's); target MFU ≥ 40 %. Plus the
                 measured 8192³ bf16 matmul rate of the card.
 3 compile       cold vs warm compile with the persistent compilation cache: a child process
                 builds the CIFAR-10 (and ImageNet-64) run of stages 1–2 on one chip and reports
                 loop.Run's trace + lower + compile (or cache load) per step. 'fresh': two children
                 on a new cache directory (cold, then warm); 'reuse': one child on this process's
                 cache, the cold figure being this process's own first compile in stage 1/2 (an
                 empty cache then too). 'auto': CIFAR-10 fresh when the window holds a cold child
                 and two start-ups, else reuse; ImageNet-64 reuse (skipped if stage 2 did not
                 compile it). Target warm ≤ 10 s. Each child has a timeout (the time left).
 4 pixart        the PixArt ε-teacher's D(x; σ) in bf16 compute (fp32 weights) and in fp32 at
                 JAX's default precision, against fp32 at 'highest', relative L2 (and of ε̂), at
                 σ ∈ {2.5, 14.6, 80, 157}: on the committed digits teacher (assets/
                 digits_t2i_teacher, its prompt cache) and on a random-weight PixArt-XL-2-512
                 (every weight given a random part: diffusers zero-initialises the output
                 layers); no downloads. Then the PixArt-512 f-distill generator and critic steps
                 (configs/pixart512_js.py, random weights and prompts) at the largest batch that
                 fits: a short search (start 8, doubling, then the compiled peaks' line against
                 the device's memory limit, bisection after an out-of-memory), bounded by the
                 stage's window and 4 tries; images/s per phase and at 1:9, and peak memory (the
                 compiled step's, XLA's buffer assignment, and the process's allocator peak).
 5 profile       the top HLO ops of both ImageNet-64 steps (benchmarks/profile_steps.py), on a
                 run rebuilt from the persistent cache (its compile time is an in-process warm
                 figure too).

Budget: --budget_s (default 600, the GPU's ten minutes with compiles) is split into cumulative
deadlines by share (40/20/10/22/8 %): stage i must end by the sum of the shares up to i, so
time a stage leaves over goes to the next and an overrun is taken from the later, less
important ones. A stage whose window is below its minimum (what its compiles need on an H100,
a guess) is skipped with the reason; inside a stage the optional parts (the FastGen-settings
comparison, the MFU lowering, the ImageNet-64 warm child, every PixArt batch try) are each
started only if the window still holds them. A compile already started cannot be interrupted:
the budget is planned, not enforced (run the suite under `timeout`, the wrapper does). A stage
that raises is recorded with its error and the suite goes on. The JSON holds the card, date,
versions (python, jax, jaxlib, flax, optax, orbax, torch with its CUDA/cuDNN, the jax CUDA
plugin, the driver) and each stage's status, allowance, wall time and figures; the table printed
at the end lists every figure against its target.

Settings are fixed per mode and listed by --dry_run (nothing runs). --tiny runs every stage at
tiny sizes (8×8 nets, batch 2–4, 1 step, a 2-block PixArt) on whatever device there is: the
suite's wiring, tested on CPU by tests/test_gpu_suite.py. Without --tiny the suite refuses to
run when jax sees no GPU (--allow_cpu overrides), and it stops at once, naming the missing
packages, when the engine cannot be imported (the device machine's image lacks ml_collections,
clu, grain and TensorFlow: see BENCHMARKS.md). The persistent compilation cache of this process
is --cache_dir, emptied at the start so that first compiles are cold. Its default follows main's
per-user rule (engine/compile_cache.py), in a folder of its own so emptying it never touches the
runs' cache: $XDG_CACHE_HOME (or ~/.cache)/fdistill_jax/gpu_suite_jax_cache/<hostname>, owner-only.
Not DIR/jax_cache: the cache holds native code this process loads and runs, and DIR may be shared.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable

# Before jax starts: PyTorch shares the GPU in stage 1 (no preallocation, as versus_torch sets),
# and the PixArt batch search should see most of the card, not XLA's default 75 %.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")

from absl import app, flags, logging  # noqa: E402

from fdistill_jax.benchmarks import common  # noqa: E402

# Shared with the engine's benchmark scripts (one definition whichever imports first).
_OUT, _TINY = common.shared_flag("out"), common.shared_flag("tiny")
try:  # The engine's benchmark modules.
  from fdistill_jax.benchmarks import engine_speed, profile_steps, versus_torch  # noqa: E402
  _IMPORT_ERROR = None
except ImportError as e:  # Reported by preflight() with what to install; flags still parse.
  _IMPORT_ERROR = e

_BUDGET = flags.DEFINE_float("budget_s", 600.0, "Wall-time budget of the whole suite, seconds.")
_DRY = flags.DEFINE_bool("dry_run", False, "List stages, settings and allowances; run nothing.")
_STAGES = flags.DEFINE_list("stages", [], "Run only these stages (default: all, in order).")
_ALLOW_CPU = flags.DEFINE_bool("allow_cpu", False, "Run full sizes even if jax sees no GPU.")
_COMPILE_MODE = flags.DEFINE_enum("compile_mode", "auto", ["auto", "fresh", "reuse"],
                                  "Stage 3: two children on a fresh cache, one on ours, or auto.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Profiler traces (default DIR/traces).")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "This process's persistent compilation "
                                 "cache, emptied at the start (default: per user and host, "
                                 "~/.cache/fdistill_jax/gpu_suite_jax_cache/<hostname>; see "
                                 "default_cache_dir).")
_CHILD = flags.DEFINE_string("child_compile", None, "Internal: build this run in a child.")
_CHILD_CACHE = flags.DEFINE_string("child_cache", None, "Internal: the child's cache dir.")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIGMAS = (2.5, 14.6, 80.0, 157.0)
TARGETS = {"ratio": 1.5, "one_step_over_heun79": 70.0, "mfu": 0.40, "warm_compile_s": 10.0}

# ------------------------------------------------------------------------------------ settings
FULL = {
    "cifar10": dict(config="configs/cifar10_kl.py", batch=256, steps=10, fastgen_steps=5,
                    sample_batch=256, nfes=(35, 79)),
    "imagenet64": dict(config="configs/imagenet64_js.py", batch=64, steps=10, matmul_n=8192),
    "pixart512": dict(config="configs/pixart512_js.py", batch=8, steps=5, start_batch=8,
                      max_batch=512, granularity=8, max_attempts=4, numerics_batch=2,
                      digits_batch=16),
    "profile": dict(steps=3, top=10),
    "compile": dict(child_overhead_s=40.0, warm_child_s=90.0),
}
TINY = {
    "cifar10": dict(FULL["cifar10"], batch=4, steps=1, fastgen_steps=1, sample_batch=2,
                    nfes=(3,)),
    "imagenet64": dict(FULL["imagenet64"], batch=2, steps=1, matmul_n=128),
    "pixart512": dict(FULL["pixart512"], batch=2, steps=1, start_batch=2, max_batch=4,
                      granularity=2, max_attempts=2, numerics_batch=2, digits_batch=2),
    "profile": dict(steps=1, top=5),
    "compile": dict(child_overhead_s=0.0, warm_child_s=0.0),
}


def sizes(tiny: bool) -> dict:
  return TINY if tiny else FULL


def run_config(name: str, tiny: bool, batch: int | None = None):
  """The config of run `name` (cifar10, imagenet64, pixart512) on random weights and synthetic
  data: the same in this process and in the compile children, so that a child's steps are the
  programs the parent compiled (and cached)."""
  z = sizes(tiny)[name]
  cfg = engine_speed.synthetic_config(os.path.join(REPO, z["config"]), {}, batch or z["batch"])
  if tiny:
    if name == "pixart512":
      common.shrink_pixart(cfg)
      cfg.teacher.update(compute_dtype="float32", remat=False)
    else:
      versus_torch.shrink(cfg)
      # Smaller still (tests/test_perf_benchmarks.py's size): one 8×8 level, float32, no remat.
      cfg.teacher.update(dtype="float32", remat=False)
      kw = cfg.teacher.precond_kwargs
      song = kw.model_type == "SongUNet"
      kw.update(img_resolution=8, model_channels=8 if song else 16, channel_mult=(1,),
                attn_resolutions=(8,))
      cfg.dataset.resolution = 8
      cfg.disc.feature_keys = ("enc8",) if song else ("bottleneck",)
  cfg.eval.num_samples = min(cfg.eval.num_samples, cfg.train.batch_size)
  return cfg


@dataclasses.dataclass
class Stage:
  name: str
  title: str
  share: float  # of the budget
  min_s: float  # least window to start it (full sizes; tiny: 0)
  fn: Callable
  plan: Callable  # (tiny) -> {settings and the stand-alone commands}
  guess: str = ""  # What it may take on one H100 (a guess from the CIFAR-10 compile measured there)


# ------------------------------------------------------------------------------------ runner
class Suite:
  """The results record, its atomic writes and the clock of the stages' windows."""

  def __init__(self, out: str, budget_s: float, tiny: bool, clock=time.monotonic):
    self.out, self.budget_s, self.tiny, self.clock = out, budget_s, tiny, clock
    self.path = os.path.join(out, "gpu_suite.json")
    self.t0 = clock()
    self.deadline = self.t0 + budget_s
    self.shared: dict = {"compile_s": {}}  # Figures later stages use (cold compile times).
    self.results = {
        "suite": "fdistill_jax.benchmarks.gpu_suite", "issue": 31,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "tiny" if tiny else "full", "budget_s": budget_s, "command": sys.argv,
        "stages": {}}

  def left(self) -> float:
    """Seconds until the running stage's deadline."""
    return self.deadline - self.clock()

  def save(self) -> None:
    """Rewrites the JSON atomically (a temporary file in the same folder, then os.replace)."""
    os.makedirs(self.out, exist_ok=True)
    self.results["elapsed_s"] = self.clock() - self.t0
    fd, tmp = tempfile.mkstemp(dir=self.out, prefix=".gpu_suite.", suffix=".json")
    with os.fdopen(fd, "w") as f:
      json.dump(self.results, f, indent=1, default=_json_default)
    os.replace(tmp, self.path)

  def run(self, stages: list[Stage]) -> dict:
    """Runs the stages in order within their cumulative deadlines; see the module docstring."""
    cum = 0.0
    for st in stages:
      cum += st.share
      self.deadline = self.t0 + min(cum, 1.0) * self.budget_s
      window = self.left()
      rec = self.results["stages"][st.name] = {
          "title": st.title, "allowance_s": round(window, 1),
          "min_s": 0.0 if self.tiny else st.min_s}
      if window < rec["min_s"] or window <= 0:
        rec.update(status="skipped", reason=f"would overrun: {window:.0f} s left of its window "
                   f"(cumulative {cum:.0%} of the {self.budget_s:.0f} s budget), it needs at "
                   f"least {rec['min_s']:.0f} s")
        logging.warning("stage %s skipped: %s", st.name, rec["reason"])
        self.save()
        continue
      rec["status"] = "running"
      self.save()
      t = self.clock()
      logging.warning("stage %s: %.0f s window", st.name, window)
      try:
        st.fn(self, rec)
        rec["status"] = "ok"
      except Exception as e:  # pylint: disable=broad-except  (recorded; the suite goes on)
        rec.update(status="error", error=f"{type(e).__name__}: {e}"[:4000],
                   traceback=traceback.format_exc()[-4000:])
        logging.warning("stage %s failed: %s", st.name, rec["error"][:500])
      rec["wall_s"] = self.clock() - t
      if rec["wall_s"] > window:
        rec["overran_s"] = rec["wall_s"] - window
      gc.collect()
      self.save()
    return self.results


def _json_default(o):
  try:
    import numpy as np  # pylint: disable=import-outside-toplevel
    if isinstance(o, np.generic):
      return o.item()
    if isinstance(o, np.ndarray):
      return o.tolist()
  except ImportError:
    pass
  return str(o)


# ------------------------------------------------------------------------------------ env
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml_collections", "clu", "grain",
            "tensorflow", "tensorflow-cpu", "torch", "numpy", "safetensors", "absl-py")
# Modules the engine imports (compose -> loop -> clu metric writers -> TensorFlow; data -> grain).
ENGINE_MODULES = ("numpy", "absl", "jax", "flax", "optax", "orbax.checkpoint", "ml_collections",
                  "etils", "clu", "tensorflow", "grain", "safetensors", "PIL",
                  "fdistill_jax.compose")


def package_versions() -> dict:
  """Installed versions (None = not installed) without importing anything, and every
  jax CUDA plugin / NVIDIA wheel present."""
  out = {}
  for p in PACKAGES:
    try:
      out[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      out[p] = None
  for dist in importlib.metadata.distributions():
    name = (dist.metadata["Name"] or "").lower()
    if name.startswith(("jax-cuda", "jax_cuda", "nvidia-cudnn", "nvidia-cuda-runtime")):
      out[name] = dist.version
  return out


def missing_modules(names=ENGINE_MODULES) -> dict:
  """{module: error} of the modules that do not import (found but broken ones included)."""
  bad = {}
  for m in names:
    try:
      importlib.import_module(m)
    except Exception as e:  # pylint: disable=broad-except
      bad[m] = f"{type(e).__name__}: {e}"[:300]
  return bad


def environment() -> dict:
  """Card, driver and versions, and the jax / torch view of the device."""
  env = {"python": platform.python_version(), "host": f"{platform.machine()}, "
         f"{os.cpu_count()} CPUs", "packages": package_versions(),
         "env": {k: os.environ.get(k) for k in ("XLA_PYTHON_CLIENT_PREALLOCATE",
                                                 "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_FLAGS",
                                                 "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES")}}
  if shutil.which("nvidia-smi"):
    try:
      env["nvidia_smi"] = subprocess.run(
          ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
           "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:  # pylint: disable=broad-except
      env["nvidia_smi"] = f"failed: {e}"
  try:
    import jax  # pylint: disable=import-outside-toplevel
    dev = jax.devices()[0]
    stats = dev.memory_stats() or {}
    env["jax"] = {"version": jax.__version__, "backend": dev.platform,
                  "platform_version": getattr(dev.client, "platform_version", None),
                  "device_kind": dev.device_kind, "device_count": jax.device_count(),
                  "bytes_limit": stats.get("bytes_limit")}
  except Exception as e:  # pylint: disable=broad-except
    env["jax"] = {"error": f"{type(e).__name__}: {e}"}
  try:
    import torch  # pylint: disable=import-outside-toplevel
    cuda = torch.cuda.is_available()
    env["torch"] = {"version": torch.__version__, "cuda_build": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version() if cuda else None,
                    "cuda_available": cuda,
                    "device": torch.cuda.get_device_name(0) if cuda else None}
  except Exception as e:  # pylint: disable=broad-except
    env["torch"] = {"error": f"{type(e).__name__}: {e}"}
  return env


INSTALL_HINT = (
    "No network on the device machine: carry wheels (pip download --python-version 3.12 "
    "--only-binary=:all: -d wheels PKG on a networked host; the carried folder must stay under "
    "64 MiB) and `pip install --no-index --find-links=wheels PKG` there; see BENCHMARKS.md "
    "'GPU figures' for the packages the device image lacks (ml_collections, clu, grain and "
    "TensorFlow, which clu's metric writers import at module level).")


def preflight(env: dict, tiny: bool, allow_cpu: bool) -> tuple[list[str], bool]:
  """(problems, fatal): what keeps stages from running, in words."""
  problems, fatal = [], False
  bad = {} if _IMPORT_ERROR is None else {"fdistill_jax.benchmarks": str(_IMPORT_ERROR)}
  bad.update(missing_modules())
  if bad:
    problems.append("the engine cannot be imported; missing or broken modules: "
                    + "; ".join(f"{k} ({v})" for k, v in bad.items()) + ". " + INSTALL_HINT)
    fatal = True
  j = env.get("jax", {})
  if j.get("backend") != "gpu":
    err = f", {j['error']}" if j.get("error") else ""
    msg = (f"jax sees no GPU (backend {j.get('backend')!r}{err}): install the "
           "jax CUDA plugin matching jaxlib (jax[cuda12] or jax-cuda13-plugin/-pjrt), and check "
           "nvidia-smi and JAX_PLATFORMS")
    if not (tiny or allow_cpu):
      problems.append(msg + "; refusing full sizes on CPU (--allow_cpu, or --tiny)")
      fatal = True
    elif not tiny:
      problems.append(msg)
  t = env.get("torch", {})
  if "error" in t:
    problems.append(f"torch does not import ({t['error']}): stage versus_torch times our side "
                    "only; install the CUDA build of torch for the ratio")
  elif j.get("backend") == "gpu" and not t.get("cuda_available"):
    problems.append(f"torch {t.get('version')} sees no CUDA (cuda build {t.get('cuda_build')}): "
                    "the PyTorch side would run on CPU; stage versus_torch times our side only")
  pinned = "0.10.2"
  if j.get("version") and j["version"] != pinned:
    problems.append(f"jax {j['version']} is not the pinned {pinned} (setup.py): the figures are "
                    "this version's; profile_steps reads jax's raw XSpace, which may differ")
  return problems, fatal


def _torch_side():
  """(torch, device, None): the PyTorch side on jax's device kind, or (None, None, why not)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except Exception as e:  # pylint: disable=broad-except
    return None, None, f"torch does not import: {e}"
  import jax  # pylint: disable=import-outside-toplevel
  if jax.devices()[0].platform == "gpu":
    if not torch.cuda.is_available():
      return None, None, f"torch {torch.__version__} has no CUDA: no same-device comparison"
    return torch, "cuda", None
  return torch, "cpu", None  # Tiny mode, or --allow_cpu: both sides on CPU.


# ------------------------------------------------------------------------------------ stage 1
def _torch_settings(cfg, cuda: bool) -> dict:
  """{name: TorchFDistill options}: the tuned step at our precision, and FastGen's own."""
  import torch  # pylint: disable=import-outside-toplevel
  bf16 = cfg.teacher.dtype == "bfloat16"
  return {
      "tuned_bf16": dict(amp=torch.bfloat16 if bf16 else None, compile=cuda, channels_last=cuda,
                         fused_adam=cuda, checkpointing=False),
      "fastgen_fp32": dict(amp=None, compile=False, channels_last=False, fused_adam=False,
                           checkpointing=False)}


def _one_step_ratio(sampling: dict) -> dict | None:
  """One-step images/s over the teacher's at the largest Heun NFE timed (the target: 79)."""
  nfes = sorted(int(k[5:]) for k in sampling if k.startswith("heun_"))
  if not nfes or "one_step" not in sampling:
    return None
  n = nfes[-1]
  return {"nfe": n, "ratio": sampling["one_step"]["images_per_s"]
          / sampling[f"heun_{n}"]["images_per_s"]}


def stage_versus_torch(s: Suite, rec: dict) -> None:
  # pylint: disable=protected-access
  import jax  # pylint: disable=import-outside-toplevel
  z = sizes(s.tiny)["cifar10"]
  cfg = run_config("cifar10", s.tiny)
  torch, device, why = _torch_side()
  rec["settings"] = dict(z, dtype=cfg.teacher.dtype, remat=bool(cfg.teacher.get("remat")),
                         critic_steps=int(cfg.method.critic_steps))
  with tempfile.TemporaryDirectory() as wd:
    ours = versus_torch.Ours(cfg, wd)
    s.shared["compile_s"]["cifar10"] = dict(ours.run.compile_times)
    rec["ours_compile_s"] = dict(ours.run.compile_times)
    rec["ours_build_s"] = ours.build_s
    s.save()
    if torch is None:
      rec["torch_error"] = why
      r = ours.time_steps(z["steps"])
      r.update(versus_torch._summary(r["phases"], cfg.train.batch_size,
                                     int(cfg.method.critic_steps)))
      rec["ours_only"] = r
      s.save()
      rec["ours_sampling"] = ours.sampling(z["sample_batch"], z["nfes"], 10)
      rec["one_step_over_heun"] = _one_step_ratio(rec["ours_sampling"])
      return
    settings = _torch_settings(cfg, device == "cuda")
    for i, (name, opts) in enumerate(settings.items()):
      if i and s.left() < (0 if s.tiny else 60):
        rec.setdefault("notes", []).append(f"{name} skipped: {s.left():.0f} s left")
        continue
      steps = z["steps"] if i == 0 else z["fastgen_steps"]
      r = versus_torch.compare(cfg, steps, z["sample_batch"], [int(n) for n in z["nfes"]], opts,
                               device, ours=ours, sample=i == 0)
      r["table"] = versus_torch.table(r)
      rec[name] = r
      if i == 0:
        rec["one_step_over_heun"] = _one_step_ratio(r["sampling"]["ours"])
        rec["one_step_over_heun_pytorch"] = _one_step_ratio(r["sampling"]["theirs"])
      s.save()
    del ours
  jax.clear_caches()


# ------------------------------------------------------------------------------------ stage 2
def step_flops(cfg, devices) -> dict:
  """{phase: FLOPs} of cfg's steps, lowered only (zero weights, no compile, nothing runs)."""
  # pylint: disable=protected-access
  built = common.abstract_steps(cfg, devices)
  return {p: engine_speed._flops(fn.lower(*built["args"])) for p, fn in built["steps"].items()}


def stage_mfu(s: Suite, rec: dict) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  z = sizes(s.tiny)["imagenet64"]
  cfg = run_config("imagenet64", s.tiny)
  dev = jax.devices()[0]
  peak = common.peak_bf16(dev.device_kind)
  rec["settings"] = dict(z, dtype=cfg.teacher.dtype, remat=bool(cfg.teacher.get("remat")),
                         critic_steps=int(cfg.method.critic_steps))
  rec["peak_bf16"] = peak
  with tempfile.TemporaryDirectory() as wd:
    r = engine_speed.speed(cfg, wd, z["steps"], devices=jax.devices()[:1])
  s.shared["compile_s"]["imagenet64"] = {p: v["compile_s"] for p, v in r["phases"].items()}
  rec["speed"] = r
  s.save()
  crit = r["critic_steps"]
  ph = r["phases"]
  tflops = peak["tflops"]
  for p, v in ph.items():
    v["hfu"] = v["tflops_per_s"] / tflops if tflops and v["tflops_per_s"] else None
  # Iteration: (gen + crit·critic) FLOPs over (gen + crit·critic) seconds.
  weights = {"generator": 1, "critic": crit}
  it_s = sum(weights[p] * ph[p]["step_s"] for p in ph)
  hlo = sum(weights[p] * (ph[p]["hlo_flops"] or 0) for p in ph)
  rec["iteration_hlo_tflops_per_s"] = hlo / it_s / 1e12 if hlo else None
  rec["hfu"] = rec["iteration_hlo_tflops_per_s"] / tflops if tflops and hlo else None
  if not tflops:
    rec["mfu"], rec["mfu_reason"] = None, peak["reason"]
  s.save()
  if dev.platform == "gpu" or s.tiny:
    n = z["matmul_n"]
    rec["matmul_bf16_tflops"] = engine_speed.matmul_ceiling_tflops(n=n, reps=10 if n > 1024 else 2)
    rec["matmul_n"] = n
    s.save()
  if bool(cfg.teacher.get("remat")) or s.tiny:  # Model FLOPs: the same step without remat.
    if s.left() < (0 if s.tiny else 30):
      rec.setdefault("notes", []).append("model FLOPs (no-remat lowering) skipped: no time")
      return
    plain = run_config("imagenet64", s.tiny)
    plain.teacher.remat = False
    t = time.time()
    model = step_flops(plain, jax.devices()[:1])
    rec["model_flops"] = {"per_phase": model, "lowering_s": time.time() - t,
                          "note": "FLOPs of the step lowered with teacher.remat=False (no "
                                  "recomputation): the model's FLOPs; MFU = these / step time / "
                                  "peak, HFU = the run's own HLO FLOPs (remat included)"}
  else:
    model = {p: ph[p]["hlo_flops"] for p in ph}
  for p, v in ph.items():
    v["model_flops"] = model.get(p)
    v["mfu"] = (model[p] / v["step_s"] / 1e12 / tflops
                if tflops and model.get(p) else None)
  m = sum(weights[p] * (model.get(p) or 0) for p in ph)
  rec["iteration_model_tflops_per_s"] = m / it_s / 1e12 if m else None
  if tflops and m:
    rec["mfu"] = rec["iteration_model_tflops_per_s"] / tflops


# ------------------------------------------------------------------------------------ stage 3
def _cache_files(d: str) -> int:
  return sum(len(f) for _, _, f in os.walk(d)) if os.path.isdir(d) else 0


def compile_child(name: str, cache: str, tiny: bool, timeout_s: float) -> dict:
  """Builds run `name` in a fresh process on the persistent cache `cache`: loop.Run's per-step
  trace + lower + compile (or load), the child's build and wall time, cache files added."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [REPO, os.environ.get("PYTHONPATH")])))
  cmd = [sys.executable, "-m", "fdistill_jax.benchmarks.gpu_suite", f"--child_compile={name}",
         f"--child_cache={cache}", f"--tiny={tiny}"]
  before, t0 = _cache_files(cache), time.time()
  try:
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=max(timeout_s, 1.0), check=False)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": time.time() - t0,
            "cache_files_before": before}
  wall = time.time() - t0
  line = [l for l in proc.stdout.splitlines() if l.startswith("GPU_SUITE_CHILD ")]
  if proc.returncode or not line:
    return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}", "wall_s": wall}
  rec = json.loads(line[-1][len("GPU_SUITE_CHILD "):])
  rec.update(wall_s=wall, cache_files_before=before, cache_files_added=_cache_files(cache) - before)
  return rec


def child_main(name: str, cache: str, tiny: bool) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  from fdistill_jax import compose  # pylint: disable=import-outside-toplevel
  from fdistill_jax.engine import compile_cache  # pylint: disable=import-outside-toplevel
  compile_cache.enable(cache)
  cfg = run_config(name, tiny)
  t0 = time.time()
  with tempfile.TemporaryDirectory() as wd:
    run = compose.Run(cfg, wd, devices=jax.devices()[:1], restore=False)
  print("GPU_SUITE_CHILD " + json.dumps({"compile_s": dict(run.compile_times),
                                          "run_build_s": time.time() - t0,
                                          "device": jax.devices()[0].device_kind}), flush=True)


def compile_mode(requested: str, name: str, cold_s: float | None, left_s: float,
                 overhead_s: float) -> tuple[str, str]:
  """(mode, why) for run `name`: 'fresh' (cold and warm children on a new cache), 'reuse' (one
  warm child on this process's cache, cold = this process's first compile) or 'skip'. auto:
  CIFAR-10 fresh when no in-process cold figure exists or the window holds a cold child (1.5×
  the in-process cold compile) plus two start-ups, else reuse; ImageNet-64 (a cold compile of
  minutes) reuse when stage mfu compiled it, else skip."""
  if requested != "auto":
    if requested == "reuse" and cold_s is None:
      return "skip", "reuse asked, but this process has not compiled it (its stage did not run)"
    return requested, "asked"
  if cold_s is None:
    if name == "cifar10":
      return "fresh", "no in-process cold compile (stage versus_torch did not run)"
    return "skip", "no in-process cold compile (stage mfu did not run); a fresh pair is two " \
                   "cold compiles of this run"
  if name == "cifar10" and left_s >= 1.5 * cold_s + 2 * overhead_s:
    return "fresh", f"window {left_s:.0f} s holds a cold child (~{1.5 * cold_s:.0f} s)"
  return "reuse", f"cold compile {cold_s:.0f} s measured in this process"


def stage_compile(s: Suite, rec: dict) -> None:
  z = sizes(s.tiny)["compile"]
  rec["runs"] = {}
  for name in ("cifar10", "imagenet64"):
    cold = s.shared["compile_s"].get(name)
    mode, why = compile_mode(_COMPILE_MODE.value, name, sum(cold.values()) if cold else None,
                             s.left(), z["child_overhead_s"])
    r = rec["runs"][name] = {"mode": mode, "why": why}
    if mode != "skip" and s.left() < z["warm_child_s"]:
      mode, r["why"] = "skip", f"{s.left():.0f} s left, a child needs ~{z['warm_child_s']:.0f} s"
    if mode == "skip":
      r.update(mode="skipped", reason=r["why"])
      s.save()
      continue
    if mode == "fresh":
      fresh = f"{s.shared['cache_dir']}_fresh_{name}"
      shutil.rmtree(fresh, ignore_errors=True)
      r["cold"] = compile_child(name, fresh, s.tiny, s.left())
      s.save()
      if "error" not in r["cold"]:
        r["warm"] = compile_child(name, fresh, s.tiny, s.left())
      shutil.rmtree(fresh, ignore_errors=True)
    else:
      r["cold"] = {"compile_s": cold, "where": "this process, empty cache (stage "
                   f"{'versus_torch' if name == 'cifar10' else 'mfu'})"}
      r["warm"] = compile_child(name, s.shared["cache_dir"], s.tiny, s.left())
    if "compile_s" in r.get("warm", {}):
      r["warm_max_step_s"] = max(r["warm"]["compile_s"].values())
      r["meets_target"] = r["warm_max_step_s"] <= TARGETS["warm_compile_s"]
    s.save()


# ------------------------------------------------------------------------------------ stage 4
def _perturb(params, seed: int = 1):
  """Every weight plus a random part (σ 1/√fan-in for matrices, 0.02 for vectors): diffusers
  and EDM zero-initialise output layers, which would make D = x (exact in any precision)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  def perturb(params):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed, impl="rbg"), len(leaves))
    return jax.tree.unflatten(tree, [
        p + (0.02 if p.ndim < 2 else 1.0 / np.sqrt(np.prod(p.shape[:-1])))
        * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])

  return jax.jit(perturb)(params)  # One program, not one per leaf shape.


def pixart_numerics(module, params, cond, batch: int, sigmas=SIGMAS, seed: int = 0) -> dict:
  """Relative L2 errors of the PixArt teacher's D(x; σ) (and of ε̂ = (x − D)/σ) in bf16 compute
  (fp32 weights) and in fp32 at JAX's default matmul precision, against fp32 at 'highest', on
  x = x0 + σ n (x0 ~ N(0, 0.5²)), one compile per precision (σ is an argument)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from fdistill_jax.teachers import pixart as tp  # pylint: disable=import-outside-toplevel

  def make(dtype):
    def d(p, x, sigma, c):
      teacher = tp.make_pixart_teacher(module, p, compute_dtype=dtype)
      return teacher(x, jnp.full((x.shape[0],), sigma), c).astype(jnp.float32)
    return jax.jit(d)

  f32, bf16 = make(jnp.float32), make(jnp.bfloat16)
  s, ch = module.sample_size, module.in_channels
  k1, k2 = jax.random.split(jax.random.key(seed, impl="rbg"))
  x0 = 0.5 * jax.random.normal(k1, (batch, s, s, ch))
  noise = jax.random.normal(k2, x0.shape)
  params, cond = jax.device_put(params), jax.device_put(cond)
  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
  out, t0 = {}, time.time()
  for sigma in sigmas:
    x = x0 + sigma * noise
    with jax.default_matmul_precision("highest"):
      ref = f32(params, x, sigma, cond)
    d32, d16 = f32(params, x, sigma, cond), bf16(params, x, sigma, cond)
    eps = lambda d, sigma=sigma, x=x: (x - d) / sigma
    out[f"sigma_{sigma:g}"] = {
        "D_bf16_vs_f32_highest": rel(d16, ref), "D_f32_default_vs_highest": rel(d32, ref),
        "eps_bf16_vs_f32_highest": rel(eps(d16), eps(ref)),
        "eps_f32_default_vs_highest": rel(eps(d32), eps(ref)),
        "D_rms": float(jnp.sqrt(jnp.mean(ref ** 2)))}
  out["wall_s"] = time.time() - t0
  return out


def next_batch(attempts: list, limit_bytes: float | None, max_batch: int, granularity: int,
               max_attempts: int, headroom: float = 0.9) -> int | None:
  """The next PixArt batch to try, or None to stop. attempts: [{'batch', 'fits',
  'peak_bytes' (compiled, max over phases; may be None)}]. After an out-of-memory: bisect between
  the largest fit and the smallest failure (multiples of `granularity`). Otherwise, with two
  fitted peaks and a known limit, the batch where their line reaches headroom·limit (at most 4×
  the largest fit); else double."""
  if len(attempts) >= max_attempts:
    return None
  fit = sorted(a["batch"] for a in attempts if a["fits"])
  bad = sorted(a["batch"] for a in attempts if not a["fits"])
  lo = fit[-1] if fit else 0
  tried = {a["batch"] for a in attempts}
  g = lambda b: b // granularity * granularity if b >= granularity else b
  if bad:
    hi = bad[0]
    nxt = g((lo + hi) // 2) if fit else (g(hi // 2) or hi // 2)
    return nxt if lo < nxt < hi and nxt not in tried and nxt > 0 else None
  pts = sorted({a["batch"]: a["peak_bytes"] for a in attempts
                if a["fits"] and a.get("peak_bytes")}.items())
  if limit_bytes and len(pts) >= 2:
    (b0, p0), (b1, p1) = pts[0], pts[-1]
    slope = (p1 - p0) / (b1 - b0)
    if slope > 0:
      pred = g(int((headroom * limit_bytes - p1) / slope) + b1)
      nxt = min(pred, 4 * lo, max_batch)
      return nxt if nxt > lo and nxt not in tried else None
  nxt = min(2 * lo, max_batch)
  return nxt if nxt > lo and nxt not in tried else None


def _is_oom(e: Exception) -> bool:
  text = f"{type(e).__name__} {e}".lower()
  return "resource_exhausted" in text or "out of memory" in text or "oom" in text.split()


def stage_pixart(s: Suite, rec: dict) -> None:
  # pylint: disable=protected-access
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from fdistill_jax import defaults  # pylint: disable=import-outside-toplevel
  from fdistill_jax.convert import pixart as conv  # pylint: disable=import-outside-toplevel
  from fdistill_jax.data import prompt_cache as pc  # pylint: disable=import-outside-toplevel
  from fdistill_jax.experiments import t2i  # pylint: disable=import-outside-toplevel
  from fdistill_jax.models import pixart as pixart_lib  # pylint: disable=import-outside-toplevel
  z = sizes(s.tiny)["pixart512"]
  rec["settings"] = dict(z, sigmas=SIGMAS)
  num = rec["numerics"] = {}
  # The committed digits text-to-image teacher (16×16×1 pixels, 4 blocks), its own prompts.
  module, params = conv.load_diffusers_folder(defaults.asset("digits_t2i_teacher"))
  cache = pc.load_prompt_cache(defaults.asset("digits_t2i_prompts"))
  rows = t2i.training_rows(cache)[:z["digits_batch"]]
  num["digits_t2i_teacher"] = pixart_numerics(module, params, t2i.condition(cache, rows),
                                              len(rows))
  s.save()
  # PixArt-XL-2-512's architecture (tiny: the 2-block one) on random weights, random prompts.
  cfg = run_config("pixart512", s.tiny)
  config = cfg.teacher.pixart_config.to_dict()
  module = pixart_lib.from_diffusers_config(config)
  params = _perturb(t2i._random_params(json.dumps(config, sort_keys=True), cfg.teacher.dtype,
                                       int(cfg.teacher.init_seed)))
  b = z["numerics_batch"]
  cache = t2i.random_cache(b, int(cfg.teacher.max_length),
                           module.caption_channels or module.inner_dim, 0)
  name = "pixart_xl_2_512_random" if not s.tiny else "pixart_tiny_random"
  num[name] = pixart_numerics(module, params, t2i.condition(cache, np.arange(b)), b)
  num[name]["config"] = {k: config[k] for k in ("num_layers", "attention_head_dim",
                                                  "num_attention_heads", "sample_size")}
  del params
  s.save()
  # The f-distill steps at the largest batch that fits.
  dev = jax.devices()[0]
  limit = (dev.memory_stats() or {}).get("bytes_limit")
  steps = rec["steps"] = {"bytes_limit": limit, "attempts": []}
  batch = z["start_batch"]
  while batch:
    last = steps["attempts"][-1]["wall_s"] if steps["attempts"] else None
    need = 0 if s.tiny else (1.2 * last if last else 60)
    if s.left() < need:
      steps["stopped"] = f"{s.left():.0f} s left, a try needs ~{need:.0f} s"
      break
    t0 = time.time()
    att = {"batch": batch}
    try:
      with tempfile.TemporaryDirectory() as wd:
        r = engine_speed.speed(run_config("pixart512", s.tiny, batch), wd, z["steps"],
                               devices=jax.devices()[:1])
      peaks = [p.get("compiled_peak_bytes") for p in r["phases"].values()]
      att.update(fits=True, peak_bytes=max(peaks) if all(peaks) else None, speed=r,
                 images_per_s=r["images_per_s"],
                 phase_images_per_s={p: batch / v["step_s"] for p, v in r["phases"].items()})
    except Exception as e:  # pylint: disable=broad-except
      if not _is_oom(e):
        raise
      att.update(fits=False, error=f"{type(e).__name__}: {e}"[:1000])
    att["wall_s"] = time.time() - t0
    steps["attempts"].append(att)
    gc.collect()
    jax.clear_caches()
    s.save()
    batch = next_batch(steps["attempts"], limit, z["max_batch"], z["granularity"],
                       z["max_attempts"])
  fits = [a for a in steps["attempts"] if a["fits"]]
  if fits:
    best = max(fits, key=lambda a: a["batch"])
    bad = [a["batch"] for a in steps["attempts"] if not a["fits"]]
    steps["largest_fitting"] = {
        "batch": best["batch"], "images_per_s": best["images_per_s"],
        "phase_images_per_s": best["phase_images_per_s"],
        "compiled_peak_gib": best["peak_bytes"] / 2 ** 30 if best["peak_bytes"] else None,
        "process_peak_gib": best["speed"]["peak_gib_device0"] or None,  # 0: no stats (CPU)
        "smallest_failing": min(bad) if bad else None}


# ------------------------------------------------------------------------------------ stage 5
def stage_profile(s: Suite, rec: dict) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  from fdistill_jax import compose  # pylint: disable=import-outside-toplevel
  z = sizes(s.tiny)["profile"]
  cfg = run_config("imagenet64", s.tiny)
  trace = os.path.join(s.shared["trace_dir"], "imagenet64")
  rec["settings"] = dict(z, batch=cfg.train.batch_size, trace_dir=trace)
  t0 = time.time()
  with tempfile.TemporaryDirectory() as wd:
    run = compose.Run(cfg, wd, devices=jax.devices()[:1], restore=False)
    rec["run_build_s"] = time.time() - t0
    rec["compile_s_in_process"] = dict(run.compile_times)  # Warm if stage mfu compiled them.
    s.save()
    prof = profile_steps.profile(run, run.global_batch(0), trace, z["steps"], z["top"], 1)
  rec["profile"] = prof
  rec["table"] = profile_steps.table(prof)
  del run


def _plan(name: str, commands: list[str], **extra) -> Callable:
  return lambda tiny: {"settings": dict(sizes(tiny)[name], **extra), "commands": commands}


STAGES = [
    Stage("versus_torch", "CIFAR-10 f-distill: ours vs PyTorch (tuned bf16, FastGen fp32); "
          "one-step vs Heun 35/79", 0.40, 120.0, stage_versus_torch, _plan("cifar10", [
              "python -m fdistill_jax.benchmarks.versus_torch --config=configs/cifar10_kl.py "
              "--batch=256",
              "python -m fdistill_jax.benchmarks.versus_torch --config=configs/cifar10_kl.py "
              "--batch=256 --torch_amp=fp32 --torch_compile=off --fused_adam=off "
              "--channels_last=off"]),
          guess="250–450 s (our two step compiles ~100–200 s, torch.compile ~60–120 s, two Heun "
                "sampler compiles, the fp32 eager rounds)"),
    Stage("mfu", "ImageNet-64 ADM f-distill step: FLOP rate, HFU and MFU vs dense bf16 peak",
          0.20, 60.0, stage_mfu, _plan("imagenet64", [
              "python -m fdistill_jax.benchmarks.engine_speed "
              "--configs=configs/imagenet64_js.py --batch=64"]),
          guess="150–300 s (two 296M-parameter ADM step compiles, the no-remat lowering)"),
    Stage("compile", "cold vs warm compile, persistent cache (CIFAR-10, ImageNet-64)", 0.10,
          20.0, stage_compile, lambda tiny: {
              "settings": dict(sizes(tiny)["compile"], mode=_COMPILE_MODE.value),
              "commands": ["python -m fdistill_jax.benchmarks.gpu_suite --child_compile=NAME "
                           "--child_cache=DIR  (per child)"]},
          guess="40–90 s per warm child; a fresh pair adds one cold compile"),
    Stage("pixart", "PixArt ε-teacher bf16 vs fp32 D error at σ ∈ {2.5, 14.6, 80, 157}; "
          "PixArt-512 steps at the largest batch", 0.22, 60.0, stage_pixart, _plan(
              "pixart512", ["python -m fdistill_jax.benchmarks.engine_speed "
                            "--configs=configs/pixart512_js.py --batch=B  (per try)"],
              sigmas=SIGMAS),
          guess="60–120 s of numerics, then 120–300 s per batch try (init, two 600M-DiT step "
                "compiles)"),
    Stage("profile", "profile of both ImageNet-64 steps (top HLO ops)", 0.08, 20.0,
          stage_profile, _plan("profile", [
              "python -m fdistill_jax.benchmarks.engine_speed "
              "--configs=configs/imagenet64_js.py --batch=64 --profile=DIR"]),
          guess="30–60 s when stage mfu filled the cache"),
]


# ------------------------------------------------------------------------------------ report
def _f(v, d=2, pct=False):
  if v is None:
    return "–"
  return f"{v:.0%}" if pct else f"{v:.{d}f}"


def summary_rows(res: dict) -> list[tuple[str, str, str, str]]:
  """(figure, measured, target, met) rows of the final table."""
  st, rows = res.get("stages", {}), []
  met = lambda ok: "–" if ok is None else ("yes" if ok else "NO")

  def status(name):
    r = st.get(name, {})
    return r.get("status", "not run"), r.get("reason") or r.get("error", "")

  vt = st.get("versus_torch", {})
  for name, label in (("tuned_bf16", "tuned PyTorch (bf16, compile)"),
                      ("fastgen_fp32", "FastGen PyTorch (fp32 eager)")):
    r = vt.get(name)
    if r:
      ratio = r["ratio_images_per_s"]
      rows.append((f"CIFAR-10 1:4 iteration, ours / {label}",
                   f"{ratio:.2f}× ({r['ours']['images_per_s']:.0f} vs "
                   f"{r['theirs']['images_per_s']:.0f} images/s)", "≥ 1.5×",
                   met(ratio >= TARGETS["ratio"])))
  if vt.get("torch_error"):
    rows.append(("CIFAR-10 ours vs PyTorch", f"not measured: {vt['torch_error']}", "≥ 1.5×", "–"))
  if vt.get("one_step_over_heun"):
    v = vt["one_step_over_heun"]
    rows.append((f"one-step / teacher Heun-{v['nfe']} images/s (ours)", f"{v['ratio']:.0f}×",
                 "≥ 70× (79 NFE)", met(v["ratio"] >= TARGETS["one_step_over_heun79"])
                 if v["nfe"] == 79 else "–"))
  m = st.get("mfu", {})
  if "speed" in m:
    rows.append(("ImageNet-64 step MFU (model FLOPs, 1:4 iteration)",
                 f"{_f(m.get('mfu'), pct=True)} of {_f(m['peak_bf16'].get('tflops'), 0)} "
                 "TFLOP/s" + (f" ({m['mfu_reason']})" if m.get("mfu_reason") else ""),
                 "≥ 40 %", met(None if m.get("mfu") is None else m["mfu"] >= TARGETS["mfu"])))
    rows.append(("ImageNet-64 step HFU (HLO FLOPs incl. remat)", _f(m.get("hfu"), pct=True),
                 "", ""))
    rows.append((f"ImageNet-64 images/s (batch {m['speed']['batch']}); bf16 matmul TFLOP/s "
                 f"({m.get('matmul_n')}³)", f"{m['speed']['images_per_s']:.0f}; "
                 f"{_f(m.get('matmul_bf16_tflops'), 3)}", "", ""))
  for name, r in st.get("compile", {}).get("runs", {}).items():
    if "warm" in r and "compile_s" in r["warm"]:
      c, w = r["cold"].get("compile_s") or {}, r["warm"]["compile_s"]
      rows.append((f"{name} compile gen/critic, cold → warm ({r['mode']})",
                   " / ".join(f"{_f(c.get(p), 1)} → {_f(w.get(p), 1)} s" for p in w),
                   "warm ≤ 10 s", met(r.get("meets_target"))))
    elif r.get("reason") or "error" in r.get("warm", r.get("cold", {})):
      rows.append((f"{name} compile", "not measured: " + (r.get("reason") or r.get(
          "warm", r.get("cold", {})).get("error", ""))[:120], "warm ≤ 10 s", "–"))
  px = st.get("pixart", {})
  for model, r in px.get("numerics", {}).items():
    rows.append((f"PixArt D rel. L2, bf16 vs fp32-highest ({model})", ", ".join(
        f"σ={k[6:]}: {v['D_bf16_vs_f32_highest']:.1e}" for k, v in r.items()
        if k.startswith("sigma_")), "", ""))
  best = px.get("steps", {}).get("largest_fitting")
  if best:
    pi = best["phase_images_per_s"]
    rows.append(("PixArt-512 largest batch: images/s gen / critic / 1:9, peak GiB",
                 f"batch {best['batch']}: {pi.get('generator', 0):.1f} / "
                 f"{pi.get('critic', 0):.1f} / {best['images_per_s']:.1f}, compiled "
                 f"{_f(best['compiled_peak_gib'], 1)}, process {_f(best['process_peak_gib'], 1)}"
                 + (f" (batch {best['smallest_failing']} did not fit)"
                    if best["smallest_failing"] else ""), "", ""))
  pr = st.get("profile", {}).get("profile", {})
  for phase, p in pr.items():
    top = p["top"][0] if p["top"] else None
    if top:
      rows.append((f"ImageNet-64 {phase} top op", f"{top['category']} {top['share']:.0%}",
                   "", ""))
  for name in res.get("stages", {}):
    stat, why = status(name)
    if stat != "ok":
      rows.append((f"stage {name}", stat, "", why[:150]))
  return rows


def table(res: dict) -> str:
  env = res.get("environment", {})
  j, t = env.get("jax", {}), env.get("torch", {})
  head = (f"{j.get('device_kind', '?')} ({j.get('backend', '?')}), {res['date_utc']}, jax "
          f"{j.get('version', '?')} ({j.get('platform_version', '')}), torch "
          f"{t.get('version', '–')} (CUDA {t.get('cuda_build', '–')}), mode {res['mode']}, "
          f"budget {res['budget_s']:.0f} s, elapsed {res.get('elapsed_s', 0):.0f} s")
  lines = [head, "", "| figure | measured | target | met |", "|---|---|---|---|"]
  lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(res)]
  return "\n".join(lines)


def dry_run(stages: list[Stage], budget_s: float, tiny: bool, out: str) -> str:
  lines = [f"gpu_suite dry run: mode {'tiny' if tiny else 'full'}, budget {budget_s:.0f} s, "
           f"writes {os.path.join(out, 'gpu_suite.json')} after every stage (atomic rewrite), "
           f"compilation cache {_CACHE_DIR.value or default_cache_dir()} (emptied "
           "first)", ""]
  cum = 0.0
  for i, st in enumerate(stages, 1):
    cum += st.share
    plan = st.plan(tiny)
    lines.append(f"{i}. {st.name}: {st.title}")
    lines.append(f"   allowance {st.share * budget_s:.0f} s ({st.share:.0%}), must end by "
                 f"{min(cum, 1) * budget_s:.0f} s; skipped if its window is under "
                 f"{0 if tiny else st.min_s:.0f} s" + (f"; H100 guess: {st.guess}"
                                                      if st.guess and not tiny else ""))
    lines.append("   settings: " + json.dumps(plan["settings"], default=str))
    for c in plan["commands"]:
      lines.append(f"   stand-alone equivalent: {c}")
  lines += ["", "Packages (installed versions, nothing imported): " + json.dumps(
      {k: v for k, v in package_versions().items() if k in PACKAGES})]
  return "\n".join(lines)


def default_cache_dir(environ=None, host: str | None = None) -> str:
  """--cache_dir's default: main's per-user, per-host rule (compile_cache.user_cache_dir) in a
  folder of the suite's own, since the suite empties it (never the runs' cache) and loads the
  native code in it (never a folder in DIR, which may be shared)."""
  from fdistill_jax.engine import compile_cache  # pylint: disable=import-outside-toplevel
  return compile_cache.user_cache_dir(environ, host, name="gpu_suite_jax_cache")


def select(names) -> list[Stage]:
  if not names:
    return list(STAGES)
  known = {s.name: s for s in STAGES}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise app.UsageError(f"--stages: unknown {unknown}; known {list(known)}")
  return [s for s in STAGES if s.name in names]


def main(argv):
  del argv
  if _CHILD.value:
    child_main(_CHILD.value, _CHILD_CACHE.value, _TINY.value)
    return
  stages = select(_STAGES.value)
  out = _OUT.value
  if _DRY.value:
    print(dry_run(stages, _BUDGET.value, _TINY.value, out))
    return
  logging.set_verbosity(logging.WARNING)
  suite = Suite(out, _BUDGET.value, _TINY.value)
  env = suite.results["environment"] = environment()
  problems, fatal = preflight(env, _TINY.value, _ALLOW_CPU.value)
  suite.results["problems"] = problems
  for p in problems:
    print(f"PROBLEM: {p}", flush=True)
  if fatal:
    suite.results["aborted"] = "preflight: " + " | ".join(problems)
    suite.save()
    print(f"gpu_suite: not run (see {suite.path})", flush=True)
    sys.exit(2)
  from fdistill_jax.engine import compile_cache  # pylint: disable=import-outside-toplevel
  cache = _CACHE_DIR.value or default_cache_dir()
  shutil.rmtree(cache, ignore_errors=True)  # Ours: first compiles are cold.
  compile_cache.enable(cache)
  suite.shared.update(cache_dir=cache, trace_dir=_TRACE_DIR.value or os.path.join(out, "traces"))
  suite.results["compilation_cache"] = cache
  suite.save()
  suite.run(stages)
  suite.results["table"] = table(suite.results)
  suite.save()
  print("\n" + suite.results["table"], flush=True)
  for name in ("versus_torch", "mfu", "profile"):
    r = suite.results["stages"].get(name, {})
    for key in ("tuned_bf16", "fastgen_fp32"):
      if key in r:
        print(f"\n### {name} {key}\n{r[key]['table']}")
    if "table" in r:
      print(f"\n### {name}{r['table']}")
  print(f"\nwritten: {suite.path}", flush=True)


if __name__ == "__main__":
  flags.FLAGS.set_default("out", "benchmark_results/gpu_suite")
  app.run(main)
