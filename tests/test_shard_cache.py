"""The one sharded cache (fdistill_jax/shard_cache.py) in both of its formats (npz as the KD pairs,
safetensors as the prompt cache): a resumed build writes only the missing shards and equals a
one-shot build; a write killed midway leaves no shard under its name; a manifest of other
settings, a torn one and a damaged or truncated shard are refused naming the file (and the
field); a damaged shard can instead be set aside and rebuilt. numpy only: no jax, no torch."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from etils import epath

from fdistill_jax import shard_cache

NPZ = shard_cache.Layout("shard_{i:05d}.npz", "manifest.json")
SAFETENSORS = shard_cache.Layout("s-{i:03d}-of-{n:03d}.safetensors", "index.json")
WANT = {"rows": 3, "seed": 7}


def _arrays(i: int) -> dict[str, np.ndarray]:
  """Shard i: x [3, 2] float32 (a function of i alone), labels [3] int32."""
  return {"x": np.full((3, 2), i + 0.5, np.float32), "labels": np.arange(3, dtype=np.int32) + i}


def _maker(layout: shard_cache.Layout, made: list[int]) -> shard_cache.MakeShard:
  def make(i: int, path: str) -> None:
    made.append(i)
    layout.write(path, _arrays(i), None if path.endswith(".npz") else {"start": str(3 * i)})
  return make


def _read(layout: shard_cache.Layout):
  return lambda i, path, first: layout.read(path, required=("x", "labels"), floats=("x",))[0]


def _flip_middle(path: str) -> None:
  data = bytearray(Path(path).read_bytes())
  data[len(data) // 2] ^= 1  # Inside the arrays' bytes.
  Path(path).write_bytes(bytes(data))


@pytest.fixture(params=["npz", "safetensors"])
def layout(request) -> shard_cache.Layout:
  return NPZ if request.param == "npz" else SAFETENSORS


def test_names_come_from_index_and_count():
  assert NPZ.name(3, 10) == "shard_00003.npz"
  assert SAFETENSORS.paths("/c", 2) == ["/c/s-000-of-002.safetensors",
                                        "/c/s-001-of-002.safetensors"]


def test_resume_builds_only_the_missing_shards(layout, tmp_path):
  made = []
  paths = layout.paths(tmp_path / "c", 4)
  assert not layout.resume(tmp_path / "c", WANT, fix="x")  # A new cache: the caller writes it.
  layout.build(paths, _maker(layout, made), max_new=2)  # A build killed after two shards.
  assert made == [0, 1] and [os.path.exists(p) for p in paths] == [True, True, False, False]
  Path(paths[2] + ".tmp").write_bytes(b"half a shard")  # Killed mid-write: ignored.
  layout.build(paths, _maker(layout, made))
  assert made == [0, 1, 2, 3]  # Shards 0 and 1 were not made again.
  got = layout.load(paths, _read(layout))
  for i, part in enumerate(got):
    for k, v in _arrays(i).items():
      np.testing.assert_array_equal(part[k], v, err_msg=f"shard {i} {k}")


def test_a_killed_write_leaves_no_shard(layout, tmp_path, monkeypatch):
  """All-or-nothing: the bytes go to a temporary name first, so a crash before the rename leaves
  the final name absent and the next build makes that shard."""
  paths = layout.paths(tmp_path, 2)
  local = type(epath.Path(tmp_path))  # epath.Path makes instances of a backend's class.

  def crash(self, target):
    raise KeyboardInterrupt("killed before the rename")
  monkeypatch.setattr(local, "replace", crash)
  made = []
  with pytest.raises(KeyboardInterrupt):
    layout.build(paths, _maker(layout, made))
  assert made == [0] and not any(os.path.exists(p) for p in paths)
  assert os.path.exists(paths[0] + ".tmp")  # The whole shard was written, under another name.
  monkeypatch.undo()
  layout.build(paths, _maker(layout, made))
  assert made == [0, 0, 1] and all(os.path.exists(p) for p in paths)


def test_manifest_mismatch_names_the_file_and_field(layout, tmp_path):
  folder = tmp_path / "c"
  layout.resume(folder, WANT, fix="delete it")
  json_path = folder / layout.manifest
  json_path.write_text(json.dumps(WANT))
  assert layout.resume(folder, WANT, fix="delete it")  # Same settings: resumed.
  assert layout.resume(folder, {**WANT, "seed": 8}, fix="f", keys=("rows",))  # seed not pinned.
  with pytest.raises(shard_cache.ShardError,
                     match=rf"{layout.manifest}: seed=7 but this run expects seed=8; delete it"):
    layout.resume(folder, {**WANT, "seed": 8}, fix="delete it")
  json_path.write_text('{"rows": 3')  # A torn manifest.
  with pytest.raises(shard_cache.ShardError, match=rf"{layout.manifest}: invalid JSON.*; fix it"):
    layout.resume(folder, WANT, fix="fix it")
  json_path.write_text("[3, 7]")
  with pytest.raises(shard_cache.ShardError,
                     match=rf"{layout.manifest}: not a shard-cache manifest \(a JSON list\)"):
    layout.read_manifest(folder, fix="fix it")
  json_path.unlink()
  with pytest.raises(shard_cache.ShardError, match=rf"{layout.manifest}: missing; fix it"):
    layout.read_manifest(folder, fix="fix it")


def test_damaged_shards_are_named(layout, tmp_path):
  paths = layout.build(layout.paths(tmp_path, 3), _maker(layout, []))
  read = _read(layout)
  Path(paths[1]).write_bytes(Path(paths[1]).read_bytes()[:60])  # Truncated.
  what = "cannot read" if layout is NPZ else "truncated or corrupt .safetensors file"
  with pytest.raises(shard_cache.ShardError, match=rf"{os.path.basename(paths[1])}: {what}"):
    layout.load(paths, read)
  if layout is NPZ:  # safetensors has no checksum: only npz's CRC-32 tells a flipped data byte.
    _flip_middle(paths[2])
    with pytest.raises(shard_cache.ShardError, match=r"shard_00002\.npz: member '\w+\.npy' is "
                       r"damaged \(Bad CRC-32"):
      read(2, paths[2], None)
  layout.write(paths[0], {"x": np.array([[0.0, np.nan]], np.float32), "labels": np.zeros(1)})
  with pytest.raises(shard_cache.ShardError, match=rf"{os.path.basename(paths[0])}: tensor 'x' "
                     "has 1 non-finite"):
    read(0, paths[0], None)
  layout.write(paths[0], {"x": np.zeros((1, 2), np.int64), "labels": np.zeros(1)})
  with pytest.raises(shard_cache.ShardError, match="tensor 'x' has dtype int64"):
    read(0, paths[0], None)
  layout.write(paths[0], {"x": np.zeros((1, 2), np.float32)})
  with pytest.raises(shard_cache.ShardError, match=r"holds arrays \['x'\]; expected \['labels', "):
    read(0, paths[0], None)
  os.remove(paths[0])
  with pytest.raises(shard_cache.ShardError, match=rf"{os.path.basename(paths[0])}: missing"):
    read(0, paths[0], None)


def test_damaged_shards_are_set_aside_and_rebuilt(layout, tmp_path, caplog):
  paths = layout.build(layout.paths(tmp_path, 3), _maker(layout, []))
  good = Path(paths[1]).read_bytes()
  Path(paths[1]).write_bytes(good[:-7])  # Truncated.
  made = []
  got = layout.load(paths, _read(layout), make=_maker(layout, made))  # While loading...
  assert made == [1] and "rebuilding shard 1" in caplog.text
  assert Path(paths[1]).read_bytes() == good and os.path.exists(paths[1] + ".corrupt")
  np.testing.assert_array_equal(got[1]["x"], _arrays(1)["x"])
  Path(paths[2]).write_bytes(b"not a shard")  # ...or while building, given a check.
  check = lambda i, path: _read(layout)(i, path, None)
  layout.build(paths, _maker(layout, made), check=check)
  assert made == [1, 2] and Path(paths[2] + ".corrupt").read_bytes() != good
  layout.load(paths, _read(layout))  # All sound again.


def test_the_error_class_and_manifest_bound_are_the_layouts(tmp_path):
  class MyError(shard_cache.ShardError):
    pass
  mine = shard_cache.Layout("a-{i}.npz", "m.json", what="my index", error=MyError,
                            max_manifest_bytes=16)
  (tmp_path / "m.json").write_text("1")
  with pytest.raises(MyError, match=r"m\.json: not a my index"):
    mine.resume(tmp_path, WANT, fix="f")
  (tmp_path / "m.json").write_text(json.dumps(WANT))  # 22 bytes: over the bound, never parsed.
  with pytest.raises(MyError, match=r"m\.json: larger than the 16-byte limit.*; f"):
    mine.resume(tmp_path, WANT, fix="f")
  with pytest.raises(MyError, match="a-0.npz: missing"):
    mine.load(mine.paths(tmp_path, 1), lambda i, p, first: mine.read(p))
