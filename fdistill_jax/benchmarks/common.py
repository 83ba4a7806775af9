"""Helpers shared by the benchmark scripts: config files with overrides given on the command line,
and the command-line flags several scripts share."""
from __future__ import annotations

import ast
import importlib.util
import os

from absl import flags

# Flags that engine_speed, versus_torch, memory_plan, profile_steps and gpu_suite share: name ->
# (define, default, help). A script sets its own default (e.g. of --out) under __main__.
_SHARED_FLAGS = {
    "config": (flags.DEFINE_string, "configs/cifar10_kl.py", "Config file, 'path@k=v;k=v'."),
    "tiny": (flags.DEFINE_bool, False, "Use a small architecture of the config's family."),
    "batch": (flags.DEFINE_integer, 64, "Global batch size (0 keeps the config's)."),
    "steps": (flags.DEFINE_integer, 10, "Timed steps per phase."),
    "out": (flags.DEFINE_string, "benchmark_results/engine_speed", "Output folder."),
    "profile": (flags.DEFINE_string, None, "Trace each phase's step into this folder and report "
                "the top HLO ops by time (after the timed steps)."),
    "profile_steps": (flags.DEFINE_integer, 3, "Traced steps per phase."),
    "profile_top": (flags.DEFINE_integer, 10, "Ops per phase in the profile table."),
}
_DEFINED: dict[str, flags.FlagHolder] = {}


def shared_flag(name: str) -> flags.FlagHolder:
  """The holder of the shared flag --name, defined on first use: the scripts import one another
  (and gpu_suite imports several), and absl refuses a flag defined twice."""
  if name not in _DEFINED:
    define, default, help_ = _SHARED_FLAGS[name]
    _DEFINED[name] = define(name, default, help_)
  return _DEFINED[name]


def load_config(path: str):
  """get_config() of a config file."""
  spec = importlib.util.spec_from_file_location("bench_cfg", os.path.abspath(path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def split_entries(text: str) -> list[str]:
  """Splits on commas outside brackets and quotes: 'a.py@x=(1,2),b.py' -> ['a.py@x=(1,2)', 'b.py']."""
  out, depth, quote, cur = [], 0, "", ""
  for ch in text:
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    else:
      depth += (ch in "([{") - (ch in ")]}")
      if ch == "," and depth == 0:
        out.append(cur)
        cur = ""
        continue
    cur += ch
  return [e.strip() for e in out + [cur] if e.strip()]


def parse_entry(entry: str) -> tuple[str, str, dict]:
  """'configs/x.py@a.b=1;c=d' -> (name 'x[a.b=1;c=d]', path, {'a.b': 1, 'c': 'd'})."""
  path, _, over = entry.partition("@")
  overrides = {}
  for item in filter(None, over.split(";")):
    k, _, v = item.partition("=")
    try:
      overrides[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      overrides[k] = v
  name = os.path.splitext(os.path.basename(path))[0] + (f"[{over}]" if over else "")
  return name, path, overrides


def folder_name(name: str) -> str:
  """A run name ('digits_js[method.critic_steps=4]') as one safe path component."""
  return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def set_key(cfg, dotted: str, value) -> None:
  node = cfg
  *parents, last = dotted.split(".")
  for p in parents:
    node = node[p]
  node[last] = value


# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s per chip, matched against
# jax.devices()[0].device_kind (most specific name first). NVIDIA's datasheets quote bf16 "with
# sparsity"; the dense figure is half of it.
PEAK_BF16 = (
    # (name in device_kind, TFLOP/s, source)
    ("H100 PCIe", 756.0, "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,513 TFLOPS with sparsity "
     "(H100 PCIe) / 2"),
    ("H100 NVL", 835.5, "NVIDIA H100 datasheet: BF16 1,671 TFLOPS with sparsity (H100 NVL) / 2"),
    ("H100", 989.4, "NVIDIA H100 datasheet: BF16 1,979 TFLOPS with sparsity (H100 SXM) / 2; "
     "'NVIDIA H100 80GB HBM3' is the SXM part"),
    ("H200 NVL", 835.5, "NVIDIA H200 datasheet: BF16 1,671 TFLOPS with sparsity (H200 NVL) / 2"),
    ("H200", 989.4, "NVIDIA H200 datasheet: BF16 1,979 TFLOPS with sparsity (H200 SXM) / 2"),
    ("A100", 312.0, "NVIDIA A100 datasheet: BF16 312 TFLOPS dense (624 with sparsity), SXM and "
     "PCIe"),
    ("TPU v6 lite", 918.0, "Google Cloud TPU v6e documentation: 918 TFLOPS bf16 per chip"),
    ("TPU v5 lite", 197.0, "Google Cloud TPU v5e documentation: 197 TFLOPS bf16 per chip"),
    ("TPU v5", 459.0, "Google Cloud TPU v5p documentation: 459 TFLOPS bf16 per chip"),
    ("TPU v4", 275.0, "Google Cloud TPU v4 documentation: 275 TFLOPS bf16 per chip"),
)


def peak_bf16(device_kind: str) -> dict:
  """{'tflops', 'matched', 'source'} of the first PEAK_BF16 entry whose name is in device_kind
  (case-insensitive), or {'tflops': None, 'reason': ...} for a chip not in the table."""
  for name, tflops, source in PEAK_BF16:
    if name.lower() in device_kind.lower():
      return {"tflops": tflops, "matched": name, "source": source}
  return {"tflops": None, "reason": f"device kind {device_kind!r} is not in benchmarks/common.py "
          f"PEAK_BF16 ({', '.join(n for n, _, _ in PEAK_BF16)}): no dense bf16 peak, no MFU"}


def shrink_pixart(cfg):
  """In place: a 2-block, 64-wide PixArt on 16×16×4 latents with 32-d captions (--tiny)."""
  from fdistill_jax import defaults  # pylint: disable=import-outside-toplevel
  cfg.teacher.pixart_config = dict(defaults.TINY_PIXART, in_channels=4, out_channels=8,
                                   num_attention_heads=4, cross_attention_dim=64)
  cfg.teacher.max_length = 16
  cfg.disc.feature_keys, cfg.disc.channels = ("block1",), 32
  return cfg


def abstract_steps(cfg, devices, phases=("generator", "critic")) -> dict:
  """cfg's train steps as loop.Run builds them, ready to lower, without running anything: the
  experiment is built with zero teacher weights (shapes only: no init compile or run), the state
  laid out on the mesh of `devices` (engine/sharding.py), and each phase's step jitted with the
  engine's shardings and donation. Returns {'steps': {phase: jitted step}, 'args': the abstract
  (state, frozen, batch) with shardings to lower them on, 'mesh', 'abstract', 'state_sh',
  'frozen', 'frozen_sh', 'spec', 'batch_sh', 'method'}. Used by memory_plan (compile for memory)
  and gpu_suite (the FLOPs of a step variant, lowered only)."""
  # pylint: disable=import-outside-toplevel,protected-access
  import json
  import tempfile

  import jax
  import numpy as np

  from fdistill_jax import compose
  from fdistill_jax.engine import checkpoint as ckpt_lib
  from fdistill_jax.engine import loop
  from fdistill_jax.engine import sharding as shard_lib
  from fdistill_jax.engine import steps as steps_lib
  from fdistill_jax.experiments import image, t2i
  from fdistill_jax.models.edm import build_edm_precond

  def zeros_variables(kwargs_json, dtype, seed):  # No init compile/run: shapes are enough.
    del dtype, seed
    module = build_edm_precond(json.loads(kwargs_json))
    shapes = jax.eval_shape(lambda: module.init(
        jax.random.PRNGKey(0), jax.numpy.zeros((1, module.img_resolution, module.img_resolution,
                                                module.img_channels)), jax.numpy.ones((1,)),
        jax.numpy.zeros((1, module.label_dim)) if module.label_dim else None))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)

  def zeros_pixart(config_json, dtype, seed):  # PixArt: the same, from the abstract params.
    del seed
    from fdistill_jax.convert import pixart as conv
    from fdistill_jax.models import pixart
    module = pixart.from_diffusers_config(json.loads(config_json), param_dtype=t2i.DTYPES[dtype])
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), conv.abstract_params(module))

  saved = image._random_variables, t2i._random_params
  image._random_variables, t2i._random_params = zeros_variables, zeros_pixart
  try:
    with tempfile.TemporaryDirectory() as wd:
      exp, method, txs, init, init_key = loop._build(cfg, compose._problem(cfg, wd))
  finally:
    image._random_variables, t2i._random_params = saved
  mesh = shard_lib.make_mesh(cfg, devices)
  abstract, state_sh = loop._state_layout(cfg, init, init_key, mesh)
  frozen = jax.eval_shape(lambda: exp.frozen)
  frozen_sh = shard_lib.tree_shardings(frozen, mesh, cfg)
  spec = exp.batch_spec()
  batch_sh = shard_lib.batch_sharding(mesh, spec)
  args = [ckpt_lib.abstract_with_shardings(t, s) for t, s in
          ((abstract, state_sh), (frozen, frozen_sh), (spec, batch_sh))]
  steps = {p: jax.jit(steps_lib.make_step(method, exp.nets, txs, cfg, p),
                      in_shardings=(state_sh, frozen_sh, batch_sh),
                      out_shardings=(state_sh, None), donate_argnums=(0,))
           for p in phases if p == "generator" or method.CRITIC_NETS}
  return {"steps": steps, "args": args, "mesh": mesh, "abstract": abstract, "state_sh": state_sh,
          "frozen": frozen, "frozen_sh": frozen_sh, "spec": spec, "batch_sh": batch_sh,
          "method": method}
