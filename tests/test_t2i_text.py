"""A PixArt teacher trained jointly with its own byte-level T5 (experiments/t2i_text.py), end to
end on tiny nets: the conditions are byte ids of training phrasings of each image's class, ∅ is
the tokenised "" (</s> alone); a few edm_training steps move both the transformer and the T5;
export writes diffusers/ + text_encoder/ (T5 with its byte tokenizer); encode_prompts (torch)
reads max_length from that folder and writes a cache whose embeddings equal our Flax T5's of the
same prompts to 1e-5 relative. Plus: configs that cannot work fail clearly.
"""
import json

import jax
import numpy as np
import pytest

from fdistill_jax import compose, config_checks, defaults, export
from fdistill_jax.convert import pixart as conv_pixart
from fdistill_jax.data import byte_tokenizer as bt
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.models import t5 as t5_lib

L = 24
PROMPTS = [{"text": f"a handwritten {w}", "label": d, "heldout": False}
           for d, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven",
                                  "eight", "nine"))]
PROMPTS += [{"text": f"the digit {d}!", "label": d, "heldout": False} for d in range(10)]
PROMPTS += [{"text": "draw a 7", "label": 7, "heldout": True},
            {"text": "Seven", "label": 7, "heldout": True}]


def tiny_config(prompts_json):
  cfg = defaults.digits_t2i_text_teacher()
  cfg.teacher.pixart_config = dict(defaults.TINY_PIXART, sample_size=8, caption_channels=16,
                                   num_layers=1)
  cfg.teacher.update(dict(prompts=prompts_json, train_prompts="", max_length=L))
  cfg.teacher.text_encoder.update(dict(d_model=16, d_kv=8, num_heads=2, d_ff=24, num_layers=1,
                                       relative_attention_num_buckets=8,
                                       relative_attention_max_distance=16))
  cfg.dataset.resolution = 8
  cfg.eval.metric = "none"  # The digits classifier costs ~8 s of CPU; nothing here evaluates.
  cfg.train.update(dict(steps=3, batch_size=8, log_every=1, ckpt_every=3,
                        async_checkpoints=False))
  return cfg


# The tests on the trained run are the full suite's (a second text-to-image training run; the
# quick tier's is tests/test_t2i_engine.py, and the T5 parity is tests/test_t5.py's).
_E2E = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("t2i_text")
  (root / "prompts.json").write_text(json.dumps({"prompts": PROMPTS}))
  cfg = tiny_config(str(root / "prompts.json"))
  config_checks.check(cfg, num_devices=1)
  r = compose.Run(cfg, str(root / "wd"), devices=jax.devices()[:1], restore=False)
  init = jax.device_get(r.state["params"]["generator"])
  for k in range(3):
    r.step(k)
  r.ckpt.save(3, r.state, r.exp.data_state())
  r.ckpt.close()
  return cfg, root, r.exp, init, jax.device_get(r.state["params"]["generator"])


@_E2E
def test_conditions_are_byte_ids_of_training_phrasings(run):
  cfg, _, exp, _, _ = run
  cond = exp.batch(0)["cond"]
  assert cond["ids"].dtype == np.int32 and cond["ids"].shape == (8, L)
  texts = [bytes(int(i) - bt.OFFSET for i in row if i > bt.EOS).decode() for row in cond["ids"]]
  train = {p["text"].lower() for p in PROMPTS if not p["heldout"]}
  assert set(texts) <= train
  null = exp.nets.cond.null(2)
  assert null["ids"][:, 0].tolist() == [bt.EOS] * 2 and float(null["mask"].sum()) == 2
  assert exp.nets.cond.describe() == {"condition": "tokens", "length": L, "prompts": 16}


@_E2E
def test_both_the_transformer_and_the_encoder_train(run):
  _, _, _, init, trained = run
  for part in ("transformer", "text_encoder"):
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), init[part], trained[part])
    assert max(jax.tree.leaves(moved)) > 0, part
  assert float(np.abs(init["text_encoder"]["shared"]["embedding"]
                      - trained["text_encoder"]["shared"]["embedding"]).max()) > 0


@_E2E
def test_export_then_encode_prompts_equals_our_encoder(run):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from fdistill_jax.tools import encode_prompts
  cfg, root, _, _, trained = run
  out = root / "export"
  summary = export.export_generator(cfg, str(root / "wd"), str(out), which="raw")
  assert {"diffusers", "text_encoder"} <= set(summary["files"])
  meta = json.loads((out / "metadata.json").read_text())
  assert meta["architecture"]["text_encoder"]["d_model"] == 16
  _, pixart_params = conv_pixart.load_diffusers_folder(str(out / "diffusers"))
  jax.tree.map(np.testing.assert_array_equal, pixart_params, trained["transformer"])
  encode_prompts.main([f"--prompts={root / 'prompts.json'}", f"--out={root / 'cache'}",
                       f"--model={out / 'text_encoder'}"])  # max_length from the folder.
  cache = pc.load_prompt_cache(str(root / "cache"))
  assert cache.index["max_length"] == L and cache.embeddings.shape == (len(PROMPTS), L, 16)
  assert cache.labels.tolist() == [p["label"] for p in PROMPTS]
  texts = bt.preprocess([p["text"] for p in PROMPTS] + [""])
  ids, mask = bt.tokenize(texts, L)
  np.testing.assert_array_equal(mask[:-1], cache.mask)
  np.testing.assert_array_equal(mask[-1:], cache.null_mask)
  module = t5_lib.T5Encoder(t5_lib.T5Config(**{
      k: v for k, v in meta["architecture"]["text_encoder"].items()
      if k in t5_lib.T5Config.__dataclass_fields__}))
  ours = np.asarray(module.apply({"params": trained["text_encoder"]}, ids, mask))
  theirs = np.concatenate([cache.embeddings, cache.null_embeddings])
  keep = mask.astype(bool)
  err = np.abs(ours[keep] - theirs[keep]).max() / np.abs(theirs[keep]).max()
  assert err <= 1e-5, err


@_E2E
def test_configs_that_cannot_work_fail_clearly(run):
  cfg, _, exp, _, trained = run
  bad = tiny_config(cfg.teacher.prompts)
  bad.method.name = "dmd2"
  with pytest.raises(config_checks.ConfigError, match="edm_training"):
    config_checks.check(bad, num_devices=1)
  bad = tiny_config(cfg.teacher.prompts)
  bad.teacher.prompt_cache = defaults.asset("digits_t2i_prompts")
  with pytest.raises(config_checks.ConfigError, match="prompt_cache"):
    config_checks.check(bad, num_devices=1)
  bad = tiny_config(cfg.teacher.prompts)
  bad.teacher.max_length = 8  # "a handwritten seven": 19 bytes + </s>.
  with pytest.raises(ValueError, match="truncates prompts of 20 tokens"):
    compose.build(bad, "/tmp/unused", prepare=False)
  cached = {"embeddings": np.zeros((1, L, 16), np.float32), "mask": np.ones((1, L), np.float32)}
  with pytest.raises(ValueError, match="byte ids through its own T5"):
    exp.nets.student(trained, np.zeros((1, 8, 8, 1), np.float32), np.ones((1,)), cached)


def test_the_teacher_config_builds_on_the_full_phrasing_pool():
  cfg = defaults.digits_t2i_text_teacher()
  config_checks.check(cfg, num_devices=8)
  from fdistill_jax.experiments import t2i_text
  side = t2i_text.build(cfg, 64)
  assert len(side.pool) == 179_199 and side.pool.heldout is None
  assert int(side.prompts.heldout.sum()) == 40 and side.prompts.ids.shape == (280, 64)
  assert not set(side.pool.prompts) & {p for p, h in zip(side.prompts.prompts,
                                                          side.prompts.heldout) if h}


def test_lr_scales_speed_up_the_text_encoder_only():
  import jax.numpy as jnp
  from fdistill_jax.engine import state
  cfg = defaults.digits_t2i_text_teacher()
  cfg.optim.generator.lr_scales = (("^text_encoder/", 10.0),)
  config_checks.check(cfg, num_devices=1)
  tx = state.make_optimizer(cfg, "generator", 100)
  p = {"text_encoder": {"w": jnp.ones(3)}, "transformer": {"text_encoder": jnp.ones(3)}}
  upd, _ = tx.update(p, tx.init(p), p)
  np.testing.assert_allclose(upd["text_encoder"]["w"], 10 * upd["transformer"]["text_encoder"])
  cfg.optim.generator.lr_scales = (("^text_encoder/",),)
  with pytest.raises(config_checks.ConfigError, match="lr_scales"):
    config_checks.check(cfg, num_devices=1)


def test_pretrained_text_encoder_folder_loads_in_transformers_and_as_a_checkpoint(tmp_path):
  """tools/pretrain_text_encoder: a few steps of the phrasing classifier on a tiny T5 write a
  transformers T5EncoderModel folder with the byte tokenizer, which transformers loads strictly,
  whose outputs equal our Flax encoder's, and which a teacher config reads as its
  text_encoder.checkpoint."""
  import torch
  import transformers
  from fdistill_jax.convert import t5 as conv
  from fdistill_jax.tools import pretrain_text_encoder as pre
  config = t5_lib.T5Config(d_model=16, d_kv=8, num_heads=2, d_ff=24, num_layers=1,
                           relative_attention_num_buckets=8, relative_attention_max_distance=16)
  out = str(tmp_path / "t5")
  m = pre.pretrain(out, steps=4, batch=16, eval_every=2, config=config)
  assert len(m["curve"]) == 2 and 0.0 <= m["heldout_accuracy"] <= 1.0
  assert m["train_phrasings"] > 100_000 and m["heldout_phrasings"] > 100
  model = transformers.T5EncoderModel.from_pretrained(out).eval()
  cfg_back, params = conv.load_folder(out)
  assert cfg_back == config
  ids, mask = bt.tokenize(["draw a 7", "sevens!"], 64)
  want = np.asarray(t5_lib.T5Encoder(config).apply({"params": params}, ids, mask))
  with torch.no_grad():
    got = model(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).last_hidden_state
  np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)


def test_recaption_keeps_every_weight_but_the_caption_input_layer(tmp_path):
  """tools/recaption_pixart: the digits text teacher's warm start. The written folder loads in
  diffusers strictly, holds the source's tensors exactly except caption_projection.linear_1,
  which has the new width; a transformer without a caption projection is refused by name."""
  import diffusers
  from fdistill_jax.models import pixart as pixart_lib
  from fdistill_jax.tools import recaption_pixart as rc

  def init(config, ctx_dim):
    module = pixart_lib.from_diffusers_config(config)
    return jax.device_get(module.init(
        jax.random.key(0), np.zeros((1, 16, 16, 1), np.float32), np.zeros((1,), np.float32),
        np.zeros((1, 3, ctx_dim), np.float32), np.ones((1, 3), np.float32))["params"]), module

  conv_pixart.to_diffusers_folder(*init(dict(defaults.DIGITS_T2I_PIXART), 32),
                                  str(tmp_path / "src"))
  r = rc.recaption(str(tmp_path / "src"), 24, str(tmp_path / "new"), seed=1)
  assert [p for p, _ in r["new"]] == ["caption_projection/linear_1/bias",
                                      "caption_projection/linear_1/kernel"]
  model, info = diffusers.PixArtTransformer2DModel.from_pretrained(
      tmp_path / "new", output_loading_info=True)
  assert all(not v for v in info.values()), info
  assert model.config.caption_channels == 24
  old = conv_pixart.read_diffusers_weights(tmp_path / "src")
  new = conv_pixart.read_diffusers_weights(tmp_path / "new")
  assert set(old) == set(new)
  for k in old:
    if k.startswith("caption_projection.linear_1."):
      continue
    np.testing.assert_array_equal(new[k], old[k], err_msg=k)
  w = new["caption_projection.linear_1.weight"]
  assert w.shape == (64, 24) and 0 < np.abs(w).max() <= 24 ** -0.5
  no_caption = {k: v for k, v in dict(defaults.DIGITS_T2I_PIXART).items() if k != "caption_channels"}
  conv_pixart.to_diffusers_folder(*init(no_caption, 64), str(tmp_path / "plain"))
  with pytest.raises(ValueError, match="caption_channels"):
    rc.recaption(str(tmp_path / "plain"), 24, str(tmp_path / "bad"))
