"""Loaders for NVIDIA EDM files: the no-exec .pkl reader, state_dict <-> Flax mapping, file I/O,
and the options of the loaded module that trainers use (features, bf16, remat, dropout)."""
import json
import os
import pickle
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax.convert import edm_pickle, edm_unpickler
from fdistill_jax.convert import edm_state_dict as esd
from fdistill_jax.convert import state_dict_io as sdio
from fdistill_jax.models.edm import build_edm_precond
from fdistill_jax.teachers.edm import denoiser, load_edm

NETS = ("songunet_tiny", "songunet_ncsnpp_tiny", "dhariwalunet_tiny", "dhariwalunet_multihead")


def _net(fixtures_path, name):
  """(folder, precond_kwargs, state_dict as float32). tests/data stores float16-exact weights as
  float16; the official code ran them as float32, which is what EDM files hold."""
  d = fixtures_path / "edm" / name
  kw = json.loads((d / "config.json").read_text())["precond_kwargs"]
  sd = sdio.read_state_dict(d / "state_dict.safetensors")
  return d, kw, {k: v.astype(np.float32) for k, v in sd.items()}


# ------------------------------------------------------------------------------- EDM snapshot


def test_snapshot_pkl_matches_safetensors(fixtures_path):
  d, kw, ref = _net(fixtures_path, "dhariwalunet_tiny")
  sd, pkl_kw = edm_pickle.load_edm_pickle(d / "edm_snapshot_like.pkl")
  derived = json.loads((d / "config.json").read_text())["derived"]
  assert set(sd) == set(ref) and len(sd) == derived["num_state_dict_entries"]
  for k, v in ref.items():
    assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, k
    assert sd[k].tobytes() == v.tobytes(), k  # Bit-identical.
  assert pkl_kw == kw


def test_snapshot_pkl_other_entries_are_inert_records(fixtures_path):
  path = fixtures_path / "edm" / "dhariwalunet_tiny" / "edm_snapshot_like.pkl"
  with open(path, "rb") as f:
    snap = edm_unpickler.restricted_load(f, str(path))
  assert set(snap) == {"ema", "loss_fn", "augment_pipe", "dataset_kwargs"}
  assert isinstance(snap["ema"], edm_unpickler.PersistentRecord)
  assert snap["loss_fn"].class_name == "EDMLoss"
  assert snap["loss_fn"].state["P_mean"] == -1.2
  assert snap["augment_pipe"] is None
  assert snap["dataset_kwargs"]["resolution"] == 16
  # The source text is never kept (let alone executed).
  assert "module_src" not in repr(snap["ema"].state.keys())


def test_load_edm_pkl_denoiser_matches_official_sampler_call(fixtures_path):
  """load_edm(.pkl) + denoiser with the sampler's 0-d sigma (batch-1 embedding broadcast)."""
  d = fixtures_path / "edm" / "dhariwalunet_tiny"
  module, variables = load_edm(d / "edm_snapshot_like.pkl")
  sp = np.load(d / "sampler.npz")
  fn = denoiser(module, variables)
  for i in (0, 5):  # sigma = 80 and a corrector call.
    x = sp["call_x"][i].astype(np.float32).transpose(0, 2, 3, 1)
    sigma = np.asarray(sp["call_sigma"][i], np.float32)
    assert sigma.ndim == 0
    out = np.asarray(fn(x, sigma, sp["class_labels"])).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, sp["call_denoised"][i], atol=5e-6, rtol=1e-5)


# ------------------------------------------------------------------------- malicious pickles


def _global_call(module, name, arg_pickle_body):
  """Protocol-2 pickle calling module.name(*args) via GLOBAL + REDUCE."""
  return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + arg_pickle_body +
          b"R.")


def _tuple_of_str(*items):
  return b"(" + b"".join(b"X" + struct.pack("<I", len(s)) + s.encode() for s in items) + b"t"


@pytest.mark.parametrize("module,name,args", [
    ("os", "system", ("touch {marker}",)),
    ("posix", "system", ("touch {marker}",)),
    ("builtins", "eval", ("open({marker!r}, 'w').write('x')",)),
    ("builtins", "exec", ("open({marker!r}, 'w').write('x')",)),
    ("subprocess", "Popen", ("touch", "{marker}")),
    ("builtins", "getattr", ("os", "system")),
])
def test_malicious_globals_are_refused(tmp_path, module, name, args):
  marker = str(tmp_path / "pwned")
  args = tuple(a.format(marker=marker) for a in args)
  if module == "subprocess":  # Popen([...]) with a list argument.
    body = b"((" + _tuple_of_str(*args)[1:-1] + b"ltR."
    data = b"\x80\x02csubprocess\nPopen\n" + body
  else:
    data = _global_call(module, name, _tuple_of_str(*args))
  path = tmp_path / "evil.pkl"
  path.write_bytes(data)
  with pytest.raises(edm_unpickler.UnsafePickleError, match=f"{module}.{name}") as e:
    edm_pickle.load_edm_pickle(path)
  assert str(path) in str(e.value)
  assert not os.path.exists(marker)


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _persistent(meta) -> bytes:
  """Pickle of `_reconstruct_persistent_obj(meta)`, as EDM writes it."""
  body = pickle.dumps(meta, protocol=2)[2:-1]
  return (b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\n" + body +
          b"\x85R.")


def test_persistent_meta_code_is_never_executed(tmp_path):
  marker = str(tmp_path / "pwned")
  code = f"import os\nopen({marker!r}, 'w').write('x')\nclass EDMPrecond: pass\n"
  meta = dict(type="class", version=6, module_src=code, class_name="EDMPrecond",
              state=dict(_init_args=(), _init_kwargs=dict(img_resolution=8), _modules={}))
  path = tmp_path / "smuggle.pkl"
  path.write_bytes(_persistent(meta))
  sd, kw = edm_pickle.load_edm_pickle(path, key=None)
  assert sd == {} and kw == {"img_resolution": 8}
  assert not os.path.exists(marker)


def test_persistent_meta_with_reduce_in_state_is_refused(tmp_path):
  marker = str(tmp_path / "pwned")
  meta = dict(type="class", version=6, module_src="", class_name="EDMPrecond",
              state=dict(_init_kwargs=dict(x=_Evil(marker))))
  path = tmp_path / "smuggle2.pkl"
  path.write_bytes(_persistent(meta))
  with pytest.raises(edm_unpickler.UnsafePickleError, match=r"(posix|os)\.system"):
    edm_pickle.load_edm_pickle(path)
  assert not os.path.exists(marker)


def test_storage_stream_globals_are_refused(tmp_path):
  marker = str(tmp_path / "pwned")
  inner = b"".join(pickle.dumps(o, protocol=2) for o in (
      0x1950a86a20f9469cfc6c, 1001, dict(protocol_version=1001, little_endian=True)))
  inner += _global_call("os", "system", _tuple_of_str(f"touch {marker}"))
  data = (b"\x80\x03ctorch.storage\n_load_from_bytes\nB" + struct.pack("<I", len(inner)) +
          inner + b"\x85R.")
  path = tmp_path / "storage.pkl"
  path.write_bytes(data)
  with pytest.raises(edm_unpickler.UnsafePickleError, match=r"os\.system"):
    edm_pickle.load_edm_pickle(path)
  assert not os.path.exists(marker)


def test_object_dtype_numpy_scalar_is_refused(tmp_path):
  data = _global_call("numpy", "dtype", _tuple_of_str("O"))
  path = tmp_path / "objdtype.pkl"
  path.write_bytes(data)
  with pytest.raises(edm_unpickler.UnsafePickleError, match="numpy dtype"):
    edm_pickle.load_edm_pickle(path)


@pytest.mark.parametrize("dtype,storage", [(np.float16, "HalfStorage"),
                                           (np.float64, "DoubleStorage"),
                                           (np.int64, "LongStorage")])
def test_storage_dtypes_and_strides(dtype, storage):
  values = np.arange(12).astype(dtype)
  stream = b"".join(pickle.dumps(o, protocol=2) for o in (
      0x1950a86a20f9469cfc6c, 1001, dict(protocol_version=1001, little_endian=True)))
  ref = (b"\x80\x02(X\x07\x00\x00\x00storagectorch\n" + storage.encode() +
         b"\nX\x01\x00\x00\x00kX\x03\x00\x00\x00cpuK\x0cNtQ.")  # BINPERSID
  stream += ref + pickle.dumps(["k"], protocol=2)
  stream += struct.pack("<q", 12) + values.tobytes()
  arr = edm_unpickler._load_from_bytes(stream)  # pylint: disable=protected-access
  np.testing.assert_array_equal(arr, values)
  t = edm_unpickler._rebuild_tensor_v2(arr, 1, (2, 3), (1, 4))  # pylint: disable=protected-access
  expected = np.array([[values[1 + i + 4 * j] for j in range(3)] for i in range(2)])
  np.testing.assert_array_equal(t, expected)
  with pytest.raises(pickle.UnpicklingError, match="exceeds"):
    edm_unpickler._rebuild_tensor_v2(arr, 4, (3, 4), (4, 1))  # pylint: disable=protected-access


# ------------------------------------------------------------------------- state_dict mapping


def test_missing_unexpected_misshaped_keys_are_named(fixtures_path):
  _, kw, sd = _net(fixtures_path, "songunet_tiny")
  module = build_edm_precond(kw)
  bad = dict(sd)
  del bad["model.map_layer0.bias"]
  bad["model.enc.99x99_conv.weight"] = np.zeros((1, 2, 3, 3), np.float32)
  bad["model.enc.16x16_conv.weight"] = np.zeros((16, 3, 1, 1), np.float32)
  with pytest.raises(sdio.StateDictMismatchError) as e:
    esd.state_dict_to_variables(bad, module, source="bad.safetensors")
  msg = str(e.value)
  assert "bad.safetensors" in msg
  assert "missing keys (1)" in msg and "model.map_layer0.bias: expected [64]" in msg
  assert "unexpected keys (1)" in msg and "model.enc.99x99_conv.weight: shape [1, 2, 3, 3]" in msg
  assert ("model.enc.16x16_conv.weight: expected [16, 3, 3, 3], found [16, 3, 1, 1]" in msg)


def test_wrong_resample_filter_is_reported(fixtures_path):
  _, kw, sd = _net(fixtures_path, "songunet_ncsnpp_tiny")
  kw = dict(kw, resample_filter=[1, 2, 2, 1])  # Config disagrees with the file's buffers.
  with pytest.raises(sdio.StateDictMismatchError, match="resample_filter"):
    esd.state_dict_to_variables(sd, build_edm_precond(kw))


@pytest.mark.parametrize("name", NETS)
def test_flax_to_pytorch_export_round_trip(fixtures_path, name):
  _, kw, sd = _net(fixtures_path, name)
  module = build_edm_precond(kw)
  variables = esd.state_dict_to_variables(sd, module)
  back = esd.variables_to_state_dict(jax.tree_util.tree_map(jnp.asarray, variables), module)
  assert set(back) == set(sd)
  for k, v in sd.items():
    assert back[k].dtype == v.dtype and back[k].tobytes() == v.tobytes(), k
  if name == "songunet_ncsnpp_tiny":  # Fourier frequencies are a buffer, not a parameter.
    assert "freqs" in variables["buffers"]["model"]["map_noise"]
    assert "map_noise" not in variables["params"]["model"]


def test_safetensors_export_load_round_trip(fixtures_path, tmp_path):
  _, kw, sd = _net(fixtures_path, "songunet_tiny")
  path = tmp_path / "export.safetensors"
  esd.write_state_dict(path, sd, precond_kwargs=dict(kw, sigma_max=float("inf")))
  module, variables = load_edm(path)  # Architecture from the file's metadata.
  assert module.sigma_max == float("inf") and module.model.augment_dim == 9
  back = esd.variables_to_state_dict(variables, module)
  assert all(back[k].tobytes() == v.tobytes() for k, v in sd.items())


def test_pt_round_trip(fixtures_path, tmp_path):
  torch = pytest.importorskip("torch")
  d, kw, sd = _net(fixtures_path, "dhariwalunet_tiny")
  path = tmp_path / "net.pt"
  torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, path)
  read = sdio.read_state_dict(path)
  assert set(read) == set(sd) and all(np.array_equal(read[k], sd[k]) for k in sd)
  module, variables = load_edm(path, kw)
  out = tmp_path / "export.pt"
  esd.write_state_dict(out, esd.variables_to_state_dict(variables, module))
  again = torch.load(out, weights_only=True)
  assert all(again[k].numpy().tobytes() == sd[k].tobytes() for k in sd)
  half = {k: torch.from_numpy(v.copy()).to(torch.bfloat16) for k, v in sd.items()}
  torch.save(half, tmp_path / "bf16.pt")
  read = sdio.read_state_dict(tmp_path / "bf16.pt")
  k = "model.map_layer0.weight"
  np.testing.assert_array_equal(read[k].astype(np.float32), half[k].float().numpy())


@pytest.mark.parametrize("suffix", [".safetensors", ".pkl", ".pt"])
def test_truncated_files_give_clear_errors(fixtures_path, tmp_path, suffix):
  d = fixtures_path / "edm" / "dhariwalunet_tiny"
  if suffix == ".pt":
    torch = pytest.importorskip("torch")
    full = tmp_path / "full.pt"
    torch.save({"a": torch.zeros(1000)}, full)
    data = full.read_bytes()
  else:
    src = "edm_snapshot_like.pkl" if suffix == ".pkl" else "state_dict.safetensors"
    data = (d / src).read_bytes()
  path = tmp_path / f"truncated{suffix}"
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="truncated"):
    if suffix == ".pkl":
      edm_pickle.load_edm_pickle(path)
    else:
      sdio.read_state_dict(path)
  with pytest.raises(ValueError, match=re.escape(str(path))):
    load_edm(path, json.loads((d / "config.json").read_text())["precond_kwargs"])


def test_state_dict_file_without_architecture(fixtures_path, tmp_path):
  _, _, sd = _net(fixtures_path, "dhariwalunet_tiny")
  path = tmp_path / "bare.safetensors"
  esd.write_state_dict(path, sd)
  with pytest.raises(ValueError, match="precond_kwargs"):
    load_edm(path)


def test_builder_rejects_unknown_kwargs():
  base = dict(img_resolution=16, img_channels=3, model_type="DhariwalUNet")
  with pytest.raises(ValueError, match="embedding_type"):  # A SongUNet-only option.
    build_edm_precond(dict(base, embedding_type="fourier"))
  with pytest.raises(ValueError, match="bogus"):
    build_edm_precond(dict(base, bogus=1))
  with pytest.raises(ValueError, match="VPPrecondUNet"):
    build_edm_precond(dict(base, model_type="VPPrecondUNet"))
  with pytest.raises(ValueError, match="img_channels"):
    build_edm_precond(dict(img_resolution=16, model_type="SongUNet"))


# ------------------------------------------------- options of the loaded module used by trainers

_TINY = dict(img_resolution=16, img_channels=3, label_dim=10, model_channels=16,
             channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], dropout=0.1)


@pytest.mark.parametrize("model_type", ["SongUNet", "DhariwalUNet"])
def test_features_layout_and_trainer_options(model_type):
  """return_features layout; bf16 compute with f32 params, remat and dropout all trace."""
  kw = dict(_TINY, model_type=model_type, augment_dim=9, label_dropout=0.1)
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  sigma = jax.ShapeDtypeStruct((), jnp.float32)  # 0-d: one σ for the whole batch.
  for dtype, remat in ((jnp.float32, False), (jnp.bfloat16, True)):
    m = build_edm_precond(kw, dtype=dtype, remat=remat)
    params = esd.abstract_variables(m)["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))

    def fn(p, x, s):
      return m.apply({"params": p}, x, s, None, None, deterministic=False,
                     return_features=True, rngs={"dropout": jax.random.PRNGKey(0)})

    d_x, feats = jax.eval_shape(fn, params, x, sigma)
    assert d_x.shape == (2, 16, 16, 3) and d_x.dtype == jnp.float32
    enc = feats["encoder"]
    assert set(feats) == {"encoder", "bottleneck"} and set(enc) == {16, 8, 4}
    assert enc[16].shape == (2, 16, 16, 16) and enc[8].shape == (2, 8, 8, 32)
    assert enc[4].shape == feats["bottleneck"].shape == (2, 4, 4, 32)
    assert all(f.dtype == dtype for f in jax.tree_util.tree_leaves(feats))



def test_trainer_options_numerics():
  """Dropout draws from the 'dropout' rng only when deterministic=False; bf16 compute (f32
  params) stays close to f32. Random parameters (EDM zero-inits output layers, which would hide
  dropout), one compile for all three."""
  kw = dict(img_resolution=8, img_channels=3, model_type="SongUNet", model_channels=8,
            channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.5)
  m32, m16 = build_edm_precond(kw), build_edm_precond(kw, dtype=jnp.bfloat16)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda s: (0.3 * rng.standard_normal(s.shape) / np.sqrt(max(np.prod(s.shape[:-1]), 1))
                 ).astype(np.float32), esd.abstract_variables(m32)["params"])
  x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
  sigma = np.array([0.5, 3.0], np.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)

  def fn(p):
    v = {"params": p}
    det = m32.apply(v, x, sigma, rngs={"dropout": keys[0]})
    drop = jax.vmap(lambda k: m32.apply(v, x, sigma, deterministic=False,
                                        rngs={"dropout": k}))(keys)
    return det, drop, m16.apply(v, x, sigma)

  det, drop, bf16 = jax.jit(fn).lower(params).compile(
      compiler_options={"xla_backend_optimization_level": 0})(params)
  scale = float(jnp.abs(det).max())
  assert float(jnp.abs(drop[0] - drop[1]).max()) > 1e-3 * scale  # Masks differ by rng.
  assert float(jnp.abs(drop[0] - det).max()) > 1e-3 * scale  # Dropout is active.
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, det, atol=0.05 * scale)




@pytest.mark.parametrize("module,name,attr,value", [
    ("torch._utils", "_rebuild_parameter", "__defaults__", b"K\x01K\x02\x86"),  # (1, 2)
    ("numpy", "dtype", "pwned", b"K\x01"),
])
def test_build_on_allowed_globals_cannot_patch_the_loader(tmp_path, module, name, attr, value):
  """BUILD with slot state on a global does setattr on it: our functions must stay untouched."""
  target = edm_unpickler._ALLOWED[(module, name)]  # pylint: disable=protected-access
  before = getattr(target, attr, None)
  # GLOBAL target; (None, {attr: value}); BUILD; STOP.
  data = (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"N}X" +
          struct.pack("<I", len(attr)) + attr.encode() + value + b"s\x86b.")
  path = tmp_path / "patch.pkl"
  path.write_bytes(data)
  try:
    with open(path, "rb") as f:
      edm_unpickler.restricted_load(f, str(path))
  except ValueError:
    pass  # Refused as corrupt is fine too; what matters is below.
  assert getattr(target, attr, None) == before


@pytest.mark.parametrize("name", ["digits_teacher.safetensors", "digits_teacher_cfg.safetensors"])
def test_packaged_digits_teachers_load_with_their_architecture(name):
  """Both packaged teachers are complete EDM state_dicts of the same 16×16 class-conditional
  SongUNet (the CFG one differs only in training: label dropout)."""
  from fdistill_jax import defaults
  module, variables = load_edm(defaults.asset(name))
  assert (module.img_resolution, module.img_channels, module.label_dim) == (16, 1, 10)
  n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  assert 300_000 < n < 330_000, n
  assert all(bool(np.all(np.isfinite(p))) for p in jax.tree.leaves(variables["params"]))
