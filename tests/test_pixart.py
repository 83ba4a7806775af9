"""PixArt-α transformer: parity with diffusers' PixArtTransformer2DModel (tiny random configs built
here), parameter count of the released 512/1024 configs, loaders (diffusers folders single and
sharded, original PixArt .pth names), export back to diffusers, options (remat, bf16, features)
and the sharding rules."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from fdistill_jax.convert import pixart as conv  # noqa: E402
from fdistill_jax.convert import pixart_original as porig  # noqa: E402
from fdistill_jax.convert.state_dict_io import StateDictMismatchError  # noqa: E402
from fdistill_jax.engine import sharding  # noqa: E402
from fdistill_jax.models import pixart  # noqa: E402

# A: 512-style (no micro-conditions), grid 4×6 ≠ its 4×4 base, batch 3, padded text.
# B: 1024-MS-style (sample_size 128 -> micro-conditions), grid 3×2, batch 1, padded text.
TINY = {
    "A": dict(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8,
              num_layers=2, cross_attention_dim=24, sample_size=8, patch_size=2,
              caption_channels=16),
    "B": dict(num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=8,
              num_layers=2, cross_attention_dim=24, sample_size=128, patch_size=2,
              caption_channels=16),
}
CASES = {"A": ((8, 12), 3), "B": ((6, 4), 1)}   # latent (H, W), batch


def _inputs(name, seed=0):
  (h, w), b = CASES[name]
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((b, 4, h, w)).astype(np.float32)           # NCHW like torch
  t = rng.uniform(0, 999, b).astype(np.float32)
  ctx = rng.standard_normal((b, 7, 16)).astype(np.float32)
  mask = np.ones((b, 7), np.float32)
  mask[0, 3:] = 0                                                      # padded prompt
  if b > 1:
    mask[1, 5:] = 0
  cond = None
  if TINY[name]["sample_size"] == 128:
    cond = {k: np.array(v) for k, v in pixart.micro_conditions(b, 8 * h, 8 * w).items()}
  return x, t, ctx, mask, cond


def _torch_out(model, x, t, ctx, mask, cond):
  with torch.no_grad():
    return model(torch.from_numpy(x), encoder_hidden_states=torch.from_numpy(ctx),
                 timestep=torch.from_numpy(t), encoder_attention_mask=torch.from_numpy(mask),
                 added_cond_kwargs=None if cond is None else
                 {k: torch.from_numpy(v) for k, v in cond.items()}).sample.numpy()


@functools.lru_cache(maxsize=None)
def _apply(module):
  return jax.jit(module.apply, static_argnames=("return_features",))


def _jax_out(module, params, x, t, ctx, mask, cond, **kw):
  """module applied (jit, compiled once per module) to torch-layout inputs; NHWC output."""
  return _apply(module)({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)), t, ctx, mask,
                        cond, **kw)


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tiny():
  """name -> (torch model with diffusers' default random init, state_dict numpy, torch output)."""
  out = {}
  for i, (name, cfg) in enumerate(TINY.items()):
    torch.manual_seed(i)
    model = diffusers.PixArtTransformer2DModel(**cfg).eval()
    sd = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    out[name] = (model, sd, _torch_out(model, *_inputs(name)))
  return out


@pytest.mark.parametrize("name", ["A", "B"])
def test_parity_with_diffusers(tiny, name):
  model, sd, ref = tiny[name]
  module = pixart.from_diffusers_config(dict(model.config))
  assert module.micro_conditioned == (name == "B")
  params = conv.state_dict_to_params(sd, module)
  assert conv.count_params(module) == sum(p.numel() for p in model.parameters())
  x, t, ctx, mask, cond = _inputs(name)
  out = np.asarray(_jax_out(module, params, x, t, ctx, mask, cond)).transpose(0, 3, 1, 2)
  err = _rel(out, ref)
  print(f"PixArt parity {name}: relative error {err:.2e}")
  assert err <= 1e-5, err
  # The check can fail: padding, timestep and micro-conditions all move the output.
  no_mask = np.asarray(_jax_out(module, params, x, t, ctx, np.ones_like(mask), cond))
  assert _rel(no_mask.transpose(0, 3, 1, 2), ref) > 1e-3
  other_t = np.asarray(_jax_out(module, params, x, t + 50, ctx, mask, cond))
  assert _rel(other_t.transpose(0, 3, 1, 2), ref) > 1e-3
  if cond is not None:
    cond2 = dict(cond, aspect_ratio=cond["aspect_ratio"] * 2)
    moved = np.asarray(_jax_out(module, params, x, t, ctx, mask, cond2)).transpose(0, 3, 1, 2)
    assert _rel(moved, ref) > 1e-3
    with pytest.raises(ValueError, match="added_cond_kwargs"):
      _jax_out(module, params, x, t, ctx, mask, None)


# transformer/config.json as first released (diffusers 0.22, legacy Transformer2DModel class).
LEGACY_512 = {
    "_class_name": "Transformer2DModel", "_diffusers_version": "0.22.0.dev0",
    "activation_fn": "gelu-approximate", "attention_bias": True, "attention_head_dim": 72,
    "attention_type": "default", "caption_channels": 4096, "cross_attention_dim": 1152,
    "double_self_attention": False, "dropout": 0.0, "in_channels": 4,
    "norm_elementwise_affine": False, "norm_eps": 1e-06, "norm_num_groups": 32,
    "norm_type": "ada_norm_single", "num_attention_heads": 16, "num_embeds_ada_norm": 1000,
    "num_layers": 28, "num_vector_embeds": None, "only_cross_attention": False,
    "out_channels": 8, "patch_size": 2, "sample_size": 64, "upcast_attention": False,
    "use_linear_projection": False}


@pytest.mark.parametrize("resolution", [512, 1024])
def test_released_config_param_count(resolution):
  cfg = conv.pixart_alpha_config(resolution)
  module = pixart.from_diffusers_config(cfg)
  if resolution == 512:
    legacy = pixart.from_diffusers_config(LEGACY_512)
    assert legacy.diffusers_config() == module.diffusers_config()
    with pytest.raises(ValueError, match="only_cross_attention"):
      pixart.from_diffusers_config(dict(LEGACY_512, only_cross_attention=True))
  with torch.device("meta"):
    model = diffusers.PixArtTransformer2DModel(**cfg)
  n_torch = sum(p.numel() for p in model.parameters())
  assert conv.count_params(module) == n_torch == {512: 610_856_096, 1024: 611_349_152}[resolution]
  assert module.micro_conditioned == (resolution == 1024)
  assert module.pos_interpolation_scale == resolution // 512
  assert set(conv._expected(module)) == set(model.state_dict()) - {"pos_embed.pos_embed"}


def test_options_remat_bf16_features(tiny):
  model, sd, _ = tiny["A"]
  cfg = dict(model.config)
  module = pixart.from_diffusers_config(cfg)
  params = jax.tree.map(jnp.asarray, conv.state_dict_to_params(sd, module))
  x, t, ctx, mask, cond = _inputs("A")

  def loss(m, p):
    return jnp.mean(_jax_out(m, p, x, t, ctx, mask, cond) ** 2)

  # Remat on one block (the backward compiles are the cost of this test).
  one = pixart.from_diffusers_config(dict(cfg, num_layers=1))
  remat = pixart.from_diffusers_config(dict(cfg, num_layers=1), remat=True)
  p1 = {k: v for k, v in params.items() if k != "transformer_blocks_1"}
  l0, g0 = jax.jit(jax.value_and_grad(lambda p: loss(one, p)))(p1)
  l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(p1)
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)

  ref = np.asarray(_jax_out(module, params, x, t, ctx, mask, cond))
  bf16 = pixart.from_diffusers_config(cfg, dtype=jnp.bfloat16)
  out = _jax_out(bf16, params, x, t, ctx, mask, cond)
  print(f"PixArt bf16 compute vs float32: relative error {_rel(out, ref):.2e}")
  assert out.dtype == jnp.float32 and 1e-5 < _rel(out, ref) < 3e-2

  feat = pixart.from_diffusers_config(cfg, feature_blocks=(0, -1))
  out, feats = _jax_out(feat, params, x, t, ctx, mask, cond, return_features=True)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
  assert sorted(feats) == ["block0", "block1"]
  assert feats["block1"].shape == (3, 4 * 6, 24) and feats["block0"].dtype == jnp.float32
  with pytest.raises(ValueError, match="feature_blocks"):
    _jax_out(pixart.from_diffusers_config(cfg, feature_blocks=(2,)), params, x, t, ctx, mask,
             cond, return_features=True)


# -------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("shard", [False, True])
def test_load_diffusers_folder(tiny, tmp_path, shard):
  model, sd, ref = tiny["B"]
  kw = {"max_shard_size": "20KB"} if shard else {}
  model.save_pretrained(tmp_path / "transformer", safe_serialization=True, **kw)
  names = os.listdir(tmp_path / "transformer")
  assert (conv.INDEX_NAME in names) == shard and len(names) > (3 if shard else 1)
  module, params = conv.load_diffusers_folder(tmp_path)          # pipeline root also works
  out = np.asarray(_jax_out(module, params, *_inputs("B"))).transpose(0, 3, 1, 2)
  assert _rel(out, ref) <= 1e-5


def test_mismatch_is_reported_by_name(tiny):
  model, sd, _ = tiny["A"]
  module = pixart.from_diffusers_config(dict(model.config))
  bad = dict(sd)
  del bad["transformer_blocks.1.attn2.to_k.weight"]
  bad["transformer_blocks.0.ff.net.2.weight"] = np.zeros((24, 95), np.float32)
  bad["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(StateDictMismatchError) as e:
    conv.state_dict_to_params(bad, module, source="x.safetensors")
  msg = str(e.value)
  assert "x.safetensors" in msg
  assert "transformer_blocks.1.attn2.to_k.weight: expected [24, 24]" in msg
  assert "transformer_blocks.0.ff.net.2.weight: expected [24, 96], found [24, 95]" in msg
  assert "extra.weight: shape [3]" in msg
  with pytest.raises(ValueError, match="activation_fn"):
    pixart.from_diffusers_config(dict(model.config, activation_fn="geglu"))


def test_original_pth_names(tiny, tmp_path):
  """Original PixArt(-MS) names: written by our inverse mapping, checked against the names
  and the fused q|k|v, k|v layouts of PixArt-alpha's PixArtMSBlock, then loaded back."""
  model, sd, ref = tiny["B"]
  orig = porig.diffusers_to_original(sd)
  block0 = {k[len("blocks.0."):] for k in orig if k.startswith("blocks.0.")}
  assert block0 == {f"{m}.{p}" for m in ("attn.qkv", "attn.proj", "cross_attn.q_linear",
                                         "cross_attn.kv_linear", "cross_attn.proj", "mlp.fc1",
                                         "mlp.fc2") for p in ("weight", "bias")} | {
                                             "scale_shift_table"}
  top = {k.rsplit(".", 1)[0] for k in orig if not k.startswith("blocks.")}
  assert top == {"x_embedder.proj", "y_embedder.y_proj.fc1", "y_embedder.y_proj.fc2",
                 "t_embedder.mlp.0", "t_embedder.mlp.2", "t_block.1", "csize_embedder.mlp.0",
                 "csize_embedder.mlp.2", "ar_embedder.mlp.0", "ar_embedder.mlp.2",
                 "final_layer.linear", "final_layer"}
  d = 24
  qkv = orig["blocks.1.attn.qkv.weight"]
  assert qkv.shape == (3 * d, d)
  np.testing.assert_array_equal(qkv[d:2 * d], sd["transformer_blocks.1.attn1.to_k.weight"])
  np.testing.assert_array_equal(orig["blocks.1.cross_attn.kv_linear.bias"][d:],
                                sd["transformer_blocks.1.attn2.to_v.bias"])
  # A training checkpoint as PixArt saves it, with the stored constants.
  null = np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32)
  ckpt = {k: torch.from_numpy(v) for k, v in orig.items()}
  ckpt.update({"pos_embed": torch.zeros(1, 16, d), "y_embedder.y_embedding": torch.from_numpy(null)})
  torch.save({"state_dict": ckpt, "epoch": 3}, tmp_path / "PixArt-tiny.pth")
  module, params, extras = porig.load_original_checkpoint(tmp_path / "PixArt-tiny.pth",
                                                         dict(model.config))
  np.testing.assert_array_equal(extras["null_caption"], null)
  out = np.asarray(_jax_out(module, params, *_inputs("B"))).transpose(0, 3, 1, 2)
  assert _rel(out, ref) <= 1e-5
  # Bad fused shapes and unknown names are reported by name.
  ckpt["blocks.0.attn.qkv.bias"] = torch.zeros(3 * d - 1)
  ckpt["blocks.0.attn.rel_pos_h"] = torch.zeros(3)
  with pytest.raises(StateDictMismatchError, match=r"blocks\.0\.attn\.qkv\.bias"):
    porig.original_to_diffusers({k: v.numpy() for k, v in ckpt.items()})
  del ckpt["blocks.0.attn.qkv.bias"]
  torch.save({"state_dict": ckpt}, tmp_path / "bad.pth")
  with pytest.raises(StateDictMismatchError) as e:
    porig.load_original_checkpoint(tmp_path / "bad.pth", dict(model.config))
  assert "transformer_blocks.0.attn1.to_q.bias: expected [24]" in str(e.value)
  assert "blocks.0.attn.rel_pos_h: shape [3]" in str(e.value)
  with pytest.raises(ValueError, match="state_dict_ema"):
    porig.read_original_checkpoint(tmp_path / "bad.pth", ema=True)


# -------------------------------------------------------------------------------------- export


def test_export_to_diffusers_folder(tiny, tmp_path):
  model, sd, _ = tiny["A"]
  module = pixart.from_diffusers_config(dict(model.config))
  # Trained parameters differ from the reference: perturb every leaf.
  params = jax.tree.map(lambda a: a * 1.1 + 0.01, conv.state_dict_to_params(sd, module))
  conv.to_diffusers_folder(params, module, tmp_path / "student")
  cfg = json.loads((tmp_path / "student" / "config.json").read_text())
  assert cfg["_class_name"] == "PixArtTransformer2DModel"
  loaded, info = diffusers.PixArtTransformer2DModel.from_pretrained(
      tmp_path / "student", output_loading_info=True)
  assert all(not v for v in info.values()), info        # strict: nothing missing/unexpected
  inputs = _inputs("A", seed=3)
  got = _torch_out(loaded.eval(), *inputs)
  want = np.asarray(_jax_out(module, params, *inputs)).transpose(0, 3, 1, 2)
  assert _rel(got, want) <= 1e-5
  # The scheduler named in the pipeline snippet supports the one-step call it describes.
  sched = diffusers.DDPMScheduler.from_config(diffusers.DPMSolverMultistepScheduler().config,
                                              clip_sample=False)
  sched.set_timesteps(timesteps=[400])
  assert sched.timesteps.tolist() == [400]


# ------------------------------------------------------------------------------------- sharding


def test_sharding_rules_tensor_parallel(tiny):
  model, sd, _ = tiny["A"]
  module = pixart.from_diffusers_config(dict(model.config))
  abstract = conv.abstract_params(module)
  cfg = _mesh_cfg(fsdp=2, tensor=2)
  mesh = sharding.make_mesh(cfg, jax.devices()[:8])
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  sh = sharding.tree_shardings(abstract, mesh, cfg)
  blk = sh["transformer_blocks_0"]
  assert blk["attn1"]["to_q"]["kernel"].spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert blk["attn2"]["to_out"]["kernel"].spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert blk["net_0_proj"]["bias"].spec == jax.sharding.PartitionSpec("tensor")
  assert blk["scale_shift_table"].spec == jax.sharding.PartitionSpec()
  # Sharded forward equals the single-device one.
  params = jax.tree.map(jnp.asarray, conv.state_dict_to_params(sd, module))
  inputs = _inputs("A")
  ref = _jax_out(module, params, *inputs)
  out = _jax_out(module, jax.device_put(params, sh), *inputs)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def _mesh_cfg(fsdp, tensor):
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(dict(mesh=dict(
      data=-1, fsdp=fsdp, tensor=tensor, default_tactic="fsdp", fsdp_min_size=16,
      rules=tuple(pixart.sharding_rules()))))
