"""The metric-family registry (evaluation/registry.py): config.eval.metric is read in one place.

Every family builds for each problem that offers it and is refused, naming config.eval.metric and
the problem's choices, by the others; 'auto' resolves as the evaluators resolved it before the
registry; the evaluators' METRICS are the registry's names.
"""
import re

import pytest

from fdistill_jax import defaults, experiments, teachers
from fdistill_jax.evaluation import digits_metric, fid, registry, toy_metrics
from fdistill_jax.experiments import image_eval, t2i_eval, toy
from fdistill_jax.nets import Nets
from fdistill_jax.validation import ConfigError

BASE = {registry.TOY: defaults.toy, registry.IMAGE: defaults.image, registry.T2I: defaults.t2i}
SHORT = {registry.TOY: "toy", registry.IMAGE: "image", registry.T2I: "t2i"}


def _cfg(problem, metric=None, **fields):
  cfg = BASE[problem]()
  if metric is not None:
    cfg.eval.metric = metric
  for path, value in fields.items():
    block, key = path.split("__")
    cfg[block][key] = value
  return cfg


def test_every_problem_of_a_teacher_family_has_its_metric_choices():
  assert {f.problem for f in teachers.FAMILIES.values()} == set(registry.PROBLEMS)
  for problem, offered in registry.PROBLEMS.items():
    assert set(offered) <= set(registry.FAMILIES) and registry.AUTO not in offered
    for name in offered:
      assert problem in registry.FAMILIES[name].problems


def test_the_evaluators_metric_choices_are_the_registrys():
  assert image_eval.METRICS == registry.names(registry.IMAGE) == ("auto", "digits", "fid", "none")
  assert t2i_eval.METRICS == registry.names(registry.T2I) == ("auto", "none", "digits")
  assert registry.names(registry.TOY) == ("auto", "toy")


CASES = [(p, n) for p in registry.PROBLEMS for n in registry.FAMILIES]


@pytest.mark.parametrize("problem,name", CASES, ids=[f"{SHORT[p]}-{n}" for p, n in CASES])
def test_each_family_builds_where_offered_and_is_named_elsewhere(problem, name, monkeypatch,
                                                                 tmp_path):
  cfg = _cfg(problem, name)
  if problem not in registry.FAMILIES[name].problems:
    want = re.escape(f"config.eval.metric={name!r} is invalid: allowed: "
                     f"{registry.names(problem)}")
    with pytest.raises(ConfigError, match=want):
      registry.build(cfg, registry.Context(), problem)
    with pytest.raises(ConfigError, match=want):
      experiments.eval_metric(cfg)  # The problem of cfg's teacher family.
    return
  # The heavy parts are stand-ins: the digits classifier's training, the Inception weights.
  monkeypatch.setattr(digits_metric.DigitsMetric, "create",
                      classmethod(lambda cls, resolution, cache_dir: ("digits", resolution,
                                                                      cache_dir)))
  monkeypatch.setattr(fid.FeatureExtractor, "from_weight_file",
                      classmethod(lambda cls, path, batch_size: ("inception", batch_size)))
  # The toy metric's computation (tests/test_toy_metrics.py) as a stand-in that shows its inputs.
  monkeypatch.setattr(toy_metrics, "evaluate", lambda target, x, key: ("toy", target, x, key))
  gmm = toy.make_mixture(_cfg(registry.TOY).teacher)
  if name == "fid":
    for f in ("fid_weights", "fid_reference"):
      (tmp_path / f).write_bytes(b"")
      cfg.eval[f] = str(tmp_path / f)
  ctx = registry.Context(workdir=str(tmp_path), target=gmm, image_shape=(16, 16, 1),
                         nets=Nets(student=None, teacher=None, disc=None, sigma_init=80.0,
                                   data_shape=(16, 16, 1)))
  got, metric = registry.build(cfg, ctx, problem)
  assert got == name and experiments.eval_metric(cfg) == name
  if name == "digits":
    assert metric == ("digits", 16, str(tmp_path))
  elif name == "fid":
    assert callable(metric)
  elif name == "toy":  # evaluate(the run's exact mixture, samples, key).
    assert metric("samples", "key") == ("toy", gmm, "samples", "key")
  else:
    assert metric is None


def test_fid_without_its_files_builds_nothing():
  cfg = _cfg(registry.IMAGE, "fid")
  assert registry.build(cfg, registry.Context(), registry.IMAGE) == ("fid", None)


# (problem, eval.metric, config fields, the family the evaluators used before the registry):
# image_eval scored the digits metric for 'auto' or 'digits' on the digits dataset only;
# t2i_eval._metric: 'auto' is digits on pixel-space digits, an explicit 'digits' always.
AUTO_CASES = [
    (registry.TOY, None, {}, "toy"),
    (registry.IMAGE, "auto", {}, "digits"),
    (registry.IMAGE, "auto", {"dataset__name": "cifar10"}, "none"),
    (registry.IMAGE, "digits", {"dataset__name": "cifar10"}, "none"),
    (registry.IMAGE, "digits", {}, "digits"),
    (registry.IMAGE, "fid", {}, "fid"),
    (registry.IMAGE, "none", {}, "none"),
    (registry.T2I, "auto", {}, "digits"),
    (registry.T2I, "auto", {"teacher__vae": "vae/"}, "none"),
    (registry.T2I, "auto", {"dataset__name": "prompts"}, "none"),
    (registry.T2I, "digits", {"dataset__name": "prompts"}, "digits"),
    (registry.T2I, "digits", {"teacher__vae": "vae/"}, "digits"),
    (registry.T2I, "none", {}, "none"),
]


@pytest.mark.parametrize("problem,metric,fields,want", AUTO_CASES,
                         ids=[f"{SHORT[p]}-{m}-{'-'.join(map(str, f.values())) or 'default'}"
                              for p, m, f, _ in AUTO_CASES])
def test_auto_resolves_as_before(problem, metric, fields, want):
  cfg = _cfg(problem, metric, **fields)
  assert registry.resolve(cfg) == registry.resolve(cfg, problem) == want
  if problem == registry.T2I:
    assert t2i_eval._metric(cfg) == want  # pylint: disable=protected-access


@pytest.mark.parametrize("problem", list(registry.PROBLEMS), ids=list(SHORT.values()))
def test_a_typo_names_the_field_the_value_and_the_problems_names(problem):
  cfg = _cfg(problem, "fdi")
  want = re.escape(f"config.eval.metric='fdi' is invalid: allowed: {registry.names(problem)}")
  for call in (lambda: registry.resolve(cfg), lambda: experiments.eval_metric(cfg),
               lambda: registry.build(cfg, registry.Context(), problem)):
    with pytest.raises(ConfigError, match=want):
      call()
