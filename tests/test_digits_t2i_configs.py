"""The digits text-to-image quickstart: the f-distill JS config builds and takes a step on a
1-block random PixArt of its layout (the other methods step in test_t2i_engine.py;
every config is validated by test_configs.py); the committed teacher loads as the architecture
the configs name."""
import importlib.util
import os

import jax
import numpy as np
import pytest

from fdistill_jax import compose, config_checks, defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["digits_t2i_js.py"]  # the teacher's edm_training step: test_t2i_engine.py.


def _config(name):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_steps(name, tmp_path):
  cfg = _config(name)
  assert cfg.teacher.prompt_cache == defaults.asset("digits_t2i_prompts")
  cfg.teacher.checkpoint = ""  # a random 1-block teacher of the same layout: a cheap compile.
  cfg.teacher.pixart_config.update(dict(num_layers=1, num_attention_heads=2,
                                        attention_head_dim=8, cross_attention_dim=16))
  if cfg.disc.enabled:
    cfg.disc.feature_keys, cfg.disc.channels = ("block0",), 8
  cfg.train.update(dict(steps=1, batch_size=4, async_checkpoints=False))
  cfg.eval.update(dict(num_samples=4, teacher_nfes=(), metric="none"))
  config_checks.check(cfg, num_devices=1)
  run = compose.Run(cfg, str(tmp_path), devices=jax.devices()[:1], restore=False)
  metrics = jax.device_get(run.step(0))
  assert metrics and all(np.isfinite(v) for v in metrics.values()), (name, metrics)


def test_committed_teacher_is_the_configured_architecture():
  path = defaults.asset("digits_t2i_teacher")
  if not os.path.isdir(path):
    pytest.skip("teacher asset not committed yet")
  from fdistill_jax.convert import pixart as conv
  module, params = conv.load_diffusers_folder(path)
  want = dict(defaults.DIGITS_T2I_PIXART)
  got = module.diffusers_config()
  assert {k: got[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                              "caption_channels", "patch_size", "sample_size")} == \
      {k: want[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                            "caption_channels", "patch_size", "sample_size")}
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
