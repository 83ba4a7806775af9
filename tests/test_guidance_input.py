"""Guidance as a student input (issue 27 §2): the WithGuidance condition, each sample guided at
its own w in every method that guides, the PixArt guidance embedding that starts as a no-op, and
the text-to-image experiment whose student reads w (initially the teacher at every w), trains
and samples at the chosen w."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import conditioning, config_checks, defaults, testing
from fdistill_jax.methods import fdistill, sid, sim
from fdistill_jax.models import pixart
from fdistill_jax.nets import Nets
from tests.test_t2i_engine import TINY, build_and_trace, config, files  # noqa: F401  (fixture)

C, D, B = 3, 3, 8


def test_with_guidance_condition():
  spec = conditioning.WithGuidance(conditioning.ClassLabels(C), 1.0, 3.0, 1.5)
  null = spec.null(4)
  assert null["cond"].shape == (4, C) and np.all(np.asarray(null["w"]) == 1.5)
  cond = spec.sample(jax.random.PRNGKey(0), 512)
  w = np.asarray(cond["w"])
  assert w.min() >= 1.0 and w.max() <= 3.0 and w.std() > 0.4
  np.testing.assert_array_equal(spec.null_like(cond)["w"], w)  # ∅ keeps each row's w.
  mask = jnp.arange(512) % 2 == 0
  dropped = spec.replace(cond, mask)
  np.testing.assert_array_equal(dropped["w"], w)
  assert float(jnp.abs(dropped["cond"][::2]).sum()) == 0 and float(dropped["cond"][1::2].sum()) > 0
  ev = spec.from_index(jnp.arange(5))
  assert np.all(np.asarray(ev["w"]) == 1.5) and ev["cond"].shape == (5, C)
  assert conditioning.base_condition(ev) is ev["cond"]
  assert spec.shapes(2)["w"].shape == (2,)
  assert np.all(np.asarray(spec.at_scale(ev["cond"], 3.0)["w"]) == 3.0)
  assert spec.describe()["guidance_input"] == [1.0, 3.0]


def test_guide_with_per_row_scales_is_the_row_wise_combination():
  spec = conditioning.WithGuidance(conditioning.ClassLabels(C), 1.0, 3.0)
  d_c, d_u = jax.random.normal(jax.random.PRNGKey(1), (2, B, D))
  w = jnp.linspace(1.0, 3.0, B)
  got = conditioning.guide(d_c, lambda: d_u, conditioning.scale_of(spec, {"w": w}, 7.0), spec)
  want = np.stack([np.asarray(d_u[i] + float(w[i]) * (d_c[i] - d_u[i])) for i in range(B)])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
  assert conditioning.scale_of(conditioning.ClassLabels(C), {"w": w}, 7.0) == 7.0


# ----------------------------------------------------------------------------- every method
def _student(params, x, sigma, cond, *, key=None, features=False):
  """Reads w like a guidance-input student: its output depends on it."""
  del key
  c, w = cond["cond"], cond["w"]
  s = jnp.reshape(sigma, (-1, 1))
  h = jnp.tanh(x @ params["w"] / jnp.sqrt(1 + s ** 2) + c @ params["c"] + w[:, None] * params["g"])
  x0 = x / (1 + s ** 2) + h @ params["v"]
  return (x0, h) if features else x0


def _teacher(frozen, x, sigma, cond, *, features=False):
  c = conditioning.base_condition(cond)
  s = jnp.reshape(sigma, (-1, 1))
  x0 = x / (1 + s ** 2) + jnp.sin(x @ frozen["a"]) / (1 + 0.1 * s) + c @ frozen["e"]
  return (x0, jnp.tanh(x0 @ frozen["f"])) if features else x0


def _setup(method):
  k = jax.random.split(jax.random.PRNGKey(0), 8)
  net = lambda kk: {"w": jax.random.normal(kk, (D, 5)) * 0.5,
                    "c": jax.random.normal(jax.random.fold_in(kk, 1), (C, 5)),
                    "g": jax.random.normal(jax.random.fold_in(kk, 2), (5,)),
                    "v": jax.random.normal(jax.random.fold_in(kk, 3), (5, D)) * 0.5}
  params = {"generator": net(k[0]), "fake_score": net(k[1]),
            "discriminator": {"w": jax.random.normal(k[2], (5, 1))}}
  frozen = {"a": jax.random.normal(k[3], (D, D)), "e": jax.random.normal(k[4], (C, D)),
            "f": jax.random.normal(k[5], (D, 5))}
  labels = jax.nn.one_hot(jnp.arange(B) % C, C)
  cfg = defaults.toy()
  if method == "fdistill":
    cfg.method = fdistill.method_config(divergence="js", guidance_scale=2.0)
  elif method == "sim":
    cfg.method = sim.method_config(guidance_scale=2.0)
  else:
    cfg.method = sid.method_config(kappa_real=2.0, kappa_fake=2.0, kappa_train_fake=2.0,
                                   cond_drop=0.0)
  return params, frozen, labels, cfg, jax.random.normal(k[6], (B, D))


@pytest.mark.parametrize("method", ["fdistill", "sim", "sid"])
def test_each_sample_is_guided_at_its_own_w(method):
  """A WithGuidance batch whose rows all carry w = 2 gives exactly the loss and gradients of the
  fixed scale 2 (κ's for SiD); rows at other w's change them."""
  params, frozen, labels, cfg, x = _setup(method)
  mod = {"fdistill": fdistill, "sim": sim, "sid": sid}[method]
  base = conditioning.ClassLabels(C)
  spec = conditioning.WithGuidance(base, 1.0, 3.0, 2.0)
  nets_w = Nets(student=_student, teacher=_teacher, disc=(lambda p, f, s: f @ p["w"]),
                sigma_init=80.0, data_shape=(D,), cond=spec)
  # The fixed-scale reference: the same networks, told w = 2 through a plain condition.
  fixed = lambda f: (lambda p, xx, s, c, **kw: f(p, xx, s, {"cond": c, "w": jnp.full((B,), 2.0)},
                                                  **kw))
  nets_1 = Nets(student=fixed(_student), teacher=_teacher, disc=nets_w.disc, sigma_init=80.0,
                data_shape=(D,), cond=base)
  key = jax.random.PRNGKey(3)
  extras = mod.init_extras(cfg)

  def losses(nets, cond):
    batch = {"x": x, "cond": cond}
    g = lambda p: mod.generator_loss(p, frozen, batch, key, extras, nets, cfg)[0]
    c = lambda p: mod.critic_loss(p, frozen, batch, key, extras, nets, cfg)[0]
    return g(params), jax.grad(g)(params), c(params), jax.grad(c)(params)

  with_w = losses(nets_w, spec.at_scale(labels, 2.0))
  ref = losses(nets_1, labels)
  for a, b in zip(jax.tree.leaves(with_w), jax.tree.leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  mixed = losses(nets_w, {"cond": labels, "w": jnp.linspace(1.0, 3.0, B)})
  assert float(mixed[0]) != pytest.approx(float(ref[0]), rel=1e-4)


# ----------------------------------------------------------------------------- PixArt
def test_pixart_guidance_embedding_starts_as_a_no_op():
  module = pixart.from_diffusers_config(TINY)
  student = module.clone(guidance_embedding=True)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 1)), jnp.float32)
  t = jnp.asarray([10.0, 700.0])
  emb = jnp.asarray(rng.standard_normal((2, 6, TINY["caption_channels"])), jnp.float32)
  mask = jnp.ones((2, 6))
  # Only the student's init runs (its guidance embedder is what starts as a no-op), with an 'rbg'
  # key (Flax's threefry draws compile several times slower on CPU); the teacher's params are
  # random numbers of its init's shapes (jax.eval_shape: no compile), as tests/
  # test_t2i_engine.py's teacher. Init and applies are jitted (one program each instead of the
  # DiT's ops one by one) and compiled with testing.FAST_COMPILE; a missing or unexpected
  # guidance input still raises while tracing.
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, t, emb, mask)["params"]
  params = jax.tree.map(lambda a: jnp.asarray(0.1 * rng.standard_normal(a.shape), a.dtype),
                        shapes)
  init_args = (jax.random.key(2, impl="rbg"), x, t, emb, mask)
  sp = testing.compile_fast(jax.jit(student.init).lower(*init_args, guidance=jnp.ones(2)))(
      *init_args, guidance=jnp.ones(2))["params"]
  assert set(sp) == set(params) | {"guidance_embedder"}
  assert jax.eval_shape(lambda: {k: v for k, v in sp.items() if k != "guidance_embedder"}) == (
      shapes)  # The student is the teacher's DiT plus the embedder.
  sp = {**params, "guidance_embedder": sp["guidance_embedder"]}
  apply_module, apply_student = jax.jit(module.apply), jax.jit(student.apply)
  want = testing.compile_fast(apply_module.lower({"params": params}, x, t, emb, mask))(
      {"params": params}, x, t, emb, mask)
  fast_student = testing.compile_fast(apply_student.lower({"params": sp}, x, t, emb, mask,
                                                          guidance=jnp.ones(2)))
  for w in (1.0, 3.0):
    got = fast_student({"params": sp}, x, t, emb, mask, guidance=jnp.full((2,), w))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  sp["guidance_embedder"]["linear_2"]["kernel"] = jnp.ones_like(
      sp["guidance_embedder"]["linear_2"]["kernel"]) * 0.01
  a = fast_student({"params": sp}, x, t, emb, mask, guidance=jnp.full((2,), 1.0))
  b = fast_student({"params": sp}, x, t, emb, mask, guidance=jnp.full((2,), 3.0))
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4
  with pytest.raises(ValueError, match="guidance"):
    apply_student({"params": sp}, x, t, emb, mask)
  with pytest.raises(ValueError, match="guidance"):
    apply_module({"params": params}, x, t, emb, mask, guidance=jnp.ones(2))


@pytest.mark.slow
def test_t2i_student_reads_w_trains_and_samples(files, tmp_path):  # noqa: F811
  cfg = config("pixart512_js", files)
  cfg.guidance_input.update(dict(enabled=True, w_min=1.0, w_max=3.0))
  cfg.eval.guidance_scale = 2.5
  config_checks.check(cfg, num_devices=8)
  exp = build_and_trace(cfg)  # Both steps trace with the {'cond', 'w'} batches.
  nets = exp.nets
  assert isinstance(nets.cond, conditioning.WithGuidance) and nets.cond.w_eval == 2.5
  batch = exp.batch(0)
  w = np.asarray(batch["cond"]["w"])
  assert w.shape == (cfg.train.batch_size,) and w.min() >= 1.0 and w.max() <= 3.0
  # Jitted, one program each instead of the DiT's ops one by one, and compiled with
  # testing.FAST_COMPILE.
  key = jax.random.PRNGKey(0)
  params = testing.compile_fast(jax.jit(exp.init_params).lower(key))(key)
  assert "guidance_embedder" in params["generator"] and "guidance_embedder" in params["fake_score"]
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 1))
  sigma = jnp.full((8,), 2.0)
  base = conditioning.base_condition(batch["cond"])
  args = (exp.frozen, x, sigma, base)
  teacher = testing.compile_fast(jax.jit(nets.teacher).lower(*args))(*args)
  cond = lambda wv: nets.cond.at_scale(base, wv)
  student = testing.compile_fast(jax.jit(nets.student).lower(params["generator"], x, sigma,
                                                             cond(1.0)))
  for wv in (1.0, 3.0):  # At initialisation the student is the teacher at every w.
    got = student(params["generator"], x, sigma, cond(wv))
    np.testing.assert_allclose(np.asarray(got), np.asarray(teacher), rtol=1e-6, atol=1e-6)
  samples = exp.sample(params["generator"], jax.random.PRNGKey(2))
  assert samples.shape[0] == cfg.eval.num_samples and np.isfinite(samples).all()
  # Export: its weights and metadata, and no pipeline folder (diffusers' PixArt transformer has
  # no guidance embedding), said in the metadata instead of failing or dropping the embedding.
  from fdistill_jax import export
  out = export.write_export(cfg, jax.device_get(params["generator"]), str(tmp_path / "ex"),
                            step=0, which="raw")
  meta = json.loads((tmp_path / "ex" / "metadata.json").read_text())
  arch = meta["architecture"]
  assert meta["sampling"]["guidance_input"] == {"w_min": 1.0, "w_max": 3.0}
  assert arch["pipeline"] is None and "guidance embedding" in arch["why_no_pipeline"]
  assert "diffusers" not in out["files"] and not (tmp_path / "ex" / "diffusers").exists()
