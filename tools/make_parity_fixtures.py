"""Regenerates the EDM parity fixtures in tests/data/edm/ by running NVIDIA's official EDM code.

    python tools/make_parity_fixtures.py /path/to/edm-checkout [--out tests/data/edm]

The EDM checkout (https://github.com/NVlabs/edm, commit 008a4e5316c8e3bfe61a62f874bddba254295afb)
is imported, never copied: this file holds only our own driver code. EDM's code is licensed for
non-commercial use, which is why it is not part of this repository; its outputs (the numbers in
tests/data/edm) are what the parity tests compare the JAX port with. EDM is imported unmodified;
`training/networks.py`, `training/loss.py`, `torch_utils/persistence.py` and `generate.py` need
torch, numpy, click, tqdm, pillow and requests to import (no stubs were needed here).

For each network of NETS: the official EDMPrecond is built under torch.manual_seed(init_seed),
every parameter is moved away from its (partly zero) init, and then every parameter and buffer is
rounded to float16 and back, so that the float16 state_dict.safetensors holds exactly the weights
the official code ran with. Then:
  io.npz       EDMPrecond on 4 inputs (sigma 0.002 .. 80) in float32 (official behaviour) plus the
               inner model's inputs/outputs, and the float64 reference (see `float64_reference`).
  sampler.npz  generate.edm_sampler, 6 Heun steps, 4 latents, float32 network (official) and
               float64 network.
  config.json  constructor kwargs, seeds, recipe, derived facts (heads, GroupNorm groups, counts).
and for dhariwalunet_tiny an EDM training-snapshot-like pickle with the module source removed.
Everything is then re-checked: a fresh EDMPrecond loaded from the written safetensors must
reproduce io.npz and sampler.npz bit for bit. See tests/data/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import io as iolib
import json
import os
import pathlib
import pickle
import pickletools
import subprocess
import sys

import numpy as np

EDM_COMMIT = "008a4e5316c8e3bfe61a62f874bddba254295afb"
PERTURBATION = ("p += N(0,1) * 0.3/sqrt(fan_in) for params with ndim>=2 (fan_in = numel/shape[0]); "
                "p += N(0,1)*0.1 for 1-D params; then every parameter and buffer is rounded to "
                "float16 and back (p = p.half().float()) before anything is run")
NUM_IO = 4
IO_SIGMAS = np.geomspace(0.002, 80.0, NUM_IO).astype(np.float32)
IO_CLASSES = [3, 7, 0, 9]
NUM_SAMPLER = 4  # = NUM_IO: test_edm_parity reuses the network compiled for io.npz.
SAMPLER_CLASSES = [1, 5, 5, 8]
SAMPLER_KWARGS = dict(num_steps=6, sigma_min=0.002, sigma_max=80, rho=7, S_churn=0)

_COMMON = dict(img_channels=3, use_fp16=False, sigma_data=0.5, dropout=0.0)
NETS = {
    # SongUNet DDPM++ with class labels and augmentation labels (CIFAR-10 style); keeps the key
    # names the loader tests quote (enc.16x16_conv [16, 3, 3, 3], map_layer0 [64]).
    "songunet_tiny": dict(init_seed=0, perturb_seed=1000, io_seed=2000, sampler_seed=3000,
                          precond_kwargs=dict(
                              img_resolution=16, label_dim=10, model_type="SongUNet",
                              augment_dim=9, model_channels=16, channel_mult=[1, 2],
                              num_blocks=1, attn_resolutions=[8], embedding_type="positional",
                              encoder_type="standard", decoder_type="standard",
                              channel_mult_noise=1, resample_filter=[1, 1], **_COMMON)),
    # SongUNet NCSN++: Fourier embedding, residual encoder (aux skips), 4-tap resample filter,
    # three levels; unconditional.
    "songunet_ncsnpp_tiny": dict(init_seed=1, perturb_seed=1001, io_seed=2001, sampler_seed=3001,
                                 precond_kwargs=dict(
                                     img_resolution=16, label_dim=0, model_type="SongUNet",
                                     augment_dim=0, model_channels=8, channel_mult=[1, 2, 2],
                                     num_blocks=1, attn_resolutions=[8], embedding_type="fourier",
                                     encoder_type="residual", decoder_type="standard",
                                     channel_mult_noise=2, resample_filter=[1, 3, 3, 1],
                                     **_COMMON)),
    # DhariwalUNet (ADM), class-conditional, three levels; also written as an EDM training
    # snapshot. Attention is requested at 8x8, 4x4 (and always in the bottleneck's in0), but with
    # fewer than 64 channels ADM gives those blocks 0 heads, i.e. no attention layers at all.
    # ADM attention itself is tested by dhariwalunet_multihead (kept small for the snapshot).
    "dhariwalunet_tiny": dict(init_seed=2, perturb_seed=1002, io_seed=2002, sampler_seed=3002,
                              snapshot=True,
                              precond_kwargs=dict(
                                  img_resolution=16, label_dim=10, model_type="DhariwalUNet",
                                  augment_dim=0, model_channels=8, channel_mult=[1, 2, 2],
                                  num_blocks=1, attn_resolutions=[8, 4], **_COMMON)),
    # DhariwalUNet with ADM attention (64 channels per head): 1 head in the 64-channel 4x4
    # block, 2 heads in the 128-channel 2x2 block (the multi-head reshape), 0 heads in the
    # 32-channel bottleneck. num_blocks=0 and an 8x8 image keep it small.
    "dhariwalunet_multihead": dict(init_seed=3, perturb_seed=1003, io_seed=2003, sampler_seed=3003,
                                   precond_kwargs=dict(
                                       img_resolution=8, label_dim=10, model_type="DhariwalUNet",
                                       augment_dim=0, model_channels=8, channel_mult=[4, 8, 16],
                                       num_blocks=0, attn_resolutions=[4, 2], **_COMMON)),
}
SNAPSHOT_DATASET_KWARGS = {"class_name": "training.dataset.ImageFolderDataset",
                           "path": "datasets/tiny-16x16.zip", "use_labels": True, "xflip": False,
                           "cache": True, "resolution": 16, "max_size": 1000}


def placeholder(module_name: str) -> str:
  return (f'# PLACEHOLDER: the source of EDM module "{module_name}" (NVlabs/edm@{EDM_COMMIT[:12]}) '
          "was deliberately removed from this fixture. Do not exec.")


def import_edm(edm_dir: pathlib.Path):
  sys.path.insert(0, str(edm_dir))
  from training import networks, loss  # pylint: disable=import-outside-toplevel
  from torch_utils import persistence  # pylint: disable=import-outside-toplevel
  import generate  # pylint: disable=import-outside-toplevel
  return networks, loss, persistence, generate


def edm_checkout_commit(edm_dir: pathlib.Path) -> str | None:
  try:
    return subprocess.run(["git", "-C", str(edm_dir), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


# ----------------------------------------------------------------------- the network's weights
def build_perturbed(networks, torch, spec):
  torch.manual_seed(spec["init_seed"])
  net = networks.EDMPrecond(**spec["precond_kwargs"]).eval()
  gen = torch.Generator().manual_seed(spec["perturb_seed"])
  with torch.no_grad():
    for _, p in net.named_parameters():
      noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
      if p.ndim >= 2:
        p.add_(noise * (0.3 / np.sqrt(p.numel() / p.shape[0])))
      else:
        p.add_(noise * 0.1)
    for t in net.state_dict().values():  # Parameters and buffers (shared storage).
      if t.is_floating_point():
        half = t.half()
        assert torch.isfinite(half).all()
        t.copy_(half.float())
  return net


def state_dict_f16(net) -> dict[str, np.ndarray]:
  out = {}
  for k, t in net.state_dict().items():
    a = t.detach().cpu().numpy()
    h = a.astype(np.float16)
    assert np.array_equal(h.astype(np.float32), a), f"{k} is not float16-exact"
    out[k] = h
  return out


# ------------------------------------------------------------------ the float64 reference run
@contextlib.contextmanager
def float64_reference(networks, torch):
  """Inside: the official code's three hard-coded float32 spots run in the input's dtype instead
  (our own replacements; EDM's module is restored on exit): the PositionalEmbedding frequency
  table and the attention softmax. (The third, EDMPrecond's casts, is `precond64` below.)"""

  def pos_forward(self, x):
    half = self.num_channels // 2
    exps = torch.arange(half, dtype=x.dtype, device=x.device) / (half - (1 if self.endpoint else 0))
    x = x.ger((1 / self.max_positions) ** exps)
    return torch.cat([x.cos(), x.sin()], dim=1)

  class SoftmaxInInputDtype:
    @staticmethod
    def apply(q, k):
      return torch.einsum("ncq,nck->nqk", q, k / np.sqrt(k.shape[1])).softmax(dim=2)

  saved = networks.PositionalEmbedding.forward, networks.AttentionOp
  networks.PositionalEmbedding.forward, networks.AttentionOp = pos_forward, SoftmaxInInputDtype
  try:
    yield
  finally:
    networks.PositionalEmbedding.forward, networks.AttentionOp = saved


class Precond64:
  """EDMPrecond's preconditioning evaluated in float64 around a `.double()` copy of the inner
  model (the official forward casts x, sigma and labels to float32)."""

  def __init__(self, net, torch):
    self.torch, self.net = torch, net
    self.model = copy.deepcopy(net.model).double()
    self.sigma_min, self.sigma_max, self.round_sigma = net.sigma_min, net.sigma_max, net.round_sigma

  def __call__(self, x, sigma, class_labels=None, **model_kwargs):
    torch, sd = self.torch, self.net.sigma_data
    x = x.to(torch.float64)
    sigma = torch.as_tensor(sigma).to(torch.float64).reshape(-1, 1, 1, 1)
    if self.net.label_dim == 0:
      class_labels = None
    elif class_labels is None:
      class_labels = torch.zeros([1, self.net.label_dim], dtype=torch.float64)
    else:
      class_labels = class_labels.to(torch.float64).reshape(-1, self.net.label_dim)
    model_kwargs = {k: v.to(torch.float64) for k, v in model_kwargs.items()}
    c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
    c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
    c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
    c_noise = sigma.log() / 4
    f_x = self.model(c_in * x, c_noise.flatten(), class_labels=class_labels, **model_kwargs)
    assert f_x.dtype == torch.float64
    return c_skip * x + c_out * f_x


class Recorder:
  """Wraps a denoiser for generate.edm_sampler and records every call."""

  def __init__(self, net):
    self.net, self.calls = net, []
    self.sigma_min, self.sigma_max, self.round_sigma = net.sigma_min, net.sigma_max, net.round_sigma

  def __call__(self, x, sigma, class_labels=None):
    out = self.net(x, sigma, class_labels)
    self.calls.append((x.detach().clone(), float(sigma), out.detach().clone()))
    return out


def capture_model(net, *args, **kwargs):
  """Runs net(*args, **kwargs); returns (its result, [(x_in, noise_labels, F_x)] of each call
  of the inner model `net.model`)."""
  seen = []

  def hook(_module, args, _kwargs, output):
    seen.append((args[0].detach().clone(), args[1].detach().clone(), output.detach().clone()))

  handle = net.model.register_forward_hook(hook, with_kwargs=True)
  try:
    result = net(*args, **kwargs)
  finally:
    handle.remove()
  return result, seen


# --------------------------------------------------------------------------------- one network
def inputs(spec, torch):
  kw = spec["precond_kwargs"]
  res, ch, ld = kw["img_resolution"], kw["img_channels"], kw["label_dim"]
  gen = torch.Generator().manual_seed(spec["io_seed"])
  sigma = torch.from_numpy(IO_SIGMAS)
  io = {"x": (torch.randn((NUM_IO, ch, res, res), generator=gen) * sigma.reshape(-1, 1, 1, 1)),
        "sigma": sigma}
  if ld:
    io["class_labels"] = torch.eye(ld)[IO_CLASSES]
  if kw["augment_dim"]:
    io["augment_labels"] = torch.zeros(NUM_IO, kw["augment_dim"])
    nonzero = torch.randn((NUM_IO, kw["augment_dim"]), generator=gen) * 0.5
    nonzero[0] = 0
    io["augment_labels_nonzero"] = nonzero
  gen = torch.Generator().manual_seed(spec["sampler_seed"])
  sp = {"latents": torch.randn((NUM_SAMPLER, ch, res, res), generator=gen)}
  if ld:
    sp["class_labels"] = torch.eye(ld)[SAMPLER_CLASSES]
  return io, sp


def run_io(net, networks, torch, io):
  labels = io.get("class_labels")
  variants = [("", io.get("augment_labels"))]
  if "augment_labels_nonzero" in io:
    variants.append(("_aug", io["augment_labels_nonzero"]))
  out = {}
  net64 = Precond64(net, torch)
  with torch.no_grad():
    for suffix, aug in variants:
      extra = {} if aug is None else {"augment_labels": aug}
      d_x, seen = capture_model(net, io["x"], io["sigma"], labels, **extra)
      (x_in, noise, f_x), = seen
      out[f"D_x{suffix}"], out[f"F_x{suffix}"] = d_x, f_x
      if not suffix:
        out["model_x_in"], out["model_noise_labels"] = x_in, noise
      with float64_reference(networks, torch):
        d64, seen = capture_model(net64, io["x"], io["sigma"], labels, **extra)
      out[f"D_x{suffix}_f64"], out[f"F_x{suffix}_f64"] = d64, seen[0][2]
  return {k: v.numpy() for k, v in out.items()}


def run_sampler(net, networks, generate, torch, sp, keep_calls):
  labels = sp.get("class_labels")
  out = {}
  with torch.no_grad():
    rec = Recorder(net)
    out["x_sampled"] = generate.edm_sampler(rec, sp["latents"], labels, **SAMPLER_KWARGS).numpy()
    step = torch.arange(SAMPLER_KWARGS["num_steps"], dtype=torch.float64)
    if keep_calls:
      out["call_x"] = np.stack([c[0].to(torch.float32).numpy() for c in rec.calls])
      out["call_sigma"] = np.array([c[1] for c in rec.calls], np.float64)
      out["call_denoised"] = np.stack([c[2].numpy() for c in rec.calls])
      # call_x is stored as float32: EDMPrecond casts the float64 ODE state to float32 first,
      # so that is exactly what the network saw.
      assert out["call_denoised"].dtype == np.float32
    with float64_reference(networks, torch):
      out["x_sampled_f64"] = generate.edm_sampler(Precond64(net, torch), sp["latents"], labels,
                                                  **SAMPLER_KWARGS).numpy()
  kw = SAMPLER_KWARGS
  t = (kw["sigma_max"] ** (1 / kw["rho"]) + step / (kw["num_steps"] - 1) *
       (kw["sigma_min"] ** (1 / kw["rho"]) - kw["sigma_max"] ** (1 / kw["rho"]))) ** kw["rho"]
  out["t_steps"] = torch.cat([t, torch.zeros(1, dtype=torch.float64)]).numpy()
  out["sampler_kwargs_json"] = np.array(json.dumps(SAMPLER_KWARGS))
  return out


def describe(net, spec, name):
  model = net.model
  orig_cls = type(model).__mro__[1]  # The class under EDM's persistence decorator.
  sig = inspect.signature(orig_cls.__init__)
  defaults = {k: p.default for k, p in sig.parameters.items()
              if p.default is not inspect.Parameter.empty}
  model_kwargs = dict(model.init_kwargs)
  heads = {n: m.num_heads for n, m in model.named_modules() if getattr(m, "num_heads", 0)}
  zero_heads = [n for n, m in model.named_modules() if hasattr(m, "num_heads") and
                not m.num_heads and m.init_kwargs.get("attention")]
  groups = {n: m.num_groups for n, m in model.named_modules() if hasattr(m, "num_groups")}
  sd = net.state_dict()
  return {
      "name": name, "edm_commit": EDM_COMMIT, "edm_repo": "https://github.com/NVlabs/edm",
      "init_seed": spec["init_seed"], "perturb_seed": spec["perturb_seed"],
      "io_seed": spec["io_seed"], "sampler_seed": spec["sampler_seed"],
      "perturbation": PERTURBATION, "stored_dtype": "float16 (float16-exact; ran as float32)",
      "precond_class": "training.networks.EDMPrecond",
      "precond_kwargs": spec["precond_kwargs"],
      "precond_attrs": {"img_resolution": net.img_resolution, "img_channels": net.img_channels,
                        "label_dim": net.label_dim, "use_fp16": net.use_fp16,
                        "sigma_min": net.sigma_min, "sigma_max": "inf" if net.sigma_max == float(
                            "inf") else net.sigma_max, "sigma_data": net.sigma_data},
      "model_class": f"training.networks.{orig_cls.__name__}",
      "model_kwargs": model_kwargs,
      "model_kwargs_with_defaults": {**defaults, **model_kwargs},
      "derived": {"attention_blocks_num_heads": heads,
                  "attention_requested_but_0_heads": zero_heads,
                  "groupnorm_num_groups": groups,
                  "num_state_dict_entries": len(sd),
                  "num_state_dict_scalars": int(sum(t.numel() for t in sd.values()))},
      "notes": ('sigma_max "inf" means float("inf"). Keys of state_dict.safetensors are exactly '
                'EDMPrecond.state_dict() keys (prefix "model."), stored as float16; every value '
                "is exactly the float32 the official code ran with."),
  }


def snapshot_pickle(net, loss_mod, persistence, torch) -> bytes:
  """An EDM training snapshot's layout (training_loop.py) with every module's source replaced."""
  data = dict(ema=net, loss_fn=loss_mod.EDMLoss(), augment_pipe=None,
              dataset_kwargs=dict(SNAPSHOT_DATASET_KWARGS))
  for key, value in data.items():
    if isinstance(value, torch.nn.Module):
      data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
  # pylint: disable=protected-access
  saved = {cls: cls._orig_module_src for cls in persistence._decorators}
  try:
    for cls in saved:
      cls._orig_module_src = placeholder(cls.__module__)
    blob = pickle.dumps(data)
  finally:
    for cls, src in saved.items():
      cls._orig_module_src = src
  listing = iolib.StringIO()
  pickletools.dis(blob, out=listing)
  for text in (blob.decode("latin-1"), listing.getvalue()):
    for needle in ("def ", "class ", "import "):
      assert needle not in text, f"snapshot pickle contains {needle!r}"
  return blob


def write_npz(path: pathlib.Path, arrays: dict) -> None:
  np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})


def make(name, spec, out_dir, edm, torch, safetensors_numpy):
  networks, loss_mod, persistence, generate = edm
  d = out_dir / name
  d.mkdir(parents=True, exist_ok=True)
  net = build_perturbed(networks, torch, spec)
  io_in, sp_in = inputs(spec, torch)
  io = {k: v.numpy() for k, v in io_in.items()}
  io.update(run_io(net, networks, torch, io_in))
  sp = {k: v.numpy() for k, v in sp_in.items()}
  sp.update(run_sampler(net, networks, generate, torch, sp_in, keep_calls=spec.get("snapshot")))
  sd = state_dict_f16(net)
  # One metadata key: safetensors writes the metadata map in hash order, so with one key the file
  # reproduces byte for byte.
  safetensors_numpy.save_file(sd, str(d / "state_dict.safetensors"),
                              metadata={"edm_commit": EDM_COMMIT})
  write_npz(d / "io.npz", io)
  write_npz(d / "sampler.npz", sp)
  (d / "config.json").write_text(json.dumps(describe(net, spec, name), indent=1) + "\n")
  if spec.get("snapshot"):
    (d / "edm_snapshot_like.pkl").write_bytes(snapshot_pickle(net, loss_mod, persistence, torch))
  verify(name, spec, d, edm, torch, safetensors_numpy)
  return io, sp


def verify(name, spec, d, edm, torch, safetensors_numpy):
  """A fresh EDMPrecond (other init seed) loaded from the written files reproduces them exactly."""
  networks, _, _, generate = edm
  torch.manual_seed(spec["init_seed"] + 100)
  net = networks.EDMPrecond(**spec["precond_kwargs"]).eval()
  sd = safetensors_numpy.load_file(str(d / "state_dict.safetensors"))
  net.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in sd.items()},
                      strict=True)
  io, sp = dict(np.load(d / "io.npz")), dict(np.load(d / "sampler.npz"))
  t = lambda k, z: torch.from_numpy(z[k]) if k in z else None
  again = run_io(net, networks, torch, {k: torch.from_numpy(v) for k, v in io.items()
                                        if k in ("x", "sigma", "class_labels", "augment_labels",
                                                 "augment_labels_nonzero")})
  for k, v in again.items():
    assert np.array_equal(v, io[k]), f"{name}: {k} not reproduced"
  with torch.no_grad():
    x = generate.edm_sampler(net, t("latents", sp), t("class_labels", sp), **SAMPLER_KWARGS)
  assert np.array_equal(x.numpy(), sp["x_sampled"]), f"{name}: x_sampled not reproduced"
  if (d / "edm_snapshot_like.pkl").exists():
    try:
      with open(d / "edm_snapshot_like.pkl", "rb") as f:
        pickle.load(f)
      raise AssertionError("EDM's own unpickling should fail: the module source is removed")
    except KeyError:
      pass


def summary(name, io, sp):
  lines = [f"{name}:"]
  for a, b in (("D_x", "D_x_f64"), ("F_x", "F_x_f64"), ("D_x_aug", "D_x_aug_f64"),
               ("x_sampled", "x_sampled_f64")):
    z = io if a in io else sp if a in sp else None
    if z is not None:
      lines.append(f"  max|{a} - {b}| = {np.abs(z[a] - z[b]).max():.2e}   "
                   f"max|{b}| = {np.abs(z[b]).max():.3f}")
  if "D_x_aug" in io:
    lines.append(f"  max|D_x_aug - D_x| = {np.abs(io['D_x_aug'] - io['D_x']).max():.3e}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("edm_dir", type=pathlib.Path, help="an NVlabs/edm checkout")
  repo = pathlib.Path(__file__).resolve().parents[1]
  parser.add_argument("--out", type=pathlib.Path, default=repo / "tests" / "data" / "edm")
  parser.add_argument("--nets", nargs="*", default=list(NETS))
  args = parser.parse_args()
  commit = edm_checkout_commit(args.edm_dir)
  if commit not in (None, EDM_COMMIT):
    sys.exit(f"{args.edm_dir} is at {commit}, expected {EDM_COMMIT}")
  os.environ.setdefault("OMP_NUM_THREADS", "1")
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors import numpy as safetensors_numpy  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(1)
  torch.use_deterministic_algorithms(True)
  edm = import_edm(args.edm_dir.resolve())
  print(f"torch {torch.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}, "
        f"EDM at {commit or EDM_COMMIT + ' (not a git checkout; commit assumed)'}")
  for name in args.nets:
    io, sp = make(name, NETS[name], args.out, edm, torch, safetensors_numpy)
    print(summary(name, io, sp))


if __name__ == "__main__":
  main()
