"""Hostile and corrupt files: every loader refuses them with a message naming the file, within
bounded memory (memory bombs run in a subprocess under an address-space limit)."""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import types
import zipfile

import numpy as np
import pytest

from fdistill_jax.convert import edm_pickle, edm_unpickler
from fdistill_jax.convert import edm_state_dict as esd
from fdistill_jax.convert import state_dict_io as sdio
from fdistill_jax.data import image_folder, pipeline, sources
from fdistill_jax.teachers import edm as edm_teacher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_limited(code: str, limit_mib: int = 1024) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh python whose address space is capped at limit_mib; `load(rel_path)`
  imports one module file without its package's __init__ (no jax: it reserves gigabytes)."""
  pre = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit_mib << 20}, "
         f"{limit_mib << 20}))\n"
         "import importlib.util, sys\n"
         "def load(rel):\n"
         "  spec = importlib.util.spec_from_file_location(rel.replace('/', '_'), rel)\n"
         "  mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod\n"
         "  spec.loader.exec_module(mod)\n"
         "  return mod\n")
  env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
  return subprocess.run([sys.executable, "-c", pre + textwrap.dedent(code)], capture_output=True,
                        text=True, cwd=ROOT, env=env, timeout=120)


# ------------------------------------------------------------------------------ EDM .pkl files
def _fake_global(monkeypatch, module: str, name: str):
  """A function pickle writes as GLOBAL module.name (a stand-in module in sys.modules)."""
  parent = module.split(".")[0]
  if parent not in sys.modules:  # Never import the real torch for this.
    monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
  mod = types.ModuleType(module)

  def fn(*args):
    raise AssertionError(args)
  fn.__module__, fn.__qualname__, fn.__name__ = module, name, name
  setattr(mod, name, fn)
  monkeypatch.setitem(sys.modules, module, mod)
  return fn


class _Tensor:
  """Pickles as EDM's tensors do: _rebuild_tensor_v2(_load_from_bytes(stream), offset, size,
  stride, ...), with a legacy torch.save storage stream of float32 `values` (no torch needed)."""
  rebuild = load_bytes = None

  def __init__(self, values, offset, size, stride):
    self.values, self.geometry = np.asarray(values, np.float32), (offset, size, stride)

  def __reduce__(self):
    n = self.values.size
    stream = b"".join(pickle.dumps(o, protocol=2) for o in (
        0x1950a86a20f9469cfc6c, 1001, dict(protocol_version=1001, little_endian=True)))
    stream += (b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00k"
               b"X\x03\x00\x00\x00cpuJ" + struct.pack("<i", n) + b"NtQ.")
    stream += pickle.dumps(["k"], protocol=2) + struct.pack("<q", n) + self.values.tobytes()
    storage = _Call(_Tensor.load_bytes, (stream,))
    return _Tensor.rebuild, (storage,) + self.geometry


class _Call:
  def __init__(self, fn, args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


@pytest.fixture
def persistent(monkeypatch):
  """Stand-ins for the globals EDM pickles name, and Rec: an object pickled as
  `_reconstruct_persistent_obj(meta)` (+ optional BUILD state)."""
  _reconstruct_persistent_obj = _fake_global(monkeypatch, "torch_utils.persistence",
                                             "_reconstruct_persistent_obj")
  monkeypatch.setattr(_Tensor, "rebuild",
                      _fake_global(monkeypatch, "torch._utils", "_rebuild_tensor_v2"))
  monkeypatch.setattr(_Tensor, "load_bytes",
                      _fake_global(monkeypatch, "torch.storage", "_load_from_bytes"))

  class Rec:
    def __init__(self, name="EDMPrecond", kwargs=None, params=None, modules=None, build=None):
      self.name, self.kwargs = name, {"img_resolution": 8} if kwargs is None else kwargs
      self.params, self.modules, self.build = params or {}, modules or {}, build

    def __reduce__(self):
      meta = dict(type="class", version=6, module_src="", class_name=self.name,
                  state=dict(_init_args=(), _init_kwargs=self.kwargs, _parameters=self.params,
                             _buffers={}, _modules=self.modules))
      return (_reconstruct_persistent_obj, (meta,)) + ((self.build(self),) if self.build else ())
  return Rec


def _write(tmp_path, obj, name="net.pkl") -> str:
  path = str(tmp_path / name)
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=4)
  return path


def test_stride0_pkl_tensor_is_refused_in_bounded_memory(tmp_path, persistent):
  bomb = persistent(params={"w": _Tensor([0.0], 0, (1 << 30,), (0,))})  # 4 GiB from ~500 bytes.
  path = _write(tmp_path, bomb)
  assert os.path.getsize(path) < 2000
  out = run_limited(f"""
      edm_pickle = load("fdistill_jax/convert/edm_pickle.py")
      try:
        edm_pickle.load_edm_pickle({path!r}, key=None)
      except ValueError as e:
        print("REFUSED", e)""", limit_mib=768)
  assert "REFUSED" in out.stdout, out.stderr[-2000:]
  assert path in out.stdout and "stride-0 or overlapping view" in out.stdout


def test_pkl_views_outside_storage_and_negative_geometry_are_refused():
  arr = np.arange(12, dtype=np.float32)
  for args, match in [((arr, -1, (2,), (1,)), "bad tensor geometry"),
                      ((arr, 0, (2,), (-1,)), "bad tensor geometry"),
                      ((arr, 10, (3,), (1,)), "exceeds its storage"),
                      ((arr, 0, (4,), (0,)), None),  # Within storage: a legal broadcast view.
                      ((arr, 0, (13,), (0,)), "stride-0 or overlapping"),
                      ((arr, 0.5, (2,), (1,)), "must be ints")]:
    if match is None:
      edm_unpickler._rebuild_tensor_v2(*args)  # pylint: disable=protected-access
      continue
    with pytest.raises(pickle.UnpicklingError, match=match):
      edm_unpickler._rebuild_tensor_v2(*args)  # pylint: disable=protected-access


def test_pkl_total_tensor_bytes_are_bounded_by_the_file():
  arr = np.arange(12, dtype=np.float32)
  budget = edm_unpickler._Budget(100)  # pylint: disable=protected-access
  edm_unpickler._rebuild_tensor_v2(arr, 0, (12,), (1,), budget=budget)  # 48 bytes.
  edm_unpickler._rebuild_tensor_v2(arr, 0, (12,), (1,), budget=budget)  # 96 bytes.
  with pytest.raises(pickle.UnpicklingError, match="more than the file holds"):
    edm_unpickler._rebuild_tensor_v2(arr, 0, (12,), (1,), budget=budget)


@pytest.mark.parametrize("shape", ["deep", "cycle", "deep_kwargs", "list_kwargs", "list_params"])
def test_malformed_records_give_one_error_naming_the_file(tmp_path, persistent, shape):
  rec = persistent
  if shape == "deep":
    net = rec()
    for _ in range(edm_pickle.MAX_MODULE_DEPTH + 10):
      net = rec(name="Block", modules={"child": net})
    obj = rec(modules={"model": net})
  elif shape == "cycle":
    obj = rec(build=lambda self: {"state": {"_modules": {"me": self}, "_init_kwargs": {}}})
  elif shape == "deep_kwargs":
    nested = 1
    for _ in range(50):
      nested = [nested]
    obj = rec(kwargs={"img_resolution": 8, "channel_mult": nested})
  elif shape == "list_kwargs":
    obj = rec(kwargs=[1, 2, 3])
  else:
    obj = rec(build=lambda self: {"state": {"_parameters": [1, 2], "_init_kwargs": {}}})
  path = _write(tmp_path, obj)
  with pytest.raises(ValueError) as e:
    edm_pickle.load_edm_pickle(path, key=None)
  assert str(e.value).startswith(path)
  assert type(e.value) is ValueError  # Not RecursionError/TypeError/AttributeError.


# --------------------------------------------------------------------------- weights & kwargs
def test_non_float_and_non_finite_weights_are_refused_by_name():
  for a, match in [(np.zeros((4,), np.int64), "dtype int64"),
                   (np.zeros((4,), np.complex64), "dtype complex64"),
                   (np.array([1.0, np.nan, np.inf], np.float32), "2 non-finite")]:
    with pytest.raises(ValueError, match=f"f.pt: tensor 'model.x' has {match}"):
      esd.check_weight(a, "model.x", "f.pt")
  esd.check_weight(np.ones((3,), np.float16), "model.x", "f.pt")


def test_nan_weight_in_a_safetensors_teacher_is_refused_at_load(tmp_path):
  from fdistill_jax import defaults  # pylint: disable=import-outside-toplevel
  src = defaults.asset("digits_teacher.safetensors")
  sd = sdio.read_state_dict(src)
  key = sorted(sd)[3]
  sd[key] = sd[key].copy()
  sd[key].reshape(-1)[0] = np.nan
  path = str(tmp_path / "nan.safetensors")
  esd.write_state_dict(path, sd, esd.read_precond_kwargs(src))
  with pytest.raises(ValueError, match=f"nan.safetensors: tensor '{key}' has 1 non-finite"):
    edm_teacher.load_edm(path)


@pytest.mark.parametrize("key,value", [("img_channels", -3), ("img_resolution", 10 ** 9),
                                       ("model_channels", 0), ("channel_mult", [1, -2]),
                                       ("num_blocks", True), ("dropout", 2.0),
                                       ("sigma_data", float("nan")), ("label_dim", "10")])
def test_hostile_constructor_kwargs_are_refused_before_building(key, value):
  kw = {"model_type": "SongUNet", "img_resolution": 16, "img_channels": 1, key: value}
  with pytest.raises(ValueError, match=rf"evil.pkl: precond_kwargs\['{key}'\]"):
    edm_teacher.check_precond_kwargs(kw, "evil.pkl")


# ------------------------------------------------------------------------ .pt and config.json
def test_pt_stride0_sparse_and_meta_tensors_are_refused(tmp_path):
  torch = pytest.importorskip("torch")
  cases = {"bomb": torch.zeros(1).expand(1 << 26),
           "sparse": torch.zeros(4, 4).to_sparse(),
           "meta": torch.empty(4, device="meta")}
  for name, t in cases.items():
    path = str(tmp_path / f"{name}.pt")
    torch.save({"w": t}, path)
    with pytest.raises(ValueError, match=f"{name}.pt.*'w'") as e:
      sdio.read_state_dict(path)
    assert "truncated" not in str(e.value) or name == "meta", str(e.value)


def test_pt_views_sharing_one_storage_are_bounded_by_the_file(tmp_path):
  torch = pytest.importorskip("torch")
  base = torch.zeros(1 << 16)
  path = str(tmp_path / "shared.pt")
  torch.save({f"w{i}": base[:] for i in range(64)}, path)  # One 256 KiB storage, 64 views.
  with pytest.raises(ValueError, match="shared.pt: its tensors hold"):
    sdio.read_state_dict(path)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\x80\x02\xff\xfe binary",
                                     b"[" * 100000 + b"]" * 100000, b'{"a": 1}'])
def test_bad_config_json_beside_a_state_dict_is_named(tmp_path, content):
  (tmp_path / "config.json").write_bytes(content)
  with pytest.raises(ValueError, match="config.json: .*(expected a JSON object)"):
    esd.read_precond_kwargs(str(tmp_path / "config.json"))


def test_bad_safetensors_metadata_is_named(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "m.safetensors")
  save_file({"w": np.zeros(2, np.float32)}, path, metadata={"precond_kwargs": "[1,"})
  with pytest.raises(ValueError, match=r"m.safetensors \(metadata 'precond_kwargs'\): invalid"):
    esd.read_precond_kwargs(path)


# ------------------------------------------------------------------------------------ datasets
def _png(value: int = 0) -> bytes:
  import PIL.Image  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  PIL.Image.fromarray(np.full((4, 4), value, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _zip(path, members: dict) -> str:
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for name, data in members.items():
      zf.writestr(name, data)
  return str(path)


def test_deeply_nested_dataset_json_is_named(tmp_path):
  path = _zip(tmp_path / "d.zip", {"a.png": _png(), "dataset.json": "[" * 100000 + "]" * 100000})
  with pytest.raises(ValueError, match=r"d.zip/dataset.json: JSON nested too deeply"):
    image_folder.ImageFolderSource(path)


def test_dataset_json_zip_bomb_is_refused_in_bounded_memory(tmp_path):
  # 160 MiB of JSON in a ~160 KiB zip; the subprocess lowers the limit to 16 MiB so the bomb stays
  # cheap to build. Reading it whole (and decoding it) would need > 320 MiB: the cap below.
  path = str(tmp_path / "bomb.zip")
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
    zf.writestr("a.png", _png())
    with zf.open("dataset.json", "w", force_zip64=True) as f:
      f.write(b'{"labels": null}')
      chunk = b" " * (16 << 20)
      for _ in range(10):
        f.write(chunk)
  assert os.path.getsize(path) < 1 << 20
  out = run_limited(f"""
      # image_folder imports sources by its package name: register it, so that the package
      # __init__ (and jax with it) is not imported.
      sys.modules["fdistill_jax.data.sources"] = load("fdistill_jax/data/sources.py")
      image_folder = load("fdistill_jax/data/image_folder.py")
      image_folder.MAX_LABELS_JSON_BYTES = 16 << 20
      try:
        image_folder.ImageFolderSource({path!r})
      except ValueError as e:
        print("REFUSED", e)""", limit_mib=320)
  assert "REFUSED" in out.stdout, out.stderr[-2000:]
  assert "bomb.zip/dataset.json" in out.stdout and "limit" in out.stdout


def test_crc_error_names_archive_and_member(tmp_path):
  path = _zip(tmp_path / "crc.zip", {"a.png": _png(7), "b.png": _png(9)})
  raw = bytearray(open(path, "rb").read())
  info = zipfile.ZipFile(path).getinfo("b.png")
  start = info.header_offset + 30 + len(info.filename) + len(info.extra)
  raw[start + info.compress_size // 2] ^= 0xFF
  open(path, "wb").write(raw)
  src = image_folder.ImageFolderSource(path)
  with pytest.raises(ValueError, match=r"crc.zip: cannot read 'b.png' .*archive is corrupt"):
    src[1]


@pytest.mark.parametrize("arrays,match", [
    (dict(images=np.zeros((2, 4, 4, 3), np.float32)), "'images' has dtype float32"),
    (dict(images=np.zeros((2, 4, 4, 5), np.uint8)), r"shape \(2, 4, 4, 5\)"),
    (dict(images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(3, np.int64)),
     "'labels' has dtype int64, shape \\(3,\\)"),
    (dict(pixels=np.zeros((2, 4, 4), np.uint8)), "no 'images' array"),
    (dict(images=np.array([object()] * 2)), "cannot read"),
    (None, "cannot read")])
def test_npz_errors_name_the_path(tmp_path, arrays, match):
  path = str(tmp_path / "data.npz")
  if arrays is None:
    open(path, "wb").write(b"PK\x03\x04 not really a zip")
  else:
    np.savez(path, **arrays)
  with pytest.raises(ValueError, match=f"data.npz.*{match}"):
    pipeline.make_source({"name": "arrays", "path": path})


def _shipped_config(path: str):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("cfg_under_test", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def test_every_data_source_is_selectable_on_every_shipped_config():
  import glob  # pylint: disable=import-outside-toplevel
  needed = {"path": "x.zip", "tfds_name": "cifar10", "data_dir": "/d", "image_key": "image",
            "label_key": "label", "reader": "auto", "split": "train", "use_labels": False}
  for f in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)):
    cfg = _shipped_config(f)
    if "dataset" not in cfg:
      continue
    cfg.lock()
    for name in ("edm_zip", "folder", "arrays", "tfds", "digits"):
      cfg.dataset.name = name
    for k, v in needed.items():
      cfg.dataset[k] = v  # Fails on a locked config lacking the key (the CLI's error).


# ------------------------------------------------------------------ config values that can't work
@pytest.mark.parametrize("field,value,match", [
    ("train.keep_checkpoints", 0, "0 would delete every checkpoint"),
    ("train.keep_checkpoints", -2, "an int >= 1"),
    ("train.max_nonfinite_streak", 0, "an int >= 1"),
    ("diffusion.sigma_max", float("inf"), "a finite number"),
    ("diffusion.sigma_init", float("inf"), "a finite number"),
    ("eval.params", "abc", "'raw' or one of train.ema_decays (0.98,)"),
    ("train.ema_rampup", -0.1, "a ramp-up ratio >= 0"),
    ("train.ckpt_every", -1, "an int >= 0"),
])
def test_impossible_config_values_are_named_before_compiling(field, value, match):
  from fdistill_jax import config_checks  # pylint: disable=import-outside-toplevel
  cfg = _shipped_config(os.path.join(ROOT, "configs", "digits_js.py"))
  cfg.lock()
  *path, last = field.split(".")
  node = cfg
  for p in path:
    node = node[p]
  node[last] = value
  with pytest.raises(config_checks.ConfigError, match=field.replace(".", r"\.")) as e:
    config_checks.check(cfg, num_devices=1)
  assert match in str(e.value)


def test_npz_with_a_forged_header_is_refused_before_allocating(tmp_path):
  # A 100-byte member whose .npy header declares 1 TiB: numpy would allocate the declared shape
  # before reading, so the size check must come first and name the file and member.
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      buf, {"descr": "|u1", "fortran_order": False, "shape": (2 ** 20, 1024, 1024, 1)})
  path = str(tmp_path / "forged.npz")
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("images.npy", buf.getvalue() + bytes(16))
  with pytest.raises(ValueError, match=r"forged.npz.*'images.npy' declares .* holds 16 bytes"):
    sources.load_npz_arrays(path)
  ok = str(tmp_path / "ok.npz")
  np.savez_compressed(ok, images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.arange(4))
  assert sources.load_npz_arrays(ok)[0].shape == (4, 8, 8, 1)
  with pytest.raises(ValueError, match=r"ok.npz: its arrays declare 288 bytes, over the 100"):
    sources.load_npz_arrays(ok, max_bytes=100)
