"""gs:// workdirs and inputs: the same code paths as local runs, on a fake bucket (conftest's
`gcs_bucket`: epath's fsspec backend and orbax's tensorstore kvstore both served from a local
folder, see testing.fake_gcs). Each test asserts what landed in the bucket's backing folder, and
that nothing was written to the working directory (a gs:// path mistaken for a local one would
create ./gs:/...)."""
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from fdistill_jax import compose, defaults, fileio
from fdistill_jax.convert import edm_state_dict as esd
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.engine import metrics as metrics_lib
from fdistill_jax.evaluation import fid
from fdistill_jax.methods import kd
from fdistill_jax.models.edm import build_edm_precond
from fdistill_jax.teachers import analytic
from fdistill_jax.teachers.edm import load_edm
from fdistill_jax.tools import encode_prompts


@pytest.fixture
def bucket(gcs_bucket, tmp_path, monkeypatch):
  """(gs:// URI, local folder holding its objects); cwd is an empty folder checked at the end."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  yield gcs_bucket, tmp_path / "fake_gcs" / "test-bucket"
  assert not os.listdir(cwd), f"wrote local files for a gs:// path: {os.listdir(cwd)}"


def _files(root) -> set[str]:
  return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_fake_bucket_behaves_like_an_object_store(bucket):
  uri, root = bucket
  p = epath.Path(uri) / "a" / "b.txt"
  assert type(p._backend).__name__ == "_FileSystemSpecBackend"  # pylint: disable=protected-access
  fileio.write_text(p, "x")
  assert (root / "a" / "b.txt").read_text() == "x" and _files(root) == {"a/b.txt"}  # No .tmp.
  fileio.move(epath.Path(uri) / "a", epath.Path(uri) / "c" / "a")  # Copy + delete on GCS.
  assert _files(root) == {"c/a/b.txt"} and (epath.Path(uri) / "c/a/b.txt").read_text() == "x"
  fileio.save_npz(f"{uri}/v.npz", v=np.arange(3))  # Exactly that name: no '.npz' appended.
  np.testing.assert_array_equal(fileio.load_npz(f"{uri}/v.npz")["v"], np.arange(3))


# ------------------------------------------------------------------------------ training
def _toy_kd_cfg(steps):
  """The cheapest full run: toy 2-D KD (one compiled step, no critic), pairs in the workdir."""
  cfg = defaults.toy()
  cfg.method = kd.method_config()
  cfg.method.update(pairs_num=128, pairs_shard_size=64, pairs_steps=4)
  cfg.disc.enabled = False
  cfg.pretrain.steps = 2  # The run's numbers do not matter here, only where its files go.
  cfg.student.hidden = 32
  cfg.train.update(batch_size=64, steps=steps, log_every=2, ckpt_every=2, keep_checkpoints=3,
                   async_checkpoints=False, tensorboard=False)  # TB writes through TF's gfile.
  cfg.eval.update(num_samples=64, teacher_nfe=5)
  cfg.mesh.fsdp_min_size = 256
  return cfg


def test_training_run_writes_resumes_and_moves_corrupt_steps_in_the_bucket(bucket, caplog):
  uri, root = bucket
  wd = f"{uri}/run"
  cfg = _toy_kd_cfg(4)
  # One device: this test is about where files go; load_trained below restores onto all 8.
  out = compose.train(cfg, wd, devices=jax.devices()[:1])
  assert out["step"] == 4
  files = _files(root / "run")
  for f in ("metrics.jsonl", "final_metrics.json", "samples_0000004.png", "metrics.png",
            "pretrained_denoiser.msgpack", "kd_pairs/manifest.json", "kd_pairs/shard_00001.npz",
            "checkpoints/4/integrity/metadata",
            "checkpoints/4/commit_success.txt",  # orbax took its GCS path (no atomic rename)...
            "checkpoints/4/state/manifest.ocdbt"):  # ...and tensorstore wrote its arrays here.
    assert f in files, (f, sorted(files))
  assert {f.split("/")[1] for f in files if f.startswith("checkpoints/")} == {"2", "4"}
  assert not any(f.endswith(".tmp") for f in files)
  assert json.loads((root / "run" / "final_metrics.json").read_text())["step"] == 4
  assert (root / "run" / "samples_0000004.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads((root / "run" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 4

  # Damage step 4's array files in the bucket (each cut to half): restoring (the resume path of
  # a relaunched run) falls back to step 2 and moves step 4 to checkpoints/corrupt/4 there.
  for f in (root / "run/checkpoints/4/state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
  _, state = compose.load_trained(cfg, wd)
  assert int(state["step"]) == 2
  assert f"checkpoint step 4 ({wd}/checkpoints/4)" in caplog.text  # Named by its gs:// path.
  assert "fell back to step 2" in caplog.text
  files = _files(root / "run")
  assert "checkpoints/corrupt/4/commit_success.txt" in files
  assert not any(f.startswith("checkpoints/4/") for f in files)


def test_metrics_jsonl_appends_across_runs_in_the_bucket(bucket):
  uri, root = bucket
  for run, steps in enumerate(((1, 2), (3,))):  # A second writer = a resumed run.
    w = metrics_lib.JsonlWriter(f"{uri}/metrics.jsonl", upload_every_s=3600)
    for s in steps:
      w.write_scalars(s, {"loss": float(s), "run": run})
    if run == 0:
      w.flush()  # Uploaded on flush (and every upload_every_s), not per line.
      assert len((root / "metrics.jsonl").read_text().splitlines()) == 2
    w.close()
  recs = [json.loads(l) for l in (root / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["run"]) for r in recs] == [(1, 0), (2, 0), (3, 1)]


# ------------------------------------------------------------------------------ inputs
_TINY = dict(img_resolution=8, img_channels=3, label_dim=0, model_channels=8,
             channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], model_type="SongUNet")


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_edm_teacher_reads_from_the_bucket(bucket, tmp_path, ext):
  uri, _ = bucket
  module = build_edm_precond(_TINY)
  rng = np.random.default_rng(0)  # Random values of the right shapes: no init, no forward.
  variables = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                           esd.abstract_variables(module))
  sd = esd.variables_to_state_dict(variables, module)
  local, remote = str(tmp_path / f"edm{ext}"), f"{uri}/teachers/edm{ext}"
  for path in (local, remote):
    esd.write_state_dict(path, sd, precond_kwargs=_TINY)
    if ext == ".pt":  # A .pt carries no kwargs: config.json beside it.
      fileio.write_json(epath.Path(path).parent / "config.json", {"precond_kwargs": _TINY})
  (m_l, v_l), (m_r, v_r) = load_edm(local), load_edm(remote)
  assert m_l == m_r
  flat_l, flat_r = jax.tree_util.tree_leaves_with_path(v_l), jax.tree.leaves(v_r)
  for (k, a), b, c in zip(flat_l, flat_r, jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(k))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(c), err_msg=jax.tree_util.keystr(k))
  with pytest.raises(FileNotFoundError, match=f"{uri}/teachers/missing.safetensors"):
    load_edm(f"{uri}/teachers/missing.safetensors")


def test_reference_statistics_and_mixture_files_read_from_the_bucket(bucket):
  uri, root = bucket
  rng = np.random.default_rng(0)
  mu, a = rng.normal(size=16), rng.normal(size=(16, 16))
  fid.save_reference_stats(f"{uri}/refs/stats.npz", mu, a @ a.T)
  assert _files(root) == {"refs/stats.npz"}
  got_mu, got_sigma = fid.load_reference_stats(f"{uri}/refs/stats.npz", dim=16)
  np.testing.assert_array_equal(got_mu, mu)
  np.testing.assert_array_equal(got_sigma, a @ a.T)
  with pytest.raises(FileNotFoundError, match=f"{uri}/refs/none.npz"):
    fid.load_reference_stats(f"{uri}/refs/none.npz")
  fileio.save_npz(f"{uri}/gmm.npz", means=np.zeros((2, 2)), scales=np.ones(2))
  assert analytic.load_mixture_file(f"{uri}/gmm.npz")["means"].shape == (2, 2)


class _FakeEncoder:
  """Stands in for T5: deterministic embeddings [n, L, D] from the prompts' characters."""
  dim = 4

  def __call__(self, prompts):
    emb = np.stack([np.full((6, self.dim), len(p), np.float32) for p in prompts])
    mask = np.stack([(np.arange(6) < max(len(p), 1)).astype(np.uint8) for p in prompts])
    return emb, mask


def test_prompt_cache_written_and_read_in_the_bucket(bucket):
  uri, root = bucket
  args = types.SimpleNamespace(max_length=6, dtype="float32", shard_size=2, batch_size=2,
                               model="fake-t5", model_dtype="float32", clean_caption=False)
  prompts = ["a cat", "two dogs", "x"]
  encode_prompts.encode_to_cache(prompts, f"{uri}/prompts", _FakeEncoder(), args)
  assert _files(root) == {"prompts/index.json", "prompts/null.safetensors",
                          "prompts/shard-00000-of-00002.safetensors",
                          "prompts/shard-00001-of-00002.safetensors"}
  cache = pc.load_prompt_cache(f"{uri}/prompts")
  assert cache.prompts == prompts and cache.embeddings.shape == (3, 6, 4)
  np.testing.assert_array_equal(cache.embeddings[:, 0, 0], [5, 8, 1])
  assert cache.null_embeddings.shape == (1, 6, 4)


def test_kd_pair_cache_in_the_bucket(bucket):
  uri, root = bucket
  fn = lambda z, cond: 2.0 * z  # noqa: E731  (the teacher's map does not matter here)
  args = dict(num_pairs=5, shard_size=2, num_steps=3, seed=0, sigma_min=0.002, sigma_max=80.0,
              data_shape=(2,))
  paths = kd.build_pair_cache(fn, f"{uri}/kd", max_new_shards=2, **args)
  assert _files(root) == {"kd/manifest.json", "kd/shard_00000.npz", "kd/shard_00001.npz"}
  pairs = kd.load_pairs(kd.build_pair_cache(fn, f"{uri}/kd", **args))  # Resumes the third.
  assert paths[2].startswith(uri) and pairs["z"].shape == (5, 2)
  np.testing.assert_array_equal(pairs["y"], 2.0 * pairs["z"])
  shard = root / "kd" / "shard_00001.npz"  # A flipped byte: set aside and rebuilt in the bucket.
  data = bytearray(shard.read_bytes())
  data[len(data) // 2] ^= 1
  shard.write_bytes(bytes(data))
  again = kd.load_pair_cache(fn, f"{uri}/kd", **args)
  np.testing.assert_array_equal(again["z"], pairs["z"])
  assert "kd/shard_00001.npz.corrupt" in _files(root)


def test_edm_zip_folder_and_npz_datasets_read_from_the_bucket(bucket, tmp_path):
  import io
  import zipfile

  import PIL.Image

  from fdistill_jax.data import image_folder, sources
  uri, root = bucket
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
  pngs = {}
  for i, im in enumerate(images):
    buf = io.BytesIO()
    PIL.Image.fromarray(im).save(buf, format="PNG")
    pngs[f"00000/img{i:08d}.png"] = buf.getvalue()
  labels = json.dumps({"labels": [[n, i % 2] for i, n in enumerate(pngs)]}).encode()
  zbuf = io.BytesIO()
  with zipfile.ZipFile(zbuf, "w") as zf:
    for n, data in {**pngs, "dataset.json": labels}.items():
      zf.writestr(n, data)
  fileio.write_bytes(f"{uri}/data/set.zip", zbuf.getvalue())
  for n, data in {**pngs, "dataset.json": labels}.items():
    fileio.write_bytes(f"{uri}/data/folder/{n}", data)
  fileio.save_npz(f"{uri}/data/arrays.npz", images=images, labels=np.arange(3))
  for path in (f"{uri}/data/set.zip", f"{uri}/data/folder"):
    src = image_folder.ImageFolderSource(path)
    assert len(src) == 3 and src.label_dim == 2
    for i in range(3):
      np.testing.assert_array_equal(src[i]["image"], images[i])
      assert src[i]["label"] == i % 2
  got, lab = sources.load_npz_arrays(f"{uri}/data/arrays.npz")
  np.testing.assert_array_equal(got, images)
  np.testing.assert_array_equal(lab, np.arange(3))


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_metrics_jsonl_local_and_bucket_agree(bucket, tmp_path, where):
  path = (str(tmp_path / "m.jsonl") if where == "local" else f"{bucket[0]}/m.jsonl")
  w = metrics_lib.JsonlWriter(path)
  w.write_scalars(1, {"loss": 0.5})
  if where == "local":  # Visible per line locally; in a bucket after flush/close.
    assert json.loads(epath.Path(path).read_text())["loss"] == 0.5
  w.close()
  assert [json.loads(l)["step"] for l in epath.Path(path).read_text().splitlines()] == [1]


def test_grids_numbered_pngs_and_plot_in_the_bucket(bucket):
  from fdistill_jax.evaluation import grids, plots
  uri, root = bucket
  x = np.random.default_rng(0).uniform(-1, 1, size=(4, 4, 4, 3)).astype(np.float32)
  grids.save_grid(x, f"{uri}/s/grid.png")
  pngs = grids.save_numbered(x, f"{uri}/s/pngs")
  grids.save_labelled_grid([("a", x.reshape(2, 2, 4, 4, 3))], ["0", "1"], f"{uri}/s/lab.png")
  fileio.write_text(f"{uri}/s/metrics.jsonl",
                    '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
  assert plots.metrics_png(f"{uri}/s") == f"{uri}/s/metrics.png"
  assert pngs[0] == f"{uri}/s/pngs/000000.png"
  assert _files(root) == {"s/grid.png", "s/lab.png", "s/metrics.jsonl", "s/metrics.png",
                          *(f"s/pngs/{i:06d}.png" for i in range(4))}
  import PIL.Image
  with PIL.Image.open(root / "s/pngs/000002.png") as im:
    np.testing.assert_array_equal(np.asarray(im), grids.to_uint8(x)[2])


def test_fake_gcs_is_undone_on_exit(tmp_path):
  import fsspec
  from etils.epath import gpath
  from fdistill_jax import testing
  before = gpath._is_tf_installed  # pylint: disable=protected-access
  with testing.fake_gcs(tmp_path):
    assert fsspec.get_filesystem_class("gs").__name__ == "FakeGCSFileSystem"
  assert gpath._is_tf_installed is before  # pylint: disable=protected-access
  try:
    assert fsspec.get_filesystem_class("gs").__name__ != "FakeGCSFileSystem"
  except ImportError:
    pass  # gcsfs absent: gs:// is unregistered again, as before.
