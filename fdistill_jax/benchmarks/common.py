"""Helpers shared by the benchmark scripts: config files with overrides given on the command line."""
from __future__ import annotations

import ast
import importlib.util
import os


def load_config(path: str):
  """get_config() of a config file."""
  spec = importlib.util.spec_from_file_location("bench_cfg", os.path.abspath(path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def split_entries(text: str) -> list[str]:
  """Splits on commas outside brackets and quotes: 'a.py@x=(1,2),b.py' -> ['a.py@x=(1,2)', 'b.py']."""
  out, depth, quote, cur = [], 0, "", ""
  for ch in text:
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    else:
      depth += (ch in "([{") - (ch in ")]}")
      if ch == "," and depth == 0:
        out.append(cur)
        cur = ""
        continue
    cur += ch
  return [e.strip() for e in out + [cur] if e.strip()]


def parse_entry(entry: str) -> tuple[str, str, dict]:
  """'configs/x.py@a.b=1;c=d' -> (name 'x[a.b=1;c=d]', path, {'a.b': 1, 'c': 'd'})."""
  path, _, over = entry.partition("@")
  overrides = {}
  for item in filter(None, over.split(";")):
    k, _, v = item.partition("=")
    try:
      overrides[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      overrides[k] = v
  name = os.path.splitext(os.path.basename(path))[0] + (f"[{over}]" if over else "")
  return name, path, overrides


def folder_name(name: str) -> str:
  """A run name ('digits_js[method.critic_steps=4]') as one safe path component."""
  return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def set_key(cfg, dotted: str, value) -> None:
  node = cfg
  *parents, last = dotted.split(".")
  for p in parents:
    node = node[p]
  node[last] = value
