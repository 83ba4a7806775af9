"""Deterministic phrasings of the ten digits for text-to-image training and held-out evaluation.

A phrasing is a template with one slot "{}" filled by a number form of the digit:
  singular forms  "seven", "Seven", "SEVEN", "7"      (SINGULAR templates)
  plural forms    "sevens", "Sevens", "7s"            (PLURAL templates)
Training phrasings are PREFIX + core template + SUFFIX for every training core, prefix (filler
words or nothing) and suffix (filler words, punctuation or nothing) and every form, plus
DISTRACTED_PER_DIGIT more per digit with one or two FILLER_WORDS inserted at random word
boundaries (a seeded draw): ordinary words, many sharing letters with number words ("ever",
"fever", "thread", "sieve", "zeal"), so that a byte-level encoder learns to read the
number and not the letters around it (without them it read "…everywhere" as a 7); held-out
phrasings come from a disjoint set of user-style templates ("draw a {}", "an image of the
numeral {}", "{}", "{} written by hand", …) that no training phrasing uses, in any form.
No template or filler contains a number word (zero … nine, e.g. inside "someone" or "weight") or
a numeral, so the slot is the only place a digit is named (`check` tests all of this).

  rows()            every (text, label, heldout) phrasing, raw (cased, as a user types it);
  training_pool()   the training phrasings preprocessed as tools/encode_prompts does
                    (lower().strip()), de-duplicated, with labels: what the teacher trains on;
  heldout_pool()    the same for the held-out phrasings (evaluation only);
  asset_rows(k)     k training phrasings per digit (seeded draw) + 4 held-out ones per digit
                    (rotating over the held-out templates; digit 7 gets the four examples
                    above), the rows of fdistill_jax/assets/digits_prompts_v2.json;
  write_asset(path) writes that JSON (python -m fdistill_jax.data.digit_phrasings --out=...).
"""
from __future__ import annotations

import argparse
import functools
import json
import re
from typing import Iterator, NamedTuple, Sequence

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PLURAL_WORDS = ("zeros", "ones", "twos", "threes", "fours", "fives", "sixes", "sevens", "eights",
                "nines")
MAX_BYTES = 63  # Longest phrasing; + </s> = 64 = the byte tokenizer's max_length.

# ------------------------------------------------------------------------------ training
SINGULAR = (
    "a handwritten {}", "the digit {}", "digit {}", "number {}", "the number {}",
    "{}, written with a thick pen", "a picture of the number {}", "a {} drawn by hand",
    "picture of number {}", "a photo of a handwritten {}", "a scanned {}", "a scribbled {}",
    "a neat {}", "a messy {}", "a bold {}", "a thin {}", "a small {}", "a big {}",
    "a {} on paper", "a {} in ink", "the symbol {}", "a sketch of a {}",
    "a drawing of the digit {}", "handwriting: {}", "label: {}", "class {}", "digit: {}",
    "{} (handwritten)", "{} in pencil", "{} on a white background", "write {}",
    "writing the number {}", "please write a {}", "{} as a digit", "the figure {}",
    "a {} written quickly", "a careful {}", "a little {}", "the handwritten number {}",
    "an upright {}", "a slanted {}", "a {} by a student", "a grayscale {}", "a blurry {}",
    "a {} from a form", "the character {} in black",
)
PLURAL = (
    "a page of {}", "rows of {}", "many {}", "handwritten {}", "a sheet full of {}",
    "{} in a grid", "scribbled {}", "{} from a notebook", "examples of {}", "a set of {}",
    "samples of handwritten {}", "pencil {}",
)
PREFIXES = ("", "please ", "now ", "just ", "hey, ", "ok: ", "make ", "show me ", "i want ",
            "give me ")
SUFFIXES = ("", " please", "!", ".", ", thanks", " on white paper", " in dark ink",
            ", neatly", " (centered)", "!!", "?", "...")
# Distractor words inserted into training phrasings (module docstring). None names a number or
# is a word of a held-out template (`check`).
FILLER_WORDS = (
    "ever", "even", "never", "fever", "favour", "fine", "fire", "fish", "fist", "feet", "fence",
    "thread", "throw", "threw", "tree", "free", "tea", "tiger", "twin", "twice", "tower", "town",
    "night", "nice", "nib", "sieve", "sigh", "sick", "sign", "silver", "sea",
    "zeal", "zebra", "zest", "flour", "ours", "eagle", "eager", "oven", "only", "open", "onion",
    "water", "paper", "green", "blue", "red", "bright", "dark", "soft", "quick", "slow", "happy",
    "old", "new", "very", "really", "quite", "maybe", "simple", "plain", "clear", "clean",
    "sharp", "round", "tall", "short", "wide", "narrow", "heavy", "light", "fresh", "warm",
    "cold", "quiet", "loud", "early", "late", "today", "here", "there",
    "several", "various", "whole", "single", "double", "triple", "extra", "nearly", "almost",
    "exactly", "roughly", "style", "shape", "form", "line", "stroke", "curve", "loop", "dot",
    "mark", "glyph", "letter", "word", "text", "font", "print", "card", "board", "sign-up",
    "screen", "table", "chalk", "marker", "crayon", "brush", "paint", "pixel", "art", "photo",
    "scan", "copy", "note", "list", "test", "exam", "class", "school", "kid", "child", "adult",
    "artist", "teacher", "friend", "mother", "father", "sister", "brother", "river", "forest",
    "street", "station", "kitchen", "garden", "winter", "summer", "autumn", "spring", "evening",
    "morning", "noon", "weekend", "holiday", "question", "answer", "idea", "thing", "stuff",
    "sort", "kind", "version", "variant", "sample", "example", "instance",
)
DISTRACTED_PER_DIGIT = 4000

# ------------------------------------------------------------------------------ held out
# User-style templates no training phrasing uses; the first four are the examples.
HELDOUT_SINGULAR = (
    "draw a {}", "an image of the numeral {}", "{}", "{} written by hand",
    "i need a {} for my homework", "generate {}", "render the character {}", "how about a {}?",
    "my favourite is {}", "can i get a {}", "type {} by hand", "{}?",
)
HELDOUT_PLURAL = ("lots of {}", "a bunch of {}", "{} everywhere")


class Row(NamedTuple):
  text: str
  label: int
  heldout: bool


def singular_forms(d: int) -> tuple[str, ...]:
  w = WORDS[d]
  return (w, w.capitalize(), w.upper(), str(d))


def plural_forms(d: int) -> tuple[str, ...]:
  w = PLURAL_WORDS[d]
  return (w, w.capitalize(), f"{d}s")


def _fill(templates: Sequence[str], forms: Sequence[str]) -> Iterator[str]:
  for t in templates:
    for f in forms:
      yield t.format(f)


def training_templates() -> list[tuple[str, bool]]:
  """(template, plural) of every training phrasing shape: PREFIX + core + SUFFIX."""
  return [(p + core + s, plural) for plural, cores in ((False, SINGULAR), (True, PLURAL))
          for core in cores for p in PREFIXES for s in SUFFIXES
          if len((p + core + s).format("eights")) <= MAX_BYTES]


def distract(text: str, rng: np.random.Generator) -> str:
  """text with one or two FILLER_WORDS inserted at random word boundaries."""
  words = text.split(" ")
  for _ in range(int(rng.integers(1, 3))):
    words.insert(int(rng.integers(0, len(words) + 1)), FILLER_WORDS[rng.integers(len(FILLER_WORDS))])
  return " ".join(words)


@functools.lru_cache(maxsize=1)
def rows() -> tuple[Row, ...]:
  """Every phrasing, raw: training (heldout False) then held-out, digit by digit."""
  out = []
  for d in range(10):
    mine = [t.format(f) for t, plural in training_templates()
            for f in (plural_forms(d) if plural else singular_forms(d))]
    out += [Row(x, d, False) for x in mine]
    rng = np.random.default_rng([d, 2026])
    extra = (distract(mine[i], rng) for i in rng.integers(0, len(mine), 2 * DISTRACTED_PER_DIGIT))
    extra = [x for x in extra if len(x.encode("utf-8")) <= MAX_BYTES]
    out += [Row(x, d, False) for x in extra[:DISTRACTED_PER_DIGIT]]
  for d in range(10):
    out += [Row(x, d, True) for x in _fill(HELDOUT_SINGULAR, singular_forms(d))]
    out += [Row(x, d, True) for x in _fill(HELDOUT_PLURAL, plural_forms(d))]
  return tuple(out)


@functools.lru_cache(maxsize=2)
def _pool(heldout: bool) -> tuple[list[str], np.ndarray]:
  seen: dict[str, int] = {}
  for r in rows():
    if r.heldout == heldout:
      seen.setdefault(r.text.lower().strip(), r.label)  # encode_prompts' preprocessing.
  return list(seen), np.array(list(seen.values()), np.int32)


def training_pool() -> tuple[list[str], np.ndarray]:
  """(texts, labels int32 [N]) of the distinct preprocessed training phrasings (a copy)."""
  texts, labels = _pool(False)
  return list(texts), labels.copy()


def heldout_pool() -> tuple[list[str], np.ndarray]:
  """(texts, labels int32 [N]) of the distinct preprocessed held-out phrasings (a copy)."""
  texts, labels = _pool(True)
  return list(texts), labels.copy()


def asset_rows(per_class: int = 24, seed: int = 0) -> list[Row]:
  """per_class training phrasings of each digit (a seeded draw over the raw training rows,
  distinct after preprocessing) and 4 held-out ones (template 4d + j of the held-out list,
  forms cycling; digit 7: "draw a 7", "an image of the numeral 7", "Seven",
  "7 written by hand"), digit by digit."""
  rng = np.random.default_rng(seed)
  train = [r for r in rows() if not r.heldout]
  held = [(t, False) for t in HELDOUT_SINGULAR] + [(t, True) for t in HELDOUT_PLURAL]
  out = []
  for d in range(10):
    mine = [r for r in train if r.label == d]
    picked, seen = [], set()
    for i in rng.permutation(len(mine)):
      if mine[i].text.lower() not in seen:
        seen.add(mine[i].text.lower())
        picked.append(mine[i])
      if len(picked) == per_class:
        break
    out += picked
    for j in range(4):
      if d == 7:
        t, form = HELDOUT_SINGULAR[j], ("7", "7", "Seven", "7")[j]
      else:
        t, plural = held[(4 * d + j) % len(held)]
        forms = plural_forms(d) if plural else singular_forms(d)
        form = forms[(d + j) % len(forms)]
      out.append(Row(t.format(form), d, True))
  return out


# ------------------------------------------------------------------------------ checks
def _numbers_in(text: str) -> list[str]:
  """Number words and numerals inside a filler text (the slot removed)."""
  low = text.lower()
  return [w for w in WORDS if w in low] + re.findall(r"\d", low)


def check() -> None:
  """Raises ValueError when a template or filler names a number, a held-out template is also a
  training one, a held-out phrasing equals a training one, or a phrasing exceeds MAX_BYTES."""
  fillers = list(SINGULAR + PLURAL + PREFIXES + SUFFIXES + HELDOUT_SINGULAR + HELDOUT_PLURAL
                 + FILLER_WORDS)
  bad = [f for f in fillers if _numbers_in(f.replace("{}", " "))]
  if bad:
    raise ValueError(f"templates/fillers naming a number: {bad}")
  held_words = {w.strip("?,.!") for t in HELDOUT_SINGULAR + HELDOUT_PLURAL
                for w in t.replace("{}", " ").lower().split()}
  trained_words = {w.strip("?,.!():") for t, _ in training_templates()
                   for w in t.replace("{}", " ").lower().split()}
  novel = held_words - trained_words  # The held-out templates' own words, e.g. "render".
  reused = sorted(novel & set(FILLER_WORDS))
  if reused:
    raise ValueError(f"distractor words that are words of held-out templates: {reused}")
  train_t = {t.lower().strip() for t, _ in training_templates()}
  both = [t for t in HELDOUT_SINGULAR + HELDOUT_PLURAL if t.lower() in train_t]
  if both:
    raise ValueError(f"held-out templates also used in training: {both}")
  seen = set(training_pool()[0])
  leaked = [t for t in heldout_pool()[0] if t in seen]
  if leaked:
    raise ValueError(f"held-out phrasings equal to training ones: {leaked[:5]}")
  long = [r.text for r in rows() if len(r.text.encode("utf-8")) > MAX_BYTES]
  if long:
    raise ValueError(f"phrasings over {MAX_BYTES} bytes: {long[:3]}")


def write_asset(path: str, per_class: int = 24) -> dict:
  """Writes the labelled prompt JSON of asset_rows (encode_prompts' labelled format)."""
  check()
  doc = {"description": (
      f"Prompts of the digits text-to-image teacher with a trained byte-level T5: {per_class} "
      "training phrasings per digit drawn from fdistill_jax.data.digit_phrasings (templates x "
      "prefixes x suffixes x number forms) and 4 held-out phrasings per digit from templates "
      "training never uses. Written by python -m fdistill_jax.data.digit_phrasings; read by "
      "python -m fdistill_jax.tools.encode_prompts."),
         "prompts": [{"text": r.text, "label": r.label, "heldout": r.heldout}
                     for r in asset_rows(per_class)]}
  lines = [json.dumps(r, ensure_ascii=False) for r in doc["prompts"]]  # One prompt a line.
  with open(path, "w", encoding="utf-8") as f:
    f.write('{\n "description": ' + json.dumps(doc["description"]) + ',\n "prompts": [\n  '
            + ",\n  ".join(lines) + "\n ]\n}\n")
  return doc


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m fdistill_jax.data.digit_phrasings",
                              description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="prompt JSON to write")
  p.add_argument("--per_class", type=int, default=24)
  a = p.parse_args(argv)
  doc = write_asset(a.out, a.per_class)
  print(f"{a.out}: {len(doc['prompts'])} prompts; training pool {len(training_pool()[0])}, "
        f"held-out pool {len(heldout_pool()[0])}")


if __name__ == "__main__":
  main()
