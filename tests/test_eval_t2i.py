"""Text-to-image evaluation: COCO prompt selection, FID over image folders, CLIP score, the CLI.

A fake COCO captions JSON, tiny PNGs, a random-weight FID Inception at its 75x75 minimum input
(as tests/test_fid.py) and the tiny random CLIP of tests/test_clip_score.py. The 2048-d Fréchet
distance itself is tested in test_fid.py; here it is replaced by a recorder so that the
statistics handed to it are checked without a 2048-d sqrtm (tens of seconds on CI).
"""
import json
import os
import sys

import numpy as np
import PIL.Image
import pytest

from fdistill_jax import testing
from fdistill_jax.evaluation import fid, t2i
from fdistill_jax.tools import eval_t2i

RES = 16


@pytest.fixture(scope="module")
def extractor():
  return fid.FeatureExtractor(testing.random_inception_variables(), batch_size=8,
                              preprocess="nvlabs", input_size=75)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
  """captions JSON (12 images, 2-3 captions each, shuffled), real PNGs, 7 sample PNGs."""
  root = tmp_path_factory.mktemp("coco")
  rng = np.random.default_rng(0)
  images, anns, ann_id = [], [], 100
  for k in range(12):
    image_id = 1000 + 7 * k
    images.append({"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.png"})
    for j in range(2 + k % 2):
      anns.append({"image_id": image_id, "id": ann_id + 50 * j,
                   "caption": f" a cat\nnumber {k} caption {j} "})
    ann_id += 1
  order = rng.permutation(len(anns))
  with open(root / "captions.json", "w") as f:
    json.dump({"images": images, "annotations": [anns[i] for i in order]}, f)
  (root / "real").mkdir()
  for k, im in enumerate(images):  # non-square real images: cropped and resized to RES.
    shape = (RES + 4, RES + 8, 3) if k % 2 else (RES + 9, RES + 3, 3)
    PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        root / "real" / im["file_name"])
  (root / "samples").mkdir()
  for i in range(7):
    PIL.Image.fromarray(rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)).save(
        root / "samples" / f"{i:06d}.png")
  return root


def test_coco_prompt_selection_is_deterministic_one_caption_per_image(coco):
  prompts, ids, files = t2i.select_coco_prompts(coco / "captions.json", 6, seed=0)
  assert (prompts, ids) == t2i.select_coco_prompts(coco / "captions.json", 6, seed=0)[:2]
  assert len(set(ids)) == 6 and all(1000 <= i < 1084 and (i - 1000) % 7 == 0 for i in ids)
  # The caption with the lowest annotation id (j = 0), whitespace cleaned to one line.
  assert prompts == [f"a cat number {(i - 1000) // 7} caption 0" for i in ids]
  assert files[ids[0]] == f"COCO_val2014_{ids[0]:012d}.png"
  assert t2i.select_coco_prompts(coco / "captions.json", 6, seed=1)[1] != ids
  with pytest.raises(ValueError, match="asked for 13 prompts but the file has 12 images"):
    t2i.select_coco_prompts(coco / "captions.json", 13)
  (coco / "bad.json").write_text(json.dumps({"annotations": [{"caption": "x"}]}))
  with pytest.raises(ValueError, match=r"bad.json: expected a COCO captions JSON.*image_id"):
    t2i.select_coco_prompts(coco / "bad.json", 1)


def test_crop_and_resize_is_long_edge_centre_crop_then_lanczos():
  rng = np.random.default_rng(3)
  im = rng.integers(0, 256, (30, 21, 3), dtype=np.uint8)
  want = np.asarray(PIL.Image.fromarray(im[4:25]).resize((16, 16), PIL.Image.LANCZOS))
  np.testing.assert_array_equal(t2i.crop_and_resize(im, 16), want)
  np.testing.assert_array_equal(t2i.crop_and_resize(im[:21], 21), im[:21])


def test_fid_and_clip_over_folders_and_the_cli(coco, extractor, tmp_path, monkeypatch, capsys):
  pytest.importorskip("transformers")  # the CLIP half; the FID half needs no torch
  sys.path.insert(0, os.path.dirname(__file__))
  from test_clip_score import build_tiny_clip  # pylint: disable=import-outside-toplevel
  clip_dir = build_tiny_clip(str(tmp_path / "clip"))
  calls = []
  monkeypatch.setattr(fid, "frechet_distance",
                      lambda *a: calls.append(a) or float(np.sum((a[0] - a[2]) ** 2)))
  monkeypatch.setattr(fid.FeatureExtractor, "from_weight_file",
                      classmethod(lambda cls, path, batch_size: extractor))
  out = tmp_path / "m.json"
  argv = [f"--prompts={coco / 'captions.json'}", f"--samples={coco / 'samples'}",
          f"--out={out}", "--num_samples=6", f"--resolution={RES}", "--inception=w.pth",
          f"--real_dir={coco / 'real'}", f"--save_reference={tmp_path / 'ref.npz'}",
          f"--clip={clip_dir}", "--clip_batch=4", "--clip_resolution=20"]
  got = eval_t2i.main(argv)
  assert json.loads(out.read_text()) == pytest.approx(got)
  assert "clip_score" in capsys.readouterr().out
  # Independently: the selected real images and the first 6 samples, cropped/resized by hand.
  prompts, ids, files = t2i.select_coco_prompts(coco / "captions.json", 6, seed=0)

  def load(path):
    im = np.asarray(PIL.Image.open(path).convert("RGB"))
    s = min(im.shape[:2])
    top, left = round((im.shape[0] - s) / 2), round((im.shape[1] - s) / 2)
    return np.asarray(PIL.Image.fromarray(im[top:top + s, left:left + s]).resize(
        (RES, RES), PIL.Image.LANCZOS))

  real = np.stack([load(coco / "real" / files[i]) for i in ids])
  fake = np.stack([load(coco / "samples" / f"{i:06d}.png") for i in range(6)])
  (mu_f, sig_f, mu_r, sig_r) = calls[0]
  for (m, s), x in (((mu_f, sig_f), fake), ((mu_r, sig_r), real)):
    want_m, want_s = fid.compute_statistics(extractor(x))
    np.testing.assert_allclose(m, want_m, rtol=1e-6, atol=1e-6 * np.abs(want_m).max())
    np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-6 * np.abs(want_s).max())
  assert got["fid"] == pytest.approx(np.sum((mu_f - mu_r) ** 2)) and got["num_real"] == 6
  from fdistill_jax.evaluation import clip_score
  scorer = clip_score.CLIPScorer(clip_dir, prefix="A photo depicts ")
  cos = scorer.cosine([np.asarray(PIL.Image.fromarray(x).resize((20, 20), PIL.Image.LANCZOS))
                       for x in fake], prompts)
  assert got["clip_score"] == pytest.approx(cos.mean(), abs=1e-6)
  assert got["clip_score_100"] == pytest.approx(np.mean(100 * np.maximum(cos, 0)), abs=1e-4)
  # The saved reference gives the same FID; a prompt file gives the same prompts.
  argv2 = [a for a in argv if not a.startswith(("--real_dir", "--save_reference", "--clip"))]
  again = eval_t2i.main(argv2 + [f"--reference={tmp_path / 'ref.npz'}"])
  assert again["fid"] == pytest.approx(got["fid"], rel=1e-6) and "clip_score" not in again
  eval_t2i.main([f"--prompts={coco / 'captions.json'}", "--num_samples=6",
                 f"--write_prompts={tmp_path / 'p.txt'}"])
  assert t2i.read_prompt_file(tmp_path / "p.txt") == prompts


def test_clear_errors(coco, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"samples: 1 of 8 samples missing.*000007.png"):
    t2i.sample_paths(coco / "samples", 8)
  with pytest.raises(FileNotFoundError, match="samples folder not found: .*nowhere"):
    t2i.sample_paths(tmp_path / "nowhere", 2)
  _, ids, files = t2i.select_coco_prompts(coco / "captions.json", 3)
  with pytest.raises(FileNotFoundError, match=r"3 of 3 real images missing.*COCO_val2014_0"):
    t2i.real_image_paths(tmp_path, ids, files)
  with pytest.raises(FileNotFoundError, match="prompt file not found"):
    t2i.read_prompt_file(tmp_path / "absent.txt")
  with pytest.raises(ValueError, match="FID needs reference statistics"):
    t2i.evaluate(["a", "b"], str(coco / "samples"), extractor=object())
  for bad in (["--prompts=p.txt", "--samples=s", "--out=o.json", "--inception=w.pth"],
              ["--prompts=p.txt", "--samples=s", "--out=o.json"],
              ["--prompts=p.txt", "--clip=c"]):
    with pytest.raises(SystemExit):
      eval_t2i.parse_args(bad)
