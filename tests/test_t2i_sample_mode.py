"""Text sample mode (--mode=sample --prompts=FILE): one PNG per prompt and a captioned grid.

A tiny pixel-space PixArt teacher (random weights, written as a diffusers folder) and a prompt
cache written here, as in tests/test_t2i_engine.py. Sampled through the teacher's eval.nfe
sampler (no checkpoint in the workdir) and, with the same params as a generator, the one-step
path.
"""
import os
import types

import jax
import numpy as np
import PIL.Image
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as PS

from fdistill_jax import compose, defaults, modes
from fdistill_jax.convert import pixart as conv
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.evaluation import grids, t2i_sampling
from fdistill_jax.models import pixart as pixart_lib

P, L, D = 8, 6, 8  # prompts in the cache, tokens, embedding width
LABELS = [0, 1, 2, 3] * 2


def tiny_cfg(cache, teacher):
  """defaults.t2i() with an 8×8 one-channel, one-block PixArt; 2-step guided teacher sampler."""
  cfg = defaults.t2i()
  cfg.teacher.update(dict(checkpoint=teacher, prompt_cache=cache))
  cfg.teacher.pixart_config.update(dict(sample_size=8, caption_channels=D, num_layers=1))
  cfg.dataset.update(dict(name="synthetic", resolution=8))
  cfg.disc.update(dict(feature_keys=("block0",), channels=16))
  cfg.eval.update(dict(num_samples=8, teacher_nfes=(), metric="none", guidance_scale=2.0, nfe=2,
                       grid_size=4))
  return cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A prompt cache and a tiny random teacher folder, the weights drawn by NumPy from the
  shapes (no Flax init, no per-leaf jax.random compiles)."""
  root = tmp_path_factory.mktemp("t2i_sample")
  rng = np.random.default_rng(0)
  mask = np.ones((P, L), np.uint8)
  mask[:, 4:] = 0
  pc.write_cache(root / "cache", rng.normal(size=(P, L, D)).astype(np.float32), mask,
                 [f"the digit {c}, phrasing {i}" for i, c in enumerate(LABELS)],
                 rng.normal(size=(1, L, D)).astype(np.float32), mask[:1], labels=LABELS)
  cfg = tiny_cfg(str(root / "cache"), "")
  module = pixart_lib.from_diffusers_config(cfg.teacher.pixart_config.to_dict())
  # Random weights of every leaf (no zero init: the text must matter), from shapes alone.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: ((path[-1].key == "scale") + 0.2 * rng.normal(size=x.shape)).astype(
          np.float32), conv.abstract_params(module))
  conv.to_diffusers_folder(params, module, root / "teacher")
  return str(root / "cache"), str(root / "teacher")


PROMPTS = ["the digit 3, phrasing 3", "The digit 0, phrasing 0  ", "the digit 2, phrasing 6",
           "the digit 3, phrasing 3", "the digit 1, phrasing 1"]


def _png(path):
  with PIL.Image.open(path) as im:
    return np.asarray(im)


def test_prompt_file_samples_pngs_grid_and_noise_per_index(files, tmp_path, monkeypatch):
  cfg = tiny_cfg(*files)
  cfg.eval.batch_size = 2  # 5 prompts: batches of 2, 2 and a padded 1
  (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n\n")
  exp, _ = compose.build(cfg, str(tmp_path / "run"), prepare=False)
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 123)
  out = t2i_sampling.write_prompt_samples(exp, exp.frozen["teacher"], str(tmp_path / "p.txt"),
                                          files[0], str(tmp_path / "p"), key, teacher=True,
                                          batch_size=2, grid_size=4)
  folder = tmp_path / "p"
  assert out["pngs"] == str(folder) and out["num"] == 5 and os.path.isfile(out["grid"])
  assert (folder / "prompts.txt").read_text().splitlines() == PROMPTS
  got = np.stack([_png(folder / f"{i:06d}.png") for i in range(5)])
  assert got.shape == (5, 8, 8) and not os.path.exists(folder / "000005.png")
  assert np.abs(got[0].astype(int) - got[3]).max() > 0  # same prompt, other noise
  assert _png(out["grid"]).shape[0] > 8 * 8  # captions are written beneath the tiles
  # Direct: the teacher sampler on noise fold_in(key, i) and the cached rows of the prompts.
  cache = pc.load_prompt_cache(files[0])
  rows = [cache.prompts.index(p.lower().strip()) for p in PROMPTS[:2]]
  z = np.stack([jax.random.normal(jax.random.fold_in(key, i), (8, 8, 1)) for i in range(2)])
  cond = {"embeddings": cache.embeddings[rows].astype(np.float32),
          "mask": cache.mask[rows].astype(np.float32)}
  want = grids.to_uint8(exp.sample_cond(exp.frozen["teacher"], z, cond, teacher=True))[..., 0]
  np.testing.assert_array_equal(got[:2], want)
  # A prefix of the file gives the same images: a sample depends on its prompt and index only.
  (tmp_path / "q.txt").write_text("\n".join(PROMPTS[:3]))
  t2i_sampling.write_prompt_samples(exp, exp.frozen["teacher"], str(tmp_path / "q.txt"),
                                    files[0], str(tmp_path / "q"), key, teacher=True,
                                    batch_size=2, grid_size=2)
  np.testing.assert_array_equal(np.stack([_png(tmp_path / "q" / f"{i:06d}.png")
                                          for i in range(3)]), got[:3])
  # The one-step path (generator params = the teacher's, as at initialisation), the params on
  # a 2×4 data×fsdp mesh as a restored checkpoint's: the batch of 8 is split over that mesh.
  mesh = Mesh(np.asarray(jax.devices()).reshape(2, 4), ("data", "fsdp"))
  on_mesh = jax.device_put(exp.frozen["teacher"], NamedSharding(mesh, PS()))
  assert t2i_sampling.batch_sharding(on_mesh, 8).spec == PS(("data", "fsdp"))
  assert t2i_sampling.batch_sharding(on_mesh, 6) is None
  one = t2i_sampling.write_prompt_samples(exp, on_mesh, str(tmp_path / "q.txt"),
                                          files[0], str(tmp_path / "g"), key, batch_size=8)
  g = np.stack([_png(os.path.join(one["pngs"], f"{i:06d}.png")) for i in range(3)])
  want = grids.to_uint8(exp.sample_cond(exp.frozen["teacher"], z, cond))[..., 0]
  np.testing.assert_array_equal(g[:2], want)
  # --mode=sample --prompts: modes picks the teacher (no checkpoint), the tag and the folder.
  seen = {}
  monkeypatch.setattr(t2i_sampling, "write_prompt_samples",
                      lambda *a, **k: seen.update(args=a, kwargs=k) or {})
  modes.sample_checkpoint(cfg, str(tmp_path / "run"), prompts=str(tmp_path / "p.txt"))
  e, params, prompts, cache_dir, out_dir, k = seen["args"]
  assert (prompts, cache_dir, out_dir) == (str(tmp_path / "p.txt"), files[0],
                                           str(tmp_path / "run" / "samples_teacher_nfe2_p"))
  assert seen["kwargs"]["teacher"] and seen["kwargs"]["batch_size"] == 2
  jax.tree.map(np.testing.assert_array_equal, params, e.frozen["teacher"])
  np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(key))


def test_clear_errors(files, tmp_path):
  cfg = tiny_cfg(*files)
  (tmp_path / "p.txt").write_text("the digit 3, phrasing 3\na prompt nobody encoded\n")
  with pytest.raises(KeyError, match=r"1 of 2 prompts of .*p.txt are not in the prompt cache .*"
                     r"line 2: 'a prompt nobody encoded'.*encode_prompts"):
    modes.sample_checkpoint(cfg, str(tmp_path / "run"), prompts=str(tmp_path / "p.txt"))
  with pytest.raises(ValueError, match="takes a text file.*--write_prompts"):
    t2i_sampling.read_prompts(str(tmp_path / "captions.json"))
  with pytest.raises(FileNotFoundError, match="prompt file not found"):
    t2i_sampling.read_prompts(str(tmp_path / "absent.txt"))
  exp = types.SimpleNamespace(sample_cond=None)
  with pytest.raises(ValueError, match="needs a text-to-image config"):
    t2i_sampling.write_prompt_samples(exp, None, str(tmp_path / "p.txt"), files[0],
                                      str(tmp_path / "o"), None)
  rng = np.random.default_rng(0)
  pc.write_cache(tmp_path / "wide", rng.normal(size=(2, 6, 4)).astype(np.float32),
                 np.ones((2, 6), np.uint8), ["the digit 3, phrasing 3", "x"],
                 np.zeros((1, 6, 4), np.float32), np.ones((1, 6), np.uint8))
  with pytest.raises(ValueError, match=r"wide holds embeddings \[L, D\] = \[6, 4\].*\[6, 8\]"):
    modes.sample_checkpoint(cfg, str(tmp_path / "run"), prompts=str(tmp_path / "p.txt"),
                              prompt_cache=str(tmp_path / "wide"))
  cfg.teacher.checkpoint = ""
  with pytest.raises(FileNotFoundError, match="nothing to sample"):
    modes.sample_checkpoint(cfg, str(tmp_path / "run"), prompts=str(tmp_path / "p.txt"))
