"""The digit phrasing generator: no number word in any filler, held-out templates and phrasings
disjoint from training, the issue's user examples held out, every phrasing within the byte
tokenizer's length, and the committed prompt asset is what the generator writes."""
import json

from fdistill_jax import defaults
from fdistill_jax.data import byte_tokenizer as bt
from fdistill_jax.data import digit_phrasings as dp

USER = ("draw a 7", "an image of the numeral 7", "Seven", "7 written by hand")


def test_generator_checks_pass_and_pools_are_disjoint():
  dp.check()
  train, labels = dp.training_pool()
  held, held_labels = dp.heldout_pool()
  assert len(train) == len(set(train)) > 50_000 and not set(train) & set(held)
  assert sorted(set(labels.tolist())) == list(range(10)) and len(held_labels) == len(held)
  assert all(t == t.lower().strip() for t in train[:1000])
  for text in ("seven", "7", "draw a 7", "7 written by hand"):  # user phrasings never trained
    assert text in held and text not in set(train)
  assert bt.max_bytes(train + held) <= dp.MAX_BYTES + 1
  assert {"7s", "sevens"} <= {w for t in train for w in t.split()}


def test_number_words_inside_fillers_are_caught():
  assert dp._numbers_in("someone") == ["one"] and dp._numbers_in("the weight, 2x") == ["eight", "2"]
  assert dp._numbers_in("written with a thick pen") == []


def test_committed_asset_is_the_generator_output(tmp_path):
  dp.write_asset(str(tmp_path / "p.json"))
  assert (tmp_path / "p.json").read_text() == \
      open(defaults.asset("digits_prompts_v2.json"), encoding="utf-8").read()
  rows = json.loads((tmp_path / "p.json").read_text())["prompts"]
  held = [r for r in rows if r["heldout"]]
  assert len(rows) == 280 and len(held) == 40
  assert all(sum(r["label"] == d for r in held) == 4 for d in range(10))
  assert {r["text"] for r in held if r["label"] == 7} == set(USER)
  train = set(dp.training_pool()[0])
  assert all(r["text"].lower() in train for r in rows if not r["heldout"])
