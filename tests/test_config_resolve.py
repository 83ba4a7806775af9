"""Issue 26, "the config resolved once": config_defaults.resolve fills every optional field from one
table derived from defaults.py, leaves set values alone, is idempotent, and the `.get` fallbacks
it replaced cannot creep back. Config only: nothing is built."""
import glob
import os
import re

import ml_collections
import pytest

from fdistill_jax import config_checks, config_defaults, defaults, teachers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASES = {"gmm": defaults.toy, "edm": defaults.image, "pixart": defaults.t2i}
# A config of each kind that has every block an optional field can sit in.
FULL = {"gmm": defaults.toy, "edm": defaults.image, "pixart": defaults.digits_t2i_text_teacher}


def _concrete(cfg, path: str) -> list[str]:
  """path with optim.* expanded over cfg's networks."""
  return ([path.replace("*", n) for n in cfg.optim] if "*" in path else [path])


def _get(cfg, path: str):
  node = cfg
  for k in path.split("."):
    node = node[k]
  return node


def _delete(cfg, path: str) -> None:
  *parents, leaf = path.split(".")
  node = cfg
  for p in parents:
    node = node[p]
  del node[leaf]


@pytest.mark.parametrize("kind", sorted(BASES))
def test_resolve_fills_each_optional_field_it_lacks(kind):
  table = config_defaults.table(kind)
  assert table
  for path, default in table.items():
    cfg = FULL[kind]()
    for p in _concrete(cfg, path):
      if config_checks._has(cfg, p):  # pylint: disable=protected-access
        _delete(cfg, p)
    cfg.lock()
    assert config_defaults.resolve(cfg) is cfg
    assert cfg.is_locked
    for p in _concrete(cfg, path):
      assert _get(cfg, p) == default, p
    config_checks.check(cfg, num_devices=8)


@pytest.mark.parametrize("kind", sorted(BASES))
def test_resolve_leaves_set_values_alone_and_is_idempotent(kind):
  cfg = FULL[kind]()
  for path, default in config_defaults.table(kind).items():
    for p in _concrete(cfg, path):
      if config_checks._has(cfg, p) and isinstance(default, bool):  # pylint: disable=protected-access
        *parents, leaf = p.split(".")
        _get(cfg, ".".join(parents))[leaf] = not default
  before = cfg.to_dict()
  config_defaults.resolve(cfg)
  once = cfg.to_dict()
  assert all(_get(cfg, p) == v for p, v in _leaves(before))
  config_defaults.resolve(cfg)
  assert cfg.to_dict() == once
  assert not config_defaults.missing(cfg)


def _leaves(d: dict, prefix: str = ""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaves(v, prefix + k + ".")
    else:
      yield prefix + k, v


def test_every_shipped_config_keeps_its_values_through_resolve():
  paths = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True))
  import importlib.util  # pylint: disable=import-outside-toplevel
  for path in paths:
    spec = importlib.util.spec_from_file_location("cfg_under_resolve", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    before = dict(_leaves(cfg.to_dict()))
    after = dict(_leaves(config_defaults.resolve(cfg).to_dict()))
    assert all(after[p] == v for p, v in before.items()), path
    config_defaults.resolve(cfg)
    assert dict(_leaves(cfg.to_dict())) == after, path


def test_optional_fields_apply_only_where_their_kind_and_block_do():
  """eval.guidance_scale is text-to-image only; teacher.text_encoder.checkpoint only where the
  config has a text encoder; the toy's student block (its pretraining cache key) gets nothing."""
  assert "eval.guidance_scale" not in config_defaults.table("edm")
  assert "eval.guidance_scale" in config_defaults.table("pixart")
  toy = config_defaults.resolve(defaults.toy())
  assert "init_checkpoint" not in toy.student and "metric" not in toy.eval
  t2i = config_defaults.resolve(defaults.t2i())
  assert "text_encoder" not in t2i.teacher


def test_a_missing_required_field_still_fails_naming_it():
  for kind, path in (("gmm", "train.steps"), ("edm", "dataset.resolution"),
                     ("pixart", "eval.sampler"), ("edm", "optim.generator.lr")):
    cfg = BASES[kind]()
    _delete(cfg, path)
    config_defaults.resolve(cfg)
    with pytest.raises(config_checks.ConfigError, match=re.escape(f"config.{path} is missing")):
      config_checks.check(cfg, num_devices=8)


def test_the_table_is_defaults_py():
  """Every default equals the value the kind's base default config (its family's first builder)
  sets, where it sets it: one source of truth. ENGINE's fields are set by no default config."""
  for kind in BASES:
    assert teachers.get(kind).default_builders()[0] is BASES[kind]
    base = BASES[kind]()
    for path, default in config_defaults.table(kind).items():
      for p in _concrete(base, path):
        if config_checks._has(base, p):  # pylint: disable=protected-access
          assert path not in config_defaults.ENGINE, path
          assert _get(base, p) == default, (kind, p)
  assert config_defaults.table("edm")["eval.metric"] == defaults.EVAL_METRIC


# Reads of a table field's name with a default that are not config reads of that field.
NOT_CONFIG = {
    ("experiments/__init__.py", "init_checkpoint"): "the toy's student block (not resolved)",
    ("teachers/pixart.py", "schedule"): "teacher.schedule (None-able, not optim.*.schedule)",
    ("teachers/flow_dit.py", "schedule"): "teacher.schedule (None-able; every key optional)",
    ("evaluation/registry.py", "metric"): "eval.metric after resolve: toy configs have none (auto)",
    ("tools/diagnose_guidance.py", "guidance_scale"): "method.guidance_scale, not eval's",
    ("benchmarks/engine_speed.py", "remat"): "a benchmark's report of any config",
    ("benchmarks/versus_torch.py", "remat"): "a benchmark's report of any config",
}
# The engine reads every field it uses and defaults none: main and compose resolve a config before
# it reaches the engine, and its unit tests hand it resolved partial configs
# (testing.engine_config), so a field missing there fails naming it.
ENGINE_DIR = "engine/"
FALLBACK = r"""\.get\(\s*["']([A-Za-z_0-9]+)["']\s*,"""  # .get("name", default)
ON_CFG = r"\bcfg(?:\.\w+)*\.get\("  # A .get on a config: cfg.get(, cfg.train.get(, ...


def _table_names() -> set[str]:
  return {p.rsplit(".", 1)[-1] for kind in BASES for p in config_defaults.table(kind)}


def _engine_fallbacks(src: str, names: set[str]) -> tuple[set[str], list[str]]:
  """(table fields src reads with a default, the .gets src calls on a config)."""
  return set(re.findall(FALLBACK, src)) & names, re.findall(ON_CFG, src)


def test_no_default_fallback_for_a_resolved_field_creeps_back():
  names = _table_names()
  found = []
  for path in glob.glob(os.path.join(REPO, "fdistill_jax", "**", "*.py"), recursive=True):
    rel = os.path.relpath(path, os.path.join(REPO, "fdistill_jax"))
    if rel == "config_defaults.py":
      continue
    src = open(path, encoding="utf-8").read()
    for name in re.findall(FALLBACK, src):
      if name in names and (rel, name) not in NOT_CONFIG:
        found.append(f"{rel}: .get({name!r}, ...)")
  assert not found, found
  # The engine: no fallback for a table field and no .get on a config at all; its other .gets
  # read records (checkpoint metadata, lock files, final metrics) and the environment.
  engine, on_cfg = set(), []
  for path in glob.glob(os.path.join(REPO, "fdistill_jax", ENGINE_DIR, "*.py")):
    fields, calls = _engine_fallbacks(open(path, encoding="utf-8").read(), names)
    engine |= fields
    on_cfg += [f"{os.path.basename(path)}: {c}" for c in calls]
  assert engine == set(), engine
  assert not on_cfg, on_cfg


def test_the_engine_scan_catches_a_fallback():
  src = ('accum = int(cfg.train.get("grad_accum", 1))\n'
         'rules = o.get( "rules", ())\n'
         'optim = cfg.get("optim", {})\n'
         'who = rec.get("what", "?")\n')
  assert _engine_fallbacks(src, _table_names()) == ({"grad_accum", "rules"},
                                                    ["cfg.train.get(", "cfg.get("])


def test_resolve_leaves_a_config_without_a_known_kind_to_the_checks():
  cfg = ml_collections.ConfigDict(dict(teacher=dict(kind="nope"), train=dict(steps=1)))
  assert config_defaults.resolve(cfg).to_dict() == {"teacher": {"kind": "nope"},
                                                    "train": {"steps": 1}}


def test_a_partial_config_resolves_as_the_kind_it_is_given():
  """resolve(cfg, kind): the engine's unit tests hand it partial configs without a teacher block
  (testing.engine_config); their blocks are filled from that kind's table, and no other block."""
  from fdistill_jax import testing  # pylint: disable=import-outside-toplevel
  cfg = testing.engine_config(seed=0, train=dict(grad_accum=2), optim=dict(g=dict(lr=0.1)))
  assert sorted(cfg) == ["optim", "seed", "train"] and cfg.train.grad_accum == 2
  table = config_defaults.table("gmm")
  for path, default in table.items():
    block, leaf = path.split(".")[0], path.rsplit(".", 1)[-1]
    if block == "train" and leaf != "grad_accum":
      assert cfg.train[leaf] == default, path
    elif block == "optim" and leaf != "lr":
      assert cfg.optim.g[leaf] == default, path
  assert cfg.optim.g.lr == 0.1
  for kind in ("gmm", "pixart"):  # The kind's own table (the toy replicates, images shard).
    assert (testing.engine_config(kind, mesh={}).mesh.default_tactic
            == config_defaults.table(kind)["mesh.default_tactic"])
  with pytest.raises(ValueError, match="unknown teacher kind 'nope'"):
    config_defaults.resolve(ml_collections.ConfigDict(), kind="nope")
