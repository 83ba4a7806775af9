"""FID Inception port, weight conversion, Fréchet distance, reference npz and precision/recall.

(a) Parity with pytorch-fid's own PyTorch Inception on random weights. pytorch-fid and
    torchvision run in a subprocess (so the pytest process never imports torchvision), with
    $FDISTILL_FID_REF_PATH prepended to PYTHONPATH when set (a folder made by
    `pip install --no-deps --target DIR torchvision==0.28.0 pytorch-fid==0.3.0`). PyPI's
    torchvision wheel is a CUDA build whose C++ ops cannot load beside the CPU torch wheel; its
    pure-Python code is fine, but `torchvision/_meta_registrations.py` registers fake kernels for
    `torchvision::nms`/`qnms` unconditionally and fails when the ops were never defined. The
    subprocess therefore defines those two op *schemas* (no kernels) before importing torchvision
    when, and only when, that import fails for this reason. The Inception network uses no
    torchvision op.
(b) Fréchet distance against a closed form, statistics, npz round trip and bad npz errors.
(c) Precision/recall on point clouds with known answers and against a brute-force NumPy version.
"""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import testing
from fdistill_jax.convert import inception_weights
from fdistill_jax.evaluation import fid
from fdistill_jax.evaluation import precision_recall
from fdistill_jax.models.inception import FIDInceptionV3

REF_PATH_ENV = "FDISTILL_FID_REF_PATH"

# Builds pytorch-fid's InceptionV3 with random weights (its weight download is patched out) and
# writes the state_dict, the inputs and the reference outputs to the npz given as argv[1].
_TORCH_REFERENCE = textwrap.dedent(r'''
  import sys
  from unittest import mock
  import numpy as np
  import torch
  import torch.nn.functional as F

  def import_torchvision():
    try:
      import torchvision
      return torchvision
    except RuntimeError as e:
      if "torchvision::nms" not in str(e):
        raise
    # CUDA torchvision wheel beside a CPU torch: define the two op schemas its meta
    # registrations need (no kernels; nothing here calls them) and import again.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
      del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision
    import_torchvision.lib = lib  # keep the definitions alive
    return torchvision

  try:
    tv = import_torchvision()
    from pytorch_fid import inception as pfi
  except ImportError as e:
    print(f"MISSING: {e}")
    sys.exit(3)

  torch.manual_seed(0)
  # pytorch-fid's own constructor, with the weight download replaced by random weights.
  with mock.patch.object(pfi, "load_state_dict_from_url", return_value=None), \
       mock.patch.object(tv.models.inception.Inception3, "load_state_dict", lambda self, sd: None):
    net = pfi.fid_inception_v3()
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for name, m in net.named_modules():
      if isinstance(m, torch.nn.Conv2d):  # He init keeps activations O(1) through 94 layers.
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
      elif isinstance(m, torch.nn.Linear):
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) / 2048 ** 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
  with mock.patch.object(pfi, "fid_inception_v3", return_value=net):
    wrapper = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  net.eval()
  out = {f"sd/{k}": v.numpy() for k, v in net.state_dict().items()}
  x01 = torch.rand(2, 3, 37, 45, generator=g)  # [0, 1], non-square, upsampled to 299
  u8 = torch.randint(0, 256, (2, 3, 32, 32), generator=g).float()  # uint8 values
  with torch.no_grad():
    feats = wrapper(x01)[0][:, :, 0, 0]
    out["x01"], out["feats"], out["logits"] = x01.numpy(), feats.numpy(), net.fc(feats).numpy()
    # NVlabs detector's resize (TF1 resize_bilinear): affine_grid/grid_sample, border padding.
    n, c, h, w = u8.shape
    theta = torch.eye(2, 3).unsqueeze(0).repeat(n, 1, 1)
    theta[:, 0, 2] += theta[:, 0, 0] / w - theta[:, 0, 0] / 299
    theta[:, 1, 2] += theta[:, 1, 1] / h - theta[:, 1, 1] / 299
    grid = F.affine_grid(theta, [n, c, 299, 299], align_corners=False)
    out["u8"] = u8.numpy()
    out["u8_resized"] = F.grid_sample(u8, grid, mode="bilinear", padding_mode="border",
                                      align_corners=False).numpy()
    out["x01_resized"] = F.interpolate(x01, size=(299, 299), mode="bilinear",
                                       align_corners=False).numpy()
  np.savez(sys.argv[1], **out)
''')


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
  """Outputs of pytorch-fid's network (random weights), or a skip saying what is missing."""
  pytest.importorskip("torch")
  out = tmp_path_factory.mktemp("fidref") / "ref.npz"
  env = dict(os.environ)
  if env.get(REF_PATH_ENV):
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env[REF_PATH_ENV], env.get("PYTHONPATH"))
                                        if p)
  proc = subprocess.run([sys.executable, "-c", _TORCH_REFERENCE, str(out)], env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  if proc.returncode == 3:
    pytest.skip(f"pytorch-fid reference unavailable ({proc.stdout.strip()}): install it with "
                f"`pip install --no-deps --target DIR torchvision==0.28.0 pytorch-fid==0.3.0` "
                f"and set {REF_PATH_ENV}=DIR")
  assert proc.returncode == 0, proc.stderr[-4000:]
  with np.load(out) as z:
    return {k: z[k] for k in z.files}


def _state_dict(ref):
  return {k[3:]: v for k, v in ref.items() if k.startswith("sd/")}


# ---------------------------------------------------------------------------------------------
# (a) Inception parity and weight conversion.


def test_inception_matches_pytorch_fid(torch_reference):
  variables = inception_weights.state_dict_to_variables(_state_dict(torch_reference))
  model = FIDInceptionV3(preprocess="pytorch_fid")
  x = jnp.asarray(torch_reference["x01"].transpose(0, 2, 3, 1))
  feats, logits = jax.jit(lambda v, x: model.apply(v, x, return_logits=True))(variables, x)
  ref_f, ref_l = torch_reference["feats"], torch_reference["logits"]
  assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
  scale = np.abs(ref_f).max()
  assert scale > 1e-2  # Random weights must give non-trivial features, or the check is void.
  # Measured on CPU: max error ~7e-7 of the feature scale (float32 rounding only).
  np.testing.assert_allclose(np.asarray(feats), ref_f, rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(np.asarray(logits), ref_l, rtol=0, atol=1e-5 * np.abs(ref_l).max())


def test_resizes_match_torch(torch_reference):
  from fdistill_jax.models.inception import resize_bilinear
  x01 = jnp.asarray(torch_reference["x01"].transpose(0, 2, 3, 1))
  got = resize_bilinear(x01, 299, half_pixel=True)
  np.testing.assert_allclose(np.asarray(got), torch_reference["x01_resized"].transpose(0, 2, 3, 1),
                             rtol=0, atol=1e-5)
  u8 = jnp.asarray(torch_reference["u8"].transpose(0, 2, 3, 1))
  got = resize_bilinear(u8, 299, half_pixel=False)  # NVlabs/TF1 mapping, on 0..255 values.
  np.testing.assert_allclose(np.asarray(got), torch_reference["u8_resized"].transpose(0, 2, 3, 1),
                             rtol=0, atol=1e-3)


def test_weight_files_pth_npz_safetensors(torch_reference, tmp_path):
  torch = pytest.importorskip("torch")
  pytest.importorskip("safetensors")
  from safetensors.numpy import save_file
  sd = _state_dict(torch_reference)
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "w.pth")
  inception_weights.save_npz(tmp_path / "w.pth", tmp_path / "w.npz")  # the no-torch route
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
  a = inception_weights.load_inception_variables(tmp_path / "w.npz")
  b = inception_weights.load_inception_variables(tmp_path / "w.safetensors")
  c = inception_weights.load_inception_variables(tmp_path / "w.pth")
  jax.tree.map(np.testing.assert_array_equal, a, c)
  jax.tree.map(np.testing.assert_array_equal, b, c)
  k = sd["Mixed_6b.branch7x7_2.conv.weight"]  # [O, I, 1, 7]
  np.testing.assert_array_equal(a["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
                                k.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(b["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
                                sd["Mixed_7c.branch_pool.bn.running_var"])
  bad = dict(sd)
  bad["fc.weight"] = np.zeros((1000, 2048), np.float32)
  del bad["Mixed_5b.branch1x1.bn.running_mean"]
  bad["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
  with pytest.raises(ValueError, match=r"fc\.weight.*\(1000, 2048\)") as e:
    inception_weights.state_dict_to_variables(bad, source="bad.npz")
  assert "Mixed_5b.branch1x1.bn.running_mean" in str(e.value)
  assert "AuxLogits.fc.weight" in str(e.value) and "bad.npz" in str(e.value)


def test_weight_file_errors_without_reference(tmp_path):
  with pytest.raises(FileNotFoundError, match="absent.pth.*pt_inception-2015-12-05-6726825d.pth"):
    inception_weights.read_state_dict(tmp_path / "absent.pth")
  (tmp_path / "w.bin").write_bytes(b"")
  with pytest.raises(ValueError, match=r"w.bin: unsupported weight file type '.bin'"):
    inception_weights.read_state_dict(tmp_path / "w.bin")
  with pytest.raises(ValueError, match=r"x.npz is not the FID.*missing keys.*Conv2d_1a_3x3\.bn"
                     r".*1 unexpected keys \(first: \['foo'\]\)"):
    inception_weights.state_dict_to_variables({"foo": np.zeros(3)}, source="x.npz")


# ---------------------------------------------------------------------------------------------
# Feature extractor (sharded over the 8 fake CPU devices) and the generator loop.


@pytest.fixture(scope="module")
def small_detector():
  """Random-weight detector at a 75x75 input (the graph's minimum) to keep the test fast."""
  return testing.random_inception_variables()


def test_extractor_pads_shards_and_quantises(small_detector, monkeypatch):
  variables = small_detector
  extractor = fid.FeatureExtractor(variables, batch_size=8, preprocess="nvlabs", input_size=75)
  images = np.random.default_rng(0).uniform(-1.1, 1.1, (5, 16, 16, 3)).astype(np.float32)
  got = extractor(images)  # 5 images -> one padded batch of 8 over 8 devices
  assert got.shape == (5, 2048) and got.dtype == np.float32
  assert np.abs(got[0] - got[1]).max() > 1e-3 * np.abs(got).max()  # distinct images differ
  # EDM's quantisation written out independently: (x * 127.5 + 128).clip(0, 255) -> uint8.
  u8 = (images * 127.5 + 128).clip(0, 255).astype(np.uint8)
  tol = 1e-5 * np.abs(got).max()
  np.testing.assert_allclose(extractor(u8), got, rtol=0, atol=tol)
  # Rows do not depend on their position, the device they land on, or the padding.
  np.testing.assert_allclose(extractor(u8[::-1])[::-1], got, rtol=0, atol=tol)
  np.testing.assert_allclose(extractor(np.concatenate([u8, u8])), np.concatenate([got, got]),
                             rtol=0, atol=tol)  # 10 images: a full batch and a padded one

  seen = []

  def sample_fn(seeds):  # The image of seed s is images[s % 5].
    seen.append(np.array(seeds))
    return np.asarray(images[np.asarray(seeds) % 5])

  mu, sigma, feats = fid.generator_statistics(sample_fn, extractor, num_samples=5,
                                              keep_features=True)
  # One full batch of 8 seeds; the 3 past the end are generated and dropped.
  assert [list(s) for s in seen] == [list(range(8))]
  np.testing.assert_allclose(feats, got, rtol=0, atol=tol)
  np.testing.assert_allclose(mu, got.astype(np.float64).mean(0), rtol=1e-12, atol=0)
  np.testing.assert_allclose(sigma, np.cov(got.astype(np.float64), rowvar=False), rtol=1e-9,
                             atol=1e-12 * np.abs(sigma).max())
  # Wiring of fid_from_generator (a 2048-d sqrtm takes tens of seconds on CI's 2 cores).
  calls = []
  monkeypatch.setattr(fid, "frechet_distance", lambda *a: calls.append(a) or 1.5)
  assert fid.fid_from_generator(sample_fn, extractor, (mu[::-1], sigma), num_samples=5) == 1.5
  np.testing.assert_array_equal(calls[0][0], mu)
  np.testing.assert_array_equal(calls[0][2], mu[::-1])
  best = fid.best_fid_over_seeds(sample_fn, extractor, (mu, sigma), 5, repeats=2)
  assert best == (1.5, [1.5, 1.5])
  assert [s[0] for s in seen[-2:]] == [0, 5]  # disjoint seed ranges
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    fid.FeatureExtractor(variables, batch_size=6)
  with pytest.raises(ValueError, match="preprocess must be"):
    fid.FeatureExtractor(variables, batch_size=8, preprocess="clean_fid")
  with pytest.raises(ValueError, match=r"expected images \[8, H, W, 3\]"):
    extractor.extract_batch(images)


# ---------------------------------------------------------------------------------------------
# (b) Statistics, Fréchet distance and reference files.


def _random_spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_closed_forms():
  rng = np.random.default_rng(0)
  d = 16
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  # Diagonal (commuting) covariances: FID = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), want,
                             rtol=1e-10)
  # General case against the symmetric form Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) via eigh.
  s1, s2 = _random_spd(rng, d), _random_spd(rng, d)

  def psd_sqrt(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

  r1 = psd_sqrt(s1)
  want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * psd_sqrt(r1 @ s2 @ r1))
  np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-8)
  assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-8 * np.trace(s1)
  # Singular covariances (fewer samples than dimensions) still give a finite value.
  x = rng.normal(size=(5, d))
  m, s = fid.compute_statistics(x)
  assert np.isfinite(fid.frechet_distance(m, s, mu2, s2))
  with pytest.raises(ValueError, match=r"sigma2 has shape \(3, 3\)"):
    fid.frechet_distance(mu1, s1, mu2, np.eye(3))


def test_statistics_float64_unbiased_and_streamed():
  rng = np.random.default_rng(1)
  x = (rng.normal(size=(100, 2048)) * 3 + 1e3).astype(np.float32)  # Large mean: float64 matters.
  mu, sigma = fid.compute_statistics(x)
  xd = x.astype(np.float64)
  np.testing.assert_allclose(mu, xd.sum(0) / 100, rtol=1e-13)
  centred = xd - xd.mean(0)
  np.testing.assert_allclose(sigma, centred.T @ centred / 99, rtol=1e-9, atol=1e-9)
  acc = fid.StatsAccumulator()
  for chunk in np.array_split(x, 7):
    acc.update(chunk)
  mu2, sigma2 = acc.finalize()
  assert acc.num == 100 and mu2.dtype == sigma2.dtype == np.float64
  np.testing.assert_allclose(mu2, mu, rtol=1e-12)
  np.testing.assert_allclose(sigma2, sigma, rtol=0, atol=1e-6 * np.abs(sigma).max())
  with pytest.raises(ValueError, match=r"\[n, 2048\]"):
    acc.update(np.zeros((3, 10)))


def test_reference_npz_round_trip_and_errors(tmp_path):
  rng = np.random.default_rng(2)
  mu, sigma = fid.compute_statistics(rng.normal(size=(50, 2048)))
  path = tmp_path / "ref.npz"
  fid.save_reference_stats(path, mu, sigma)
  with np.load(path) as z:  # EDM's format: exactly the keys mu and sigma.
    assert sorted(z.files) == ["mu", "sigma"]
  mu2, sigma2 = fid.load_reference_stats(path)
  np.testing.assert_array_equal(mu2, mu)
  np.testing.assert_array_equal(sigma2, sigma)

  with pytest.raises(FileNotFoundError, match="absent.npz"):
    fid.load_reference_stats(tmp_path / "absent.npz")
  np.savez(tmp_path / "keys.npz", mean=mu, cov=sigma)
  with pytest.raises(KeyError, match=r"missing key.*'mu', 'sigma'.*found \['cov', 'mean'\]"):
    fid.load_reference_stats(tmp_path / "keys.npz")
  np.savez(tmp_path / "dim.npz", mu=mu[:64], sigma=sigma[:64, :64])
  with pytest.raises(ValueError, match=r"dim.npz: 'mu' has shape \(64,\), expected \(2048,\)"):
    fid.load_reference_stats(tmp_path / "dim.npz")
  assert fid.load_reference_stats(tmp_path / "dim.npz", dim=None)[0].shape == (64,)
  np.savez(tmp_path / "sig.npz", mu=mu, sigma=sigma[:, :10])
  with pytest.raises(ValueError, match=r"'sigma' has shape \(2048, 10\), expected"):
    fid.load_reference_stats(tmp_path / "sig.npz")
  bad = sigma.copy()
  bad[0, 0] = np.nan
  np.savez(tmp_path / "nan.npz", mu=mu, sigma=bad)
  with pytest.raises(ValueError, match="non-finite"):
    fid.load_reference_stats(tmp_path / "nan.npz")
  (tmp_path / "junk.npz").write_bytes(b"not an npz")
  with pytest.raises(ValueError, match="junk.npz: not a readable"):
    fid.load_reference_stats(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------------------------
# (c) Precision and recall.


def _brute_force_pr(real, fake, k=3):
  """The definition, directly in float64 NumPy."""
  def radii(x):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

  def inside(q, p, r):
    d = np.sqrt(((q[:, None] - p[None]) ** 2).sum(-1))
    return (d <= r[None]).any(1).mean()

  real, fake = real.astype(np.float64), fake.astype(np.float64)
  return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_precision_recall_known_answers():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(40, 8)).astype(np.float32)
  b = (rng.normal(size=(40, 8)) + 100).astype(np.float32)
  assert precision_recall.precision_recall(a, a, block=16) == (1.0, 1.0)
  assert precision_recall.precision_recall(a, b, block=16) == (0.0, 0.0)
  # Fake = the points of cluster a only: every fake point is a real point (precision 1); the
  # real points of a are fake points (inside), those of the far cluster b are not: recall 1/2.
  real = np.concatenate([a, b])
  assert precision_recall.precision_recall(real, a, block=16) == (1.0, 0.5)


def test_precision_recall_matches_brute_force():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(150, 6)).astype(np.float32)
  fake = (rng.normal(size=(110, 6)) + 0.8).astype(np.float32)
  got = precision_recall.precision_recall(real, fake, k=3, block=32)  # padded blocks
  want = _brute_force_pr(real, fake, k=3)
  assert 0.05 < want[0] < 0.95 and 0.05 < want[1] < 0.95  # a non-degenerate case
  assert got == pytest.approx(want, abs=1.5 / 110)  # at most one boundary point may flip
  radii = precision_recall.manifold_radii_sq(real, k=3, block=32)
  d = np.sqrt(((real[:, None].astype(np.float64) - real[None]) ** 2).sum(-1))
  np.testing.assert_allclose(np.sqrt(radii), np.sort(d, 1)[:, 3], rtol=1e-4)
  with pytest.raises(ValueError, match="same d"):
    precision_recall.precision_recall(real, fake[:, :5])


def test_reference_mode_writes_edm_format_stats_of_a_dataset(small_detector, tmp_path):
  from fdistill_jax import defaults
  from fdistill_jax import modes
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
  np.savez(tmp_path / "data.npz", images=images)
  cfg = defaults.image()
  cfg.dataset.name, cfg.dataset.path = "arrays", str(tmp_path / "data.npz")
  extractor = fid.FeatureExtractor(small_detector, batch_size=8, preprocess="nvlabs",
                                   input_size=75)
  out = modes.reference_statistics(cfg, str(tmp_path / "ref"), extractor)
  mu, sigma = fid.load_reference_stats(out["reference"], dim=2048)
  want_mu, want_sigma = fid.compute_statistics(extractor(images))
  assert out["num_images"] == 40
  np.testing.assert_allclose(mu, want_mu, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(sigma, want_sigma, rtol=1e-6, atol=1e-8)


def test_in_loop_fid_hook_scores_the_one_step_generator(small_detector, tmp_path, monkeypatch):
  """The image experiment's FID hook: seeds -> one-step samples -> detector -> FID vs a ref npz."""
  from fdistill_jax import defaults
  from fdistill_jax.evaluation import registry
  from fdistill_jax.nets import Nets
  extractor = fid.FeatureExtractor(small_detector, batch_size=8, preprocess="nvlabs",
                                   input_size=75)
  monkeypatch.setattr(fid.FeatureExtractor, "from_weight_file",
                      classmethod(lambda cls, path, batch_size: extractor))
  rng = np.random.default_rng(0)
  ref_imgs = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
  fid.save_reference_stats(tmp_path / "ref.npz", *fid.compute_statistics(extractor(ref_imgs)))
  (tmp_path / "w.pth").write_bytes(b"unused: the extractor is patched")
  cfg = defaults.image()
  cfg.eval.update(dict(metric="fid", fid_weights=str(tmp_path / "w.pth"),
                       fid_reference=str(tmp_path / "ref.npz"), num_samples=20, fid_batch=8))
  gen = lambda params, x, sigma, labels, key=None: jnp.tanh(x / 80.0 + params)  # toy generator
  nets = Nets(student=gen, teacher=None, disc=None, sigma_init=80.0, data_shape=(8, 8, 3))
  # The distance itself is a stand-in: the hook must hand frechet_distance the generator's and the
  # reference's statistics and return its value. frechet_distance has its own closed-form tests,
  # and a 2048-d sqrtm costs ~20 s on a 2-core CPU.
  calls = []
  monkeypatch.setattr(fid, "frechet_distance", lambda *a: calls.append(a) or 12.5)
  metric = fid.streaming_metric(cfg, registry.Context(nets=nets))
  got = metric(jnp.float32(0.0))["fid"]
  seeds = np.arange(20)
  z = np.stack([np.asarray(jax.random.normal(jax.random.PRNGKey(s), (8, 8, 3))) for s in seeds])
  want_stats = (*fid.compute_statistics(extractor(np.tanh(z))),
                *fid.load_reference_stats(tmp_path / "ref.npz"))
  assert got == 12.5 and len(calls) == 1
  for a, w in zip(calls[0], want_stats, strict=True):  # mu_gen, sigma_gen, mu_ref, sigma_ref
    np.testing.assert_allclose(a, w, rtol=1e-6, atol=1e-6 * np.abs(w).max())
