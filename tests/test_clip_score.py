"""CLIP score against transformers' own CLIPModel/CLIPImageProcessorPil on a tiny random CLIP.

The model, a BPE tokenizer (vocab + merges written here) and a preprocessor config are built in
the test and saved to a folder, so nothing is downloaded. Also used by tests/test_eval_t2i.py.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fdistill_jax.evaluation import clip_score

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = ["a cat on the mat", "the red bus", "two dogs", "a photo of a tree", "the sea at night",
           "a very long caption that goes on and on past the context of the tiny text model"]


def build_tiny_clip(folder, seed=0):
  """A random CLIPModel (vision 30x30, text context 16) + tokenizer + preprocessor in `folder`."""
  chars = "abcdefghijklmnopqrstuvwxyz0123456789.,"
  vocab = {c: i for i, c in enumerate(chars)}
  vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
  merges = ["t h", "th e</w>", "c a", "ca t</w>", "o n</w>"]
  for m in merges:
    vocab[m.replace(" ", "")] = len(vocab)
  vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump(vocab, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
  tok = transformers.CLIPTokenizer(os.path.join(folder, "vocab.json"),
                                   os.path.join(folder, "merges.txt"))
  text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=16, eos_token_id=tok.eos_token_id,
              bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
  vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                image_size=30, patch_size=6)
  torch.manual_seed(seed)
  model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                         projection_dim=24)).eval()
  model.save_pretrained(folder)
  tok.save_pretrained(folder)
  # Resize to 34 then crop 30, so both steps are exercised (real CLIPs use 224 and 224).
  transformers.CLIPImageProcessorPil(size={"shortest_edge": 34},
                                     crop_size={"height": 30, "width": 30}).save_pretrained(folder)
  return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
  return build_tiny_clip(str(tmp_path_factory.mktemp("clip") / "tiny_clip"))


def _images(rng, shapes):
  return [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]


def test_preprocessing_matches_clip_image_processor(tiny_clip):
  scorer = clip_score.CLIPScorer(tiny_clip)
  ref = transformers.CLIPImageProcessorPil.from_pretrained(tiny_clip)
  rng = np.random.default_rng(0)
  # Square, portrait, landscape, downscaled, upscaled, odd crop offsets.
  for im in _images(rng, [(64, 64, 3), (52, 40, 3), (40, 57, 3), (34, 34, 3), (20, 27, 3)]):
    want = ref(images=[im], return_tensors="np")["pixel_values"][0]
    got = clip_score.preprocess_image(im, **scorer.image_settings)
    assert got.shape == want.shape == (3, 30, 30)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  gray = rng.integers(0, 256, (40, 40), dtype=np.uint8)
  np.testing.assert_allclose(clip_score.preprocess_image(gray, **scorer.image_settings),
                             ref(images=[np.stack([gray] * 3, -1)],
                                 return_tensors="np")["pixel_values"][0], atol=2e-6)
  with pytest.raises(ValueError, match="must be uint8"):
    clip_score.preprocess_image(gray.astype(np.float32), **scorer.image_settings)


def test_score_equals_clip_model_forward_and_is_batch_invariant(tiny_clip):
  rng = np.random.default_rng(1)
  images = _images(rng, [(48, 48, 3)] * 4 + [(40, 56, 3), (56, 40, 3)])
  prefix = clip_score.GIGAGAN_PREFIX
  scorer = clip_score.CLIPScorer(tiny_clip, batch_size=4, prefix=prefix)
  got = scorer.cosine(images, PROMPTS)
  # Direct: CLIPModel.forward returns unit embeddings; processor and tokenizer by transformers.
  model = transformers.CLIPModel.from_pretrained(tiny_clip).eval()
  tok = transformers.AutoTokenizer.from_pretrained(tiny_clip)
  proc = transformers.CLIPImageProcessorPil.from_pretrained(tiny_clip)
  ids = tok([prefix + p for p in PROMPTS], padding=True, truncation=True, max_length=16,
            return_tensors="pt")
  with torch.no_grad():
    out = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask,
                pixel_values=proc(images=images, return_tensors="pt")["pixel_values"])
  want = (out.image_embeds * out.text_embeds).sum(-1).double().numpy()
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  logits = out.logits_per_image.diagonal().double().numpy() / model.logit_scale.exp().item()
  np.testing.assert_allclose(got, logits, rtol=0, atol=2e-6)
  assert np.ptp(got) > 1e-3  # distinct pairs score differently
  s = scorer.score(images, PROMPTS)
  assert s["num_pairs"] == 6 and s["clip_score"] == pytest.approx(want.mean(), abs=2e-6)
  assert s["clip_score_100"] == pytest.approx(np.mean(100 * np.maximum(want, 0)), abs=2e-4)
  # The two conventions on known cosines: the ×100 one clamps negatives to 0.
  assert clip_score.summarise(np.array([-0.5, 0.2, 0.4])) == {
      "clip_score": pytest.approx(0.1 / 3), "clip_score_100": pytest.approx(20.0),
      "num_pairs": 3}
  # Batch size and position in the batch do not change a pair's score.
  for bs in (1, 5, 64):
    scorer.batch_size = bs
    np.testing.assert_allclose(scorer.cosine(images, PROMPTS), got, rtol=0, atol=1e-6)
  np.testing.assert_allclose(scorer.cosine(images[::-1], PROMPTS[::-1])[::-1], got, atol=1e-6)
  np.testing.assert_allclose(scorer.cosine(np.stack(images[:4]), PROMPTS[:4]), got[:4],
                             atol=1e-6)  # a uint8 NHWC array as well as a list
  # The prefix is part of the protocol: without it the scores change.
  scorer.prefix = ""
  assert np.abs(scorer.cosine(images, PROMPTS) - got).max() > 1e-4
  with pytest.raises(ValueError, match="6 images for 5 prompts"):
    scorer.cosine(images, PROMPTS[:5])


def test_clear_errors_for_bad_folders(tiny_clip, tmp_path):
  with pytest.raises(FileNotFoundError, match="CLIP model folder not found: .*absent"):
    clip_score.CLIPScorer(tmp_path / "absent")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="empty: no config.json"):
    clip_score.CLIPScorer(tmp_path / "empty")
  other = tmp_path / "t5"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"model_type": "t5"}))
  with pytest.raises(ValueError, match=r"t5/config.json: model_type is 't5', expected 'clip'"):
    clip_score.CLIPScorer(other)
  no_weights = tmp_path / "no_weights"
  no_weights.mkdir()
  for name in os.listdir(tiny_clip):
    if name != "model.safetensors":
      (no_weights / name).write_bytes(open(os.path.join(tiny_clip, name), "rb").read())
  with pytest.raises(FileNotFoundError, match="no_weights: no CLIP weights.*model.safetensors"):
    clip_score.CLIPScorer(no_weights)
  (no_weights / "model.safetensors").write_bytes(
      open(os.path.join(tiny_clip, "model.safetensors"), "rb").read())
  for name in ("tokenizer.json", "vocab.json", "merges.txt"):
    if (no_weights / name).exists():
      (no_weights / name).unlink()
  with pytest.raises(FileNotFoundError, match="no_weights: no CLIP tokenizer"):
    clip_score.CLIPScorer(no_weights)
  (no_weights / "model.safetensors").write_bytes(b"junk")
  (no_weights / "tokenizer.json").write_bytes(
      open(os.path.join(tiny_clip, "tokenizer.json"), "rb").read())
  with pytest.raises(ValueError, match="no_weights: could not load the CLIP model"):
    clip_score.CLIPScorer(no_weights)


def test_torch_is_optional(monkeypatch, tiny_clip):
  code = ("import sys, fdistill_jax.evaluation.clip_score; "
          "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match=r"pip install 'fdistill_jax\[torch\]'"):
    clip_score.CLIPScorer(tiny_clip)
