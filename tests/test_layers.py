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


# ------------------------------------------------- the teacher kind is read in one place (issue 26)
# The teacher kind (teacher.kind, teacher.get("kind"), teacher["kind"]) against a literal.
_KIND_TEST = (r"""teacher(?:\.kind|\.get\(\s*["']kind["']\s*\)|\[["']kind["']\])\s*"""
              r"""(?:==|!=|in|not in)\s*[\(\[\{"']""")
REGISTRY = os.path.join(REPO, "fdistill_jax", "teachers", "__init__.py")


def kind_tests(src: str) -> list[str]:
  """'line N: text' of each comparison of a teacher kind with a literal in src."""
  import re  # pylint: disable=import-outside-toplevel
  return [f"line {i}: {line.strip()}" for i, line in enumerate(src.splitlines(), 1)
          if re.search(_KIND_TEST, line)]


def test_only_the_registry_reads_the_teacher_kind():
  """Every dispatch on config.teacher.kind goes through fdistill_jax.teachers (its FAMILIES):
  no other module compares a kind with a literal."""
  bad = {}
  for path in glob.glob(os.path.join(REPO, "fdistill_jax", "**", "*.py"), recursive=True):
    if os.path.samefile(path, REGISTRY):
      continue
    with open(path, encoding="utf-8") as f:
      found = kind_tests(f.read())
    if found:
      bad[os.path.relpath(path, REPO)] = found
  assert not bad, f"dispatch on the teacher kind outside fdistill_jax/teachers: {bad}"


def test_kind_check_sees_each_form():
  src = ("teacher = 1\n"
         "if cfg.teacher.kind == 'edm': pass\n"
         "x = cfg.teacher.get('kind') != \"gmm\"\n"
         "if c.teacher['kind'] in (\"pixart\", \"edm\"): pass\n"
         "ok = teachers.of(cfg)\n"
         "if a.dtype.kind not in 'iuf': pass\n")
  assert [s.split(":")[0] for s in kind_tests(src)] == ["line 2", "line 3", "line 4"]


def test_every_family_resolves_and_unknown_kinds_are_named():
  from fdistill_jax import teachers  # pylint: disable=import-outside-toplevel
  for kind, fam in teachers.FAMILIES.items():
    assert fam.kind == kind
    problem = fam.problem_module()
    assert callable(problem.build) and callable(problem.check_config), kind
    assert callable(fam.writer()), kind
    assert all(isinstance(t, dict) and t for t in fam.rule_tables()), kind
    assert all(c().teacher.kind == kind for c in fam.default_builders()), kind
    if fam.text_to_image:  # What the t2i problem, its evaluation and export ask of the family.
      tm = fam.teacher_module()
      for name in ("wrap", "adapter", "check_module", "SOLVERS", "sample", "PREDICTION",
                   "NAME", "RULES"):
        assert hasattr(tm, name), (kind, name)
  with pytest.raises(ValueError, match=r"teacher.kind='sd3'.*allowed: \("):
    teachers.get("sd3")


# ------------------------------------------------------------ no import cycle (issue 26 §1)
def top_level_imports(src: str, name: str, is_package: bool, known: set[str]) -> set[str]:
  """The modules of `known` that module `name` imports when it is imported (module level,
  including if/try blocks; imports inside functions run later and are not edges).
  `from pkg import sub` is an edge to pkg.sub alone when that is a module."""
  pkg = name if is_package else name.rsplit(".", 1)[0]
  out: set[str] = set()

  def visit(body):
    for node in body:
      if isinstance(node, ast.Import):
        out.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom):
        mod = _absolute(node.module, node.level, pkg)
        subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
        out.update(subs if len(subs) == len(node.names) else [mod, *subs])
      elif isinstance(node, (ast.If, ast.Try)):
        for block in (node.body, node.orelse, getattr(node, "finalbody", []),
                      *[h.body for h in getattr(node, "handlers", [])]):
          visit(block)

  visit(ast.parse(src).body)
  return {m for m in out if m in known and m != name}


def import_cycles(sources: dict[str, tuple[str, bool]]) -> list[list[str]]:
  """The cycles (strongly connected sets of ≥ 2 modules) of {name: (source, is_package)}."""
  known = set(sources)
  graph = {n: top_level_imports(s, n, p, known) for n, (s, p) in sources.items()}
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  cycles = []

  def strong(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    for w in sorted(graph[v]):
      if w not in index:
        strong(w)
        low[v] = min(low[v], low[w])
      elif w in stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = stack[stack.index(v):]
      del stack[stack.index(v):]
      if len(comp) > 1:
        cycles.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      strong(v)
  return cycles


def _package_sources() -> dict[str, tuple[str, bool]]:
  out = {}
  for path in glob.glob(os.path.join(REPO, "fdistill_jax", "**", "*.py"), recursive=True):
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    package = rel.endswith(".__init__")
    with open(path, encoding="utf-8") as f:
      out[rel[:-len(".__init__")] if package else rel] = (f.read(), package)
  return out


def test_no_import_cycle_anywhere():
  cycles = import_cycles(_package_sources())
  assert not cycles, f"module-level import cycles: {cycles}"


def test_cycle_check_finds_a_cycle():
  src = {"p": ("", True),
         "p.a": ("from p import b\n", False),
         "p.b": ("import os\ntry:\n  from p.c import x\nexcept ImportError:\n  pass\n", False),
         "p.c": ("from . import a\ndef f():\n  from p import d\n", False),
         "p.d": ("from p import a\n", False)}
  assert import_cycles(src) == [["p.a", "p.b", "p.c"]]
