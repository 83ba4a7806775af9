"""FID and CLIP score of text-to-image samples over COCO-style prompt/image pairs.

  python -m fdistill_jax.tools.eval_t2i --prompts=annotations/captions_val2014.json \\
      --samples=/runs/pixart_js/samples --out=/runs/pixart_js/coco30k.json \\
      --inception=pt_inception-2015-12-05-6726825d.pth --real_dir=/data/coco/val2014 \\
      [--save_reference=coco30k_512.npz | --reference=coco30k_512.npz] \\
      --clip=/models/CLIP-ViT-g-14-laion2B-s12B-b42K [--clip_device=cuda] \\
      [--num_samples=30000] [--seed=0] [--resolution=512]

  # The prompt list the samples must be drawn for (one per line, in order):
  python -m fdistill_jax.tools.eval_t2i --prompts=captions_val2014.json --write_prompts=p.txt

--prompts: a COCO captions JSON (N images drawn with --seed, one caption each; see
fdistill_jax/evaluation/t2i.py) or a text file (the first --num_samples lines).
--samples: `%06d.png` per prompt, as `--mode=sample` writes them. Without --inception FID is
skipped, without --clip the CLIP score; the protocol is in docs/t2i_evaluation.md.
Writes --out (JSON) and prints a table.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from fdistill_jax import fileio
from fdistill_jax.evaluation import t2i


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m fdistill_jax.tools.eval_t2i",
                              description=__doc__.split("\n")[0])
  p.add_argument("--prompts", required=True, help="COCO captions JSON or a text file")
  p.add_argument("--samples", help="folder of %%06d.png samples, one per prompt")
  p.add_argument("--out", help="metrics JSON to write")
  p.add_argument("--write_prompts", help="write the selected prompts (one per line) and exit")
  p.add_argument("--num_samples", type=int, default=t2i.PAPERS_NUM_SAMPLES,
                 help="prompts/samples to use (30000 as the papers; fewer if the file has fewer)")
  p.add_argument("--seed", type=int, default=0, help="seed of the COCO image-id draw")
  p.add_argument("--resolution", type=int, default=512,
                 help="FID images are centre-cropped and resized to this (Lanczos) before the "
                      "Inception's own resize to 299")
  p.add_argument("--inception", help="FID Inception weights (pytorch-fid .pth / .npz)")
  p.add_argument("--reference", help="FID reference npz (mu, sigma)")
  p.add_argument("--real_dir", help="real images for the FID reference (COCO val2014 folder)")
  p.add_argument("--all_real", action="store_true",
                 help="use every image of --real_dir, not only the selected COCO ids")
  p.add_argument("--save_reference", help="write the reference computed from --real_dir here")
  p.add_argument("--fid_batch", type=int, default=64)
  p.add_argument("--clip", help="transformers CLIPModel folder (e.g. CLIP-ViT-g-14)")
  p.add_argument("--clip_device", default="cpu")
  p.add_argument("--clip_batch", type=int, default=64)
  p.add_argument("--clip_dtype", default="float32", choices=("float32", "float16", "bfloat16"))
  p.add_argument("--clip_prefix", default="A photo depicts ",
                 help="text prepended to each prompt (GigaGAN/DMD2/SiD-LSG protocol)")
  p.add_argument("--clip_resolution", type=int, default=t2i.CLIP_RESOLUTION,
                 help="samples are resized to this before CLIP's preprocessing (0: no resize)")
  args = p.parse_args(argv)
  if args.num_samples < 2:
    p.error("--num_samples must be >= 2")
  if args.write_prompts is None and (args.samples is None or args.out is None):
    p.error("--samples and --out are required (or --write_prompts to only list the prompts)")
  if args.inception and not (args.reference or args.real_dir):
    p.error("--inception needs --reference or --real_dir")
  if args.reference and args.real_dir:
    p.error("give --reference or --real_dir, not both")
  if args.write_prompts is None and not (args.inception or args.clip):
    p.error("nothing to evaluate: give --inception (FID) and/or --clip (CLIP score)")
  return args


def load_prompts(args) -> tuple[list[str], list[int] | None, dict]:
  """(prompts, COCO image ids or None, {image id: file name})."""
  if args.prompts.lower().endswith(".json"):
    return t2i.select_coco_prompts(args.prompts, args.num_samples, args.seed)
  prompts = t2i.read_prompt_file(args.prompts)[:args.num_samples]
  return prompts, None, {}


def format_table(metrics: dict) -> str:
  rows = [(k, metrics[k]) for k in ("num_samples", "fid", "clip_score", "clip_score_100")
          if k in metrics]
  width = max(len(k) for k, _ in rows)
  lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
  for k, v in rows:
    lines.append(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict | None:
  args = parse_args(argv)
  prompts, image_ids, files = load_prompts(args)
  if args.write_prompts:
    fileio.write_text(args.write_prompts, "\n".join(prompts) + "\n")
    print(f"{args.write_prompts}: {len(prompts)} prompts")
    return None
  extractor = real_paths = scorer = None
  if args.inception:
    # pylint: disable=import-outside-toplevel
    from fdistill_jax.evaluation import fid
    extractor = fid.FeatureExtractor.from_weight_file(args.inception, batch_size=args.fid_batch)
    if args.real_dir:
      real_paths = t2i.real_image_paths(args.real_dir,
                                        None if args.all_real else image_ids, files)
  if args.clip:
    from fdistill_jax.evaluation import clip_score  # pylint: disable=import-outside-toplevel
    scorer = clip_score.CLIPScorer(args.clip, device=args.clip_device,
                                   batch_size=args.clip_batch, dtype=args.clip_dtype,
                                   prefix=args.clip_prefix)
  log = lambda s: print(s, file=sys.stderr)
  metrics = t2i.evaluate(prompts, args.samples, resolution=args.resolution, extractor=extractor,
                         reference=args.reference, real_paths=real_paths,
                         save_reference=args.save_reference, scorer=scorer,
                         clip_resolution=args.clip_resolution or None, log=log)
  absolute = lambda p: p if not fileio.is_local(p) else os.path.abspath(p)
  metrics.update(prompts=absolute(args.prompts), samples=absolute(args.samples),
                 seed=args.seed if image_ids is not None else None)
  fileio.makedirs(fileio.path(args.out).parent)
  fileio.write_json(args.out, metrics)
  print(format_table(metrics))
  return metrics


if __name__ == "__main__":
  main()
