"""Every experiment config loads, passes validation and documents its command."""
import glob
import importlib.util
import os

import pytest

from fdistill_jax import config_checks
from fdistill_jax.methods import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True))


def _load(path):
  spec = importlib.util.spec_from_file_location("cfg_under_test", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_is_valid_and_documented(path):
  mod = _load(path)
  doc = mod.__doc__ or ""
  assert "python -m fdistill_jax" in doc and "Expected" in doc, f"{path}: docstring lacks command/result"
  cfg = mod.get_config()
  config_checks.check(cfg, num_devices=8)
  registry.get(cfg.method.name)  # the method module imports


def test_fastgen_configs_carry_the_published_hyperparameters():
  c10 = _load(os.path.join(REPO, "configs", "cifar10_kl.py")).get_config()
  in64 = _load(os.path.join(REPO, "configs", "imagenet64_js.py")).get_config()
  assert (c10.train.batch_size, c10.optim.generator.lr, c10.method.gan_weight_gen) == (2048, 1e-4, 1e-3)
  assert (in64.train.batch_size, in64.optim.generator.lr, in64.method.gan_weight_gen) == (512, 2e-6, 3e-3)
  assert in64.method.ratio_ema == 0.5 and in64.disc.feature_keys == ("bottleneck",)
  assert c10.disc.feature_keys == ("enc32", "enc16", "enc8") and c10.disc.channels == 256
  assert in64.method.critic_steps == 4 and tuple(in64.train.ema_decays) == (0.9999, 0.99995, 0.9996)


def test_unknown_dataset_is_rejected():
  cfg = _load(os.path.join(REPO, "configs", "digits_js.py")).get_config()
  cfg.dataset.name = "mnist"
  with pytest.raises(config_checks.ConfigError, match=r"dataset\.name"):
    config_checks.check(cfg, num_devices=8)
