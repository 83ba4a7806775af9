"""The committed digits text-to-image assets: the labelled prompts, the T5 folders and the
prompt caches they wrote (re-encoded here through tools/encode_prompts and our Flax T5,
offline): the class-prompt teacher's word-level random T5 and the byte-level T5 that the
teacher of the distillation configs reads."""
import json
import re

import numpy as np
import pytest

from fdistill_jax import defaults
from fdistill_jax.data import prompt_cache as pc

PROMPTS = defaults.asset("digits_prompts.json")
T5 = defaults.asset("digits_t5")
CACHE = defaults.asset("digits_t2i_prompts")


@pytest.fixture(scope="module")
def cache():
  return pc.load_prompt_cache(CACHE)  # numpy + safetensors only: no torch needed.


def test_prompt_set_and_cache_fields(cache):
  rows = json.load(open(PROMPTS, encoding="utf-8"))["prompts"]
  assert cache.prompts == [r["text"].lower().strip() for r in rows]
  assert cache.labels.tolist() == [r["label"] for r in rows]
  assert cache.heldout.tolist() == [r["heldout"] for r in rows]
  words = lambda p: set(re.findall(r"\w+", p))
  for c in range(10):
    train = [p for p, l, h in zip(cache.prompts, cache.labels, cache.heldout) if l == c and not h]
    held = [p for p, l, h in zip(cache.prompts, cache.labels, cache.heldout) if l == c and h]
    assert len(train) >= 6 and len(held) >= 2 and not set(train) & set(held)
    seen = set().union(*map(words, train))
    for p in held:  # every held-out phrasing shares its class word or numeral with training ones.
      assert words(p) & seen & {str(c), "zero one two three four five six seven eight nine"
                                .split()[c]}, p
  assert cache.embeddings.shape == (len(rows), 16, 32) and cache.embeddings.dtype == np.float32
  assert cache.null_mask.tolist() == [[1] + [0] * 15]  # "" is just </s>.


def test_cache_is_the_tools_output(cache, tmp_path):
  """Re-encoding with the committed tokenizer + T5 reproduces the committed cache."""
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from fdistill_jax.tools import encode_prompts as ep
  ep.main([f"--prompts={PROMPTS}", f"--out={tmp_path}", f"--model={T5}", "--max_length=16"])
  new = pc.load_prompt_cache(tmp_path)
  assert new.prompts == cache.prompts
  np.testing.assert_allclose(new.embeddings, cache.embeddings, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new.null_embeddings, cache.null_embeddings, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(new.mask, cache.mask)
  np.testing.assert_array_equal(new.labels, cache.labels)
  np.testing.assert_array_equal(new.heldout, cache.heldout)
  tok = transformers.AutoTokenizer.from_pretrained(T5, local_files_only=True)
  ids = tok(cache.prompts, add_special_tokens=True).input_ids
  assert all(i[-1] == tok.eos_token_id and tok.unk_token_id not in i for i in ids)
  np.testing.assert_array_equal(cache.mask.sum(1), [len(i) for i in ids])  # words + </s>.
  assert tok("Seven, written with a QUILL").input_ids == tok(
      "seven , written with a quill").input_ids  # lower-cased; punctuation is its own token
  assert tok("quill").input_ids == [tok.unk_token_id, tok.eos_token_id]  # unknown -> <unk>.


# The teacher that reads what people type (configs/teachers/digits_t2i_text.py), which the
# digits_t2i_* distillation configs use: its frozen byte-level T5 and the cache that T5 wrote.
PROMPTS_V2 = defaults.asset("digits_prompts_v2.json")
TEXT_ENCODER = defaults.asset("digits_t2i_text_encoder")
TEXT_CACHE = defaults.asset("digits_t2i_text_prompts")


@pytest.fixture(scope="module")
def text_cache():
  return pc.load_prompt_cache(TEXT_CACHE)


def test_text_cache_fields(text_cache):
  rows = json.load(open(PROMPTS_V2, encoding="utf-8"))["prompts"]
  assert text_cache.prompts == [r["text"].lower().strip() for r in rows]
  assert text_cache.labels.tolist() == [r["label"] for r in rows]
  assert text_cache.heldout.tolist() == [r["heldout"] for r in rows]
  assert text_cache.embeddings.shape == (280, 64, 64)
  assert text_cache.null_mask.tolist() == [[1] + [0] * 63]  # "" is just </s>.


def test_our_flax_t5_on_the_committed_encoder_writes_the_committed_cache(text_cache):
  """No torch: the byte tokenizer + models/t5.py on the committed folder give the cache rows
  (encode_prompts wrote them through transformers' T5EncoderModel) to float32 rounding."""
  from fdistill_jax.convert import t5 as conv
  from fdistill_jax.data import byte_tokenizer as bt
  from fdistill_jax.models import t5 as t5_lib
  config, params = conv.load_folder(TEXT_ENCODER)
  ids, mask = bt.tokenize(text_cache.prompts, 64)
  np.testing.assert_array_equal(mask, text_cache.mask)
  got = np.asarray(t5_lib.T5Encoder(config).apply({"params": params}, ids, mask))
  m = mask[..., None].astype(bool)
  np.testing.assert_allclose(np.where(m, got, 0), np.where(m, text_cache.embeddings, 0),
                             rtol=1e-4, atol=1e-5)


def test_text_cache_is_the_tools_output(text_cache, tmp_path):
  """encode_prompts (torch) on the committed encoder reproduces the committed cache, reading
  max_length 64 from the folder's tokenizer."""
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from fdistill_jax.tools import encode_prompts as ep
  ep.main([f"--prompts={PROMPTS_V2}", f"--out={tmp_path}", f"--model={TEXT_ENCODER}"])
  new = pc.load_prompt_cache(tmp_path)
  assert new.prompts == text_cache.prompts
  np.testing.assert_allclose(new.embeddings, text_cache.embeddings, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new.null_embeddings, text_cache.null_embeddings, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(new.mask, text_cache.mask)


def test_the_flow_teacher_is_the_distillation_configs_teacher():
  """assets/digits_t2i_flow_teacher loads as a flow teacher of the architecture and schedule the
  configs/digits_t2i_flow_* configs declare, and reads the text cache's 64-d states."""
  from fdistill_jax.teachers import flow_dit  # pylint: disable=import-outside-toplevel
  cfg = defaults.digits_t2i_flow_distill()
  teacher = flow_dit.load_flow_teacher(cfg.teacher.checkpoint)
  assert teacher.module.diffusers_config() == {
      **teacher.module.diffusers_config(), **cfg.teacher.pixart_config.to_dict()}
  assert teacher.module.out_dim == teacher.module.in_channels == 1
  assert (teacher.shift, teacher.num_train_timesteps) == (
      cfg.teacher.schedule.shift, cfg.teacher.schedule.num_train_timesteps)
  text = pc.load_prompt_cache(cfg.teacher.prompt_cache)
  assert text.embeddings.shape[-1] == teacher.module.caption_channels
