"""encode_prompts + prompt_cache with a tiny random T5 v1.1 encoder and a word-level tokenizer
built in the test (nothing downloaded): round trip against calling the encoder directly,
masks, the "" embedding, resumption after a crash, and errors on bad caches."""
import json
import os

import numpy as np
import pytest

from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.tools import encode_prompts as ep

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = "a photo of cat dog on the red blue sofa under tree in snow very small big".split()
PROMPTS = ["A photo of a cat", "  dog on the SOFA ", "red tree", "a very small big blue dog in "
           "the snow under a tree on a sofa", "cat", "Zebra in snow", "blue"]
MAX_LEN = 8


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("t5"))
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="$A </s>", special_tokens=[("</s>", 1)])  # T5 appends </s>.
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                       unk_token="<unk>").save_pretrained(d)
  cfg = transformers.T5Config(vocab_size=len(vocab), d_model=16, d_kv=4, num_heads=4, d_ff=24,
                              num_layers=2, feed_forward_proj="gated-gelu",  # v1.1 style
                              relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(0)
  transformers.T5EncoderModel(cfg).eval().save_pretrained(d)
  return d


def _direct(t5_dir, prompts):
  """What PixArtAlphaPipeline.encode_prompt computes, with the same tokenizer and encoder."""
  tok = transformers.AutoTokenizer.from_pretrained(t5_dir)
  model = transformers.T5EncoderModel.from_pretrained(t5_dir).eval()
  ids = tok([p.lower().strip() for p in prompts], padding="max_length", max_length=MAX_LEN,
            truncation=True, add_special_tokens=True, return_tensors="pt")
  with torch.no_grad():
    return model(ids.input_ids, attention_mask=ids.attention_mask)[0].numpy(), \
        ids.attention_mask.numpy()


def _args(t5_dir, prompts_file, out, **kw):
  argv = [f"--prompts={prompts_file}", f"--out={out}", f"--model={t5_dir}",
          f"--max_length={MAX_LEN}", "--shard_size=3", "--batch_size=2"]
  return argv + [f"--{k}={v}" for k, v in kw.items()]


@pytest.fixture(scope="module")
def written(t5_dir, tmp_path_factory):
  d = tmp_path_factory.mktemp("cache")
  (d / "prompts.txt").write_text("\n".join(PROMPTS[:3] + [""] + PROMPTS[3:]) + "\n")
  ep.main(_args(t5_dir, d / "prompts.txt", d / "out"))
  return d


def test_round_trip_equals_direct_encoding(t5_dir, written):
  cache = pc.load_prompt_cache(written / "out")
  emb, mask = _direct(t5_dir, PROMPTS)
  assert cache.prompts == [p.lower().strip() for p in PROMPTS]
  assert cache.index["num_shards"] == 3 and len(cache) == len(PROMPTS)
  assert cache.embeddings.dtype == np.float32 and cache.embeddings.shape == (7, MAX_LEN, 16)
  np.testing.assert_allclose(cache.embeddings, emb, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(cache.mask, mask)
  # Words + </s>, truncated to max_length (the long prompt keeps 7 words and </s>).
  assert cache.mask.sum(1).tolist() == [6, 5, 3, 8, 2, 4, 2]
  null_emb, null_mask = _direct(t5_dir, [""])
  np.testing.assert_allclose(cache.null_embeddings, null_emb, rtol=1e-5, atol=1e-6)
  assert cache.null_mask.tolist() == [[1] + [0] * (MAX_LEN - 1)]  # "" -> just </s>.
  cond, null = cache.condition(np.array([1, 3])), cache.null_condition(2)
  assert cond["embeddings"].shape == (2, MAX_LEN, 16) and null["mask"].shape == (2, MAX_LEN)


def test_resume_after_crash(t5_dir, written, tmp_path, monkeypatch):
  (tmp_path / "caps.json").write_text(json.dumps(
      {"annotations": [{"image_id": i, "caption": p} for i, p in enumerate(PROMPTS)]}))
  real_write, calls = pc.write_shard, []

  def crash_after_first(path, *a, **kw):
    if calls:
      raise KeyboardInterrupt("simulated crash")
    calls.append(path)
    real_write(path, *a, **kw)
  monkeypatch.setattr(pc, "write_shard", crash_after_first)
  out = tmp_path / "out"
  with pytest.raises(KeyboardInterrupt):
    ep.main(_args(t5_dir, tmp_path / "caps.json", out))
  with pytest.raises(pc.PromptCacheError, match="incomplete"):
    pc.load_prompt_cache(out)
  monkeypatch.setattr(pc, "write_shard", real_write)

  encoded = []
  real_call = ep.T5Encoder.__call__
  monkeypatch.setattr(ep.T5Encoder, "__call__",
                      lambda self, p: encoded.extend(p) or real_call(self, p))
  ep.main(_args(t5_dir, tmp_path / "caps.json", out))
  assert encoded == [p.lower().strip() for p in PROMPTS[3:]] + [""]  # shard 0 was skipped.
  resumed, full = pc.load_prompt_cache(out), pc.load_prompt_cache(written / "out")
  np.testing.assert_allclose(resumed.embeddings, full.embeddings, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(resumed.mask, full.mask)
  assert resumed.prompts == full.prompts

  with pytest.raises(ValueError, match="shard_size"):  # resuming with other arguments
    ep.main(_args(t5_dir, tmp_path / "caps.json", out)[:-2] + ["--shard_size=2"])


def test_bad_caches_name_the_file(written, tmp_path):
  with pytest.raises(pc.PromptCacheError, match="index.json: missing"):
    pc.load_prompt_cache(tmp_path)
  bad = tmp_path / "bad"
  os.makedirs(bad)
  for f in os.listdir(written / "out"):
    (bad / f).write_bytes((written / "out" / f).read_bytes())
  shard = bad / pc.shard_name(1, 3)
  shard.write_bytes(shard.read_bytes()[:100])
  with pytest.raises(pc.PromptCacheError, match=f"{pc.shard_name(1, 3)}: truncated or corrupt"):
    pc.load_prompt_cache(bad)
  pc.write_shard(str(shard), np.zeros((3, MAX_LEN, 5), np.float32),
                 np.zeros((3, MAX_LEN), np.uint8), ["x"] * 3, 3)
  with pytest.raises(pc.PromptCacheError, match=r"expected \[3, 8, 16\]"):
    pc.load_prompt_cache(bad)
  with pytest.raises(ValueError, match="COCO captions"):
    (tmp_path / "x.json").write_text('{"images": []}')
    ep.read_prompts(str(tmp_path / "x.json"))


def test_bfloat16_storage(t5_dir, written, tmp_path):
  ep.main(_args(t5_dir, written / "prompts.txt", tmp_path / "bf", dtype="bfloat16"))
  cache = pc.load_prompt_cache(tmp_path / "bf")
  assert cache.embeddings.dtype.name == "bfloat16"
  full = pc.load_prompt_cache(written / "out")
  np.testing.assert_allclose(cache.embeddings.astype(np.float32), full.embeddings, rtol=1e-2,
                             atol=1e-2)
  assert pc.load_prompt_cache(tmp_path / "bf", dtype=np.float32).embeddings.dtype == np.float32


def test_labelled_prompt_json(t5_dir, written, tmp_path):
  """A labelled prompt JSON writes per-prompt labels/heldout; plain caches have none."""
  rows = [{"text": "A photo of a cat", "label": 3}, {"text": "red tree", "label": 1,
                                                     "heldout": True}, {"text": "blue"}]
  (tmp_path / "p.json").write_text(json.dumps({"prompts": rows}))
  ep.main(_args(t5_dir, tmp_path / "p.json", tmp_path / "out"))
  cache = pc.load_prompt_cache(tmp_path / "out")
  assert cache.prompts == ["a photo of a cat", "red tree", "blue"]
  assert cache.labels.dtype == np.int32 and cache.labels.tolist() == [3, 1, -1]
  assert cache.heldout.dtype == bool and cache.heldout.tolist() == [False, True, False]
  plain = pc.load_prompt_cache(written / "out")
  assert plain.labels is None and plain.heldout is None
  np.testing.assert_allclose(cache.embeddings[1], plain.embeddings[2], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="labelled prompt JSON"):
    (tmp_path / "bad.json").write_text(json.dumps({"prompts": [{"label": 1}]}))
    ep.read_prompts(str(tmp_path / "bad.json"))
