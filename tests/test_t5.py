"""The Flax T5 encoder against transformers' T5EncoderModel (tiny random float32 configs, gated-GELU
and ReLU, padded prompts): the last hidden state at real tokens to 1e-5 relative; the relative
position buckets as transformers computes them; folders written here load strictly in
transformers and back exactly; the byte tokenizer equals ByT5Tokenizer saved and reloaded offline.
"""
import jax
import numpy as np
import pytest

from fdistill_jax.convert import t5 as conv
from fdistill_jax.data import byte_tokenizer as bt
from fdistill_jax.models import t5 as t5_lib

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = ["draw a 7", "an image of the numeral 7", "seven", "7 written by hand",
           "sevens, 7s & 7's!", "dígito siete — ¿sí?", ""]


def _ids(length=32):
  ids, mask = bt.tokenize(PROMPTS, length)
  return ids, mask


def _hf_model(ff: str, seed: int = 0):
  cfg = transformers.T5Config(
      vocab_size=bt.VOCAB_SIZE, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=3,
      feed_forward_proj=ff, dropout_rate=0.0, relative_attention_num_buckets=16,
      relative_attention_max_distance=20, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(seed)
  model = transformers.T5EncoderModel(cfg).eval()
  with torch.no_grad():  # transformers' norms start at 1: make them matter.
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
  return model


def _hf_out(model, ids, mask):
  with torch.no_grad():
    return model(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())[0].numpy()


def _rel_err(a, b, mask):
  keep = mask.astype(bool)
  return float(np.max(np.abs(a[keep] - b[keep])) / np.max(np.abs(b[keep])))


@pytest.mark.parametrize("buckets,distance", [(32, 128), (32, 64), (16, 20), (8, 16)])
def test_relative_position_buckets_match_transformers(buckets, distance):
  rel = np.arange(-150, 151)[None, :] - np.zeros((1, 1), np.int64)
  want = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
      torch.from_numpy(rel), bidirectional=True, num_buckets=buckets, max_distance=distance)
  np.testing.assert_array_equal(t5_lib.relative_position_bucket(rel, buckets, distance),
                                want.numpy())


@pytest.mark.parametrize("ff", ["gated-gelu", "relu"])
def test_flax_encoder_matches_transformers(ff, tmp_path):
  model = _hf_model(ff)
  model.save_pretrained(tmp_path)
  config, params = conv.load_folder(tmp_path)
  assert config.feed_forward_proj == ff and config.num_layers == 3
  ids, mask = _ids()
  assert mask.sum(1).min() == 1 and (mask == 0).any()  # "" is </s> alone; padding present.
  ours = np.asarray(t5_lib.T5Encoder(config).apply({"params": params}, ids, mask))
  err = _rel_err(ours, _hf_out(model, ids, mask), mask)
  assert err <= 1e-5, err


def test_written_folder_loads_strictly_and_round_trips(tmp_path):
  config = t5_lib.T5Config(d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                           relative_attention_num_buckets=16, relative_attention_max_distance=20)
  params = t5_lib.init_params(config, jax.random.PRNGKey(3))
  conv.write_folder(params, config, tmp_path, max_length=32)
  model, info = transformers.T5EncoderModel.from_pretrained(tmp_path, output_loading_info=True)
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  for key, a in conv.params_to_state_dict(params, config).items():
    np.testing.assert_array_equal(sd[key], a, err_msg=key)
  ids, mask = _ids()
  ours = np.asarray(t5_lib.T5Encoder(config).apply({"params": params}, ids, mask))
  assert _rel_err(ours, _hf_out(model.eval(), ids, mask), mask) <= 1e-5
  config2, params2 = conv.load_folder(tmp_path)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, jax.device_get(params))


def test_mismatched_state_dict_is_listed():
  config = t5_lib.T5Config(d_model=16, d_kv=4, num_heads=4, d_ff=24, num_layers=1)
  sd = conv.params_to_state_dict(t5_lib.init_params(config, jax.random.PRNGKey(0)), config)
  sd.pop("encoder.final_layer_norm.weight")
  sd["encoder.block.0.layer.1.DenseReluDense.wo.weight"] = np.zeros((3, 3), np.float32)
  with pytest.raises(conv.StateDictMismatchError, match=r"(?s)final_layer_norm.*wo.weight"):
    conv.state_dict_to_params(sd, config)


def test_byte_tokenizer_equals_byt5_saved_and_reloaded_offline(tmp_path):
  bt.write_tokenizer(str(tmp_path), 24)
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
  assert isinstance(tok, transformers.ByT5Tokenizer) and tok.model_max_length == 24
  long = "a very long prompt that is truncated to its first bytes"
  texts = bt.preprocess(PROMPTS + [long, "  Seven!  "])
  ids, mask = bt.tokenize(texts, 24)
  got = tok(texts, padding="max_length", max_length=24, truncation=True,
            add_special_tokens=True, return_tensors="np")
  np.testing.assert_array_equal(ids, got["input_ids"])
  np.testing.assert_array_equal(mask, got["attention_mask"])
  assert bt.max_bytes([long]) == len(long) + 1 and ids[-2, -1] == bt.EOS
  # The reference: ByT5Tokenizer as transformers builds it, saved to its own folder.
  transformers.ByT5Tokenizer(extra_ids=0, model_max_length=24).save_pretrained(tmp_path / "ref")
  ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ref"), local_files_only=True)
  np.testing.assert_array_equal(ref(texts, padding="max_length", max_length=24,
                                    truncation=True, return_tensors="np")["input_ids"], ids)
