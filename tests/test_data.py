"""Sources (digits, arrays, EDM zip/folder, tfds mock) and the grain pipeline (shards, resume)."""
import io
import json
import zipfile

import jax
import numpy as np
import PIL.Image
import pytest
import sklearn.datasets
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fdistill_jax import conditioning, data
from fdistill_jax.data import sources
from fdistill_jax.engine import sharding as shard_lib


def _index_source(n=200, shape=(4, 4, 1), label_dim=10):
  """Record i is an image filled with value i (so a batch tells which records it holds)."""
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, *shape)).copy()
  return data.ArraySource(images, np.arange(n) % label_dim, label_dim)


def _record_ids(batch):
  return np.rint((batch["images"][:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def _take(pipeline, k):
  return [next(pipeline) for _ in range(k)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["images"], y["images"])
    np.testing.assert_array_equal(x["labels"], y["labels"])


# ---------------------------------------------------------------- digits
def test_digits_splits_shapes_and_values():
  raw = sklearn.datasets.load_digits()
  train, test = data.DigitsSource(16, "train"), data.DigitsSource(16, "test")
  full8 = data.DigitsSource(8, "all")
  assert (len(train), len(test), len(full8)) == (1500, 297, 1797)
  assert train.image_shape == (16, 16, 1) and train.label_dim == 10
  rec = train[3]
  assert rec["image"].dtype == np.uint8 and rec["image"].shape == (16, 16, 1)
  assert 0 <= rec["label"] < 10
  # At the native 8x8 no resize happens: exactly the sklearn values scaled 16 -> 255.
  np.testing.assert_array_equal(full8.images[..., 0],
                                np.rint(raw.images * 255 / 16).astype(np.uint8))
  np.testing.assert_array_equal(full8.labels, raw.target)
  # Train and test partition the 1,797 digits: their label counts add up to the full ones.
  counts = np.bincount(train.labels, minlength=10) + np.bincount(test.labels, minlength=10)
  np.testing.assert_array_equal(counts, np.bincount(raw.target, minlength=10))
  # Bilinear upsampling keeps the mean intensity within a few levels.
  assert abs(train.images.mean() - np.rint(raw.images * 255 / 16).mean()) < 6
  assert data.DigitsSource(32, "test").image_shape == (32, 32, 1)
  with pytest.raises(ValueError, match="split"):
    data.DigitsSource(16, "validation")


# ---------------------------------------------------------------- pipeline
def test_batches_static_shapes_values_and_labels():
  src = _index_source(n=100, label_dim=7)
  pipe = data.InputPipeline(src, batch_size=8, seed=0)
  assert pipe.batch_shapes == {"images": (8, 4, 4, 1), "labels": (8,)}
  spec = conditioning.ClassLabels(7)
  for batch in _take(pipe, 30):  # 240 records: crosses two epoch boundaries.
    assert batch["images"].shape == (8, 4, 4, 1) and batch["images"].dtype == np.float32
    assert batch["labels"].shape == (8,) and batch["labels"].dtype == np.int32
    assert batch["images"].min() >= -1.0 and batch["images"].max() <= 1.0
    ids = _record_ids(batch)
    np.testing.assert_array_equal(batch["labels"], ids % 7)
    # The condition spec is what one-hots them (the pipeline keeps indices).
    np.testing.assert_array_equal(spec.encode(batch["labels"]),
                                  np.eye(7, dtype=np.float32)[ids % 7])
  # Exact value mapping: 0 -> -1, 255 -> +1.
  ends = data.ArraySource(np.array([0, 255], np.uint8).reshape(2, 1, 1, 1).repeat(2, 0))
  batch = next(data.InputPipeline(ends, batch_size=4, shuffle=False))
  np.testing.assert_array_equal(np.sort(batch["images"].ravel()), [-1, -1, 1, 1])
  np.testing.assert_array_equal(batch["labels"], [-1] * 4)  # Unlabelled source.
  unconditional = next(data.InputPipeline(src, batch_size=4, use_labels=False))
  np.testing.assert_array_equal(unconditional["labels"], [-1] * 4)
  assert conditioning.Unconditional().encode(unconditional["labels"]).shape == (4, 0)


def test_two_processes_get_disjoint_covering_shards():
  src = _index_source(n=200)
  seen = []
  for shard in range(2):
    pipe = data.InputPipeline(src, batch_size=10, seed=3, num_epochs=1, shard_index=shard,
                              shard_count=2)
    ids = np.concatenate([_record_ids(b) for b in pipe])
    assert len(ids) == 100 and len(set(ids)) == 100
    seen.append(set(ids))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(200))


def test_shuffle_is_deterministic_and_changes_each_epoch():
  src = _index_source(n=120)
  a = _take(data.InputPipeline(src, batch_size=12, seed=5, xflip=True), 20)
  b = _take(data.InputPipeline(src, batch_size=12, seed=5, xflip=True), 20)
  _assert_same_batches(a, b)
  c = _take(data.InputPipeline(src, batch_size=12, seed=6), 10)
  epoch = lambda batches: np.concatenate([_record_ids(x) for x in batches])
  assert not np.array_equal(epoch(a[:10]), epoch(c))
  e1, e2 = epoch(a[:10]), epoch(a[10:20])
  assert sorted(e1) == sorted(e2) == list(range(120))  # Every epoch sees every record once ...
  assert not np.array_equal(e1, e2)  # ... in a new order.
  assert not np.array_equal(e1, np.arange(120))


def test_resume_from_saved_state_reproduces_continuation():
  src = _index_source(n=90)
  pipe = data.InputPipeline(src, batch_size=8, seed=1, xflip=True)
  _take(pipe, 13)  # Past the first epoch (11 batches).
  state = json.loads(json.dumps(pipe.get_state()))  # Must survive a JSON round trip.
  assert len(json.dumps(state)) < 2048
  expected = _take(pipe, 9)
  resumed = data.InputPipeline(src, batch_size=8, seed=1, xflip=True)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 9), expected)
  # States saved while the pipeline could one-hot labels carry 'label_format' ('index' for the
  # text-to-image problem); the entry does not move the reader, so they still resume.
  for old in ("index", "one_hot"):
    again = data.InputPipeline(src, batch_size=8, seed=1, xflip=True)
    again.set_state(dict(state, label_format=old))
    _assert_same_batches(_take(again, 2), expected[:2])
  with pytest.raises(ValueError, match="batch_size"):
    data.InputPipeline(src, batch_size=4, seed=1, xflip=True).set_state(state)
  with pytest.raises(ValueError, match="[Ss]ampler"):
    data.InputPipeline(src, batch_size=8, seed=2, xflip=True).set_state(state)


def test_xflip_mirrors_about_half_of_the_images():
  n = 64
  images = np.zeros((n, 4, 4, 1), np.uint8)
  images[:, :, 0] = 255  # Left column lit: a flip moves it to the right.
  batch = next(data.InputPipeline(data.ArraySource(images), batch_size=n, seed=0, xflip=True))
  left = batch["images"][:, :, 0, 0].min(axis=1) == 1.0
  right = batch["images"][:, :, -1, 0].min(axis=1) == 1.0
  assert np.all(left ^ right)
  assert 16 < right.sum() < 48


def test_pipeline_rejects_batches_larger_than_a_shard():
  with pytest.raises(ValueError, match="per shard"):
    data.InputPipeline(_index_source(n=30), batch_size=16, shard_index=0, shard_count=2)


@pytest.mark.parametrize("same_on_every_process", [True, False])
def test_pipeline_batches_become_global_arrays_over_every_device(same_on_every_process):
  mesh = Mesh(np.array(jax.devices()).reshape(-1), ("data",))
  ndev = mesh.devices.size
  on_mesh = lambda tree: jax.tree.map(lambda _: NamedSharding(mesh, P("data")), tree)
  batch = next(data.InputPipeline(_index_source(n=16 * ndev), batch_size=2 * ndev, seed=0))
  g = shard_lib.global_arrays(batch, on_mesh(batch), same_on_every_process)
  assert g["images"].shape == batch["images"].shape and g["labels"].shape == batch["labels"].shape
  assert len(g["images"].sharding.device_set) == ndev
  np.testing.assert_array_equal(np.asarray(g["images"]), batch["images"])
  labels = {"labels": np.zeros((ndev, 0), np.float32)}
  empty = shard_lib.global_arrays(labels, on_mesh(labels), same_on_every_process)
  assert empty["labels"].shape == (ndev, 0)


# ---------------------------------------------------------------- EDM zips and folders
def _png(array):
  buf = io.BytesIO()
  PIL.Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _edm_images(n=6, size=8, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  shape = (n, size, size, channels) if channels == 3 else (n, size, size)
  return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _write_zip(path, images, labels=None, extra_json=None):
  names = [f"{i // 4:05d}/img{i:08d}.png" for i in range(len(images))]
  with zipfile.ZipFile(path, "w") as zf:
    for name, img in zip(names, images):
      zf.writestr(name, _png(img))
    if extra_json is not None:
      zf.writestr("dataset.json", extra_json)
    elif labels is not None:
      table = [[n, int(l)] for n, l in zip(names, labels)]
      zf.writestr("dataset.json", json.dumps({"labels": table}))
  return names


def test_edm_zip_with_and_without_labels(tmp_path):
  images, labels = _edm_images(), np.array([3, 1, 4, 1, 5, 9])
  _write_zip(tmp_path / "cond.zip", images, labels)
  src = data.make_source({"name": "edm_zip", "path": str(tmp_path / "cond.zip")})
  assert len(src) == 6 and src.image_shape == (8, 8, 3) and src.label_dim == 10
  for i in range(6):
    np.testing.assert_array_equal(src[i]["image"], images[i])
    assert src[i]["label"] == labels[i]
  batch = next(data.InputPipeline(src, batch_size=6, shuffle=False))
  np.testing.assert_allclose(batch["images"], images / 127.5 - 1, atol=1e-6)
  np.testing.assert_array_equal(batch["labels"], labels)

  _write_zip(tmp_path / "uncond.zip", images)
  src = data.ImageFolderSource(tmp_path / "uncond.zip")
  assert src.label_dim == 0 and src[2]["label"] == -1
  assert data.ImageFolderSource(tmp_path / "cond.zip", use_labels=False).label_dim == 0
  _write_zip(tmp_path / "null.zip", images, extra_json=json.dumps({"labels": None}))
  assert data.ImageFolderSource(tmp_path / "null.zip").label_dim == 0


def test_image_folder_grayscale_rgba_and_json(tmp_path):
  root = tmp_path / "gray"
  images = _edm_images(n=5, channels=1)
  names = []
  for i, img in enumerate(images):
    (root / "sub").mkdir(parents=True, exist_ok=True)
    name = f"sub/{i:03d}.png"
    (root / name).write_bytes(_png(img))
    names.append(name)
  (root / "notes.txt").write_text("not an image")
  src = data.make_source({"name": "folder", "path": str(root)})
  assert len(src) == 5 and src.image_shape == (8, 8, 1) and src.label_dim == 0
  np.testing.assert_array_equal(src[4]["image"][..., 0], images[4])
  (root / "dataset.json").write_text(json.dumps({"labels": [[n, 2] for n in names]}))
  src = data.ImageFolderSource(root)
  assert src.label_dim == 3 and src[0]["label"] == 2
  rgba = np.dstack([_edm_images(n=1)[0], np.full((8, 8), 255, np.uint8)])
  (tmp_path / "rgba").mkdir()
  (tmp_path / "rgba" / "a.png").write_bytes(_png(rgba))
  decoded = data.ImageFolderSource(tmp_path / "rgba")[0]["image"]
  np.testing.assert_array_equal(decoded, rgba[..., :3])  # Alpha dropped, RGB kept.


def test_folder_and_zip_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="dataset_tool"):
    data.ImageFolderSource(tmp_path / "missing.zip")
  (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
  with pytest.raises(ValueError, match="zip"):
    data.ImageFolderSource(tmp_path / "bad.zip")
  images = _edm_images(n=3)
  _write_zip(tmp_path / "badjson.zip", images, extra_json="{labels: oops")
  with pytest.raises(ValueError, match="dataset.json.*JSON"):
    data.ImageFolderSource(tmp_path / "badjson.zip")
  partial = json.dumps({"labels": [["00000/img00000000.png", 1]]})
  _write_zip(tmp_path / "partial.zip", images, extra_json=partial)
  with pytest.raises(ValueError, match="img00000001.png"):
    data.ImageFolderSource(tmp_path / "partial.zip")
  floats = json.dumps({"labels": [[f"00000/img{i:08d}.png", 0.5] for i in range(3)]})
  _write_zip(tmp_path / "floats.zip", images, extra_json=floats)
  with pytest.raises(ValueError, match="int"):
    data.ImageFolderSource(tmp_path / "floats.zip")
  _write_zip(tmp_path / "nolabels.zip", images, extra_json=json.dumps({"classes": 3}))
  with pytest.raises(ValueError, match="'labels'"):
    data.ImageFolderSource(tmp_path / "nolabels.zip")
  mixed = [_edm_images(n=1, size=8)[0], _edm_images(n=1, size=6)[0]]
  _write_zip(tmp_path / "mixed.zip", mixed)
  with pytest.raises(ValueError, match="img00000001.png.*shape"):
    data.ImageFolderSource(tmp_path / "mixed.zip")[1]
  with zipfile.ZipFile(tmp_path / "garbage.zip", "w") as zf:
    zf.writestr("img0.png", b"not a png")
  with pytest.raises(ValueError, match="garbage.zip:img0.png"):
    data.ImageFolderSource(tmp_path / "garbage.zip")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no image files"):
    data.ImageFolderSource(tmp_path / "empty")


def test_make_source_dispatch_and_errors(tmp_path):
  with pytest.raises(ValueError, match="digits.*tfds.*edm_zip.*folder.*arrays"):
    data.make_source({"name": "mnist"})
  src = data.make_source({"dataset": {"name": "digits", "resolution": 8, "split": "test"}})
  assert len(src) == 297 and src.image_shape == (8, 8, 1)
  with pytest.raises(ValueError, match="directory"):
    data.make_source({"name": "edm_zip", "path": str(tmp_path)})
  with pytest.raises(ValueError, match="tfds_name"):
    data.make_source({"name": "tfds"})
  images = _edm_images(n=4)
  np.savez(tmp_path / "a.npz", images=images, labels=np.array([0, 1, 2, 1]))
  src = data.make_source({"name": "arrays", "path": str(tmp_path / "a.npz")})
  assert len(src) == 4 and src.label_dim == 3
  with pytest.raises(FileNotFoundError, match="npz"):
    data.make_source({"name": "arrays", "path": str(tmp_path / "missing.npz")})
  with pytest.raises(ValueError, match="uint8"):
    data.ArraySource(images.astype(np.float32))


# ---------------------------------------------------------------- tfds
def test_tfds_cifar10_on_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    src = data.make_source({"name": "tfds", "tfds_name": "cifar10", "split": "train",
                            "data_dir": str(tmp_path)})
    assert isinstance(src, data.TfdsSource)
    assert len(src) == 20 and src.image_shape == (32, 32, 3) and src.label_dim == 10
    rec = src[7]
    assert rec["image"].dtype == np.uint8 and rec["image"].shape == (32, 32, 3)
    assert 0 <= rec["label"] < 10
    pipe = data.InputPipeline(src, batch_size=4, seed=0, xflip=True)
    batch = next(pipe)
    assert batch["images"].shape == (4, 32, 32, 3) and batch["labels"].shape == (4,)
    assert np.all((batch["labels"] >= 0) & (batch["labels"] < 10))
    # The tf.data reader (for TFRECORD-prepared data) reads the split into memory. (The mock
    # draws fresh random records for tf.data, so only shapes and ranges are comparable.)
    mem = data.tfds_source("cifar10", "train", str(tmp_path), reader="tf_data")
    assert isinstance(mem, data.ArraySource) and len(mem) == 20 and mem.label_dim == 10
    assert mem.image_shape == (32, 32, 3) and set(mem.labels) <= set(range(10))


def test_tfds_errors(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ValueError, match="no dataset named"):
    data.tfds_source("no_such_dataset_xyz", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="tfds build cifar10"):
    data.tfds_source("cifar10", data_dir=str(tmp_path), reader="data_source")
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    data.tfds_source("cifar10", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="label_key"):
    data.tfds_source("cifar10", data_dir=str(tmp_path), label_key="nope")
