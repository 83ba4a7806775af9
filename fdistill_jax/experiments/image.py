"""Image problems: EDM teachers (NVIDIA's files or our own), image data, image metrics.

`build` composes small builders with one job each:
  teacher_network  the frozen EDMPrecond of config.teacher: loaded from teacher.checkpoint
                   (.pkl / .safetensors / .pt, architecture from the file) or, with no checkpoint,
                   built from teacher.precond_kwargs with random weights (a loud warning: for
                   smoke tests and benchmarks of the full architecture only);
  condition_spec   class labels (one-hot) for class-conditional teachers, else none;
  networks         the Nets: generator and fake score start as copies of the teacher (σ_init·z at
                   σ_init in), or the generator from student.init_checkpoint (a distilled
                   generator of the teacher's architecture, e.g. SiD's); FastGen's conv heads
                   on named feature maps of the frozen teacher ('enc<res>', 'bottleneck') or of
                   the fake score;
  input_data       a resumable pipeline over fdistill_jax.data (digits, TFDS, EDM zips, folders,
                   arrays, synthetic), its position saved in checkpoints; real images pass the
                   experiment's codec (identity in pixel space) before the real-data branches;
  image_eval       samplers, the digits metric / FID, PNG grids (experiments/image_eval.py);
                   samples are decoded by the codec before grids and metrics.
"""
from __future__ import annotations

import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from fdistill_jax import codecs, conditioning
from fdistill_jax import data as data_lib
from fdistill_jax import experiments
from fdistill_jax import validation as V
from fdistill_jax.experiments import Experiment, image_eval
from fdistill_jax.models.edm import build_edm_precond
from fdistill_jax.models.edm import precond as precond_lib
from fdistill_jax.models.heads import MultiConvHead
from fdistill_jax.teachers.edm import check_precond_kwargs, load_edm
from fdistill_jax.validation import ConfigError, need

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DATASETS = data_lib.DATASETS + ("synthetic",)  # synthetic: random images for step-speed runs.
_INIT = "student.init_checkpoint"


METRICS = image_eval.METRICS
_KW = "teacher.precond_kwargs"
RULES = {  # Beyond teachers/edm.check_precond_kwargs (types and finiteness: check_types).
    f"{_KW}.model_type": V.one_of(*precond_lib.MODEL_TYPES),
    f"{_KW}.embedding_type": V.one_of("positional", "fourier"),
    f"{_KW}.encoder_type": V.one_of("standard", "skip", "residual"),
    f"{_KW}.decoder_type": V.one_of("standard", "skip"),
    f"{_KW}.sigma_data": V.within(0, 1e5, "a noise level", lo_open=True, hi_open=True),
    "eval.sampler": V.one_of(*image_eval.SAMPLERS),
    "student.init_checkpoint": V.text("a path (.pkl / .safetensors / .pt; '' = the teacher's)"),
}


def check_config(cfg) -> None:
  """Validates the fields of an 'edm' teacher, its data and its evaluation; raises ConfigError."""
  t = cfg.teacher
  V.check_fields(cfg, experiments.IMAGE_RULES)
  V.check_fields(cfg, RULES)
  if t.get("precond_kwargs"):
    kw = t.precond_kwargs
    mt = kw.get("model_type", "SongUNet")
    known = precond_lib._PRECOND_KEYS + precond_lib._MODEL_KEYS.get(mt, ())  # pylint: disable=protected-access
    unknown = sorted(set(kw) - set(known))
    for k in unknown:
      need(False, f"{_KW}.{k}", kw[k], f"not an argument of an EDM {mt}; allowed: {sorted(known)}")
    try:
      check_precond_kwargs(kw.to_dict(), "config")
    except ValueError as e:  # "config: precond_kwargs['key']=..." -> "config.teacher.....key=...".
      raise ConfigError(re.sub(r"^config: precond_kwargs\['(\w+)'\]", rf"config.{_KW}.\1", str(e))
                        ) from e
  need(t.dtype in DTYPES, "teacher.dtype", t.dtype,
       f"allowed: {tuple(DTYPES)}")
  need(bool(t.get("checkpoint")) or bool(t.get("precond_kwargs")), "teacher.checkpoint",
       t.get("checkpoint"), "a teacher file, or teacher.precond_kwargs for random weights")
  need(cfg.dataset.name in DATASETS, "dataset.name", cfg.dataset.name, f"allowed: {DATASETS}")
  if cfg.disc.enabled:
    need(len(cfg.disc.feature_keys) > 0, "disc.feature_keys", cfg.disc.feature_keys,
         "name at least one feature map ('enc<res>' or 'bottleneck')")
  need(cfg.eval.sampler in image_eval.SAMPLERS, "eval.sampler", cfg.eval.sampler,
       f"allowed: {image_eval.SAMPLERS}")
  experiments.eval_metric(cfg)


def flat_features(feats: dict) -> dict:
  """{'encoder': {res: map}, 'bottleneck': map} -> {'enc<res>': map, 'bottleneck': map}."""
  out = {f"enc{r}": v for r, v in feats.get("encoder", {}).items()}
  if "bottleneck" in feats:
    out["bottleneck"] = feats["bottleneck"]
  return out


# ============================================================================== teacher
def teacher_network(cfg, needs_teacher: bool = True):
  """(module, variables) of the configured EDM teacher."""
  t = cfg.teacher
  dtype = DTYPES[t.dtype]
  kwargs = t.precond_kwargs.to_dict() if t.get("precond_kwargs") else None
  if t.checkpoint:
    if not epath.Path(t.checkpoint).exists():  # Local or gs://.
      raise FileNotFoundError(f"config.teacher.checkpoint={t.checkpoint!r} does not exist "
                              "(see docs/teachers.md 'Pretrained EDM teachers' for where to get "
                              "NVIDIA's EDM files)")
    return load_edm(t.checkpoint, kwargs, dtype=dtype, remat=t.remat)
  if kwargs is None:
    raise ValueError("config.teacher needs a checkpoint or precond_kwargs")
  module = build_edm_precond(kwargs, dtype=dtype, remat=t.remat)
  if needs_teacher:
    logging.warning("=" * 78 + "\nNO TEACHER CHECKPOINT (config.teacher.checkpoint is empty): "
                    "the teacher has RANDOM weights.\nThis run only exercises the architecture, "
                    "sharding and step speed; its samples mean nothing.\n" + "=" * 78)
  key = json.dumps(kwargs, sort_keys=True, default=str)
  return module, _random_variables(key, t.dtype, t.init_seed)


def generator_init(cfg, variables) -> dict | None:
  """The generator's initial params from config.student.init_checkpoint (a file load_edm reads:
  .pkl / .safetensors / .pt), or None (the generator starts from the teacher). The official
  Uni-Instruct runs start theirs from a SiD one-step generator (--sid_model) while the fake score
  still copies the teacher; the file must hold the teacher's architecture, parameter for
  parameter (its buffers too: the nets share the teacher's constants)."""
  path = cfg.student.init_checkpoint
  if not path:
    return None
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"config.{_INIT}={path!r} does not exist")
  t = cfg.teacher
  kwargs = t.precond_kwargs.to_dict() if t.get("precond_kwargs") else None
  try:  # The teacher's architecture when the config names it, else the file's own.
    _, init_vars = load_edm(path, kwargs, dtype=DTYPES[t.dtype])
  except ValueError as e:  # A state_dict that does not fit, or no architecture in the file.
    raise ValueError(f"config.{_INIT}={path!r} is not a network of the teacher's architecture: "
                     f"{e}") from e
  want = dict(jax.tree_util.tree_flatten_with_path(variables)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(init_vars)[0])
  for k in list(want) + [k for k in got if k not in want]:
    name = jax.tree_util.keystr(k, simple=True, separator="/")
    a, b = want.get(k), got.get(k)
    if a is None or b is None or a.shape != b.shape:
      shape = lambda x: "absent" if x is None else tuple(x.shape)
      raise ValueError(f"config.{_INIT}={path!r} does not have the teacher's architecture: "
                       f"parameter {name} is {shape(b)} in the file, {shape(a)} in the teacher")
    if k[0].key != "params" and not np.array_equal(np.asarray(a), np.asarray(b)):
      raise ValueError(f"config.{_INIT}={path!r}: buffer {name} differs from the teacher's (the "
                       "generator would run with the teacher's)")
  return jax.tree.map(lambda x, ref: jnp.asarray(x, ref.dtype), init_vars["params"],
                      variables["params"])


@functools.lru_cache(maxsize=2)
def _random_variables(kwargs_json: str, dtype: str, seed: int):
  """Flax-initialised variables of an EDMPrecond, memoised per (architecture, seed) because the
  init compiles for tens of seconds on CPU and eval/export/sample rebuild the same experiment."""
  module = build_edm_precond(json.loads(kwargs_json), dtype=DTYPES[dtype])
  res, ch = module.img_resolution, module.img_channels
  # An 'rbg' key: XLA compiles Flax's hundreds of threefry draws ~5x slower on CPU.
  variables = jax.jit(module.init)(jax.random.key(seed, impl="rbg"),
                                   jnp.zeros((1, res, res, ch)), jnp.ones((1,)),
                                   jnp.zeros((1, module.label_dim)) if module.label_dim else None)
  return jax.device_get(variables)


def condition_spec(label_dim: int) -> conditioning.ConditionSpec:
  """One-hot class labels for a class-conditional EDM network, else no condition."""
  return conditioning.ClassLabels(label_dim) if label_dim else conditioning.Unconditional()


# ============================================================================== networks
def networks(cfg, module, variables, spec: conditioning.ConditionSpec,
             generator_params: dict | None = None):
  """(Nets, init_params) of an EDM teacher: student = teacher architecture, conv disc heads.
  generator_params: the generator's initial params (generator_init); None = the teacher's."""
  consts = {k: v for k, v in variables.items() if k != "params"}  # e.g. NCSN++ Fourier freqs
  shape = (module.img_resolution, module.img_resolution, module.img_channels)
  conditional = bool(module.label_dim)

  def apply(params, x, sigma, cond, key, features, augment_labels=None):
    out = module.apply({"params": params, **consts}, x, sigma, cond if conditional else None,
                       augment_labels=augment_labels, deterministic=key is None,
                       return_features=features,
                       rngs=None if key is None else {"dropout": key})
    return (out[0], flat_features(out[1])) if features else out

  def student(params, x, sigma, cond, *, key=None, features=False, augment_labels=None):
    return apply(params, x, sigma, cond, key, features, augment_labels)

  def teacher(frozen, x, sigma, cond, *, features=False):
    return apply(frozen["teacher"], x, sigma, cond, None, features)

  d = cfg.disc
  head = MultiConvHead(tuple(d.feature_keys), d.channels) if d.enabled else None
  teacher_params = variables["params"]
  # The head's example features are the teacher's (the generator may start elsewhere).
  example = lambda _: (student(teacher_params, jnp.zeros((1,) + shape), jnp.ones((1,)),
                               spec.null(1), features=True)[1],)
  return experiments.networks(
      cfg, student=student, teacher=teacher, head=head, data_shape=shape, cond=spec,
      generator_init=lambda key: teacher_params if generator_params is None else generator_params,
      fake_score_init=lambda _: teacher_params, head_example=example)


# ============================================================================== data
def image_source(cfg, shape, label_dim: int):
  """The random-access image source of config.dataset, checked against the teacher's shape."""
  if cfg.dataset.name == "synthetic":  # Random images: step-speed runs with no data at hand.
    n = max(cfg.train.batch_size, 64)
    rng = np.random.default_rng(cfg.seed)
    source = data_lib.ArraySource(rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
                                  rng.integers(0, max(label_dim, 1), (n,)) if label_dim else None,
                                  label_dim=label_dim or None, name="synthetic")
  else:
    source = data_lib.make_source(cfg.dataset)
  if tuple(source.image_shape) != shape:
    raise ValueError(f"config.dataset gives images of shape {tuple(source.image_shape)} but the "
                     f"teacher expects {shape}")
  if source.label_dim != label_dim and cfg.dataset.use_labels and label_dim:
    raise ValueError(f"config.dataset has label_dim {source.label_dim}, the teacher {label_dim}")
  return source


def input_data(cfg, source, spec: conditioning.ConditionSpec, codec: codecs.Codec,
               data_shape) -> dict:
  """batch / batch_spec / state hooks: {'x': real data in the teacher's space, 'cond'}."""
  local = data_lib.local_batch_size(cfg.train.batch_size)
  pipe = data_lib.InputPipeline(source, local, seed=cfg.seed,
                                xflip=cfg.dataset.xflip,
                                use_labels=spec.conditional)
  encode = codec.jit_encode()

  def batch(step):
    del step  # The pipeline is positional; its state is checkpointed.
    b = next(pipe)
    return {"x": encode(b["images"]), "cond": spec.encode(b["labels"])}

  def batch_spec():
    g = cfg.train.batch_size
    return {"x": jax.ShapeDtypeStruct((g,) + tuple(data_shape), jnp.float32),
            "cond": spec.shapes(g)}

  return dict(batch=batch, batch_spec=batch_spec, data_state=pipe.get_state,
              restore_data=lambda s: s and pipe.set_state(s), global_batch=False)


# ============================================================================== compose
def build(cfg, workdir: str, method=None) -> Experiment:
  """The image experiment of cfg (pixel space): teacher → condition spec → nets → data →
  evaluation."""
  module, variables = teacher_network(cfg, getattr(method, "NEEDS_TEACHER", True))
  spec = condition_spec(module.label_dim)
  nets, init_params = networks(cfg, module, variables, spec,
                               generator_init(cfg, variables))
  codec = codecs.IDENTITY  # EDM teachers work in pixel space.
  source = image_source(cfg, codec.image_shape(nets.data_shape), module.label_dim)
  io = input_data(cfg, source, spec, codec, nets.data_shape)
  ev = image_eval.evaluator(cfg, nets, variables["params"], codec, workdir)
  return Experiment(nets=nets, frozen={"teacher": variables["params"]}, init_params=init_params,
                    **io, **ev)
