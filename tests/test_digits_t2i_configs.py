"""The digits text-to-image configs (f-distill JS, SiD-LSG, SIM, DMD2) build their
experiment from the committed assets (teacher folder, prompt cache; no compile: stepping one
costs ~50 s, and every method steps on the same 'pixart' kind in test_t2i_engine.py); the
committed teacher is the architecture the configs name."""
import importlib.util
import os

import jax
import numpy as np
import pytest

from fdistill_jax import compose, config_checks, defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ["digits_t2i_js.py", "digits_t2i_sid_lsg.py", "digits_t2i_sim.py",
           "digits_t2i_dmd2.py"]  # the teacher's random init compiles (~25 s): test_configs.py.


def _config(name):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
  cfg = _config(name)
  assert cfg.teacher.prompt_cache == defaults.asset("digits_t2i_text_prompts")
  config_checks.check(cfg, num_devices=1)
  exp, _ = compose.build(cfg, "/tmp/unused", prepare=False)
  batch = exp.batch(0)
  assert batch["cond"]["embeddings"].shape == (cfg.train.batch_size, 64, 64)
  assert tuple(exp.nets.data_shape) == (16, 16, 1)


def test_committed_teacher_is_the_configured_architecture():
  path = defaults.asset("digits_t2i_text_teacher")
  from fdistill_jax.convert import pixart as conv
  module, params = conv.load_diffusers_folder(path)
  want = dict(defaults.DIGITS_T2I_TEXT_PIXART)
  got = module.diffusers_config()
  assert {k: got[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                              "caption_channels", "patch_size", "sample_size")} == \
      {k: want[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                            "caption_channels", "patch_size", "sample_size")}
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
