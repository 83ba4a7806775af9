"""Text-to-image evaluation over prompt/image pairs: COCO prompt selection, FID and CLIP score.

Protocol (the papers' zero-shot MS-COCO-30k; see docs/t2i_evaluation.md for the numbers):
* prompts: N = 30,000 captions of COCO-2014 val (captions_val2014.json), one caption per image:
  `select_coco_prompts` draws N image ids without replacement with a seeded NumPy generator from
  the sorted ids and keeps each image's caption with the lowest annotation id. The published
  lists (GigaGAN's captions.txt for SiD-LSG, DMD2's captions_coco14_test.txt) can be given as a
  prompt file instead, for the exact prompt sets of those papers.
* samples: one PNG per prompt, `%06d.png` in prompt order (what `--mode=sample` writes).
* images for FID: centre crop of the long edge, then Lanczos resize to `resolution` (512 for
  512² models; GigaGAN/DMD2's `resize_and_center_crop`), uint8; the FID Inception then resizes
  to 299 itself (NVlabs detector: TF1 bilinear). The papers ran clean-fid, whose 299 resize is
  PIL bicubic on floats, so absolute values differ slightly from theirs; compare runs within
  this protocol.
* FID reference: an npz (mu, sigma) or a folder of real images treated as above (the selected
  images of the COCO JSON, or every image of the folder).
* CLIP score: `clip_score.CLIPScorer` on the samples, same crop/resize to 256 first as DMD2
  does, prompts prefixed with "A photo depicts "; mean cosine (and torchmetrics' ×100 form).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
from typing import Callable, Iterator, Sequence

import numpy as np
import PIL.Image

from fdistill_jax import fileio
from fdistill_jax.evaluation import clip_score as cs
from fdistill_jax.evaluation import fid

PAPERS_NUM_SAMPLES = 30_000
CLIP_RESOLUTION = 256  # DMD2's coco_evaluator resizes to 256 before CLIP's own preprocessing.
LOAD_THREADS = 8


def clean_caption(text: str) -> str:
  """One line of text: runs of whitespace (COCO captions hold newlines) become one space."""
  return re.sub(r"\s+", " ", str(text)).strip()


def read_coco_captions(path: str | os.PathLike) -> tuple[dict[int, list[tuple[int, str]]],
                                                         dict[int, str]]:
  """({image_id: [(annotation_id, caption), ...]}, {image_id: file_name}) of a COCO JSON."""
  path = fileio.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"COCO captions file not found: {path}")
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
    anns = data["annotations"]
    captions: dict[int, list[tuple[int, str]]] = {}
    for a in anns:
      captions.setdefault(int(a["image_id"]), []).append((int(a.get("id", 0)),
                                                          clean_caption(a["caption"])))
    files = {int(im["id"]): str(im["file_name"]) for im in data.get("images", [])}
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: expected a COCO captions JSON like captions_val2014.json "
                     '({"images": [...], "annotations": [{"image_id", "id", "caption"}, ...]}): '
                     f"{type(e).__name__}: {e}") from e
  if not captions:
    raise ValueError(f"{path}: no annotations")
  return captions, files


def select_coco_prompts(path: str | os.PathLike, num: int = PAPERS_NUM_SAMPLES, seed: int = 0
                        ) -> tuple[list[str], list[int], dict[int, str]]:
  """`num` (caption, image id) pairs, one per image, deterministic in (file, num, seed).

  Returns (captions [num], image_ids [num], {image_id: file_name}).
  """
  captions, files = read_coco_captions(path)
  ids = np.array(sorted(captions), np.int64)
  if num > len(ids):
    raise ValueError(f"{path}: asked for {num} prompts but the file has {len(ids)} images")
  chosen = np.random.default_rng(seed).choice(ids, size=num, replace=False)
  return [min(captions[int(i)])[1] for i in chosen], [int(i) for i in chosen], files


def read_prompt_file(path: str | os.PathLike) -> list[str]:
  """Prompts of a text file, one per non-blank line."""
  path = fileio.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"prompt file not found: {path}")
  lines = path.read_text(encoding="utf-8").splitlines()
  prompts = [clean_caption(line) for line in lines if line.strip()]
  if not prompts:
    raise ValueError(f"{path}: no prompts")
  return prompts


def crop_and_resize(image: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [resolution, resolution, 3]: centre crop of the long edge
  (offsets rounded as torchvision's center_crop), then Lanczos (GigaGAN/DMD2)."""
  h, w = image.shape[:2]
  s = min(h, w)
  top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
  square = image[top:top + s, left:left + s]
  if s == resolution:
    return np.ascontiguousarray(square)
  return np.asarray(PIL.Image.fromarray(square).resize((resolution, resolution),
                                                       PIL.Image.LANCZOS))


def sample_paths(folder: str | os.PathLike, num: int) -> list[str]:
  """`folder/%06d.png` for 0 <= i < num, checking they exist."""
  folder = fileio.path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"samples folder not found: {folder}")
  paths = [folder / f"{i:06d}.png" for i in range(num)]
  missing = [p for p in paths if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"{folder}: {len(missing)} of {num} samples missing (first: "
                            f"{missing[0].name}); expected one %06d.png per prompt")
  return [str(p) for p in paths]


def real_image_paths(folder: str | os.PathLike, image_ids: Sequence[int] | None = None,
                     files: dict[int, str] | None = None) -> list[str]:
  """The real images for FID: those of `image_ids` (names from the COCO JSON), or all."""
  folder = fileio.path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"real image folder not found: {folder}")
  if image_ids is None:
    paths = cs.list_images(folder)
    if len(paths) < 2:
      raise ValueError(f"{folder}: need at least 2 images for FID statistics, found {len(paths)}")
    return paths
  missing_name = [i for i in image_ids if i not in (files or {})]
  if missing_name:
    raise KeyError(f"image id {missing_name[0]} has no file_name in the COCO JSON's 'images'")
  paths = [folder / files[i] for i in image_ids]
  missing = [p for p in paths if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"{folder}: {len(missing)} of {len(paths)} real images missing "
                            f"(first: {missing[0].name})")
  return [str(p) for p in paths]


def _chunks(paths: Sequence[str], size: int, resolution: int | None
            ) -> Iterator[list[np.ndarray]]:
  """Lists of `size` decoded (and cropped/resized) images. PIL releases the GIL in decoding
  and resizing, so a thread pool reads the next chunk (one ahead: bounded memory) while the
  model runs on this one."""
  def load(path):
    im = cs.read_image(path)
    return crop_and_resize(im, resolution) if resolution else im

  with concurrent.futures.ThreadPoolExecutor(LOAD_THREADS) as pool:
    pending = None
    for start in range(0, len(paths), size):
      submitted = [pool.submit(load, p) for p in paths[start:start + size]]
      if pending is not None:
        yield [f.result() for f in pending]
      pending = submitted
    if pending is not None:
      yield [f.result() for f in pending]


def folder_statistics(paths: Sequence[str], extractor: fid.FeatureExtractor, resolution: int
                      ) -> tuple[np.ndarray, np.ndarray]:
  """FID (mu, sigma) of image files, each cropped and resized to `resolution`, streamed."""
  acc = fid.StatsAccumulator()
  for images in _chunks(paths, extractor.batch_size, resolution):
    acc.update(extractor(np.stack(images)))
  return acc.finalize()


def clip_cosines(paths: Sequence[str], prompts: Sequence[str], scorer: cs.CLIPScorer,
                 resolution: int | None = CLIP_RESOLUTION) -> np.ndarray:
  """Per-pair CLIP cosines [N] of image files and prompts, streamed in the scorer's batches."""
  out, start = [], 0
  for images in _chunks(paths, scorer.batch_size, resolution):
    out.append(scorer.cosine(images, prompts[start:start + len(images)]))
    start += len(images)
  return np.concatenate(out)


def evaluate(prompts: Sequence[str], samples_dir: str, *, resolution: int = 512,
             extractor: fid.FeatureExtractor | None = None,
             reference: str | tuple[np.ndarray, np.ndarray] | None = None,
             real_paths: Sequence[str] | None = None, save_reference: str | None = None,
             scorer: cs.CLIPScorer | None = None, clip_resolution: int | None = CLIP_RESOLUTION,
             log: Callable[[str], None] = print) -> dict:
  """FID and/or CLIP score of `samples_dir/%06d.png` against `prompts` (one image each).

  FID needs `extractor` and either `reference` (npz path or (mu, sigma)) or `real_paths`.
  Returns a dict of the metrics and the protocol settings.
  """
  if extractor is None and scorer is None:
    raise ValueError("nothing to evaluate: give an Inception (FID) and/or a CLIP model")
  paths = sample_paths(samples_dir, len(prompts))
  out: dict = {"num_samples": len(prompts), "resolution": resolution}
  if extractor is not None:
    if reference is None and real_paths is None:
      raise ValueError("FID needs reference statistics (--reference) or real images (--real_dir)")
    if isinstance(reference, (str, os.PathLike)):
      out["reference"] = os.fspath(reference)
      reference = fid.load_reference_stats(reference)
    elif reference is None:
      log(f"FID reference: statistics of {len(real_paths)} real images")
      reference = folder_statistics(real_paths, extractor, resolution)
      out["num_real"] = len(real_paths)
      if save_reference:
        fid.save_reference_stats(save_reference, *reference)
        out["reference"] = save_reference
    log(f"FID: Inception features of {len(paths)} samples")
    mu, sigma = folder_statistics(paths, extractor, resolution)
    out["fid"] = fid.frechet_distance(mu, sigma, *reference)
  if scorer is not None:
    log(f"CLIP score: {len(paths)} pairs with {scorer.model_dir}")
    out.update(cs.summarise(clip_cosines(paths, prompts, scorer, clip_resolution)))
    out.pop("num_pairs")
    out.update(clip_model=scorer.model_dir, clip_prefix=scorer.prefix,
               clip_resolution=clip_resolution)
  return out
