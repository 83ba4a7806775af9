"""The quick tier (`pytest -m "not slow"`, README) keeps one end-to-end training test per problem
kind, at its smallest size: QUICK_END_TO_END names each; this fails when one is renamed, moved,
marked slow (on the test or its module), or stops training through compose.train (in the test or
in a fixture of its module). Read from the sources (ast), so it costs nothing to run."""
import ast
import os

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))

# problem kind -> (test file, test function): each runs compose.train on that kind's smallest
# config (the tests' docstrings say what else it checks).
QUICK_END_TO_END = {
    "toy": ("test_cloud_storage.py",
            "test_training_run_writes_resumes_and_moves_corrupt_steps_in_the_bucket"),
    "class-conditional image": ("test_image_engine.py", "test_train_resume_and_export"),
    "text-to-image": ("test_t2i_engine.py", "test_js_trains_sharded_and_evaluates"),
}


def _is_slow_mark(node) -> bool:
  """`pytest.mark.slow` or `pytest.mark.slow(...)`."""
  if isinstance(node, ast.Call):
    node = node.func
  return isinstance(node, ast.Attribute) and node.attr == "slow"


def _slow_in(node) -> bool:
  """Any slow mark inside node (a decorator, pytest.param(..., marks=...), a pytestmark list)."""
  return any(_is_slow_mark(n) for n in ast.walk(node))


def _trains(fn: ast.FunctionDef, funcs: dict) -> bool:
  """fn, or a fixture of its module that it takes (one level), calls compose.train(...)."""
  def calls_train(f):
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "train" and isinstance(n.func.value, ast.Name)
               and n.func.value.id == "compose" for n in ast.walk(f))
  return calls_train(fn) or any(calls_train(funcs[a.arg]) for a in fn.args.args
                                if a.arg in funcs)


@pytest.mark.parametrize("kind", sorted(QUICK_END_TO_END))
def test_each_problem_kind_keeps_a_quick_end_to_end_test(kind):
  name, test = QUICK_END_TO_END[kind]
  tree = ast.parse(open(os.path.join(TESTS, name)).read())
  funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
  assert test in funcs, f"{kind}: {name}::{test} is gone; name its new quick end-to-end test"
  fn = funcs[test]
  assert not any(_slow_in(d) for d in fn.decorator_list), f"{kind}: {test} is marked slow"
  module_marks = [n for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == "pytestmark" for t in n.targets)]
  assert not any(_slow_in(n) for n in module_marks), f"{kind}: {name} is marked slow"
  assert _trains(fn, funcs), f"{kind}: {test} no longer trains through compose.train"


def test_slow_marker_check_sees_marks():
  """The check above can fail: it finds a decorator, a param mark and a module mark."""
  src = ("import pytest\npytestmark = [pytest.mark.slow]\n@pytest.mark.slow\ndef a(): pass\n"
         "@pytest.mark.parametrize('x', [pytest.param(1, marks=pytest.mark.slow)])\n"
         "def b(x): pass\ndef c(): pass\n")
  tree = ast.parse(src)
  fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
  assert _slow_in(tree.body[1]) and _slow_in(fns["a"].decorator_list[0])
  assert _slow_in(fns["b"].decorator_list[0]) and not fns["c"].decorator_list


def test_compilation_cache_is_trimmed_oldest_first_and_only_past_its_limit(tmp_path):
  """conftest's cache folder: JAX's own size limit rescans the folder on every write, so the
  tests run without one and testing.trim_cache trims it once per session instead."""
  from fdistill_jax import testing
  for i in range(6):  # Six 100-byte files, written 10 s apart: f0 oldest.
    p = tmp_path / f"f{i}"
    p.write_bytes(b"x" * 100)
    os.utime(p, (1000 + 10 * i, 1000 + 10 * i))
  assert testing.trim_cache(str(tmp_path), max_bytes=600, keep_bytes=200) == 0  # At the limit.
  assert testing.trim_cache(str(tmp_path), max_bytes=599, keep_bytes=200) == 4
  assert sorted(p.name for p in tmp_path.iterdir()) == ["f4", "f5"]
  assert testing.trim_cache(str(tmp_path / "absent"), 1, 0) == 0
  with open(os.path.join(TESTS, "conftest.py")) as f:
    conftest = f.read()
  assert '"JAX_COMPILATION_CACHE_MAX_SIZE", "-1"' in conftest and "testing.trim_cache(" in conftest
