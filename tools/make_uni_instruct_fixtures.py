"""Records Uni-Instruct reference vectors from the official code: tests/data/uni_instruct/.

    python tools/make_uni_instruct_fixtures.py /path/to/Uni_Instruct-checkout [--out DIR]

The checkout (https://github.com/a-little-hoof/Uni_Instruct, commit UNI_COMMIT) is imported,
never copied: this file is our own driver. It needs torch and numpy; the official modules it
imports (fsim_training/fsim_networks.py, fsim_training/fsim_loss.py, training/networks.py,
torch_utils/, dnnlib/) import without stubs. The training loop (fsim_training_loop.py) is NOT
imported: its per-divergence arithmetic is inline in a 700-line function that needs a dataset,
torch.distributed and CUDA. `_official_branch` below evaluates the same expressions (quoted with
their line numbers) on the tensors the official loss functions return.

Networks: three official EDMPrecond_EncoderDecoder (SongUNet_EncoderDecoder, DDPM++, the
kwargs of tests/data/edm/songunet_tiny) built on CPU in float32. The teacher holds the weights
of tests/data/edm/songunet_tiny/state_dict.safetensors; the fake score and the generator hold
those weights moved by `perturbed` (numpy RandomState draws, rounded to float16), so none of
the three weight sets has to be stored again: the parity test rebuilds them from the same file.

Recorded (B = 4, labels one-hot, z ~ N(0, I), σ_init = 2.5, real images in [−1, 1]):
  generator step: G(σ_init z) → FSIM_EDMLoss.generator_share_encoder_loss (tmax 800, no
  augmentation), its internal draws (u, n) captured, its outputs (SiD loss map, GAN loss,
  y_real, y_fake), and for every --divergence the training loop's branch: ratio, weights, the
  scalar it back-propagates and the gradient of that scalar w.r.t. every generator parameter.
  Branches the code cannot back-propagate (Reverse-KL: the ratio is never assigned; JS, χ²
  and the f-distill ones: a non-scalar .backward()) are recorded with the error they raise and
  with our documented per-sample reduction of the same tensors (docs/uni_instruct.md).
  fake-score step: FSIM_EDMLoss.fakescore_discriminator_share_encoder_loss with its draws
  captured: both losses, the logits, and the gradient of ls/B·Σ loss + lsd/B·Σ loss_D w.r.t.
  every fake-score parameter.
  ADM: DhariwalUNet_EncoderDecoder's output and encoder logits (the ImageNet-64 discriminator)
  on tests/data/edm/dhariwalunet_tiny's weights.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import platform
import subprocess
import sys

import numpy as np

UNI_COMMIT = "3cdf92e8962e66525d175df0d4d378dbd977e0d0"
REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "edm" / "songunet_tiny"
B, SIGMA_INIT, TMAX = 4, 2.5, 800
LSG, LSG_GAN, LS, LSD = 100.0, 0.01, 1.0, 1.0
FAKE_SEED, GEN_SEED, IO_SEED, DRAW_SEED = 11, 12, 13, 14
PERTURB_SCALE = 0.05
# Parameter gradients are stored for these tensors (every one with <= 1024 entries plus one
# encoder conv, one attention qkv, one decoder conv and the embedding MLP), to keep the file small;
# the gradient w.r.t. the generator's output x_g is stored whole for every branch.
BIG_GRADS = ("model.enc.16x16_block0.conv0.weight", "model.enc.8x8_block0.qkv.weight",
             "model.dec.16x16_block1.conv1.weight", "model.map_layer1.weight")
PARAM_GRAD_BRANCHES = ("gen/Forward-KL/vr0", "gen/Reverse-KL/vr0")
DIVERGENCES = ["Forward-KL", "Forward-Clean", "Reverse-KL", "Jeffrey-KL", "Jensen-Shannon",
               "Chi-Square", "f-distill-Reverse-KL", "f-distill-Forward-KL",
               "f-distill-Jensen-Shannon"]


def perturbed(sd: dict, seed: int) -> dict:
  """sd with every non-buffer entry p moved by 0.05·std(p)·N(0,1) (RandomState(seed), keys in
  sorted order), rounded to float16 and back. Buffers (resample filters) are kept. The parity
  test calls this same function."""
  rs = np.random.RandomState(seed)
  out = {}
  for k in sorted(sd):
    a = np.asarray(sd[k], np.float32)
    if k.endswith("resample_filter"):
      out[k] = a
      continue
    scale = PERTURB_SCALE * (float(a.std()) if a.size > 1 else 0.0) + 0.01
    out[k] = (a + scale * rs.standard_normal(a.shape).astype(np.float32)
              ).astype(np.float16).astype(np.float32)
  return out


def stored_grad(key: str, numel: int) -> bool:
  return numel <= 1024 or key in BIG_GRADS


def _check_commit(path: pathlib.Path) -> str:
  try:
    head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
  except (subprocess.CalledProcessError, FileNotFoundError):
    head = (path / "COMMIT").read_text().strip() if (path / "COMMIT").exists() else ""
  if head != UNI_COMMIT:
    raise SystemExit(f"{path} is at {head or 'an unknown commit'}; need {UNI_COMMIT} (a git "
                     "checkout, or an archive with the commit in a COMMIT file)")
  return head


@contextlib.contextmanager
def _captured_draws(torch, log: list):
  """Records every torch.rand/randn/randn_like the official loss functions make."""
  saved = {n: getattr(torch, n) for n in ("rand", "randn", "randn_like")}

  def wrap(name):
    def f(*a, **k):
      t = saved[name](*a, **k)
      log.append((name, t.detach().clone()))
      return t
    return f
  for n in saved:
    setattr(torch, n, wrap(n))
  try:
    yield
  finally:
    for n, f in saved.items():
      setattr(torch, n, f)


def _official_branch(torch, div, loss, loss_gan, y_real, y_fake, y, vr: int):
  """The training loop's generator branch for `div` (fsim_training_loop.py lines 429-542).

  Returns dict of tensors; 'backward' is the scalar the code back-propagates, or None with
  'error' set where the code's own expression cannot be back-propagated; 'reduced' is then our
  per-sample reduction (docs/uni_instruct.md) of the same tensors."""
  bgt = y.shape[0]
  out = {}
  norm = lambda t: torch.norm(t, p=2)
  with torch.no_grad():
    g = loss_gan.detach()
  per = loss.flatten(1).sum(1)  # Σ_pix of the SiD map, [B]
  gan_sum = loss_gan.sum().mul(LSG_GAN / bgt)
  if div in ("Forward-KL", "Forward-Clean", "Jeffrey-KL"):  # lines 431-434, 453-456, 499-502
    r = -g / (1 - g)
    if vr == 1:
      r = r / (torch.sum(r, dim=0, keepdim=True) + 1e-8)
    out["ratio"] = r
    f_loss = (loss * r).sum().mul(LSG / bgt)
    if div == "Forward-KL":
      out["backward"] = f_loss + gan_sum                        # line 442
    elif div == "Forward-Clean":
      out["backward"] = f_loss                                  # line 510
    else:
      r_loss = loss.sum().mul(LSG / bgt)
      out["backward"] = 0.4 * f_loss + 0.6 * r_loss + gan_sum    # line 463
  elif div == "Reverse-KL":  # line 445 reads `density_ratio`, assigned in no branch before it.
    out["error"] = "UnboundLocalError: density_ratio is never assigned on this path"
    out["reduced"] = loss.sum().mul(LSG / bgt) + gan_sum
  elif div == "Jensen-Shannon":  # lines 466-479
    r = g / (1 - g)
    w_sim = r / (r + 1)
    w_di = 2 * r ** 2 / ((r + 1) ** 3) * (y_real - y_fake).detach() * norm(
        (y_real - y_fake).detach())
    di = (w_di * y).sum().mul(LSG / bgt)
    out.update(ratio=r, w_sim=w_sim, di_map=w_di)
    _try_backward(torch, out, lambda: loss * w_sim + di)
    out["reduced"] = (per * w_sim.flatten()).sum().mul(LSG / bgt) + di
  elif div == "Chi-Square":  # lines 482-490
    r = g / (1 - g)
    w_di = (y_real - y_fake).detach() * norm((y_real - y_fake).detach())
    di = (y * w_di).sum().mul(LSG / bgt)
    out.update(ratio=r, di_map=w_di)
    _try_backward(torch, out, lambda: r ** 2 * (2 * loss - 4 * di) + loss_gan)
    di_b = (y * w_di).flatten(1).sum(1)
    rf = r.flatten()
    out["reduced"] = (rf ** 2 * (2 * per - 4 * di_b)).sum().mul(LSG / bgt) + gan_sum
  else:  # f-distill branches, lines 511-542
    w = -(y_real - y_fake).detach() if div == "f-distill-Reverse-KL" else (
        y_real - y_fake).detach()
    di = (y * w).sum().mul(LSG / bgt)
    di_b = (y * w).flatten(1).sum(1)
    if div == "f-distill-Reverse-KL":
      h = torch.ones_like(g)
      _try_backward(torch, out, lambda: di + loss_gan)
    else:
      if vr == 0:
        r = g / (1 - g)
      else:
        r = torch.clamp(torch.exp(g), min=1e-3, max=1e3)
        r = r / (torch.sum(r, dim=0, keepdim=True) + 1e-6)
      out["ratio"] = r
      if div == "f-distill-Forward-KL":
        h = r
      elif vr == 0:
        h = -r / (r + 1)
      else:
        h = r / (r + 1)
        h = h / (torch.sum(h, dim=0, keepdim=True) + 1e-6)
      _try_backward(torch, out, lambda: h * di + loss_gan)
    out["h"] = h
    out["reduced"] = (h.flatten() * di_b).sum().mul(LSG / bgt) + gan_sum
  return out


def _try_backward(torch, out, expr):
  t = expr()
  try:
    if t.dim() != 0:
      torch.autograd.backward(t, retain_graph=True)  # raises: grad only for scalar outputs
    out["backward"] = t
  except RuntimeError as e:
    out["error"] = f"RuntimeError: {str(e).splitlines()[0]}"


def main(argv=None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("checkout", type=pathlib.Path)
  ap.add_argument("--out", type=pathlib.Path, default=REPO / "tests" / "data" / "uni_instruct")
  args = ap.parse_args(argv)
  commit = _check_commit(args.checkout)
  sys.path.insert(0, str(args.checkout))
  import torch  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  from fsim_training import fsim_loss, fsim_networks  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(1)
  torch.use_deterministic_algorithms(True)

  kw = json.loads((TINY / "config.json").read_text())["precond_kwargs"]
  kw = dict(kw, model_type="SongUNet_EncoderDecoder")
  sd_t = {k: v.astype(np.float32) for k, v in load_file(str(TINY / "state_dict.safetensors")).items()}
  sds = {"teacher": sd_t, "fake": perturbed(sd_t, FAKE_SEED), "gen": perturbed(sd_t, GEN_SEED)}
  nets = {}
  for name, sd in sds.items():
    torch.manual_seed(0)
    net = fsim_networks.EDMPrecond_EncoderDecoder(**kw).float()
    missing = net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    nets[name] = net.eval()
  teacher, fake, gen = nets["teacher"], nets["fake"], nets["gen"]
  teacher.requires_grad_(False)

  rs = np.random.RandomState(IO_SEED)
  res, ch = kw["img_resolution"], kw["img_channels"]
  z = rs.standard_normal((B, ch, res, res)).astype(np.float32)
  classes = np.array([3, 7, 0, 9])
  labels = np.eye(10, dtype=np.float32)[classes]
  x_real = np.clip(0.5 * rs.standard_normal((B, ch, res, res)), -1, 1).astype(np.float32)
  out = {"inputs/z": z, "inputs/labels": labels, "inputs/x_real": x_real}
  aug0 = torch.zeros(B, 9)
  loss_fn = fsim_loss.FSIM_EDMLoss()
  lab = torch.from_numpy(labels)

  def g_forward():
    zt = SIGMA_INIT * torch.from_numpy(z)
    return gen(zt, SIGMA_INIT * torch.ones(B, 1, 1, 1), lab, augment_labels=aug0)

  # ---------------------------------------------------------------- generator step
  errors = {}
  for div in DIVERGENCES:
    for vr in ((0, 1) if div in ("Forward-KL", "f-distill-Forward-KL",
                                 "f-distill-Jensen-Shannon") else (0,)):
      gen.zero_grad(set_to_none=True)
      gen.requires_grad_(True)
      fake.requires_grad_(False)
      images = g_forward()
      log = []
      torch.manual_seed(DRAW_SEED)
      with _captured_draws(torch, log):
        loss, loss_gan, y_real, y_fake, y = loss_fn.generator_share_encoder_loss(
            true_score=teacher, fake_score=fake, images=images, labels=lab, augment_pipe=None,
            tmax=TMAX)
      assert [n for n, _ in log] == ["rand", "randn_like"], [n for n, _ in log]
      u, n_std = log[0][1], log[1][1]
      # line 419: the per-sample GAN loss times the pixel count
      loss_gan = loss_gan.mean(dim=[1, 2, 3], keepdim=True) * y.shape[1] * y.shape[2] * y.shape[3]
      tag = f"gen/{div}/vr{vr}"
      if "inputs/gen_u" not in out:
        min_inv, max_inv = 0.002 ** (1 / 7), 80 ** (1 / 7)
        sigma = (max_inv + (1 - u * TMAX / 1000) * (min_inv - max_inv)) ** 7
        out.update({"inputs/gen_u": u.flatten().numpy(),
                    "inputs/gen_sigma": sigma.flatten().numpy(),
                    "inputs/gen_n": n_std.numpy(),
                    "gen/x_g": y.detach().numpy(), "gen/y_real": y_real.detach().numpy(),
                    "gen/y_fake": y_fake.detach().numpy(),
                    "gen/sid_map": loss.detach().numpy(),
                    "gen/loss_gan": loss_gan.detach().flatten().numpy()})
        # The code's loss before 200 kimg (line 548): plain SiD, no GAN term.
        warm = loss.sum().mul(LSG / B)
        gg = torch.autograd.grad(warm, list(gen.parameters()) + [images], retain_graph=True)
        out["gen/sid_warmup/backward"] = warm.detach().numpy()
        out["gen/sid_warmup/grad_x_g"] = gg[-1].numpy()
        for (k, p), gr in zip(gen.named_parameters(), gg):
          if stored_grad(k, p.numel()):
            out[f"gen/sid_warmup/grad/{k}"] = gr.numpy()
      br = _official_branch(torch, div, loss, loss_gan, y_real, y_fake, y, vr)
      target = br.get("backward")
      if target is None or "error" in br:
        errors[tag] = br["error"]
        target = br["reduced"]
        out[f"{tag}/reduced"] = target.detach().numpy()
      else:
        out[f"{tag}/backward"] = target.detach().numpy()
      for k in ("ratio", "w_sim", "h"):
        if k in br:
          out[f"{tag}/{k}"] = br[k].detach().flatten().numpy()
      gen.zero_grad(set_to_none=True)
      grads = torch.autograd.grad(target, list(gen.parameters()) + [images], allow_unused=True)
      out[f"{tag}/grad_x_g"] = grads[-1].numpy()
      if tag in PARAM_GRAD_BRANCHES:
        for (k, p), gr in zip(gen.named_parameters(), grads):
          if stored_grad(k, p.numel()):
            out[f"{tag}/grad/{k}"] = gr.numpy()

  # ---------------------------------------------------------------- fake-score step
  gen.requires_grad_(False)
  fake.requires_grad_(True)
  with torch.no_grad():
    images = g_forward()
  log = []
  torch.manual_seed(DRAW_SEED + 1)
  with _captured_draws(torch, log):
    loss_fs, loss_d = loss_fn.fakescore_discriminator_share_encoder_loss(
        fake_score=fake, images=images, labels=lab, augment_pipe=None,
        real_images=torch.from_numpy(x_real), true_score=teacher)
  assert [n for n, _ in log] == ["randn", "randn_like"], [n for n, _ in log]
  rnd, n_std = log[0][1], log[1][1]
  total = loss_fs.sum().mul(LS / B) + loss_d.sum().mul(LSD / B)  # lines 380-382
  grads = torch.autograd.grad(total, list(fake.parameters()))
  with torch.no_grad():
    sig = (rnd * 1.2 - 1.2).exp()
    _, lf = fake(images + n_std * sig, sig, lab, augment_labels=aug0, return_flag="encoder_decoder")
    lr = fake(torch.from_numpy(x_real) + n_std * sig, sig, lab, augment_labels=aug0,
              return_flag="encoder")
  out.update({"inputs/fake_sigma": sig.flatten().numpy(), "inputs/fake_n": n_std.numpy(),
              "fake/x_g": images.numpy(), "fake/loss_fake_score": loss_fs.sum().mul(LS / B)
              .detach().numpy(), "fake/loss_d": loss_d.sum().mul(LSD / B).detach().numpy(),
              "fake/total": total.detach().numpy(), "fake/logits_fake": lf.numpy(),
              "fake/logits_real": lr.numpy()})
  for (k, p), gr in zip(fake.named_parameters(), grads):
    if stored_grad(k, p.numel()):
      out[f"fake/grad/{k}"] = gr.numpy()

  # ---------------------------------------------------------------- ADM encoder logits
  # The ImageNet-64 recipe's discriminator: DhariwalUNet_EncoderDecoder's encoder logits on the
  # weights of tests/data/edm/dhariwalunet_tiny (two inputs, σ 0.7 and 3.0, classes 1 and 2).
  adm_dir = TINY.parent / "dhariwalunet_tiny"
  akw = json.loads((adm_dir / "config.json").read_text())["precond_kwargs"]
  adm = fsim_networks.EDMPrecond_EncoderDecoder(
      **dict(akw, model_type="DhariwalUNet_EncoderDecoder")).float().eval()
  adm.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in
                       load_file(str(adm_dir / "state_dict.safetensors")).items()}, strict=True)
  ars = np.random.RandomState(IO_SEED + 1)
  ax = ars.standard_normal((2, akw["img_channels"], akw["img_resolution"],
                            akw["img_resolution"])).astype(np.float32)
  asig = np.array([0.7, 3.0], np.float32)
  alab = np.eye(akw["label_dim"], dtype=np.float32)[[1, 2]]
  with torch.no_grad():
    ad, alg = adm(torch.from_numpy(ax), torch.from_numpy(asig), torch.from_numpy(alab),
                  return_flag="encoder_decoder")
  out.update({"adm/x": ax, "adm/sigma": asig, "adm/labels": alab, "adm/D_x": ad.numpy(),
              "adm/logits": alg.numpy()})

  args.out.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out / "uni_instruct_vectors.npz", **out)
  meta = dict(uni_instruct_commit=commit, repo="https://github.com/a-little-hoof/Uni_Instruct",
              weights="tests/data/edm/songunet_tiny/state_dict.safetensors (teacher); "
                      f"perturbed(seed {FAKE_SEED}) fake score, perturbed(seed {GEN_SEED}) generator",
              precond_kwargs=kw, batch=B, sigma_init=SIGMA_INIT, tmax=TMAX,
              loss_scales=dict(lsg=LSG, lsg_gan=LSG_GAN, ls=LS, lsd=LSD),
              seeds=dict(io=IO_SEED, draws=DRAW_SEED), errors=errors,
              environment=dict(python=platform.python_version(), torch=torch.__version__,
                               numpy=np.__version__, threads=1, device="cpu", dtype="float32"))
  (args.out / "uni_instruct_vectors.json").write_text(json.dumps(meta, indent=1) + "\n")
  print(json.dumps(errors, indent=1))


if __name__ == "__main__":
  main()
