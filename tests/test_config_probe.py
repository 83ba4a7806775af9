"""Issue 28 item 9: a bad value in any config field fails `config_checks.check` before anything is
built, with a ConfigError naming the field and what is allowed. Config validation only: no
network is built and nothing trains."""
import functools
import glob
import importlib.util
import os
import re

import ml_collections
import pytest

from fdistill_jax import config_checks, defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAN, INF = float("nan"), float("inf")


@functools.lru_cache(maxsize=None)
def _raw(source: str) -> dict:
  """The config of `source` ('toy': defaults.toy(), else a configs/ file) as a plain dict."""
  if source.startswith("toy") and not source.startswith("toy2d"):
    cfg = defaults.toy()
    if source == "toy_explicit":  # Two 2-D modes given explicitly.
      cfg.teacher.update(dict(mixture="explicit", means=((0.0, 0.0), (1.0, 1.0)), weights=()))
    return cfg.to_dict()
  path = os.path.join(REPO, "configs", source + ".py")
  spec = importlib.util.spec_from_file_location("cfg_under_probe", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config().to_dict()


def _with(source: str, field: str, value) -> ml_collections.ConfigDict:
  """The config of `source` with `field` set to `value` around ConfigDict's type lock (as a config
  file building its own dicts, or a replaced block, would)."""
  import copy  # pylint: disable=import-outside-toplevel
  raw = copy.deepcopy(_raw(source))
  *path, last = field.split(".")
  node = raw
  for p in path:
    node = node.setdefault(p, {})
  node[last] = value
  return ml_collections.ConfigDict(raw)


# (config, field, bad value, fragment of the error). The error must also name config.<field>.
CASES = [
    # The examples.
    ("toy", "optim.generator.clip", -1.0, ">= 0"),
    ("toy", "diffusion.sigma_max", 1e39, "noise level in (0, 100000.0)"),
    ("toy", "student.depth", -2, "an int in [1, 256]"),
    ("digits_t2i_js", "teacher.pixart_config.num_layers", -1, "an int in [1, 1024]"),
    ("toy", "pretrain.batch", 0, "an int in [1, 1048576]"),
    ("toy", "eval.num_samples", 0, "an int in [1, 10000000]"),
    ("digits_js", "eval.num_samples", 0, "an int in [1, 10000000]"),
    ("digits_js", "eval.num_samples", 10 ** 9, "an int in [1, 10000000]"),
    ("digits_js", "method.ratio_bins", 10 ** 9, "an int in [1, 10000]"),
    ("toy", "optim.generator.lr", NAN, "a finite number"),
    ("toy", "train.steps", "100", "an int"),
    ("toy", "train.ema_decays", (1.5,), "(0, 1)"),
    # Engine: seed, optimisers, train loop, mesh, noise levels.
    ("toy", "seed", -1, "an int in [0, 4294967295]"),
    ("toy", "seed", "0", "an int"),
    ("toy", "optim.generator.lr", 5.0, "a learning rate in (0, 1]"),
    ("toy", "optim.generator.lr", True, "a finite number"),
    ("toy", "optim.fake_score.b1", 1.0, "[0, 1)"),
    ("toy", "optim.generator.eps", 0.0, "> 0"),
    ("toy", "optim.generator.weight_decay", -0.1, ">= 0"),
    ("toy", "optim.discriminator.clip", INF, "a finite number"),
    ("toy", "optim.generator.schedule", "linear", "'constant' or 'cosine'"),
    ("toy", "optim.generator.end_lr_ratio", 2.0, "[0, 1]"),
    ("toy", "optim.generatr", {"lr": 1e-4}, "did you mean 'generator'"),
    ("toy", "train.stesp", 100, "did you mean 'steps'"),
    ("toy", "studnet", {"hidden": 8}, "did you mean 'student'"),
    ("toy", "train.batch_size", 0, ">= 1"),
    ("toy", "train.batch_size", 2 ** 30, "an int in [1, 1048576]"),
    ("toy", "train.grad_accum", 0, ">= 1"),
    ("toy", "train.log_every", 0, ">= 1"),
    ("toy", "train.eval_every", -1, ">= 0"),
    ("toy", "train.ema_decays", (0.99, 0.99), "no repeats"),
    ("toy", "train.ema_decays", ("0.99",), "a tuple of finite numbers"),
    ("toy", "train.ema_rampup", NAN, "a finite number"),
    ("toy", "train.tensorboard", 1, "True or False"),
    ("toy", "train.final_eval", "yes", "True or False"),
    ("toy", "mesh.data", 0, "-1 (all remaining devices)"),
    ("toy", "mesh.fsdp", 3, "must divide the 8 devices"),
    ("toy", "mesh.default_tactic", "shard", "allowed"),
    ("toy", "mesh.rules", (("dense",),), "a pair (regex"),
    ("toy", "mesh.fsdp_min_size", -1, ">= 0"),
    ("toy", "diffusion.sigma_min", 0.0, "0 < sigma_min < sigma_max"),
    ("toy", "diffusion.sigma_min", 100.0, "0 < sigma_min < sigma_max"),
    ("toy", "diffusion.sigma_data", -1.0, "> 0"),
    ("toy", "diffusion.sigma_data", 1e6, "noise level in (0, 100000.0)"),
    ("toy", "diffusion.sigma_init", INF, "a finite number"),
    # Toy problem: the exact mixture, the MLPs, the denoiser pretraining.
    ("toy", "teacher.radius", 0.0, "> 0"),
    ("toy", "teacher.scale", -0.1, "> 0"),
    ("toy", "teacher.num_modes", 0, "an int in [1, 100000]"),
    ("toy", "teacher.num_modes", 10 ** 9, "an int in [1, 100000]"),
    ("toy", "teacher.weights", (1.0, -1.0) * 4, "> 0"),
    ("toy", "teacher.mixture", "spiral", "allowed"),
    ("toy_explicit", "teacher.means", ((0.0, 0.0), (1.0,)), "of one dimension"),
    ("toy_explicit", "teacher.means", ((0.0, NAN),), "finite coordinates"),
    ("toy_explicit", "teacher.scales", (0.1, 0.0), "> 0"),
    ("toy", "teacher.dim", 0, "[1, 65536]"),
    ("toy", "teacher.spread", -1.0, "> 0"),
    ("toy", "teacher.grid_size", 10 ** 6, "[1, 1000]"),
    ("toy", "disc.depth", 0, "an int in [1, 256]"),
    ("toy", "disc.hidden", -5, "an int in [1, 65536]"),
    ("toy", "pretrain.steps", 0, ">= 1"),
    ("toy", "pretrain.lr", 0.0, "a learning rate"),
    ("toy", "pretrain.p_std", 0.0, "a std of ln σ in (0, 10]"),
    ("toy", "pretrain.p_mean", 1e9, "a mean of ln σ in [-20, 20]"),
    ("toy", "pretrain.batch", 10 ** 9, "an int in [1, 1048576]"),
    ("toy", "eval.teacher_nfe", 0, "an int in [1, 10000]"),
    # f-distill and the other methods.
    ("toy", "method.ratio_ema", 1.0, "[0, 1)"),
    ("toy", "method.logit_clip", 0.0, "> 0"),
    ("toy", "method.gan_weight_gen", -1.0, ">= 0"),
    ("toy", "method.r1_weight", NAN, "a finite number"),
    ("toy", "method.time_lo", 0.999, "0 <= time_lo < time_hi <= 1"),
    ("toy", "method.guidance_sigma_max", NAN, "(or inf)"),
    ("toy", "method.critic_steps", 2.5, "an int"),
    ("toy", "method.divergence", 3, "a string"),
    ("toy", "method.ratio_normalization", "True", "True or False"),
    ("toy", "method.ratio_bin", 10, "did you mean 'ratio_bins'"),
    ("toy2d_sid", "method.generator_loss_scale", 0.0, "> 0"),
    ("toy2d_sid", "method.fake_score_reduction", "max", "allowed"),
    ("toy2d_sid", "method.alpha", -1.0, ">= 0"),
    ("toy2d_sim_huber", "method.loss_scale", -1.0, "> 0"),
    ("toy2d_kd", "method.pairs_steps", 0, "an int in [1, 10000] (Heun steps)"),
    ("toy2d_kd", "method.pairs_seed", -1, "[0, 4294967295]"),
    ("toy2d_kd", "method.reg_huber_c", -1.0, ">= 0"),
    ("toy2d_pd", "method.pd_base_steps", 2 ** 20, "an int in [2, 4096]"),
    ("digits_dmd", "method.reg_weight", -1.0, ">= 0"),
    ("digits_js", "method.p_std", 0.0, "(0, 10]"),
    ("digits_js", "method.p_mean", -1e9, "[-20, 20]"),
    ("toy2d_sid", "method.fake_p_std", 100.0, "(0, 10]"),
    ("toy2d_kd", "method.pairs_num", 10 ** 9, "[1, 10000000]"),
    ("digits_js", "teacher.precond_kwargs.sigma_data", 1e9, "(0, 100000.0)"),
    # EDM teacher, image data, discriminator heads and evaluation.
    ("digits_js", "teacher.precond_kwargs.model_channels", -16, "an int in [1, 4096]"),
    ("digits_js", "teacher.precond_kwargs.chanel_mult", (1, 2), "not an argument of an EDM"),
    ("digits_js", "teacher.precond_kwargs.dropout", 1.0, "a probability in [0, 1)"),
    ("digits_js", "teacher.precond_kwargs.model_type", "ViT", "allowed"),
    ("digits_js", "teacher.precond_kwargs.channel_mult", (1, "2"), "a tuple of ints"),
    ("digits_js", "teacher.dtype", "float16", "allowed"),
    ("digits_js", "teacher.remat", "yes", "True or False"),
    ("digits_js", "dataset.resolution", 0, "an int in [1, 8192] (pixels)"),
    ("digits_js", "dataset.xflip", "no", "True or False"),
    ("digits_js", "dataset.reader", "fast", "allowed"),
    ("digits_js", "disc.channels", 0, "[1, 65536]"),
    ("digits_js", "disc.feature_keys", (1,), "a tuple of strings"),
    ("digits_js", "eval.nfe", 0, "[1, 10000]"),
    ("digits_js", "eval.teacher_nfes", (1, 0), "[1, 10000]"),
    ("digits_js", "eval.metric", "is", "allowed"),
    ("digits_js", "eval.sampler", "euler", "allowed"),
    # PixArt teacher, text-to-image evaluation.
    ("digits_t2i_js", "teacher.pixart_config.patch_size", 0, "[1, 64]"),
    ("digits_t2i_js", "teacher.pixart_config.out_channels", 3, "2·in_channels"),
    ("digits_t2i_js", "teacher.pixart_config.bogus", 1, "not a PixArt config field"),
    ("digits_t2i_js", "teacher.pixart_config.norm_eps", -1e-6, "(0, 1]"),
    ("digits_t2i_js", "teacher.max_length", 0, "[1, 4096]"),
    ("digits_t2i_js", "eval.guidance_scale", -1.0, ">= 0"),
    ("digits_t2i_js", "eval.teacher_solver", "euler", "allowed"),
    ("digits_t2i_js", "eval.num_prompts", 0, "[1, 1000000]"),
    ("digits_t2i_js", "eval.per_prompt_samples", -1, ">= 0"),
    ("digits_t2i_js", "train.batch_size", "32", "an int"),
    ("digits_t2i_js", "eval.metric", "fid", "allowed"),
    ("teachers/digits_t2i_text", "teacher.text_encoder.num_layers", -1, "[1, 1024]"),
    ("teachers/digits_t2i_text", "teacher.text_encoder.d_model", "64", "an int"),
]


@pytest.mark.parametrize("source,field,value,fragment", CASES,
                         ids=[f"{s}:{f}={v!r}" for s, f, v, _ in CASES])
def test_bad_value_is_refused_naming_the_field(source, field, value, fragment):
  cfg = _with(source, field, value)
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(cfg, num_devices=8)
  msg = str(e.value)
  assert re.search(re.escape("config." + field) + r"\b", msg), msg
  assert fragment in msg, msg


# method.critic_steps has one rule (methods/common.CRITIC_STEPS_RULE) for every method with a
# critic: each refuses 0, a float and a bool with the same words.
CRITIC_CASES = [(src, v) for src in ("toy2d_js", "toy2d_dmd", "toy2d_sid", "toy2d_sim_l2",
                                     "toy2d_uni_fkl", "digits_dmd2") for v in (0, 2.5, True)]


@pytest.mark.parametrize("source,value", CRITIC_CASES, ids=[f"{s}={v!r}" for s, v in CRITIC_CASES])
def test_critic_steps_has_one_rule_for_every_method(source, value):
  with pytest.raises(config_checks.ConfigError, match=r"config\.method\.critic_steps=.*an? int"):
    config_checks.check(_with(source, "method.critic_steps", value), num_devices=8)


# A typo in eval.metric once meant no FID and no error: each kind names the field, the value and
# its choices (experiments.eval_metric), in the checks and in the evaluators the Python API builds.
METRIC_CHOICES = [("digits_js", ("auto", "digits", "fid", "none")),
                  ("digits_t2i_js", ("auto", "none", "digits")),
                  ("pixart512_js", ("auto", "none", "digits"))]


@pytest.mark.parametrize("source,allowed", METRIC_CHOICES, ids=[s for s, _ in METRIC_CHOICES])
def test_a_typo_in_eval_metric_names_the_field_value_and_choices(source, allowed):
  from fdistill_jax import experiments  # pylint: disable=import-outside-toplevel
  want = re.escape(f"config.eval.metric='fdi' is invalid: allowed: {allowed}")
  cfg = _with(source, "eval.metric", "fdi")
  with pytest.raises(config_checks.ConfigError, match=want):
    config_checks.check(cfg, num_devices=8)
  with pytest.raises(config_checks.ConfigError, match=want):
    experiments.eval_metric(cfg)


def test_image_and_t2i_evaluators_refuse_a_metric_typo_unchecked():
  """Built without config_checks (compose.build, the Python API): the evaluators refuse it too,
  before building anything (so no networks are passed here)."""
  # pylint: disable=import-outside-toplevel
  from fdistill_jax.experiments import image_eval, t2i_eval
  with pytest.raises(config_checks.ConfigError, match=r"config\.eval\.metric='fdi'"):
    image_eval.evaluator(_with("digits_js", "eval.metric", "fdi"), None, None, None, "")
  with pytest.raises(config_checks.ConfigError, match=r"config\.eval\.metric='fdi'"):
    t2i_eval.eval_rows(_with("digits_t2i_js", "eval.metric", "fdi"), None)


def test_image_and_t2i_configs_without_eval_metric_read_one_default():
  """A config that leaves eval.metric out gets defaults.EVAL_METRIC in both evaluations (the
  t2i fallback was 'none', the image one 'auto'); 'auto' is the digits metric on pixel digits."""
  # pylint: disable=import-outside-toplevel
  from fdistill_jax import experiments
  from fdistill_jax.experiments import image_eval, t2i_eval
  assert defaults.EVAL_METRIC == defaults.image().eval.metric == defaults.t2i().eval.metric
  for source, allowed in (("digits_js", image_eval.METRICS), ("digits_t2i_js", t2i_eval.METRICS)):
    raw = _raw(source)
    cfg = ml_collections.ConfigDict({**raw, "eval": {k: v for k, v in raw["eval"].items()
                                                     if k != "metric"}})
    config_checks.check(cfg, num_devices=8)
    assert experiments.eval_metric(cfg) == defaults.EVAL_METRIC
  assert t2i_eval._metric(cfg) == "digits"  # pylint: disable=protected-access


def test_every_shipped_config_passes():
  paths = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True))
  assert len(paths) > 40
  for path in paths:
    source = os.path.relpath(path, os.path.join(REPO, "configs"))[:-3]
    config_checks.check(ml_collections.ConfigDict(_raw(source)), num_devices=8)


def test_defaults_in_the_allowed_range_still_pass():
  """Values at the edges of the allowed ranges are accepted: clip 0 (off), an int for a float,
  inf where the default is inf, the top ratio_bins, one sample."""
  ok = [("toy", "optim.generator.clip", 0.0), ("toy", "diffusion.sigma_max", 80),
        ("toy", "method.guidance_sigma_max", INF), ("toy", "method.ratio_bins", 10_000),
        ("toy", "eval.num_samples", 1), ("toy", "train.ema_decays", [0.9, 0.99])]
  for source, field, value in ok:
    config_checks.check(_with(source, field, value), num_devices=8)


def test_every_field_of_the_defaults_has_a_known_type():
  """check_types' reference covers every field of every default builder (nothing is unchecked
  because its default is missing from the reference)."""
  for kind in ("gmm", "edm", "pixart"):
    ref = config_checks._reference(kind)  # pylint: disable=protected-access
    for path, spec in ref.items():
      assert spec.kinds, path
      assert not any(isinstance(k, str) and k not in ("none", "bool", "int", "float", "str",
                                                        "seq", "dict") for k in spec.kinds), path


# --------------------------------------------------------------- fields the method does not read
# A config carries method fields its method does not read (edm_training configs hold a whole
# f-distill block; a SIM config may hold SiD's). Each is still checked, against the rule of a
# method that reads it (issue 28 item 9: every field present), and the error says whose it is.
UNREAD = [
    ("teachers/digits", "method.ratio_ema", 5.0, "in [0, 1)"),
    ("teachers/digits", "method.divergence", "bogus", "allowed: ("),
    ("teachers/digits", "method.sigma_law", "bogus", "allowed: ('karras_index', 'uniform_t')"),
    ("teachers/digits", "method.disc_features", "pixels", "allowed: ('teacher', 'fake_score')"),
    ("teachers/digits_t2i", "method.time_hi", 2.0, "a fraction of the Karras levels in (0, 1]"),
    ("teachers/digits_t2i", "method.ratio_lower", -1.0, "> 0"),
    ("teachers/edm_cifar10", "method.logit_clip", -1.0, "> 0"),
    ("teachers/edm_cifar10", "method.ratio_bins", 10 ** 9, "an int in [1, 10000]"),
    ("teachers/edm_cifar10", "method.guidance_sigma_max", 0.0, "a noise level"),
    ("cifar10_sid", "method.ratio_bins", 0, "an int in [1, 10000]"),
    ("toy2d_js", "method.pairs_num", 0, "an int in [1, 10000000]"),
    ("toy2d_js", "method.reg_distance", "l3", "allowed: ('l2', 'l1', 'pseudo_huber')"),
    ("toy2d_kd", "method.weighting", "bogus", "allowed: ('none', 'sid'); allowed: "
     "('truncated_snr', 'snr_plus_one', 'none')"),
    ("toy2d_kd", "method.pd_base_steps", 6, "a power of 2 in [2, 4096]"),
    ("toy2d_pd", "method.fake_sigma_law", "bogus", "allowed: ('lognormal', 'generator')"),
    ("digits_js", "method.reg_weight", -1.0, ">= 0"),
]


@pytest.mark.parametrize("source,field,value,fragment", UNREAD,
                         ids=[f"{s}:{f}={v!r}" for s, f, v, _ in UNREAD])
def test_unread_method_field_is_checked_all_the_same(source, field, value, fragment):
  cfg = _with(source, field, value)
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(cfg, num_devices=8)
  msg = str(e.value)
  assert re.search(re.escape("config." + field) + r"\b", msg), msg
  assert fragment in msg and "does not read it" in msg, msg


# The chosen method's own fields now all have a rule too (were: only type-checked).
OWN = [
    ("toy2d_pd", "method.student_steps", 10 ** 6, "an int in [1, 4096]"),
    ("toy2d_pd", "method.teacher_params", 3, "a string"),
    ("toy2d_sid", "method.kappa_real", -2.0, "a guidance scale >= 0"),
    ("toy2d_sim_huber", "method.huber_c", -1.0, ">= 0"),
    ("toy2d_js", "method.ratio_lower", 0.0, "> 0"),
    # SIM reads SiD's fake-score fields (sid.check_config): SiD's rules are its own.
    ("toy2d_sim_huber", "method.kappa_fake", -1.0, "a guidance scale >= 0"),
    ("toy2d_sim_huber", "method.alpha", -1.0, ">= 0"),
]


@pytest.mark.parametrize("source,field,value,fragment", OWN,
                         ids=[f"{s}:{f}={v!r}" for s, f, v, _ in OWN])
def test_own_method_field_rules(source, field, value, fragment):
  cfg = _with(source, field, value)
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(cfg, num_devices=8)
  assert "config." + field in str(e.value) and fragment in str(e.value), str(e.value)


def test_every_method_field_has_a_rule():
  """No field of any method block (of any default config or method_config) lacks a range rule in
  some method's FIELDS, so none can go unchecked, read or not."""
  from fdistill_jax.methods import registry  # pylint: disable=import-outside-toplevel
  ruled = set()
  for name in registry.names():
    ruled |= set(registry.field_rules(name))
  for kind in ("gmm", "edm", "pixart"):
    fields = {p for p in config_checks._reference(kind)  # pylint: disable=protected-access
              if p.startswith("method.") and p != "method.name"}
    assert fields <= ruled, sorted(fields - ruled)


# ------------------------------------------------------------------------ missing required fields
def _without(source: str, field: str) -> ml_collections.ConfigDict:
  import copy  # pylint: disable=import-outside-toplevel
  raw = copy.deepcopy(_raw(source))
  *path, last = field.split(".")
  node = raw
  for p in path:
    node = node[p]
  del node[last]
  return ml_collections.ConfigDict(raw)


MISSING = [  # (config, deleted field, the field the error names, fragment of what is expected)
    ("toy", "train.steps", "train.steps", "expected an int"),
    ("toy", "optim.generator.lr", "optim.generator.lr", "a learning rate in (0, 1]"),
    ("toy", "method.ratio_ema", "method.ratio_ema", "in [0, 1)"),
    ("toy", "teacher.mixture", "teacher.mixture", "a string"),
    ("toy", "student", "student", "a block of fields"),
    ("toy", "student.depth", "student.depth", "an int in [1, 256]"),
    ("toy", "train", "train.steps", "expected an int"),
    ("toy", "method.name", "method.name", "allowed: ("),
    ("toy", "teacher.kind", "teacher.kind", "allowed: ("),
    ("toy2d_kd", "method.pairs_steps", "method.pairs_steps", "an int in [1, 10000] (Heun steps)"),
    ("toy2d_pd", "method.pd_base_steps", "method.pd_base_steps", "a power of 2"),
    ("digits_js", "dataset.resolution", "dataset.resolution", "an int in [1, 8192] (pixels)"),
    ("digits_js", "diffusion.sigma_max", "diffusion.sigma_max", "a noise level in (0, 100000.0)"),
    ("digits_js", "optim.fake_score.b1", "optim.fake_score.b1", "a finite number"),
    ("digits_sid", "method.t_max", "method.t_max", "in (0, 1000]"),
    ("digits_sim_huber", "method.huber_space", "method.huber_space", "allowed: ('score', 'x0')"),
    ("digits_t2i_js", "eval.num_samples", "eval.num_samples", "an int in [1, 10000000]"),
    ("digits_t2i_js", "eval.sampler", "eval.sampler", "expected allowed: ("),
    ("digits_js", "eval.sampler", "eval.sampler", "expected allowed: ("),
    ("digits_t2i_sid_lsg", "method.kappa_real", "method.kappa_real", "a guidance scale >= 0"),
    ("teachers/edm_cifar10", "method.p_mean", "method.p_mean", "a mean of ln σ in [-20, 20]"),
    ("teachers/edm_cifar10", "train.keep_checkpoints", "train.keep_checkpoints", "an int"),
    ("teachers/digits", "seed", "seed", "an int in [0, 4294967295]"),
    ("teachers/digits_t2i", "method.p_std", "method.p_std", "a std of ln σ in (0, 10]"),
]


@pytest.mark.parametrize("source,field,named,fragment", MISSING,
                         ids=[f"{s}:-{f}" for s, f, _, _ in MISSING])
def test_missing_required_field_is_named(source, field, named, fragment):
  cfg = _without(source, field)
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.check(cfg, num_devices=8)
  msg = str(e.value)
  assert re.search(re.escape("config." + named) + r"\b", msg), msg
  assert fragment in msg, msg


def test_a_field_read_with_a_default_may_be_left_out():
  """Optional fields (read with .get) are not required: leaving them out still passes."""
  for source, field in [("toy", "train.grad_accum"), ("toy", "train.tensorboard"),
                        ("digits_js", "teacher.remat"), ("toy", "optim.generator.schedule"),
                        ("toy2d_sid", "method.alpha"), ("toy2d_kd", "optim.fake_score"),
                        ("toy2d_sid", "optim.discriminator")]:
    config_checks.check(_without(source, field), num_devices=8)


def test_fields_read_with_a_default_are_never_required():
  """config_checks._DEFAULTED holds every config-field name the package reads with a default
  (`.get("name"` or `"name" in ...`): re-derived here from the source."""
  leaves = set()
  for kind in ("gmm", "edm", "pixart"):
    leaves |= {p.rsplit(".", 1)[-1] for p in config_checks._reference(kind)}  # pylint: disable=protected-access
  found = set()
  for path in glob.glob(os.path.join(REPO, "fdistill_jax", "**", "*.py"), recursive=True):
    if path.endswith("config_checks.py"):  # Reads absent fields only to name them.
      continue
    src = open(path, encoding="utf-8").read()
    found |= set(re.findall(r"""\.get\(\s*["']([A-Za-z_0-9]+)["']""", src))
    found |= set(re.findall(r"""["']([A-Za-z_0-9]+)["']\s+(?:not )?in\s+(?:cfg|m|t|o|d)\b""", src))
  missing = (found & leaves) - config_checks._DEFAULTED  # pylint: disable=protected-access
  assert not missing, sorted(missing)


# ------------------------------------------------------------------ every field, a hostile value
def _leaves(d: dict, prefix: str = ""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaves(v, prefix + k + ".")
    else:
      yield prefix + k, v


SWEEP = ("toy", "toy2d_kd", "toy2d_pd", "digits_js", "digits_sid_lsg", "digits_t2i_js",
         "teachers/digits_t2i_text", "teachers/edm_cifar10")


@pytest.mark.parametrize("source", SWEEP)
def test_every_field_refuses_a_value_of_the_wrong_kind_by_name(source):
  """The probe over every field (not a hand-picked table): each leaf of the config, set to NaN
  (and, where it holds a number, bool or tuple, to a string), is refused with a ConfigError
  naming that field or the block it sits in. Free-form strings (paths, keys) take any string."""
  accepted = []
  for field, v in _leaves(_raw(source)):
    for bad in (NAN,) + (() if isinstance(v, str) else ("bogus",)):
      try:
        config_checks.check(_with(source, field, bad), num_devices=8)
      except config_checks.ConfigError as e:
        parent = field.rsplit(".", 1)[0]
        assert f"config.{field}" in str(e) or f"config.{parent}" in str(e), (field, str(e))
      else:
        accepted.append((field, bad))
  assert not accepted, accepted
