"""Import layering (issue 26, "an engine that only trains"): no module of fdistill_jax/engine/
imports data, evaluation, methods or experiments, at the top or lazily inside a function. The
engine trains, scores through the problem it is handed and loads checkpoints; compose.py and
modes.py (sample, ref) know the layers above it. Read from the sources (ast): costs nothing."""
import ast
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(REPO, "fdistill_jax", "engine")
ABOVE_ENGINE = ("fdistill_jax.data", "fdistill_jax.evaluation", "fdistill_jax.methods",
                "fdistill_jax.experiments")


def _absolute(module: str | None, level: int, package: str) -> str:
  """The absolute name of `from <level dots><module> import ...` inside `package`."""
  if not level:
    return module or ""
  base = package.split(".")[:len(package.split(".")) - (level - 1)]
  return ".".join(base + ([module] if module else []))


def imported_modules(src: str, package: str) -> list[tuple[int, str]]:
  """(line, module) of every import in src, at any depth (functions, branches, try blocks):
  `import a.b`, `from a import b` (both a and a.b), relative imports resolved against `package`,
  and importlib.import_module / __import__ of a literal name."""
  out = []
  for node in ast.walk(ast.parse(src)):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      mod = _absolute(node.module, node.level, package)
      out.append((node.lineno, mod))
      out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from pkg import sub`
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module",
                                                                             "__import__")):
      out.append((node.lineno, node.args[0].value))
  return out


def forbidden(src: str, package: str = "fdistill_jax.engine") -> list[str]:
  """'line N: module' of each import of src that runs up past the engine."""
  return sorted({f"line {line}: {mod}" for line, mod in imported_modules(src, package)
                 if any(mod == f or mod.startswith(f + ".") for f in ABOVE_ENGINE)})


def _engine_files() -> list[str]:
  return sorted(glob.glob(os.path.join(ENGINE, "**", "*.py"), recursive=True))


@pytest.mark.parametrize("path", _engine_files(), ids=lambda p: os.path.relpath(p, ENGINE))
def test_engine_imports_nothing_above_it(path):
  rel = os.path.relpath(path, ENGINE)
  with open(path, encoding="utf-8") as f:
    bad = forbidden(f.read())
  assert not bad, (f"fdistill_jax/engine/{rel} imports {bad}: the engine may not import "
                   f"{ABOVE_ENGINE}; hand it what it needs (the problem, a callable) from "
                   "compose.py, or move the mode out (modes.py)")


def test_engine_files_are_found():
  names = {os.path.basename(p) for p in _engine_files()}
  assert {"loop.py", "progress.py", "checkpoint.py"} <= names, names


def test_layer_check_sees_every_form_of_import():
  """The check can fail: each of these imports is caught, wherever it sits."""
  src = ("import os\n"
         "from fdistill_jax import fileio\n"
         "from fdistill_jax.engine import state\n"
         "from fdistill_jax import data as data_lib\n"             # line 4
         "def f():\n"
         "  if True:\n"
         "    from fdistill_jax.evaluation import grids\n"        # line 7
         "    import fdistill_jax.methods.registry\n"             # line 8
         "class C:\n"
         "  def g(self):\n"
         "    from .. import experiments\n"                       # line 11
         "    from ..evaluation.fid import FeatureExtractor\n"    # line 12
         "    importlib.import_module('fdistill_jax.data.sources')\n")  # line 13
  assert forbidden(src) == sorted([
      "line 4: fdistill_jax.data", "line 7: fdistill_jax.evaluation",
      "line 7: fdistill_jax.evaluation.grids", "line 8: fdistill_jax.methods.registry",
      "line 11: fdistill_jax.experiments", "line 12: fdistill_jax.evaluation.fid",
      "line 12: fdistill_jax.evaluation.fid.FeatureExtractor",
      "line 13: fdistill_jax.data.sources"])
  assert not forbidden("from fdistill_jax import fileio, dataset_utils\nimport datasets\n")
