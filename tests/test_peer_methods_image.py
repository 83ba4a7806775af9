"""The peer methods' digits configs run in the engine on an EDM architecture.

Each configs/digits_<method>.py is taken as is, with the packaged teacher swapped for a tiny
random-weight class-conditional SongUNet on 8×8 digits (only the mechanics are under test here:
the toy tests check that each method learns, BENCHMARKS.md has the digits rows). One generator
and one critic iteration must give finite losses, update exactly the nets the method trains,
and (for KD/DMD) build the pair cache through the method's `prepare` hook.
The configs run here cover every loss code path on images; digits_sid / sim_l2 / vsd differ from
digits_sid_lsg / sim_huber / dmd2 only in constants (κ = 1, the distance, the flags h ≡ 1 and no
normaliser), which the toy tests exercise, and digits_dmd is the f-distill loss (tested on images
in test_image_engine) plus KD's regression and pair cache (digits_kd here); they are left out to
keep CI's compile time down.
"""
import importlib.util
import os

import jax
import numpy as np
import pytest

from fdistill_jax import config_checks
from fdistill_jax import compose
from fdistill_jax.methods import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ("sid_lsg", "sim_huber", "dmd2", "kd", "pd")


def _config(name):
  path = os.path.join(REPO, "configs", f"digits_{name}.py")
  spec = importlib.util.spec_from_file_location("peer_cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config()
  cfg.teacher.checkpoint = ""  # random tiny teacher (no file needed)
  # One resolution level: compiling the steps dominates this test's time on CPU.
  cfg.teacher.precond_kwargs.update(dict(img_resolution=8, model_channels=8, channel_mult=(1,),
                                         num_blocks=1, attn_resolutions=()))
  cfg.dataset.resolution = 8
  cfg.disc.feature_keys = ("enc8",)
  cfg.disc.channels = 8
  cfg.train.update(dict(steps=2, batch_size=8, log_every=1, ckpt_every=0,
                        async_checkpoints=False, tensorboard=False))
  cfg.eval.update(dict(num_samples=8, teacher_nfes=(), metric="none"))
  if "pairs_num" in cfg.method:
    cfg.method.update(dict(pairs_num=16, pairs_shard_size=8, pairs_steps=2))
  return cfg


def _changed(a, b) -> bool:
  return any(float(np.abs(np.asarray(x) - np.asarray(y)).max()) > 0
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
@pytest.mark.parametrize("name", PEERS)
def test_peer_method_steps_on_edm(name, tmp_path):
  cfg = _config(name)
  config_checks.check(cfg, num_devices=1)
  method = registry.get(cfg.method.name)
  run = compose.Run(cfg, str(tmp_path), devices=jax.devices()[:1], restore=False)
  before = jax.device_get(run.state["params"])
  phases = [run.phase(k) for k in range(2)]
  metrics = [jax.device_get(run.step(k)) for k in range(2)]
  after = jax.device_get(run.state["params"])
  for m in metrics:
    assert m and all(np.isfinite(v) for v in m.values()), (name, m)
  assert int(run.state["nonfinite"]["total"]) == 0
  trained = set(method.GENERATOR_NETS)
  if "critic" in phases:
    trained |= set(method.CRITIC_NETS)
  for net in before:
    assert _changed(before[net], after[net]) == (net in trained), (name, net, phases)
  if "pairs_num" in cfg.method:
    assert os.path.exists(os.path.join(str(tmp_path), "kd_pairs", "manifest.json"))
