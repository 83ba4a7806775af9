"""The Flax SD-VAE port against diffusers' PyTorch AutoencoderKL built from tiny random configs.

Every parameter (GroupNorm affines included) is redrawn at random so that no mapping error can
hide behind an identity initialisation. Inputs are non-square. Tolerance: max |Δ| / max |ref|
≤ 1e-5 in float32 (measured about 1e-7).
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax.convert import vae as cvae
from fdistill_jax.convert.state_dict_io import StateDictMismatchError
from fdistill_jax.models.vae import AutoencoderKL

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

CONFIGS = {
    # Two levels, two resnets per level, mid attention; 16x24 images.
    "two_level": dict(block_out_channels=(8, 16), layers_per_block=2, norm_num_groups=4,
                      latent_channels=4, image=(16, 24)),
    # Three levels (two asymmetric-pad downsamples), no quant convs, no mid attention, 1 channel.
    "three_level": dict(block_out_channels=(8, 8, 16), layers_per_block=1, norm_num_groups=2,
                        latent_channels=3, in_channels=1, out_channels=2, use_quant_conv=False,
                        use_post_quant_conv=False, mid_block_add_attention=False, image=(24, 16)),
}


def _rel(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def _torch_vae(cfg: dict, seed: int):
  kw = {k: v for k, v in cfg.items() if k != "image"}
  n = len(kw["block_out_channels"])
  torch.manual_seed(seed)
  model = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                                  up_block_types=("UpDecoderBlock2D",) * n, **kw).eval()
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in model.named_parameters():
      scale = 0.2 if name.endswith("bias") else 1.0 / np.sqrt(max(p[0].numel(), 1))
      if "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(scale * torch.randn(p.shape, generator=gen))
  return model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
  cfg = CONFIGS[request.param]
  ref = _torch_vae(cfg, seed=len(request.param))
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  module = cvae.vae_from_config(dict(ref.config), source=request.param)
  variables = cvae.state_dict_to_params(sd, module, source=request.param)
  h, w = cfg["image"]
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, module.in_channels, h, w)).astype(np.float32)
  with torch.no_grad():
    post = ref.encode(torch.from_numpy(x)).latent_dist
    z = np.random.default_rng(1).standard_normal(post.mean.shape).astype(np.float32)
    dec = ref.decode(torch.from_numpy(z)).sample
  return dict(ref=ref, module=module, variables=variables, x=x, z=z,
              mean=post.mean.numpy(), logvar=post.logvar.numpy(), dec=dec.numpy())


def _nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def _nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


def _compile(fn, *args):
  # XLA backend optimisation off: halves CPU compile time, same numbers to ~1e-7.
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


@pytest.fixture(scope="module")
def outputs(case):
  """encode(x), decode(z) and the scaling helpers of the Flax model, from one compiled function
  (XLA merges the helpers' encode(x) with the first one)."""
  m = case["module"]

  def run(v, x, z, key):
    return dict(post=m.apply(v, x, method=m.encode), dec=m.apply(v, z, method=m.decode),
                lat=m.apply(v, x, key, method=m.encode_latents),
                dec_lat=m.apply(v, z, method=m.decode_latents),
                eps=jax.random.normal(key, (x.shape[0], x.shape[1] // m.downsample_factor,
                                            x.shape[2] // m.downsample_factor,
                                            m.latent_channels)))
  return _compile(run, case["variables"], _nhwc(case["x"]), _nhwc(case["z"]),
                  jax.random.PRNGKey(3))


def test_encode_decode_parity(case, outputs):
  m, post = case["module"], outputs["post"]
  errs = (_rel(_nchw(post.mean), case["mean"]), _rel(_nchw(post.logvar), case["logvar"]),
          _rel(_nchw(outputs["dec"]), case["dec"]))
  print("relative errors mean/logvar/decode:", errs)
  assert post.mean.shape[1:3] == (case["x"].shape[2] // m.downsample_factor,
                                  case["x"].shape[3] // m.downsample_factor)
  assert max(errs) <= 1e-5, errs
  with torch.no_grad():
    ref_kl = case["ref"].encode(torch.from_numpy(case["x"])).latent_dist.kl().numpy()
  kl = 0.5 * np.sum(np.asarray(post.mean) ** 2 + np.exp(post.logvar) - 1 - post.logvar, (1, 2, 3))
  np.testing.assert_allclose(kl, ref_kl, rtol=1e-4)


def test_param_count_and_roundtrip_to_diffusers(case, tmp_path):
  m, v, ref = case["module"], case["variables"], case["ref"]
  assert cvae.count_params(m) == sum(p.numel() for p in ref.parameters())
  cvae.save_vae(tmp_path / "vae", m, v)
  back = diffusers.AutoencoderKL.from_pretrained(tmp_path / "vae")  # strict load of our export.
  for k, t in ref.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[k].numpy(), t.numpy(), err_msg=k)
  m2, v2 = cvae.load_vae(tmp_path / "vae")
  assert m2 == m
  jax.tree_util.tree_map(np.testing.assert_array_equal, v2, jax.device_get(v))


def test_latent_helpers_and_sampling(case, outputs):
  """scaling_factor·(mean + std·ε) with ε from the key; decode(latents / scaling_factor)."""
  m, post = case["module"], jax.device_get(outputs["post"])
  std = np.exp(0.5 * np.asarray(post.logvar))
  np.testing.assert_allclose(outputs["lat"], m.scaling_factor * (post.mean + std * outputs["eps"]),
                             rtol=1e-5, atol=1e-6)
  with torch.no_grad():
    ref = case["ref"].decode(torch.from_numpy(case["z"] / m.scaling_factor)).sample.numpy()
  assert _rel(_nchw(outputs["dec_lat"]), ref) <= 1e-5


def test_mismatch_errors_name_keys(tmp_path):
  module = AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=4)
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3))))
  sd = cvae.params_to_state_dict(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                                        shapes))
  bad = dict(sd)
  del bad["decoder.conv_out.weight"]
  bad["encoder.conv_in.weight"] = np.zeros((8, 3, 5, 5), np.float32)
  bad["encoder.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(StateDictMismatchError) as e:
    cvae.state_dict_to_params(bad, module, source="x.safetensors")
  msg = str(e.value)
  assert "x.safetensors" in msg and "decoder.conv_out.weight: expected [3, 8, 3, 3]" in msg
  assert "encoder.conv_in.weight: expected [8, 3, 3, 3], found [8, 3, 5, 5]" in msg
  assert "encoder.extra.weight" in msg
  # Old attention names load like diffusers renames them.
  old = {k.replace("to_q", "query").replace("to_out.0", "proj_attn"): v for k, v in sd.items()}
  cvae.state_dict_to_params(old, module)
  with pytest.raises(ValueError, match="down_block_types"):
    cvae.vae_from_config({"block_out_channels": [8, 16], "down_block_types": ["X", "Y"]},
                         source="cfg.json")
  (tmp_path / "config.json").write_text(json.dumps(cvae.module_config(module)))
  with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
    cvae.load_vae(tmp_path)


def test_sd_vae_param_count():
  """The SD / sd-vae-ft-ema config. 83,653,863 = sum(p.numel()) of diffusers 0.42.1's
  AutoencoderKL(**cfg) (building it even on the meta device costs 5 s; the tiny configs above
  compare counts with live diffusers models)."""
  cfg = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
             down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
  assert cvae.count_params(cvae.vae_from_config(cfg)) == 83_653_863
