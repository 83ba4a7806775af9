"""Conditions as pytrees: specs, one guidance function, and methods driven by text-like conditions.

A tiny network conditioned on pooled text embeddings ({embeddings [B, L, E], mask [B, L]})
stands in for a text-to-image teacher. Checked: unguided calls cost one network evaluation
(w = 1, or no condition), guided ones two; guidance inside f-distill's generator step and
SiD-LSG's κ4 equals running the method unguided on a pre-guided teacher; SiD-LSG's condition
dropout puts exactly the dropped rows on the spec's null condition; and the jitted engine steps
(with gradient accumulation splitting the condition pytree) train f-distill JS and SiD-LSG.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fdistill_jax import conditioning, config_defaults, defaults
from fdistill_jax.engine import state as state_lib
from fdistill_jax.engine import steps as steps_lib
from fdistill_jax.methods import fdistill, sid
from fdistill_jax.models.heads import MLPHead
from fdistill_jax.nets import Nets

B, D, L, E, F = 8, 3, 5, 4, 6
NULL = {"embeddings": np.full((L, E), 0.3, np.float32), "mask": np.eye(1, L, dtype=np.float32)[0]}


def _pooled(cond):
  m = cond["mask"]
  return jnp.sum(cond["embeddings"] * m[..., None], 1) / jnp.maximum(jnp.sum(m, 1, keepdims=True), 1)


def _net(p, x, sigma, cond, features):
  s = jnp.reshape(sigma, (-1, 1))
  h = jnp.tanh(x @ p["w"] / (1.0 + s) + _pooled(cond) @ p["c"] + p["b"])
  out = x / (1.0 + s ** 2) + h @ p["o"]
  return (out, h) if features else out


def _params(key):
  k = jax.random.split(key, 4)
  return {"w": jax.random.normal(k[0], (D, F)), "c": jax.random.normal(k[1], (E, F)),
          "b": 0.1 * jax.random.normal(k[2], (F,)), "o": 0.3 * jax.random.normal(k[3], (F, D))}


class Counter:
  def __init__(self):
    self.teacher = 0


def _setup(counter=None, spec=None):
  counter = counter or Counter()
  spec = spec or conditioning.Text(L, E, prompts={
      "embeddings": np.asarray(jax.random.normal(jax.random.PRNGKey(9), (7, L, E))),
      "mask": (np.arange(L)[None] < np.arange(1, 8)[:, None] % L + 1).astype(np.float32)},
      null_cond=NULL)

  def student(params, x, sigma, cond, *, key=None, features=False):
    del key
    return _net(params, x, sigma, cond, features)

  def teacher(frozen, x, sigma, cond, *, features=False):
    counter.teacher += 1
    return _net(frozen["teacher"], x, sigma, cond, features)

  head = MLPHead(hidden=8, depth=1)
  nets = Nets(student=student, teacher=teacher, disc=lambda p, f, s: head.apply({"params": p}, f, s),
              sigma_init=2.5, data_shape=(D,), cond=spec)
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  tp = _params(k[0])
  params = {"generator": jax.tree.map(jnp.copy, tp), "fake_score": _params(k[1]),
            "discriminator": head.init(k[2], jnp.zeros((1, F)), jnp.ones((1,)))["params"]}
  batch = {"x": jax.random.normal(k[3], (B, D)), "cond": spec.sample(jax.random.PRNGKey(4), B)}
  return nets, params, {"teacher": tp}, batch, counter


def _cfg(method):
  cfg = defaults.toy()
  cfg.method = method
  cfg.diffusion.sigma_data = 1.0
  cfg.train.grad_accum = 2
  cfg.train.ema_decays = (0.9,)
  return config_defaults.resolve(cfg)  # As compose resolves it: the engine reads its fields.


def test_specs_null_drop_and_index():
  labels = conditioning.ClassLabels(3)
  np.testing.assert_array_equal(labels.from_index(jnp.arange(4)), np.eye(3)[[0, 1, 2, 0]])
  # encode is the one one-hot: numpy labels stay on the host, −1 (unlabelled) is ∅, and it traces.
  host = labels.encode(np.array([2, -1, 0], np.int32))
  assert isinstance(host, np.ndarray) and host.dtype == np.float32
  np.testing.assert_array_equal(host, [[0, 0, 1], [0, 0, 0], [1, 0, 0]])
  np.testing.assert_array_equal(jax.jit(labels.encode)(jnp.array([1, 2])), np.eye(3)[[1, 2]])
  np.testing.assert_array_equal(labels.sample(jax.random.PRNGKey(3), 5),
                                jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(3), (5,), 0, 3), 3))
  assert conditioning.Unconditional().encode(np.zeros(4, np.int32)).shape == (4, 0)
  c = labels.sample(jax.random.PRNGKey(0), 6)
  dropped = labels.replace(c, jnp.arange(6) % 2 == 0)
  np.testing.assert_array_equal(dropped[0::2], 0.0)
  np.testing.assert_array_equal(dropped[1::2], c[1::2])
  nets, _, _, batch, _ = _setup()
  spec = nets.cond
  out, mask = spec.drop(jax.random.PRNGKey(1), batch["cond"], 0.5)
  for k in ("embeddings", "mask"):
    want = np.where(np.reshape(mask, (-1,) + (1,) * (out[k].ndim - 1)), NULL[k][None], batch["cond"][k])
    np.testing.assert_array_equal(out[k], want)
  assert not bool(jnp.any(spec.drop_mask(jax.random.PRNGKey(1), 0.0, B)))
  assert not bool(jnp.any(conditioning.Unconditional().drop_mask(jax.random.PRNGKey(1), 0.9, B)))
  np.testing.assert_array_equal(spec.from_index(jnp.arange(9))["mask"][7], spec.prompts["mask"][0])
  assert jax.tree.map(lambda s: s.shape, spec.shapes(2)) == {"embeddings": (2, L, E), "mask": (2, L)}


@pytest.mark.parametrize("scale,spec,calls", [(1.0, "text", 1), (2.0, "text", 2),
                                              (2.0, "none", 1)])
def test_unguided_calls_cost_one_evaluation(scale, spec, calls):
  n = {"calls": 0}

  def fn(x, s, c):
    n["calls"] += 1
    return x * 2.0 + (jnp.sum(_pooled(c), 1, keepdims=True) if isinstance(c, dict) else 0.0)

  nets, _, _, batch, _ = _setup()
  s = nets.cond if spec == "text" else conditioning.Unconditional()
  cond = batch["cond"] if spec == "text" else s.null(B)
  out = conditioning.guided(fn, batch["x"], jnp.ones(B), cond, scale, s)
  assert n["calls"] == calls
  if calls == 2:
    c, u = fn(batch["x"], 1, cond), fn(batch["x"], 1, s.null(B))
    np.testing.assert_allclose(out, u + scale * (c - u), rtol=1e-6)


def _preguided(nets, w):
  """The same problem with a teacher that already returns D(∅) + w (D(c) − D(∅))."""
  base = nets.teacher

  def teacher(frozen, x, sigma, cond, *, features=False):
    out = base(frozen, x, sigma, cond, features=features)
    u = base(frozen, x, sigma, nets.cond.null_like(cond))
    x0 = conditioning.combine(out[0] if features else out, u, w)
    return (x0, out[1]) if features else x0

  return Nets(student=nets.student, teacher=teacher, disc=nets.disc, sigma_init=nets.sigma_init,
              data_shape=nets.data_shape, cond=nets.cond)


def test_fdistill_teacher_guidance_matches_a_preguided_teacher_and_counts_calls():
  nets, params, frozen, batch, counter = _setup()
  key, extras = jax.random.PRNGKey(2), {"bins": jnp.ones((10,))}
  cfg1 = _cfg(fdistill.method_config(divergence="js"))
  fdistill.generator_loss(params, frozen, batch, key, extras, nets, cfg1)
  assert counter.teacher == 1  # w = 1: one teacher evaluation (with features).
  cfg = _cfg(fdistill.method_config(divergence="js", guidance_scale=2.5))
  counter.teacher = 0
  got, (m, _) = fdistill.generator_loss(params, frozen, batch, key, extras, nets, cfg)
  assert counter.teacher == 2
  want, (m_ref, _) = fdistill.generator_loss(params, frozen, batch, key, extras,
                                             _preguided(nets, 2.5), cfg1)
  plain, _ = fdistill.generator_loss(params, frozen, batch, key, extras, nets, cfg1)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(m["dm"], m_ref["dm"], rtol=1e-6)
  assert abs(float(got) - float(plain)) > 1e-4  # Guidance changes the loss.


def test_sid_lsg_text_guidance_and_condition_dropout():
  nets, params, frozen, batch, _ = _setup()
  k = jax.random.split(jax.random.PRNGKey(3), 4)
  z, n = jax.random.normal(k[0], (B, D)), jax.random.normal(k[1], (B, D))
  sigma = jnp.exp(jax.random.normal(k[2], (B,)))
  cfg = _cfg(sid.method_config(kappa_real=3.0))
  got, _ = sid.generator_loss_at(params, frozen, batch["cond"], z, sigma, n, nets, cfg)
  want, _ = sid.generator_loss_at(params, frozen, batch["cond"], z, sigma, n,
                                  _preguided(nets, 3.0), _cfg(sid.method_config()))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # κ1 with dropped rows: the dropped rows see ∅ in both branches (so their guided output is D(∅)).
  lsg = _cfg(sid.method_config(kappa_train_fake=2.0, kappa_fake=2.0, kappa_real=2.0))
  drop = jnp.arange(B) % 3 == 0
  got, m = sid.fake_score_loss_at(params, batch["cond"], z, sigma, n, drop, nets, lsg)
  dropped = nets.cond.replace(batch["cond"], drop)
  pre = Nets(student=lambda p, x, s, c, key=None, features=False: conditioning.guided(
      lambda x_, s_, c_: nets.student(p, x_, s_, c_), x, s, c, 2.0, nets.cond),
      teacher=None, disc=None, sigma_init=nets.sigma_init, data_shape=(D,), cond=nets.cond)
  gen = nets.generate(params["generator"], z, batch["cond"])
  x_t = gen + sigma[:, None] * n
  f = pre.student(params["fake_score"], x_t, sigma, dropped)
  w = (sigma ** 2 + 1.0) / sigma ** 2
  np.testing.assert_allclose(got, jnp.sum(w * jnp.mean((f - gen) ** 2, 1)) / B, rtol=1e-5)
  assert float(m["label_drop_frac"]) == pytest.approx(3 / 8)


# sid (a second method through the same pytree path) only in the full suite.
@pytest.mark.parametrize("method", ["fdistill", pytest.param("sid", marks=pytest.mark.slow)])
def test_engine_steps_train_through_a_text_condition_pytree(method):
  nets, params, frozen, batch, _ = _setup()
  if method == "fdistill":
    cfg, mod = _cfg(fdistill.method_config(divergence="js", guidance_scale=2.0)), fdistill
  else:
    cfg = _cfg(sid.method_config(kappa_train_fake=1.5, kappa_fake=1.5, kappa_real=1.5))
    mod = sid
    params = {k: v for k, v in params.items() if k != "discriminator"}
    nets = Nets(student=nets.student, teacher=nets.teacher, disc=None, sigma_init=2.5,
                data_shape=(D,), cond=nets.cond)
  txs = {n: state_lib.make_optimizer(cfg, n) for n in params}
  state = state_lib.init_state(params, txs, mod.init_extras(cfg), cfg.train.ema_decays)
  for phase in ("generator", "critic"):
    step = jax.jit(steps_lib.make_step(mod, nets, txs, cfg, phase))
    new, metrics = step(state, frozen, batch)
    assert float(metrics[f"{phase}/skipped"]) == 0.0 and np.isfinite(float(metrics[f"{phase}/loss"]))
    trained = mod.GENERATOR_NETS if phase == "generator" else mod.CRITIC_NETS
    for n in trained:
      delta = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)),
                                           new["params"][n], state["params"][n]))
      assert max(float(d) for d in delta) > 0, (phase, n)
    state = new


def test_disc_heads_take_token_features_and_feature_maps():
  from fdistill_jax.models.heads import MultiConvHead
  feats = {"tokens": jax.random.normal(jax.random.PRNGKey(0), (2, 16, 8)),
           "enc8": jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 8))}
  head = MultiConvHead(("tokens", "enc8"), 8)
  p = head.init(jax.random.PRNGKey(2), feats)
  out = head.apply(p, feats)
  assert out.shape == (2, 2) and bool(jnp.all(jnp.isfinite(out)))
  # Token order does not matter (mean pooling), a token's value does.
  perm = {**feats, "tokens": feats["tokens"][:, ::-1]}
  np.testing.assert_allclose(head.apply(p, perm), out, rtol=1e-5, atol=1e-6)
  moved = {**feats, "tokens": feats["tokens"].at[:, 0].set(
      3.0 * jax.random.normal(jax.random.PRNGKey(3), (2, 8)))}
  assert float(jnp.max(jnp.abs(head.apply(p, moved)[:, 0] - out[:, 0]))) > 1e-4


def test_latent_codec_encodes_real_data_and_decodes_samples():
  """A latent experiment's pieces: real images reach the step encoded, samples leave decoded."""
  from fdistill_jax import codecs
  from fdistill_jax import data as data_lib
  from fdistill_jax.experiments import image, image_eval
  pool = lambda p, x: (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) / 4
  up = lambda p, z: jnp.repeat(jnp.repeat(z, 2, 1), 2, 2)
  codec = codecs.Codec(encode=pool, decode=up, image_shape=lambda s: (2 * s[0], 2 * s[1], s[2]))
  cfg = defaults.image()
  cfg.train.batch_size, cfg.eval.num_samples, cfg.eval.teacher_nfes = 4, 6, ()
  cfg.dataset = ml_collections.ConfigDict(dict(name="arrays", use_labels=True))
  # The pieces read resolved configs (config_defaults.resolve fills the optional fields once at
  # every entry point; here the test is the entry point).
  from fdistill_jax import config_defaults
  config_defaults.resolve(cfg)
  imgs = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
  source = data_lib.ArraySource(imgs, np.arange(8) % 3, label_dim=3)
  spec = conditioning.ClassLabels(3)
  io = image.input_data(cfg, source, spec, codec, (4, 4, 1))
  b = io["batch"](0)
  assert b["x"].shape == (4, 4, 4, 1) and b["cond"].shape == (4, 3)
  assert jax.tree.map(lambda s: s.shape, io["batch_spec"]()) == {"x": (4, 4, 4, 1), "cond": (4, 3)}
  raw = imgs.astype(np.float32) / 127.5 - 1.0
  assert any(np.allclose(b["x"][0], pool(None, raw[i:i + 1])[0], atol=1e-6) for i in range(8))
  student = lambda p, x, s, c, key=None, features=False: x * 0 + p + jnp.argmax(c, 1)[:, None, None, None]
  nets = Nets(student=student, teacher=None, disc=None, sigma_init=80.0, data_shape=(4, 4, 1),
              cond=spec)
  ev = image_eval.evaluator(cfg, nets, None, codec, "/unused")
  x = ev["sample"](jnp.float32(0.5), jax.random.PRNGKey(0))
  assert x.shape == (6, 8, 8, 1)  # Decoded to image space; conditions are index mod 3.
  np.testing.assert_allclose(x[:, 0, 0, 0], 0.5 + np.arange(6) % 3)
