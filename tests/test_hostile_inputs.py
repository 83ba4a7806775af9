"""Hostile files against every loader (issue 28, "Every file bounded"): one table of (loader,
file maker, expected error class, message fragment naming the file and tensor/key/member).

The whole table runs in one subprocess whose address space is capped (RLIMIT_AS, 4 GiB: jax and
torch import in ~2 GiB); the bombs would need 8 GiB or more, so a loader that allocated before
refusing would die with MemoryError (a different error) instead of passing. A file that would
block a reader (a FIFO) makes the subprocess time out instead. Files are tiny, made per run.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CAP_BYTES = 4 << 30


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  make: Callable[[Path], Callable[[], Any]]  # Writes the file(s) under a folder; returns the load.
  error: str | None  # Expected exception class name (or a base of it); None: must load.
  fragment: str  # Must appear in the message (file/tensor/key/member names).
  needs_torch: bool = False


# ------------------------------------------------------------------------------------ makers


def _st(path: Path, arrays: dict, metadata: dict | None = None) -> Path:
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  path.parent.mkdir(parents=True, exist_ok=True)
  save_file(arrays, str(path), metadata=metadata)
  return path


_PIXART_CFG = {"_class_name": "PixArtTransformer2DModel", "num_attention_heads": 2,
               "attention_head_dim": 8, "in_channels": 4, "out_channels": 8, "num_layers": 1,
               "cross_attention_dim": 16, "caption_channels": 8, "sample_size": 8,
               "patch_size": 2}


def _pixart_folder(d: Path, cfg: dict | None = None, weights: dict | None = None,
                   index: dict | None = None) -> Callable[[], Any]:
  from fdistill_jax.convert import pixart  # pylint: disable=import-outside-toplevel
  folder = d / "pixart"
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps(cfg or _PIXART_CFG))
  if weights is not None:
    _st(folder / pixart.WEIGHTS_NAME, weights)
  if index is not None:
    (folder / pixart.INDEX_NAME).write_text(json.dumps(index))
  return lambda: pixart.load_diffusers_folder(str(folder))


def _pixart_pth(d: Path, tensors: Callable[[Any], dict], **save) -> Callable[[], Any]:
  import torch  # pylint: disable=import-outside-toplevel
  from fdistill_jax.convert import pixart_original  # pylint: disable=import-outside-toplevel
  path = d / "orig.pth"
  torch.save({"state_dict": tensors(torch)}, str(path), **save)
  return lambda: pixart_original.read_original_checkpoint(str(path))


def _rezip(path: Path, edit: Callable[[str, bytes], tuple[bytes, int]]) -> None:
  """Rewrites the zip at path, member by member through edit(name, data) -> (data, compression)."""
  with zipfile.ZipFile(path) as zin:
    members = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
  with zipfile.ZipFile(path, "w") as zout:
    for name, data in members:
      data, how = edit(name, data)
      zout.writestr(name, data, compress_type=how)


def _pth_deflated_bomb(d: Path) -> Callable[[], Any]:
  load = _pixart_pth(d, lambda torch: {"w": torch.zeros(4)})
  _rezip(d / "orig.pth", lambda name, data: (bytes(8 << 20), zipfile.ZIP_DEFLATED)
         if name.endswith("data/0") else (data, zipfile.ZIP_STORED))
  return load


def _pth_legacy_bomb(d: Path) -> Callable[[], Any]:
  load = _pixart_pth(d, lambda torch: {"w": torch.zeros(4)}, _use_new_zipfile_serialization=False)
  path = d / "orig.pth"
  data = path.read_bytes()
  # The storage's numel (4) in its persistent id -> 2^31 floats (8 GiB) torch would allocate.
  forged = re.sub(rb"(cpuq.)K\x04N", lambda m: m.group(1) + b"J" + struct.pack("<i", 2 ** 31 - 1)
                  + b"N", data)
  assert forged != data
  path.write_bytes(forged)
  return load


def _pixart_pth_legacy_reads(d: Path) -> Callable[[], Any]:
  """An original PixArt checkpoint ({'state_dict', 'state_dict_ema'}) in the legacy format."""
  import torch  # pylint: disable=import-outside-toplevel
  from fdistill_jax.convert import pixart_original  # pylint: disable=import-outside-toplevel
  path = d / "orig.pth"
  sd = {"x_embedder.proj.weight": torch.ones(4, 4, 2, 2), "y_embedder.y_embedding":
        torch.zeros(3, 4, dtype=torch.float16), "pos_embed": torch.zeros(1, 4, 4)}
  torch.save({"state_dict": sd, "state_dict_ema": {k: v + 1 for k, v in sd.items()}},
             str(path), _use_new_zipfile_serialization=False)
  assert path.read_bytes()[:4] != b"PK\x03\x04"

  def load():
    out = pixart_original.read_original_checkpoint(str(path))
    ema = pixart_original.read_original_checkpoint(str(path), ema=True)
    assert sorted(out) == sorted(sd) and out["y_embedder.y_embedding"].dtype == np.float16
    np.testing.assert_array_equal(ema["x_embedder.proj.weight"], 2.0)
  return load


def _legit_pt(d: Path) -> Callable[[], Any]:
  """A real module's state_dict (OrderedDict with _metadata), a Parameter, bf16 and int64
  tensors, saved in both formats: the checks must not refuse ordinary files."""
  import torch  # pylint: disable=import-outside-toplevel
  from fdistill_jax.convert import state_dict_io  # pylint: disable=import-outside-toplevel
  sd = torch.nn.Linear(3, 2).state_dict()
  sd.update(p=torch.nn.Parameter(torch.ones(2)), h=torch.ones(2, dtype=torch.bfloat16),
            n=torch.tensor(3), t=torch.arange(6.0).reshape(2, 3).t())
  torch.save(sd, str(d / "zip.pt"))
  torch.save(sd, str(d / "legacy.pt"), _use_new_zipfile_serialization=False)

  def load():
    for name in ("zip.pt", "legacy.pt"):
      out = state_dict_io.read_state_dict(str(d / name))
      assert sorted(out) == ["bias", "h", "n", "p", "t", "weight"], out
      np.testing.assert_array_equal(out["t"], np.arange(6.0).reshape(2, 3).T)
  return load


def _vae_folder(d: Path, cfg: dict, weights: dict | None = None,
                index: dict | None = None) -> Callable[[], Any]:
  from fdistill_jax.convert import vae  # pylint: disable=import-outside-toplevel
  folder = d / "vae"
  folder.mkdir()
  base = {"_class_name": "AutoencoderKL", "block_out_channels": [8], "norm_num_groups": 4,
          "latent_channels": 2, "layers_per_block": 1}
  (folder / "config.json").write_text(json.dumps({**base, **cfg}))
  if weights is not None:
    _st(folder / "diffusion_pytorch_model.safetensors", weights)
  if index is not None:
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
  return lambda: vae.load_vae(str(folder))


def _t5_folder(d: Path, cfg: dict, weights: dict | None = None) -> Callable[[], Any]:
  from fdistill_jax.convert import t5  # pylint: disable=import-outside-toplevel
  base = {"model_type": "t5", "vocab_size": 8, "d_model": 8, "d_kv": 4, "d_ff": 16,
          "num_layers": 1, "num_heads": 2}
  (d / "t5").mkdir()
  (d / "t5" / "config.json").write_text(json.dumps({**base, **cfg}))
  _st(d / "t5" / t5.WEIGHTS_NAME, weights or {"shared.weight": np.zeros((8, 8), np.float32)})
  return lambda: t5.load_folder(str(d / "t5"))


def _fid_stats(d: Path, mu, sigma, dim: int) -> Callable[[], Any]:
  from fdistill_jax.evaluation import fid  # pylint: disable=import-outside-toplevel
  path = d / "ref.npz"
  np.savez(path, mu=mu, sigma=sigma)
  return lambda: fid.load_reference_stats(str(path), dim=dim)


def _fid_stats_misshaped_and_corrupt(d: Path) -> Callable[[], Any]:
  # sigma [64, 64, 8] with a flipped byte deep in its data: inflating it would end in a CRC
  # error, so the shape message proves the headers were checked first.
  load = _fid_stats(d, np.zeros(64), np.random.default_rng(0).normal(size=(64, 64, 8)), 64)
  raw = bytearray((d / "ref.npz").read_bytes())
  at = raw.index(b"sigma.npy") + 200_000
  raw[at] ^= 0xFF
  (d / "ref.npz").write_bytes(bytes(raw))
  return load


def _prompt_cache(d: Path, emb: np.ndarray, index_edit: dict | None = None) -> Callable[[], Any]:
  from fdistill_jax.data import prompt_cache  # pylint: disable=import-outside-toplevel
  n, length, dim = emb.shape
  prompt_cache.write_cache(d / "pc", emb, np.ones((n, length), np.uint8), [f"p{i}" for i in
                                                                           range(n)],
                           np.zeros((1, length, dim), np.float32), np.ones((1, length), np.uint8))
  if index_edit:
    index = json.loads((d / "pc" / "index.json").read_text())
    (d / "pc" / "index.json").write_text(json.dumps({**index, **index_edit}))
  return lambda: prompt_cache.load_prompt_cache(str(d / "pc"))


def _flip_middle(path: Path) -> None:
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 1
  path.write_bytes(bytes(data))


def _kd_pairs(d: Path, flip: bool = False, **arrays) -> Callable[[], Any]:
  from fdistill_jax.methods import kd  # pylint: disable=import-outside-toplevel
  np.savez(d / "pairs-0.npz", **arrays)
  if flip:  # A byte of the arrays' data: only the zip CRC-32 tells.
    _flip_middle(d / "pairs-0.npz")
  return lambda: kd.load_pairs([str(d / "pairs-0.npz")])


def _t2i_reference(d: Path, flip: bool = False, name: str | None = "t2i_teacher_p_t",
                   value: float = 0.5) -> Callable[[], Any]:
  """A teacher-sample file of eval.reference_cache, read back as 't2i_teacher_p_t' with N = 2."""
  from fdistill_jax.experiments import t2i_eval  # pylint: disable=import-outside-toplevel
  path = d / "t2i_teacher_p_t.npz"
  x = np.full((2, 4, 3, 2), value, np.float32)
  np.savez(path, samples=x, **({} if name is None else {"key": np.asarray(name)}))
  if flip:
    data = bytearray(path.read_bytes())
    data[data.index(b"samples.npy") + 200] ^= 1  # Inside the samples' data.
    path.write_bytes(bytes(data))
  return lambda: t2i_eval._read_reference(path, "t2i_teacher_p_t", 2)  # pylint: disable=protected-access


def _cache_file(d: Path, flip: bool = False, key: Any = None, bare: bool = False
                ) -> Callable[[], Any]:
  """A workdir cache (fileio.write_cache) read back for settings {'steps': 1}."""
  from fdistill_jax import fileio  # pylint: disable=import-outside-toplevel
  path = d / "den.msgpack"
  if bare:  # An older version's cache: the params' msgpack without the envelope.
    import msgpack  # pylint: disable=import-outside-toplevel
    path.write_bytes(msgpack.packb({"w": b"\0" * 64}))
  else:
    fileio.write_cache(path, b"\1" * 4096, {"steps": 1} if key is None else key)
  if flip:
    _flip_middle(path)
  return lambda: fileio.read_cache(path, {"steps": 1})


def _mixture_npz(d: Path, **arrays) -> Callable[[], Any]:
  from fdistill_jax.teachers import analytic  # pylint: disable=import-outside-toplevel
  np.savez(d / "mix.npz", **arrays)
  return lambda: analytic.load_mixture_file(str(d / "mix.npz"))


def _mixture_json(d: Path, text: str) -> Callable[[], Any]:
  from fdistill_jax.teachers import analytic  # pylint: disable=import-outside-toplevel
  (d / "mix.json").write_text(text)
  return lambda: analytic.load_mixture_file(str(d / "mix.json"))


def _npy_header(shape, descr: str = "<f4") -> bytes:
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
  return buf.getvalue()


def _npz_member_without_npy_suffix(d: Path, loader: str) -> Callable[[], Any]:
  # Member "images" (no .npy): np.load still parses it as an array and would allocate 1 TiB.
  with zipfile.ZipFile(d / "forged.npz", "w") as z:
    z.writestr("images", _npy_header((2 ** 18, 1024, 1024), "|u1") + bytes(16))
  if loader == "sources":
    from fdistill_jax.data import sources  # pylint: disable=import-outside-toplevel
    return lambda: sources.load_npz_arrays(str(d / "forged.npz"))
  from fdistill_jax import fileio  # pylint: disable=import-outside-toplevel
  return lambda: fileio.load_npz(str(d / "forged.npz"))


def _forged_bare_npy(d: Path) -> Callable[[], Any]:
  from fdistill_jax import fileio  # pylint: disable=import-outside-toplevel
  (d / "x.npy").write_bytes(_npy_header((2 ** 40,), "|u1") + bytes(16))  # Claims 1 TiB.
  return lambda: fileio.load_npz(str(d / "x.npy"))


def _png() -> bytes:
  import PIL.Image  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO()
  PIL.Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _zip_image_bomb(d: Path) -> Callable[[], Any]:
  from fdistill_jax.data import image_folder  # pylint: disable=import-outside-toplevel
  with zipfile.ZipFile(d / "data.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("a.png", _png())
    z.writestr("b.png", bytes(4 << 20))  # 4 MiB of zeros in ~4 KiB.

  def load():
    image_folder.MAX_IMAGE_BYTES = 1 << 20  # This subprocess only: keeps the bomb small.
    return image_folder.ImageFolderSource(str(d / "data.zip"))[1]
  return load


def _folder_with(d: Path, special: str) -> Callable[[], Any]:
  from fdistill_jax.data import image_folder  # pylint: disable=import-outside-toplevel
  (d / "imgs").mkdir()
  (d / "imgs" / "a.png").write_bytes(_png())
  if special == "fifo":
    os.mkfifo(d / "imgs" / "b.png")  # Opening it for reading would block forever.
  else:
    os.symlink("/dev/zero", d / "imgs" / "b.png")  # Reading it would never end.
  return lambda: image_folder.ImageFolderSource(str(d / "imgs"))[1]


# Hand-assembled pickles (no torch, no stand-in modules): opcodes of protocol 3.
def _u(s: str) -> bytes:
  return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def _g(module: str, name: str) -> bytes:
  return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(fn: bytes, *args: bytes) -> bytes:
  return fn + b"(" + b"".join(args) + b"tR"


def _put(i: int) -> bytes:
  return b"r" + struct.pack("<I", i)


def _get(i: int) -> bytes:
  return b"j" + struct.pack("<I", i)


def _int(i: int) -> bytes:
  return b"J" + struct.pack("<i", i)


def _tup(*items: bytes) -> bytes:
  return b"(" + b"".join(items) + b"t"


def _dict(pairs) -> bytes:
  return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def _storage_stream(n: int) -> bytes:
  """torch's legacy stream of one FloatStorage of n zeros (what EDM pickles hold per tensor)."""
  head = b"".join(pickle.dumps(o, protocol=2) for o in (
      0x1950a86a20f9469cfc6c, 1001, dict(protocol_version=1001, little_endian=True)))
  ref = (b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00k"
         b"X\x03\x00\x00\x00cpuJ" + struct.pack("<i", n) + b"NtQ.")
  return head + ref + pickle.dumps(["k"], protocol=2) + struct.pack("<q", n) + bytes(4 * n)


_LOAD_BYTES = _g("torch.storage", "_load_from_bytes")
_REBUILD = _g("torch._utils", "_rebuild_tensor_v2")


def _memoised_payload_decoded_many_times(d: Path) -> Callable[[], Any]:
  # One 8 MiB storage payload, decoded 1000 times from the memo: 8 GiB if each decode copied.
  from fdistill_jax.convert import edm_unpickler  # pylint: disable=import-outside-toplevel
  stream = _storage_stream(2 << 20)
  first = _call(_LOAD_BYTES, b"B" + struct.pack("<I", len(stream)) + stream + _put(0))
  again = _call(_LOAD_BYTES, _get(0))
  path = d / "memo.pkl"
  path.write_bytes(b"\x80\x03](" + first + again * 999 + b"e.")

  def load():
    with open(path, "rb") as f:
      out = edm_unpickler.restricted_load(f, str(path), max_tensor_bytes=path.stat().st_size)
    assert len(out) == 1000
  return load


def _views_of_one_storage(d: Path) -> Callable[[], Any]:
  # 1000 full views of one memoised 1 MiB storage: each view's copy counts against the budget.
  from fdistill_jax.convert import edm_unpickler  # pylint: disable=import-outside-toplevel
  n = 1 << 18
  storage = _call(_LOAD_BYTES, b"B" + struct.pack("<I", len(_storage_stream(n)))
                  + _storage_stream(n)) + _put(0)
  views = [_call(_REBUILD, storage if i == 0 else _get(0), _int(0), _tup(_int(n)),
                 _tup(_int(1))) for i in range(1000)]
  path = d / "views.pkl"
  path.write_bytes(b"\x80\x03](" + b"".join(views) + b"e.")

  def load():
    with open(path, "rb") as f:
      return edm_unpickler.restricted_load(f, str(path), max_tensor_bytes=path.stat().st_size)
  return load


def _one_tensor_under_many_names(d: Path) -> Callable[[], Any]:
  # An EDMPrecond record whose 20000 parameters all name one memoised 64 KiB tensor: 1.3 GB of
  # copies on conversion, from a ~400 KB file.
  from fdistill_jax.convert import edm_pickle  # pylint: disable=import-outside-toplevel
  n = 1 << 14
  stream = _storage_stream(n)
  tensor = _call(_REBUILD, _call(_LOAD_BYTES, b"B" + struct.pack("<I", len(stream)) + stream),
                 _int(0), _tup(_int(n)), _tup(_int(1))) + _put(0)
  params = [(_u(f"w{i}"), tensor if i == 0 else _get(0)) for i in range(20000)]
  state = _dict([(_u("_init_args"), _tup()),
                 (_u("_init_kwargs"), _dict([(_u("img_resolution"), _int(8))])),
                 (_u("_parameters"), _dict(params)), (_u("_buffers"), b"}"),
                 (_u("_modules"), b"}")])
  meta = _dict([(_u("type"), _u("class")), (_u("version"), _int(6)),
                (_u("class_name"), _u("EDMPrecond")), (_u("state"), state)])
  path = d / "names.pkl"
  path.write_bytes(b"\x80\x03" + _call(_g("torch_utils.persistence",
                                          "_reconstruct_persistent_obj"), meta) + b".")
  return lambda: edm_pickle.load_edm_pickle(str(path), key="ema")


# pytorch-fid's pt_inception-2015-12-05-6726825d.pth is a legacy (pre-zip, torch < 1.6)
# torch.save of an OrderedDict state_dict with `_metadata`, float32 weights and int64
# `num_batches_tracked` per batch norm. These files have that format and every key name the
# loader expects (taken from its own mapping), with tiny tensors (the real one is 95 MB).
_INCEPTION_PTH = "pt_inception-2015-12-05-6726825d.pth"


def _inception_legacy(d: Path, edit: Callable[[Any, dict], None] | None = None,
                      only: tuple[str, ...] = ()) -> Path:
  import collections  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from fdistill_jax.convert import inception_weights as iw  # pylint: disable=import-outside-toplevel
  sd = collections.OrderedDict()
  for coll, tree in iw._expected_variables().items():  # pylint: disable=protected-access
    for path in traverse_util.flatten_dict(tree):
      key, _ = iw._torch_key(coll, path)  # pylint: disable=protected-access
      sd[key] = torch.full((2,), 0.5)
      if key.endswith(".bn.running_var"):
        sd[key[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
  if only:
    sd = collections.OrderedDict((k, sd[k]) for k in only)
  sd._metadata = collections.OrderedDict({"": {"version": 1}})  # pylint: disable=protected-access
  if edit is not None:
    edit(torch, sd)
  path = d / _INCEPTION_PTH
  torch.save(sd, str(path), _use_new_zipfile_serialization=False)
  assert path.read_bytes()[:4] != b"PK\x03\x04"  # Legacy format, as pytorch-fid's file.
  return path


def _inception_legacy_reads(d: Path) -> Callable[[], Any]:
  from fdistill_jax.convert import inception_weights as iw  # pylint: disable=import-outside-toplevel
  path = _inception_legacy(d)

  def load():
    sd = iw.read_state_dict(path)
    assert len(sd) > 400 and sd["fc.bias"].dtype == np.float32, len(sd)
    np.testing.assert_array_equal(sd["Mixed_7c.branch_pool.conv.weight"], [0.5, 0.5])
    assert sd["Conv2d_1a_3x3.bn.num_batches_tracked"].dtype == np.int64
    try:
      iw.load_inception_variables(path)
    except ValueError as e:  # Every key found, the int64 counters ignored: only shapes refused.
      assert "missing" not in str(e) and "unexpected" not in str(e), e
      raise
  return load


def _inception_legacy_load(d: Path, **kw) -> Callable[[], Any]:
  from fdistill_jax.convert import inception_weights as iw  # pylint: disable=import-outside-toplevel
  path = _inception_legacy(d, **kw)
  return lambda: iw.load_inception_variables(path)


def _inception_legacy_bomb(d: Path) -> Callable[[], Any]:
  load = _inception_legacy_load(d, only=("fc.bias",))
  path = d / _INCEPTION_PTH
  data = path.read_bytes()
  # The storage's numel (2) in its persistent id -> 2^31 - 1 floats (8 GiB) torch would allocate.
  forged = re.sub(rb"(cpuq.)K\x02N", lambda m: m.group(1) + b"J" + struct.pack("<i", 2 ** 31 - 1)
                  + b"N", data)
  assert forged != data
  path.write_bytes(forged)
  return load


def _inception_legacy_forbidden_global(d: Path) -> Callable[[], Any]:
  """The legacy container (magic, protocol, system info), then an object pickle that calls
  os.system: refused by the pre-load scan, before torch.load runs."""
  from fdistill_jax.convert import inception_weights as iw  # pylint: disable=import-outside-toplevel
  head = b"".join(pickle.dumps(o, protocol=2) for o in (
      0x1950a86a20f9469cfc6c, 1001, dict(protocol_version=1001, little_endian=True)))
  path = d / _INCEPTION_PTH
  marker = d / "pwned"
  path.write_bytes(head + b"\x80\x02" + _call(_g("os", "system"), _u(f"touch {marker}")) + b"."
                   + pickle.dumps([], protocol=2))

  def load():
    try:
      iw.load_inception_variables(path)
    finally:
      assert not marker.exists(), "the pickle ran"
  return load


# --------------------------------------------------------------------------------------- table

NAN = np.array([1.0, np.nan], np.float32)
CASES = [
    # 1. Floats and finiteness, by file and tensor name.
    Case("pixart_folder_int_weight",
         lambda d: _pixart_folder(d, weights={"proj_out.weight": np.zeros((32, 16), np.int32)}),
         "ValueError", "diffusion_pytorch_model.safetensors: tensor 'proj_out.weight' has dtype "
         "int32"),
    Case("pixart_folder_nan_weight",
         lambda d: _pixart_folder(d, weights={"proj_out.bias": np.full(32, np.nan, np.float32)}),
         "ValueError", "tensor 'proj_out.bias' has 32 non-finite"),
    Case("pixart_pth_nan", lambda d: _pixart_pth(
        d, lambda torch: {"proj_out.bias": torch.tensor([1.0, float("nan")])}),
         "ValueError", "orig.pth: tensor 'proj_out.bias' has 1 non-finite", needs_torch=True),
    Case("pixart_pth_complex", lambda d: _pixart_pth(
        d, lambda torch: {"y_embedder.y_embedding": torch.zeros(2, dtype=torch.complex64)}),
         "ValueError", "orig.pth: tensor 'y_embedder.y_embedding' has dtype complex64",
         needs_torch=True),
    Case("vae_bool_weight", lambda d: _vae_folder(
        d, {}, weights={"encoder.conv_in.bias": np.zeros(8, np.bool_)}),
         "ValueError", "diffusion_pytorch_model.safetensors: tensor 'encoder.conv_in.bias' has "
         "dtype bool"),
    Case("vae_scaling_factor_nan", lambda d: _vae_folder(d, {"scaling_factor": float("nan")}),
         "ValueError", "config.json: field 'scaling_factor' = nan"),
    Case("vae_scaling_factor_string", lambda d: _vae_folder(d, {"scaling_factor": "0.18"}),
         "ValueError", "config.json: field 'scaling_factor' = '0.18' is a str"),
    Case("vae_shift_factor_inf", lambda d: _vae_folder(d, {"shift_factor": float("inf")}),
         "ValueError", "config.json: field 'shift_factor' = inf"),
    Case("fid_stats_int_mu", lambda d: _fid_stats(d, np.zeros(4, np.int64), np.eye(4), 4),
         "ValueError", "ref.npz: array 'mu' has dtype int64"),
    Case("fid_stats_inf_sigma",
         lambda d: _fid_stats(d, np.zeros(4), np.full((4, 4), np.inf), 4),
         "ValueError", "ref.npz: array 'sigma' has 16 non-finite"),
    Case("prompt_cache_nan_embedding",
         lambda d: _prompt_cache(d, np.array([[[0.0, np.nan]]], np.float32)),
         "PromptCacheError", "shard-00000-of-00001.safetensors: tensor 'embeddings' has 1 "
         "non-finite"),
    Case("prompt_cache_int_embedding", lambda d: _prompt_cache(d, np.zeros((1, 2, 2), np.int16)),
         "PromptCacheError", "tensor 'embeddings' has dtype int16"),
    Case("kd_pairs_nan_target", lambda d: _kd_pairs(d, z=np.zeros((2, 2), np.float32),
                                                    y=np.array([[0.0, np.inf]] * 2, np.float32)),
         "ValueError", "pairs-0.npz: tensor 'y' has 2 non-finite"),
    Case("kd_pairs_int_noise", lambda d: _kd_pairs(d, z=np.zeros((2, 2), np.int64),
                                                   y=np.zeros((2, 2), np.float32)),
         "ValueError", "pairs-0.npz: tensor 'z' has dtype int64"),
    Case("kd_pairs_flipped_byte", lambda d: _kd_pairs(d, flip=True, z=np.zeros((64, 2), np.float32),
                                                      y=np.ones((64, 2), np.float32)),
         "ValueError", "pairs-0.npz: member 'y.npy' is damaged (Bad CRC-32"),
    Case("cache_flipped_byte", lambda d: _cache_file(d, flip=True), "CacheError",
         "den.msgpack: payload fails its sha256"),
    Case("cache_other_settings", lambda d: _cache_file(d, key={"steps": 2}), "CacheError",
         "den.msgpack: made for other settings"),
    Case("cache_bare_msgpack", lambda d: _cache_file(d, bare=True), "CacheError",
         "den.msgpack: not a fdistill_jax.cache/1 cache file"),
    Case("t2i_reference_flipped_byte", lambda d: _t2i_reference(d, flip=True), "ValueError",
         "t2i_teacher_p_t.npz: member 'samples.npy' is damaged (Bad CRC-32"),
    Case("t2i_reference_renamed", lambda d: _t2i_reference(d, name="t2i_teacher_p_other"),
         "ValueError", "t2i_teacher_p_t.npz: not the teacher-sample cache its name says"),
    Case("t2i_reference_without_key", lambda d: _t2i_reference(d, name=None), "ValueError",
         "t2i_teacher_p_t.npz: not the teacher-sample cache its name says"),
    Case("t2i_reference_nan", lambda d: _t2i_reference(d, value=np.nan), "ValueError",
         "t2i_teacher_p_t.npz: tensor 'samples' has 48 non-finite"),
    Case("t2i_reference_sound", lambda d: _t2i_reference(d), None, ""),
    Case("mixture_npz_int_means", lambda d: _mixture_npz(d, means=np.zeros((2, 2), np.int64),
                                                         scales=np.ones(2)),
         "ValueError", "mix.npz: array 'means' has dtype int64"),
    Case("mixture_json_nan_scales",
         lambda d: _mixture_json(d, '{"means": [[0, 0]], "scales": [NaN]}'),
         "ValueError", "mix.json: array 'scales' has 1 non-finite"),
    Case("mixture_json_bool_weights",
         lambda d: _mixture_json(d, '{"means": [[0, 0]], "scales": [1], "weights": [true]}'),
         "ValueError", "mix.json': 'weights' holds bool values"),
    # 2. Shard indexes stay inside their folder.
    Case("pixart_index_dotdot", lambda d: _pixart_folder(
        d, index={"weight_map": {"proj_out.weight": "../outside.safetensors"}}),
         "ValueError", "index.json: file name '../outside.safetensors' points outside"),
    Case("vae_index_absolute", lambda d: _vae_folder(
        d, {}, index={"weight_map": {"encoder.conv_in.bias": "/etc/passwd"}}),
         "ValueError", "index.json: file name '/etc/passwd' points outside"),
    Case("pixart_index_url", lambda d: _pixart_folder(
        d, index={"weight_map": {"proj_out.weight": "gs://bucket/x.safetensors"}}),
         "ValueError", "index.json: file name 'gs://bucket/x.safetensors' points outside"),
    Case("prompt_cache_index_num_shards",
         lambda d: _prompt_cache(d, np.zeros((1, 2, 2), np.float32), {"num_shards": 10 ** 9}),
         "PromptCacheError", "index.json: 'num_shards' is 1000000000, expected 1"),
    # 3. PixArt original .pth: EDM .pt's checks, before allocating.
    Case("pixart_pth_stride0", lambda d: _pixart_pth(
        d, lambda torch: {"w": torch.zeros(1).expand(1 << 31)}),
         "ValueError", "orig.pth: tensor 'w' of size [2147483648]", needs_torch=True),
    Case("pixart_pth_views_of_one_storage", lambda d: _pixart_pth(
        d, lambda torch: dict.fromkeys([f"w{i}" for i in range(64)], torch.zeros(1 << 16))),
         "ValueError", "orig.pth: its tensors hold more than the", needs_torch=True),
    Case("pixart_pth_deflated_member", _pth_deflated_bomb, "ValueError",
         "orig.pth: member 'orig/data/0' is compressed", needs_torch=True),
    Case("pixart_pth_legacy_storage_bomb", _pth_legacy_bomb, "ValueError",
         "orig.pth: its storages declare 8589934588 bytes", needs_torch=True),
    Case("pt_ordinary_files_still_load", _legit_pt, None, "", needs_torch=True),
    # 3b. Legacy-format (pre-zip) .pth: pytorch-fid's Inception file and PixArt's original.
    Case("inception_pth_legacy_format_reads", _inception_legacy_reads, "ValueError",
         f"{_INCEPTION_PTH} is not the FID Inception-v3 (2015-12-05) state_dict: 472 shape "
         "mismatches: Conv2d_1a_3x3.bn.running_mean: got (2,)", needs_torch=True),
    Case("inception_pth_legacy_nan", lambda d: _inception_legacy_load(
        d, edit=lambda torch, sd: sd.__setitem__("Mixed_6e.branch7x7_1.bn.running_var",
                                                 torch.tensor([1.0, float("nan")]))),
         "ValueError", f"{_INCEPTION_PTH}: tensor 'Mixed_6e.branch7x7_1.bn.running_var' has 1 "
         "non-finite", needs_torch=True),
    Case("inception_pth_legacy_int_weight", lambda d: _inception_legacy_load(
        d, edit=lambda torch, sd: sd.__setitem__("Conv2d_1a_3x3.conv.weight",
                                                 torch.zeros(2, dtype=torch.int32))),
         "ValueError", f"{_INCEPTION_PTH}: tensor 'Conv2d_1a_3x3.conv.weight' has dtype int32",
         needs_torch=True),
    Case("inception_pth_legacy_storage_bomb", _inception_legacy_bomb, "ValueError",
         f"{_INCEPTION_PTH}: its storages declare 8589934588 bytes", needs_torch=True),
    Case("inception_pth_legacy_forbidden_global", _inception_legacy_forbidden_global,
         "ValueError", f"{_INCEPTION_PTH}: not a readable torch.save file (UnsafePickleError: "
         "global os.system is not expected in a state_dict", needs_torch=True),
    Case("pixart_pth_legacy_reads", lambda d: _pixart_pth_legacy_reads(d), None, "",
         needs_torch=True),
    Case("pixart_pth_legacy_nan", lambda d: _pixart_pth(
        d, lambda torch: {"proj_out.bias": torch.tensor([1.0, float("nan")])},
        _use_new_zipfile_serialization=False),
         "ValueError", "orig.pth: tensor 'proj_out.bias' has 1 non-finite", needs_torch=True),
    # 4. EDM .pkl budget: memoised payloads, views of one storage, one tensor under many names.
    Case("edm_pkl_memoised_payload", _memoised_payload_decoded_many_times, None, ""),
    Case("edm_pkl_views_of_one_storage", _views_of_one_storage, "ValueError",
         "views.pkl: truncated or corrupt pickle (UnpicklingError: tensor of size (262144,) "
         "would materialise 1048576 bytes, more than the file holds"),
    Case("edm_pkl_one_tensor_many_names", _one_tensor_under_many_names, "ValueError",
         "names.pkl: its state_dict entries hold 1310720000 bytes"),
    # 5. Data bombs.
    Case("edm_zip_image_bomb", _zip_image_bomb, "ValueError",
         "data.zip: b.png declares 4194304 bytes, above the 1048576-byte limit"),
    Case("image_folder_fifo", lambda d: _folder_with(d, "fifo"), "ValueError",
         "b.png is not a regular file"),
    Case("image_folder_symlink_to_device", lambda d: _folder_with(d, "device"), "ValueError",
         "b.png is not a regular file"),
    Case("npz_member_without_npy_suffix_sources",
         lambda d: _npz_member_without_npy_suffix(d, "sources"), "ValueError",
         "forged.npz: cannot read (ValueError: member 'images' declares"),
    Case("npz_member_without_npy_suffix_fileio",
         lambda d: _npz_member_without_npy_suffix(d, "fileio"), "ValueError",
         "forged.npz: cannot read (ValueError: member 'images' declares"),
    Case("bare_npy_forged_header", _forged_bare_npy, "ValueError",
         "x.npy: cannot read (ValueError: the .npy array declares"),
    Case("fid_stats_shape_before_inflating", _fid_stats_misshaped_and_corrupt, "ValueError",
         "ref.npz: 'sigma' has shape (64, 64, 8), expected (64, 64)"),
    Case("pixart_config_20000_layers",
         lambda d: _pixart_folder(d, cfg={**_PIXART_CFG, "num_layers": 20000}), "ValueError",
         "config.json: field 'num_layers' = 20000; expected an int in [1, 512]"),
    Case("pixart_config_huge_width",
         lambda d: _pixart_folder(d, cfg={**_PIXART_CFG, "num_layers": 512,
                                          "num_attention_heads": 1024,
                                          "attention_head_dim": 1024}), "ValueError",
         "over the bound MAX_CONFIG_PARAMS"),
    Case("t5_config_huge_vocab", lambda d: _t5_folder(d, {"vocab_size": 1 << 24}), "ValueError",
         "config.json: field 'vocab_size' = 16777216; expected an int in [1, 1048576]"),
    Case("t5_nan_weight", lambda d: _t5_folder(
        d, {}, {"shared.weight": np.full((8, 8), np.nan, np.float32)}),
         "ValueError", "t5: tensor 'shared.weight' has 64 non-finite"),
    Case("vae_config_huge_channels",
         lambda d: _vae_folder(d, {"block_out_channels": [1 << 20]}), "ValueError",
         "config.json: field 'block_out_channels' = 1048576; expected an int in [1, 8192]"),
]


def run_table(folder: str) -> None:
  """Runs every case in this (capped) process; prints one JSON line per case."""
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
    have_torch = True
  except ImportError:
    have_torch = False
  for case in CASES:
    d = Path(folder) / case.name
    d.mkdir()
    result = {"name": case.name, "error": None, "mro": [], "message": ""}
    if case.needs_torch and not have_torch:
      result["error"] = "SKIP"
    else:
      try:
        case.make(d)()
      except Exception as e:  # pylint: disable=broad-except
        result.update(error=type(e).__name__, mro=[c.__name__ for c in type(e).__mro__],
                      message=str(e)[:2000])
    print("CASE " + json.dumps(result), flush=True)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict[str, dict]:
  folder = tmp_path_factory.mktemp("hostile")
  code = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({CAP_BYTES}, {CAP_BYTES}))\n"
          f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
          f"import test_hostile_inputs; test_hostile_inputs.run_table({str(folder)!r})\n")
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
         "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=600)
  results = {}
  for line in out.stdout.splitlines():
    if line.startswith("CASE "):
      r = json.loads(line[5:])
      results[r["name"]] = r
  assert len(results) == len(CASES), (out.stdout[-3000:], out.stderr[-3000:])
  return results


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_is_refused_by_name_in_bounded_memory(table, case: Case):
  r = table[case.name]
  if r["error"] == "SKIP":
    pytest.skip("needs torch")
  if case.error is None:
    assert r["error"] is None, r
    return
  assert case.error in r["mro"], r  # A MemoryError here means it allocated before refusing.
  assert case.fragment in r["message"], r
