"""The benchmark scripts' config-entry syntax: 'path@key=value;key=value' with Python literals."""
import os

import pytest

from fdistill_jax.benchmarks.common import load_config, parse_entry, set_key, split_entries

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_split_keeps_commas_inside_brackets_and_quotes():
  assert split_entries("a.py@x=(1,2);y=[3,4],b.py, c.py@z='p,q'") == [
      "a.py@x=(1,2);y=[3,4]", "b.py", "c.py@z='p,q'"]
  assert split_entries("") == []


def test_parse_entry_reads_literals_and_names_the_run():
  name, path, over = parse_entry("configs/digits_js.py@method.critic_steps=4;method.divergence=kl;"
                                 "eval.teacher_nfes=(1, 35)")
  assert path == "configs/digits_js.py"
  assert name == "digits_js[method.critic_steps=4;method.divergence=kl;eval.teacher_nfes=(1, 35)]"
  assert over == {"method.critic_steps": 4, "method.divergence": "kl",
                  "eval.teacher_nfes": (1, 35)}
  assert parse_entry("configs/digits_js.py") == ("digits_js", "configs/digits_js.py", {})


def test_overrides_apply_to_a_real_config_and_bad_types_are_refused():
  cfg = load_config(os.path.join(REPO, "configs", "digits_dmd2.py"))
  for k, v in parse_entry("x.py@train.steps=1500;method.divergence='kl'")[2].items():
    set_key(cfg, k, v)
  assert cfg.train.steps == 1500 and cfg.method.divergence == "kl"
  with pytest.raises(TypeError, match="steps"):
    set_key(cfg, "train.steps", "many")
