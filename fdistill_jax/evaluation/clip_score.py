"""CLIP score of image–prompt pairs with a transformers (PyTorch) CLIPModel from a local folder.

Definition. For each pair, c = cos(E_img(image), E_txt(prompt)) of the projected embeddings.
* `clip_score`: mean of c. This is the number the text-to-image distillation papers report
  (SiD-LSG, f-distill Table 4, DMD2: 0.29-0.32), computed by GigaGAN's evaluation code that
  SiD-LSG and DMD2 ship: open_clip ViT-g-14 (laion2b_s12b_b42k; as a transformers folder:
  `laion/CLIP-ViT-g-14-laion2B-s12B-b42K`), captions prefixed with "A photo depicts ", no clamp.
* `clip_score_100`: mean of 100 · max(c, 0), torchmetrics' `CLIPScore` *scale* only. It is the
  same model, prefix and preprocessing as `clip_score` ×100 (clamped at 0), NOT torchmetrics'
  number: torchmetrics uses ViT-L/14 (openai/clip-vit-large-patch14, values around 30), no
  prefix and the HF processor without the 256 resize. Compare it with torchmetrics-reported
  values only after setting those three the same way.

Image preprocessing is written here (PIL, NumPy) rather than delegated to CLIPImageProcessor,
whose default backend in transformers 5 depends on whether torchvision is installed; it equals
transformers' PIL backend (`CLIPImageProcessorPil`) and open_clip's eval transform on square
images: resize the shortest side to `size` (bicubic, long side int(size · long / short)),
centre crop `crop_size` (offsets (H - crop) // 2), x / 255, (x - mean) / std.
Text: the folder's tokenizer, truncation and padding to the text model's
max_position_embeddings (77), so a prompt's tokens do not depend on its batch.

torch and transformers are imported only when a scorer is built (`pip install
fdistill_jax[torch]`); nothing is downloaded: the folder must hold config.json (model_type
'clip'), the weights and the tokenizer.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import PIL.Image

from fdistill_jax import fileio

GIGAGAN_PREFIX = "A photo depicts "
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("CLIP score needs torch and transformers: pip install "
                      "'fdistill_jax[torch]'") from e
  return torch, transformers


def check_clip_folder(path: str | os.PathLike) -> dict:
  """Checks that `path` is a transformers CLIPModel folder; returns its config.json as a dict."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"CLIP model folder not found: {path} (a transformers CLIPModel "
                            "folder, e.g. a local copy of laion/CLIP-ViT-g-14-laion2B-s12B-b42K)")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{path}: no config.json; expected a transformers CLIPModel folder "
                            "(config.json, model.safetensors, tokenizer files)")
  with open(cfg_path, encoding="utf-8") as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{cfg_path}: not valid JSON ({e})") from e
  if config.get("model_type") != "clip":
    raise ValueError(f"{cfg_path}: model_type is {config.get('model_type')!r}, expected 'clip' "
                     "(a CLIPModel with both the text and the vision tower)")
  if not any(os.path.isfile(os.path.join(path, w)) for w in WEIGHT_FILES):
    raise FileNotFoundError(f"{path}: no CLIP weights; expected one of {list(WEIGHT_FILES)}")
  has_tok = os.path.isfile(os.path.join(path, "tokenizer.json")) or all(
      os.path.isfile(os.path.join(path, n)) for n in ("vocab.json", "merges.txt"))
  if not has_tok:
    raise FileNotFoundError(f"{path}: no CLIP tokenizer; expected tokenizer.json or "
                            "vocab.json + merges.txt")
  return config


def _image_settings(path: str, config: dict) -> dict:
  """size, crop, mean, std, resample from preprocessor_config.json, else CLIP's defaults."""
  pp_path = os.path.join(path, "preprocessor_config.json")
  pp = {}
  if os.path.isfile(pp_path):
    with open(pp_path, encoding="utf-8") as f:
      pp = json.load(f)
  image_size = int(config.get("vision_config", {}).get("image_size", 224))
  size = pp.get("size", image_size)
  if isinstance(size, dict):
    if "shortest_edge" not in size:
      raise ValueError(f"{pp_path}: field 'size' = {size}; expected {{'shortest_edge': n}}")
    size = size["shortest_edge"]
  crop = pp.get("crop_size", size)
  if isinstance(crop, dict):
    crop = (crop["height"], crop["width"])
  crop = (int(crop), int(crop)) if np.isscalar(crop) else tuple(int(c) for c in crop)
  if crop != (image_size, image_size):
    raise ValueError(f"{pp_path}: crop_size {crop} differs from the vision model's image_size "
                     f"{image_size} in config.json")
  return dict(size=int(size), crop=crop, resample=int(pp.get("resample", 3)),
              mean=np.asarray(pp.get("image_mean", OPENAI_CLIP_MEAN), np.float32),
              std=np.asarray(pp.get("image_std", OPENAI_CLIP_STD), np.float32))


def preprocess_image(image: np.ndarray, size: int, crop: tuple[int, int], mean: np.ndarray,
                     std: np.ndarray, resample: int = 3) -> np.ndarray:
  """uint8 [H, W, 3] (or [H, W]) -> float32 [3, crop_h, crop_w], CLIP's eval transform."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"images must be uint8, got {image.dtype}")
  if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
    image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"an image must be [H, W, 3] uint8, got shape {image.shape}")
  h, w = image.shape[:2]
  short, long = min(h, w), max(h, w)
  new_long = int(size * long / short)
  new_h, new_w = (new_long, size) if h > w else (size, new_long)
  if (new_h, new_w) != (h, w):
    image = np.asarray(PIL.Image.fromarray(image).resize((new_w, new_h), resample=resample))
  ch, cw = crop
  if new_h < ch or new_w < cw:
    raise ValueError(f"resized image {new_h}x{new_w} is smaller than the crop {ch}x{cw}")
  top, left = (new_h - ch) // 2, (new_w - cw) // 2
  x = image[top:top + ch, left:left + cw].astype(np.float32) * np.float32(1 / 255)
  return ((x - mean) / std).transpose(2, 0, 1)


class CLIPScorer:
  """Cosine similarities of (image, prompt) pairs with a CLIPModel folder, in batches."""

  def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", batch_size: int = 64,
               dtype: str = "float32", prefix: str = ""):
    """
    Args:
      model_dir: a transformers CLIPModel folder (config.json, weights, tokenizer).
      device: torch device ("cpu", "cuda", "cuda:1").
      batch_size: pairs per forward pass.
      dtype: model dtype, "float32" (the papers' evaluation casts to float) or "float16"/"bfloat16".
      prefix: text prepended to every prompt (GIGAGAN_PREFIX for the papers' protocol).
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.model_dir = os.fspath(model_dir)
    config = check_clip_folder(self.model_dir)
    self.image_settings = _image_settings(self.model_dir, config)
    torch, transformers = _import_torch()
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
      raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    self._torch, self.device, self.batch_size, self.prefix = torch, device, batch_size, prefix
    try:
      self.model = transformers.CLIPModel.from_pretrained(
          self.model_dir, dtype=dtypes[dtype], local_files_only=True).to(device).eval()
      self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir,
                                                                  local_files_only=True)
    except Exception as e:  # safetensors, tokenizers and torch raise their own error types.
      raise ValueError(f"{self.model_dir}: could not load the CLIP model/tokenizer: {e}") from e
    self.max_length = int(self.model.config.text_config.max_position_embeddings)
    self._dtype = dtypes[dtype]

  def _tokens(self, prompts: Sequence[str]) -> Any:
    return self.tokenizer([self.prefix + p for p in prompts], padding="max_length",
                          max_length=self.max_length, truncation=True, return_tensors="pt")

  def _normalised(self, emb) -> np.ndarray:
    emb = emb.float()
    return (emb / emb.norm(dim=-1, keepdim=True)).cpu().numpy().astype(np.float64)

  def embed_images(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Unit image embeddings [N, D] float64 of uint8 images ([N, H, W, 3] or a list)."""
    torch, out = self._torch, []
    for start in range(0, len(images), self.batch_size):
      x = np.stack([preprocess_image(im, **self.image_settings)
                    for im in images[start:start + self.batch_size]])
      with torch.no_grad():
        emb = self.model.get_image_features(
            pixel_values=torch.from_numpy(x).to(self.device, self._dtype))
      out.append(self._normalised(getattr(emb, "pooler_output", emb)))
    return np.concatenate(out) if out else np.zeros((0, 0))

  def embed_texts(self, prompts: Sequence[str]) -> np.ndarray:
    """Unit text embeddings [N, D] float64 of the prompts (with `prefix`)."""
    torch, out = self._torch, []
    for start in range(0, len(prompts), self.batch_size):
      tok = self._tokens(prompts[start:start + self.batch_size])
      with torch.no_grad():
        emb = self.model.get_text_features(input_ids=tok.input_ids.to(self.device),
                                           attention_mask=tok.attention_mask.to(self.device))
      out.append(self._normalised(getattr(emb, "pooler_output", emb)))
    return np.concatenate(out) if out else np.zeros((0, 0))

  def cosine(self, images: Sequence[np.ndarray] | np.ndarray,
             prompts: Sequence[str]) -> np.ndarray:
    """Cosine similarity [N] float64 of image i with prompt i."""
    if len(images) != len(prompts):
      raise ValueError(f"{len(images)} images for {len(prompts)} prompts; need one per prompt")
    if not len(prompts):
      raise ValueError("no image-prompt pairs to score")
    return np.sum(self.embed_images(images) * self.embed_texts(list(prompts)), axis=-1)

  def score(self, images: Sequence[np.ndarray] | np.ndarray,
            prompts: Sequence[str]) -> dict[str, float]:
    """{'clip_score': mean cos, 'clip_score_100': mean 100·max(cos, 0), 'num_pairs': N}."""
    return summarise(self.cosine(images, prompts))


def summarise(cos: np.ndarray) -> dict[str, float]:
  """Both CLIP-score conventions from per-pair cosines [N]."""
  cos = np.asarray(cos, np.float64)
  return {"clip_score": float(cos.mean()),
          "clip_score_100": float((100.0 * np.maximum(cos, 0.0)).mean()),
          "num_pairs": int(cos.size)}


def read_image(path: str | os.PathLike) -> np.ndarray:
  """uint8 [H, W, 3] RGB pixels of an image file."""
  try:
    with fileio.path(path).open("rb") as f, PIL.Image.open(f) as im:
      return np.asarray(im.convert("RGB"))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable image ({e})") from e


def list_images(folder: str | os.PathLike) -> list[str]:
  """Sorted paths of the image files in `folder` (not recursive)."""
  folder = fileio.path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"image folder not found: {folder}")
  return sorted(str(p) for p in folder.iterdir() if p.name.lower().endswith(IMAGE_EXTS))
