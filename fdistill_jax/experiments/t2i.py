"""Text-to-image problems: PixArt-α teachers, cached prompts, image–caption data, latent codecs.

`build` composes small builders with one job each (the pattern of experiments/image.py):
  teacher_network  the frozen PixArtTransformer of config.teacher: a diffusers transformer folder
                   (or pipeline folder), an original PixArt .pth (architecture from
                   teacher.pixart_config, default PixArt-XL-2-512), or, with no checkpoint,
                   teacher.pixart_config with random weights (a loud warning: tiny test teachers
                   and speed runs of the full architecture only). Weights in teacher.dtype,
                   matmuls in teacher.compute_dtype (the output layer in float32 with
                   teacher.final_float32), per-block remat with teacher.remat;
  codec            teacher.vae = '' is pixel space (identity), else a diffusers AutoencoderKL
                   folder: real images are encoded to scaling_factor·latents, samples decoded;
  condition_spec   conditioning.Text over teacher.prompt_cache (a cache written by
                   tools/encode_prompts; '' = random embeddings, a loud warning); its prompt set
                   is the fixed evaluation prompts and its null the cached "" embedding
                   (classifier-free guidance's ∅);
  networks         student (generator) and fake score start as copies of the teacher; every net
                   is D(x; σ, cond) through the DDPM-ε adapter of teachers/pixart.py (learned-σ
                   channels dropped); the teacher is unguided (methods guide with
                   conditioning.guided); token discriminator heads on `disc.feature_keys`
                   ('block<i>' outputs of the frozen teacher or of the fake score);
  t2i_text         with teacher.text_encoder, a tiny T5 trained with the transformer from byte
                   ids (experiments/t2i_text.py) replaces the cache: conditions are token ids,
                   generator params {"transformer", "text_encoder"}, and every net encodes first;
  input_data       dataset.name = 'prompts': no images (data-free methods), conditions drawn from
                   the cache's training prompts deterministically from (seed, step);
                   'synthetic': the same with N(0, 1) "data" in the teacher's space (speed
                   runs and memory plans without data or a VAE); any image
                   source of fdistill_jax.data (or 'synthetic') with dataset.captions =
                   'row' (an image's label is the row of its caption in the cache) or 'class'
                   (a class label; the condition is a training prompt of that class, drawn from
                   (seed, step)), needing the cache's per-prompt `labels` (`heldout` excluded);
  t2i_eval         one-step / DPM-Solver++ samples, captioned grids, the teacher's reference
                   sampler with and without guidance, the digits prompt-accuracy metric.
Shapes: x [B, S, S, C] with S = pixart_config.sample_size (latent size), C = in_channels;
cond {"embeddings": float32 [B, L, D], "mask": float32 [B, L]} (with teacher.text_encoder:
{"ids": int32 [B, L], "mask": float32 [B, L]}).
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
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.diffusion import parameterisations as param_lib
from fdistill_jax import experiments, teachers
from fdistill_jax import validation as V
from fdistill_jax.experiments import Experiment, t2i_eval, t2i_text
from fdistill_jax.models import pixart as pixart_lib
from fdistill_jax.models.heads import MultiConvHead
from fdistill_jax.validation import ConfigError, need

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DATASETS = data_lib.DATASETS + ("synthetic", "prompts")
CAPTIONS = ("row", "class")
FEATURE_KEY = re.compile(r"block(\d+)$")


def family_teacher(cfg):
  """The teacher module of cfg's family (teachers/pixart.py, ...): its wrap(), adapter,
  module check, reference solvers and sampler."""
  return teachers.of(cfg).teacher_module()


def adapter(cfg) -> param_lib.TeacherAdapter:
  """The teacher family's parameterisation adapter for config.teacher (PixArt: DDPM-ε)."""
  return family_teacher(cfg).adapter(cfg.teacher)


_PC, _SIZE = "teacher.pixart_config", V.within(1, 65_536, "an int")
RULES = {  # Ranges of the PixArt fields (types and finiteness: config_checks.check_types).
    **{f"{_PC}.{k}": _SIZE for k in (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
        "cross_attention_dim", "caption_channels", "sample_size")},
    f"{_PC}.num_layers": V.within(1, 1024, "an int"),
    f"{_PC}.patch_size": V.within(1, 64, "an int"),
    f"{_PC}.norm_eps": V.within(0, 1, lo_open=True),
    f"{_PC}.interpolation_scale": V.optional(V.above(0)),
    f"{_PC}.use_additional_conditions": V.optional(V.flag()),
    "teacher.max_length": V.within(1, 4096, "an int (tokens)"),
    "eval.guidance_scale": V.at_least(0, "a guidance scale (1 = no guidance)"),
    "eval.num_prompts": V.within(1, 10 ** 6, "an int"),
    "eval.grid_size": V.within(1, 4096, "an int"),
    "eval.per_prompt_samples": V.at_least(0, "an int (0 = off)"),
    "eval.per_prompt_train": V.at_least(0),
}


def check_config(cfg) -> None:
  """Validates a text-to-image teacher (its family's module check, σ range and solvers), its data
  and evaluation; raises ConfigError."""
  t = cfg.teacher
  V.check_fields(cfg, experiments.IMAGE_RULES)
  V.check_fields(cfg, RULES)
  experiments.refuse_init_checkpoint(cfg)
  if t.get("pixart_config"):
    pc = t.pixart_config.to_dict()
    known = ((set(pixart_lib.PixArtTransformer.__dataclass_fields__) - {"parent", "name"})
             | set(pixart_lib.FIXED_CONFIG) | set(pixart_lib.LEGACY_DEFAULTS)
             | set(pixart_lib.IGNORED_CONFIG))
    for k in pc:
      need(k in known, f"{_PC}.{k}", pc[k], f"not a PixArt config field; known: {sorted(known)}")
    try:
      module = pixart_lib.from_diffusers_config(pc)
    except (TypeError, ValueError) as e:
      fixed = re.search(r"field (\w+)=", str(e))
      raise ConfigError(f"config.{_PC}{'.' + fixed.group(1) if fixed else ''} is invalid: {e}"
                        ) from e
    try:
      family_teacher(cfg).check_module(module)
    except ValueError as e:
      raise ConfigError(f"config.{_PC}.out_channels={module.out_dim}: {e}") from e
  for k in ("dtype", "compute_dtype"):
    need(t[k] in DTYPES, f"teacher.{k}", t[k], f"allowed: {tuple(DTYPES)}")
  need(bool(t.get("checkpoint")) or bool(t.get("pixart_config")), "teacher.checkpoint",
       t.get("checkpoint"), "a diffusers PixArt folder or an original .pth, or "
       "teacher.pixart_config for random weights")
  d = cfg.dataset
  need(d.name in DATASETS, "dataset.name", d.name, f"allowed: {DATASETS}")
  if d.name != "prompts":
    need(d.captions in CAPTIONS, "dataset.captions", d.captions,
         f"allowed: {CAPTIONS} (row: the image label is its caption's row in the prompt cache; "
         "class: a class label, paired with a training prompt of that class)")
    need(d.use_labels, "dataset.use_labels", d.use_labels,
         "True: text-to-image data pairs every image with a caption through its label")
  if cfg.disc.enabled:
    keys = tuple(cfg.disc.feature_keys)
    need(len(keys) > 0 and all(FEATURE_KEY.match(k) for k in keys), "disc.feature_keys", keys,
         "names 'block<i>' (0-based transformer block outputs, e.g. 'block13')")
  tm = family_teacher(cfg)
  V.check_fields(cfg, tm.RULES)  # eval.sampler and eval.teacher_solver: the family's solvers.
  experiments.eval_metric(cfg)
  if t2i_text.enabled(cfg):
    t2i_text.check_config(cfg)
  gi = cfg.get("guidance_input")
  if gi is not None and gi.enabled:
    need(0 <= gi.w_min <= gi.w_max < 100, "guidance_input.w_min/w_max", (gi.w_min, gi.w_max),
         "0 <= w_min <= w_max < 100 (the range of guidance scales the student is trained at)")
    need(not t2i_text.enabled(cfg), "guidance_input.enabled", gi.enabled,
         "False with teacher.text_encoder (the student with a guidance input reads a prompt "
         "cache)")
  ad, diff = adapter(cfg), cfg.diffusion
  try:
    param_lib.check_sigma_range(ad, diff.sigma_min, diff.sigma_max)
    param_lib.check_sigma_range(ad, diff.sigma_init, diff.sigma_init, "config.diffusion.sigma_init")
  except ValueError as e:
    raise ConfigError(f"{e} (a {tm.NAME} is defined on "
                      f"[{ad.sigma_min:.4f}, {ad.sigma_max:.1f}])") from e


def module_config(cfg) -> dict:
  """The diffusers config of the teacher's transformer (the student's architecture), read from
  teacher.checkpoint's config.json when it is a folder, else teacher.pixart_config (default
  PixArt-XL-2-512 for an original .pth)."""
  from fdistill_jax.convert import pixart as conv
  ckpt = cfg.teacher.get("checkpoint")
  if ckpt and epath.Path(ckpt).is_dir():  # Local or gs://.
    sub = str(epath.Path(ckpt) / "transformer")
    folder = sub if not (epath.Path(ckpt) / "config.json").is_file() and \
        epath.Path(sub).is_dir() else ckpt
    return conv._read_config(folder)  # pylint: disable=protected-access
  if cfg.teacher.get("pixart_config"):
    return cfg.teacher.pixart_config.to_dict()
  return conv.pixart_alpha_config(512)


def feature_blocks(cfg) -> tuple[int, ...] | None:
  """Block indices the discriminator reads ('block13' -> 13), None without a discriminator."""
  if not cfg.disc.enabled:
    return None
  return tuple(int(FEATURE_KEY.match(k).group(1)) for k in cfg.disc.feature_keys)


# ============================================================================== teacher
def teacher_network(cfg, needs_teacher: bool = True):
  """(PixArtTransformer, params) of config.teacher."""
  t = cfg.teacher
  opts = dict(dtype=DTYPES[t.compute_dtype],
              param_dtype=DTYPES[t.dtype], remat=bool(t.remat),
              feature_blocks=feature_blocks(cfg), final_float32=bool(t.final_float32))
  config = t.pixart_config.to_dict() if t.get("pixart_config") else None
  ckpt = t.get("checkpoint")
  if ckpt:
    from fdistill_jax.convert import pixart as conv
    if not epath.Path(ckpt).exists():
      raise FileNotFoundError(f"config.teacher.checkpoint={ckpt!r} does not exist (a diffusers "
                              "PixArtTransformer2DModel folder or an original PixArt .pth)")
    if epath.Path(ckpt).is_dir():
      module, params = conv.load_diffusers_folder(ckpt, **opts)
    else:
      from fdistill_jax.convert import pixart_original
      module, params, _ = pixart_original.load_original_checkpoint(
          ckpt, config or conv.pixart_alpha_config(512), ema=bool(t.ema), **opts)
  else:
    if config is None:
      raise ValueError("config.teacher needs a checkpoint or pixart_config")
    module = pixart_lib.from_diffusers_config(config, **opts)
    if needs_teacher:
      logging.warning("=" * 78 + "\nNO TEACHER CHECKPOINT (config.teacher.checkpoint is empty): "
                      "the PixArt teacher has RANDOM weights.\nThis run only exercises the "
                      "architecture, sharding and step speed; its samples mean nothing.\n" + "=" * 78)
    params = _random_params(json.dumps(config, sort_keys=True), t.dtype,
                            int(t.init_seed))
  family_teacher(cfg).check_module(module)
  return module, params


@functools.lru_cache(maxsize=2)
def _random_params(config_json: str, dtype: str, seed: int):
  """Flax-initialised params, memoised per (architecture, seed): eval, export and sample rebuild
  the same experiment. The adaLN/proj_out zero inits of diffusers are kept."""
  module = pixart_lib.from_diffusers_config(json.loads(config_json), param_dtype=DTYPES[dtype])
  s, c = module.sample_size, module.in_channels
  ctx = jnp.zeros((1, 1, module.caption_channels or module.inner_dim))
  added = pixart_lib.micro_conditions(1, 8 * s, 8 * s) if module.micro_conditioned else None
  variables = jax.jit(module.init)(jax.random.key(seed, impl="rbg"), jnp.zeros((1, s, s, c)),
                                   jnp.ones((1,)), ctx, jnp.ones((1, 1)), added)
  return jax.device_get(variables["params"])


def vae_codec(path: str, latent_channels: int) -> codecs.Codec:
  """A frozen SD-VAE codec from a diffusers AutoencoderKL folder (scaling factor from its config)."""
  from fdistill_jax.convert.vae import load_vae
  vm, variables = load_vae(path)
  if vm.latent_channels != latent_channels:
    raise ValueError(f"config.teacher.vae={path!r} has latent_channels={vm.latent_channels}, the "
                     f"PixArt teacher in_channels={latent_channels}")
  f = vm.downsample_factor
  return codecs.Codec(
      encode=lambda p, x: vm.apply(p, x, method=vm.encode_latents),
      decode=lambda p, z: vm.apply(p, z, method=vm.decode_latents),
      image_shape=lambda s: (s[0] * f, s[1] * f, vm.out_channels), params=variables)


def random_cache(num: int, length: int, dim: int, seed: int) -> pc.PromptCache:
  """Random 'prompts' (embeddings N(0, 1), 16 real tokens): speed runs without a cache."""
  rng = np.random.default_rng(seed)
  mask = np.zeros((num, length), np.int32)
  mask[:, :min(16, length)] = 1
  null_mask = np.zeros((1, length), np.int32)
  null_mask[0, 0] = 1
  return pc.PromptCache(rng.standard_normal((num, length, dim), np.float32), mask,
                        [f"random prompt {i}" for i in range(num)],
                        np.zeros((1, length, dim), np.float32), null_mask, {})


def load_cache(cfg, module) -> pc.PromptCache:
  """The prompt cache of config.teacher.prompt_cache, checked against the transformer and
  teacher.max_length (when set: the token length the teacher's prompts were encoded with);
  '' gives 16 random prompts of teacher.max_length tokens (a loud warning)."""
  path = cfg.teacher.prompt_cache
  if not path:
    logging.warning("=" * 78 + "\nNO PROMPT CACHE (config.teacher.prompt_cache is empty): "
                    "conditions are RANDOM embeddings.\nWrite one with python -m "
                    "fdistill_jax.tools.encode_prompts.\n" + "=" * 78)
    return random_cache(16, int(cfg.teacher.get("max_length", 120)),
                        module.caption_channels or module.inner_dim, cfg.seed)
  cache = pc.load_prompt_cache(path)
  want = module.caption_channels or module.inner_dim
  if cache.embeddings.shape[-1] != want:
    raise ValueError(f"config.teacher.prompt_cache={path!r} holds embeddings of dim "
                     f"{cache.embeddings.shape[-1]}; the PixArt teacher's caption_channels is "
                     f"{want}")
  if len(cache) == 0:
    raise ValueError(f"config.teacher.prompt_cache={path!r} holds no prompts")
  length, want_len = int(cache.embeddings.shape[1]), int(cfg.teacher.get("max_length", 0) or 0)
  if want_len and length != want_len:  # Truncated or differently padded prompts.
    raise ValueError(
        f"config.teacher.prompt_cache={path!r} was encoded with max_length={length}, but the "
        f"teacher expects config.teacher.max_length={want_len}: re-encode it with python -m "
        f"fdistill_jax.tools.encode_prompts --prompts=... --model={cache.index.get('model', '')} "
        f"--out=NEW_CACHE --max_length={want_len}")
  return cache


def condition(cache, rows) -> dict:
  """Condition of rows [n] of a PromptCache (embeddings float32 [n, L, D], mask float32 [n, L])
  or of t2i_text.TokenPrompts (ids int32 [n, L], mask float32 [n, L])."""
  return {k: np.asarray(v, np.int32 if k == "ids" else np.float32)
          for k, v in cache.condition(np.asarray(rows)).items()}


def training_rows(cache: pc.PromptCache) -> np.ndarray:
  """Rows of the prompts used for training: all but the cache's `heldout` ones."""
  held = getattr(cache, "heldout", None)
  rows = np.arange(len(cache)) if held is None else np.flatnonzero(~np.asarray(held, bool))
  if not len(rows):
    raise ValueError("the prompt cache marks every prompt heldout: none left to train on")
  return rows


def condition_spec(cache: pc.PromptCache, eval_rows: np.ndarray) -> conditioning.Text:
  """Text over the cache: prompt set = the evaluation prompts, ∅ = the cached "" prompt."""
  null = {"embeddings": np.asarray(cache.null_embeddings[0], np.float32),
          "mask": np.asarray(cache.null_mask[0], np.float32)}
  return conditioning.Text(int(cache.embeddings.shape[1]), int(cache.embeddings.shape[2]),
                           prompts=condition(cache, eval_rows), null_cond=null)


# ============================================================================== networks
def guidance_input(cfg) -> bool:
  """Whether the student takes the guidance scale as an input (config.guidance_input)."""
  gi = cfg.get("guidance_input")
  return gi is not None and bool(gi.enabled)


def networks(cfg, module, params, spec: conditioning.ConditionSpec,
             ad: param_lib.TeacherAdapter, encode=t2i_text.frozen_encode, wrap=None):
  """(Nets, init_params): every net is D(x; σ, cond) of the PixArt module via the adapter, after
  encode(params, cond) -> (PixArt params, text cond) (t2i_text; the identity for a cache).
  With a WithGuidance spec the student (generator and fake score) is the module with a
  zero-initialised guidance embedding reading each row's w; the teacher reads the text only.
  wrap(module, params, adapter) -> D(x; σ, cond): the family's (default cfg's)."""
  wrap = wrap or functools.partial(family_teacher(cfg).wrap, cfg.teacher)
  shape = (module.sample_size, module.sample_size, module.in_channels)
  takes_w = isinstance(spec, conditioning.WithGuidance)
  student_module = module.clone(guidance_embedding=True) if takes_w else module

  def apply(mod, p, x, sigma, cond, features):
    base = conditioning.base_condition(cond)
    p, text = encode(p, base)
    if mod.guidance_embedding:
      if base is cond:
        raise ValueError("the guidance-input student needs {'cond': ..., 'w': [B]} conditions")
      text = {**text, "guidance": cond["w"]}
    cond = text
    net = wrap(mod, p, ad)
    return net(x, sigma, cond, guidance_scale=1.0, return_features=features)

  def student(p, x, sigma, cond, *, key=None, features=False, augment_labels=None):
    del key  # PixArt has no dropout.
    if augment_labels is not None:
      raise ValueError("PixArt students take no augment labels: set method.augment_p = 0")
    return apply(student_module, p, x, sigma, cond, features)

  def teacher(frozen, x, sigma, cond, *, features=False):
    return apply(module, frozen["teacher"], x, sigma, cond, features)

  d = cfg.disc
  head = MultiConvHead(tuple(d.feature_keys), d.channels) if d.enabled else None
  if head is not None and max(feature_blocks(cfg)) >= module.num_layers:
    raise ValueError(f"config.disc.feature_keys={tuple(d.feature_keys)}: the PixArt teacher has "
                     f"{module.num_layers} blocks (block0 … block{module.num_layers - 1})")

  def with_guidance_embedder(key):
    """The teacher's parameters plus the student's guidance embedder (its output layer zero:
    at initialisation the student is the teacher at every w)."""
    if not takes_w:
      return params
    d = module.inner_dim
    mlp = pixart_lib.Mlp2(d, d, "silu", zero_out=True, param_dtype=module.param_dtype)
    emb = mlp.init(key, jnp.zeros((1, pixart_lib.TIMESTEP_SINUSOID_DIM)))["params"]
    return {**params, "guidance_embedder": emb}

  example = lambda p: (student(p, jnp.zeros((1,) + shape), jnp.ones((1,)), spec.null(1),
                               features=True)[1],)
  return experiments.networks(
      cfg, student=student, teacher=teacher, head=head, data_shape=shape, cond=spec,
      generator_init=lambda key: with_guidance_embedder(jax.random.fold_in(key, 1)),
      head_example=example, time=ad.time)


# ============================================================================== data
def image_source(cfg, shape, cache: pc.PromptCache):
  """The image source of config.dataset (labels = caption rows or classes), checked."""
  d = cfg.dataset
  row = d.captions == "row"
  source = data_lib.make_source(d)
  if tuple(source.image_shape) != tuple(shape):
    raise ValueError(f"config.dataset gives images of shape {tuple(source.image_shape)} but the "
                     f"teacher (and codec) expect {tuple(shape)}")
  if not source.label_dim:
    raise ValueError(f"config.dataset {source!r} has no labels: text-to-image data pairs each "
                     "image with a caption through its label (dataset.captions)")
  if row and source.label_dim > len(cache):
    raise ValueError(f"config.dataset labels reach {source.label_dim - 1}, but the prompt cache "
                     f"has {len(cache)} rows (dataset.captions='row')")
  return source


def prompts_by_class(cache: pc.PromptCache, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(table int [C, K], counts int [C]): the training prompt rows of each class, padded."""
  labels = getattr(cache, "labels", None)
  if labels is None:
    raise ValueError("dataset.captions='class' needs a prompt cache with per-prompt 'labels' "
                     f"(config.teacher.prompt_cache={cache.index.get('model', '')!r} has none)")
  train = np.zeros(len(cache), bool)
  train[training_rows(cache)] = True
  per = [np.flatnonzero((np.asarray(labels) == c) & train) for c in range(num_classes)]
  empty = [c for c, r in enumerate(per) if not len(r)]
  if empty:
    raise ValueError(f"the prompt cache has no training prompt for classes {empty}")
  table = np.zeros((num_classes, max(len(r) for r in per)), np.int64)
  for c, r in enumerate(per):
    table[c, :len(r)] = r
  return table, np.array([len(r) for r in per])


def input_data(cfg, cache: pc.PromptCache, spec: conditioning.Text, codec: codecs.Codec,
               data_shape) -> dict:
  """batch / batch_spec / state hooks: {'x': real data in the teacher's space, 'cond'}."""
  g = cfg.train.batch_size

  def with_w(cond, rng):
    """A WithGuidance spec's training condition: each row's w ~ U[w_min, w_max] (numpy, drawn
    after the batch's own draws so that those stay the same)."""
    if not isinstance(spec, conditioning.WithGuidance):
      return cond
    n = len(cond["mask"])
    return {"cond": cond, "w": rng.uniform(spec.w_min, spec.w_max, n).astype(np.float32)}

  def batch_spec():
    return {"x": jax.ShapeDtypeStruct((g,) + tuple(data_shape), jnp.float32),
            "cond": spec.shapes(g)}

  if cfg.dataset.name in ("prompts", "synthetic"):
    rows = training_rows(cache)
    synthetic = cfg.dataset.name == "synthetic"

    def prompt_batch(step):
      rng = np.random.default_rng([cfg.seed, int(step)])
      pick = rng.integers(0, len(rows), g)
      shape = (g,) + tuple(data_shape)  # 'prompts': x only carries the shape (data-free).
      x = rng.standard_normal(shape, np.float32) if synthetic else np.zeros(shape, np.float32)
      return {"x": x, "cond": with_w(condition(cache, rows[pick]), rng)}

    return dict(batch=prompt_batch, batch_spec=batch_spec, global_batch=True)

  by_class = cfg.dataset.captions == "class"
  source = image_source(cfg, codec.image_shape(tuple(data_shape)), cache)
  if by_class:
    table, counts = prompts_by_class(cache, source.label_dim)
  pipe = data_lib.InputPipeline(source, data_lib.local_batch_size(g), seed=cfg.seed,
                                xflip=cfg.dataset.xflip)
  encode = codec.jit_encode()

  def batch(step):
    b = next(pipe)
    lab = np.asarray(b["labels"], np.int64)
    if by_class:  # A training prompt of each image's class, drawn from (seed, step, process).
      u = np.random.default_rng([cfg.seed, int(step), jax.process_index()]).random(len(lab))
      lab = table[lab, (u * counts[lab]).astype(np.int64)]
    w_rng = np.random.default_rng([cfg.seed, int(step), jax.process_index(), 0x77])
    return {"x": encode(b["images"]), "cond": with_w(condition(cache, lab), w_rng)}

  return dict(batch=batch, batch_spec=batch_spec, data_state=pipe.get_state,
              restore_data=lambda s: s and pipe.set_state(s), global_batch=False)


# ============================================================================== compose
def build(cfg, workdir: str, method=None) -> Experiment:
  """The text-to-image experiment of cfg: teacher → codec → prompts → nets → data → evaluation."""
  module, params = teacher_network(cfg, getattr(method, "NEEDS_TEACHER", True))
  ad = adapter(cfg)
  codec = (vae_codec(cfg.teacher.vae, module.in_channels) if cfg.teacher.get("vae")
           else codecs.IDENTITY)
  text = (t2i_text.build(cfg, module.caption_channels or module.inner_dim)
          if t2i_text.enabled(cfg) else None)
  if text is None:  # Frozen text encoder: prompts are cached embeddings.
    cache = pool = load_cache(cfg, module)
    encode = t2i_text.frozen_encode
  else:  # Its own T5: byte ids of the evaluation prompts and of the training pool.
    cache, pool, encode = text.prompts, text.pool, text.encode
    params = text.generator_params(params)
  rows = t2i_eval.eval_rows(cfg, cache)
  spec = condition_spec(cache, rows) if text is None else text.condition_spec(rows)
  if guidance_input(cfg):
    spec = conditioning.WithGuidance(spec, float(cfg.guidance_input.w_min),
                                     float(cfg.guidance_input.w_max),
                                     float(cfg.eval.guidance_scale))
  nets, init_params = networks(cfg, module, params, spec, ad, encode)
  io = input_data(cfg, pool, spec, codec, nets.data_shape)
  ev = t2i_eval.evaluator(cfg, nets, module, params, ad, codec, cache, rows, workdir, encode)
  return Experiment(nets=nets, frozen={"teacher": params}, init_params=init_params, **io, **ev)
