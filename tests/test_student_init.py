"""config.student.init_checkpoint (experiments/image.generator_init): the generator starts from a
distilled network file of the teacher's architecture (the official Uni-Instruct runs' --sid_model),
the fake score from the teacher, every EMA track from the generator. Tiny EDM SongUNet files
(tests/data/edm/songunet_tiny) written here; nothing is downloaded."""
import json
import re

import jax
import ml_collections
import numpy as np
import pytest

from fdistill_jax import compose, config_checks, defaults, testing
from fdistill_jax.convert import edm_state_dict as esd
from fdistill_jax.convert import state_dict_io as sdio
from fdistill_jax.engine import loop, state as state_lib
from fdistill_jax.methods import uni_instruct
from fdistill_jax.models.edm import build_edm_precond
from fdistill_jax.teachers.edm import load_edm

TINY = testing.DATA_DIR / "edm" / "songunet_tiny"


def _state_dict():
  sd = sdio.read_state_dict(TINY / "state_dict.safetensors")
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}, json.loads(
      (TINY / "config.json").read_text())["precond_kwargs"]


def _perturbed(sd: dict, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  return {k: (v + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
              if k.endswith((".weight", ".bias")) else v) for k, v in sd.items()}  # Not buffers.


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp("nets")
  sd, kw = _state_dict()
  esd.write_state_dict(d / "teacher.safetensors", sd, precond_kwargs=kw)
  esd.write_state_dict(d / "sid.safetensors", _perturbed(sd, 7), precond_kwargs=kw)
  other = dict(kw, model_channels=8)  # Another width: every conv's shape differs.
  m8 = build_edm_precond(other)  # Zero weights of its shapes (no init to compile).
  v8 = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), esd.abstract_variables(m8))
  esd.write_state_dict(d / "narrow.safetensors", esd.variables_to_state_dict(v8, m8),
                       precond_kwargs=other)
  # The teacher's metadata but one tensor cut short: the state_dict does not fit the network.
  key = sorted(k for k, v in sd.items() if v.ndim == 4)[0]
  esd.write_state_dict(d / "cut.safetensors", dict(sd, **{key: sd[key][:-1]}), precond_kwargs=kw)
  return d


def _cfg(teacher, init="") -> ml_collections.ConfigDict:
  cfg = defaults.image()
  cfg.teacher.checkpoint = str(teacher)
  cfg.teacher.precond_kwargs = {}  # The architecture of the file (its metadata).
  cfg.method = uni_instruct.method_config()
  cfg.disc.enabled = False
  cfg.dataset.update(dict(name="synthetic", resolution=16))
  cfg.train.update(dict(steps=4, batch_size=4, ema_decays=(0.9, 0.99)))
  cfg.eval.update(dict(num_samples=4, params="0.9", metric="none"))
  cfg.student.init_checkpoint = str(init)
  return cfg


def _init_state(cfg, workdir):
  exp, _, _, init, key = loop._build(cfg, lambda: compose.build(cfg, workdir))
  return exp, jax.device_get(init(key))


def _equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_generator_starts_from_the_checkpoint_fake_score_from_the_teacher(files, tmp_path):
  cfg = _cfg(files / "teacher.safetensors", files / "sid.safetensors")
  config_checks.check(cfg, num_devices=1)
  exp, st = _init_state(cfg, str(tmp_path))
  sid = load_edm(files / "sid.safetensors")[1]["params"]
  teacher = load_edm(files / "teacher.safetensors")[1]["params"]
  _equal(st["params"]["generator"], sid)
  _equal(st["params"]["fake_score"], teacher)
  _equal(exp.frozen["teacher"], teacher)
  for k, ema in st["ema"].items():
    assert k in (state_lib.ema_key(0.9), state_lib.ema_key(0.99))
    _equal(ema, sid)
  diff = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), sid, teacher))
  assert max(diff) > 0.01  # The two files differ, so the asserts above tell them apart.
  # Empty: today's start, both from the teacher.
  _, st0 = _init_state(_cfg(files / "teacher.safetensors"), str(tmp_path / "0"))
  _equal(st0["params"]["generator"], teacher)


def test_a_file_of_another_architecture_names_field_file_and_parameter(files, tmp_path):
  path = files / "narrow.safetensors"
  with pytest.raises(ValueError) as e:
    compose.build(_cfg(files / "teacher.safetensors", path), str(tmp_path))
  msg = str(e.value)
  assert "config.student.init_checkpoint" in msg and str(path) in msg, msg
  assert re.search(r"parameter params/model/\S+ is \(.*8.*\) in the file, \(.*16.*\) in the "
                   r"teacher", msg), msg
  path = files / "cut.safetensors"
  with pytest.raises(ValueError) as e:
    compose.build(_cfg(files / "teacher.safetensors", path), str(tmp_path))
  msg = str(e.value)
  assert "config.student.init_checkpoint" in msg and str(path) in msg, msg
  assert "not a network of the teacher's architecture" in msg and "shape" in msg, msg


def test_a_missing_file_names_field_and_path(files, tmp_path):
  path = files / "absent.pkl"
  with pytest.raises(FileNotFoundError, match="config.student.init_checkpoint") as e:
    compose.build(_cfg(files / "teacher.safetensors", path), str(tmp_path))
  assert str(path) in str(e.value)


@pytest.mark.parametrize("source", ["toy", "t2i"])
def test_other_teacher_kinds_refuse_it(source):
  cfg = getattr(defaults, source)()
  raw = cfg.to_dict()
  raw.setdefault("student", {})["init_checkpoint"] = "/x/sid.pkl"
  with pytest.raises(config_checks.ConfigError, match="teacher.kind 'edm' only") as e:
    config_checks.check(ml_collections.ConfigDict(raw), num_devices=8)
  assert "config.student.init_checkpoint" in str(e.value)
