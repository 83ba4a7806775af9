"""Test helpers: locating the reference fixtures (EDM and FastGen outputs), a fake GCS bucket
(`fake_gcs`) for testing gs:// workdirs and inputs without a network, the resolved partial
configs the engine's unit tests hand it (`engine_config`), and cheap compiles of the programs a
test builds for itself (`compile_fast`).

Fixtures come in two sets. `DATA_DIR` (tests/data in the repository) holds the slim set every
clone has: outputs of the official EDM and FastGen code for small networks (see
tests/data/README.md); the parity tests always run on it. The larger set of the project's
`shared/fixtures` may sit beside the checkout; where `fixtures_dir()` finds it, the tests also
run on it as extra cases. One place decides where it lives: the env var FDISTILL_FIXTURES wins
(a path that is not a folder means "no larger set"), otherwise the `shared/fixtures` folder
beside the repository checkout.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import pathlib
from typing import Iterator

ENV_VAR = "FDISTILL_FIXTURES"
_REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = _REPO / "tests" / "data"


def shipped_config(name: str):
  """configs/<name>.py's get_config() as shipped (name without '.py'), for the tests that check a
  recipe's settings or shrink it to a test size."""
  path = _REPO / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"shipped_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def trim_cache(folder: str, max_bytes: int, keep_bytes: int) -> int:
  """Deletes the least recently written files of `folder` down to keep_bytes once it holds more
  than max_bytes; returns the number deleted. A half-deleted entry is only a cache miss."""
  try:
    entries = [(st.st_mtime, st.st_size, e.path) for e in os.scandir(folder) if e.is_file()
               for st in (e.stat(),)]
  except FileNotFoundError:
    return 0
  total, removed = sum(size for _, size, _ in entries), 0
  if total <= max_bytes:
    return 0
  for _, size, path in sorted(entries):
    if total <= keep_bytes:
      break
    try:
      os.remove(path)
    except FileNotFoundError:
      pass
    total, removed = total - size, removed + 1
  return removed


def fixtures_dir() -> pathlib.Path | None:
  """The larger (shared) fixtures folder, or None if it is absent."""
  env = os.environ.get(ENV_VAR)
  candidates = [pathlib.Path(env)] if env else [_REPO.parent / "shared" / "fixtures",
                                                 _REPO / "shared" / "fixtures"]
  for c in candidates:
    if c.is_dir():
      return c
  return None


def fixture_sets() -> dict[str, pathlib.Path]:
  """{name: folder with edm/ (and fastgen/)}: 'repo' (tests/data, always) and, when present,
  'shared' (the larger set of `fixtures_dir()`)."""
  sets = {"repo": DATA_DIR}
  shared = fixtures_dir()
  if shared is not None:
    sets["shared"] = shared
  return sets


def missing_reason() -> str:
  return (f"larger reference fixtures not found: set {ENV_VAR} or place the project's "
          f"shared/fixtures beside the checkout ({_REPO.parent / 'shared' / 'fixtures'}); "
          f"the slim set in {DATA_DIR} is always used")


# ------------------------------------------------------------------------- small FID detector
def random_inception_variables(seed: int = 0, input_size: int = 75):
  """Random He-scaled variables of FIDInceptionV3 (nvlabs preprocessing) at `input_size` (75 is
  the graph's minimum), filled with NumPy from the shapes: `model.init` compiles for over a
  minute on CPU. For tests of the FID plumbing; the features mean nothing."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from fdistill_jax.models.inception import FIDInceptionV3  # pylint: disable=import-outside-toplevel
  model = FIDInceptionV3(preprocess="nvlabs", input_size=input_size)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, input_size, input_size, 3), np.float32))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(size=leaf.shape).astype(np.float32) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
    if name in ("scale", "var"):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(size=leaf.shape).astype(np.float32) * 0.2  # bias, mean

  return jax.tree_util.tree_map_with_path(fill, shapes)


# ------------------------------------------------------------------------- fake GCS bucket
@contextlib.contextmanager
def fake_gcs(root: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Serves `gs://<bucket>/<key>` from `<root>/<bucket>/<key>` for this process, through the
  same layers a real bucket goes through: epath's fsspec backend (the one etils uses for gs://
  without TensorFlow, and what gcsfs plugs into) for every epath call of the project and of
  orbax, and a tensorstore `file` kvstore for orbax's array data (orbax hands gs:// paths to
  tensorstore's own `gcs` driver, which epath never sees).

  Object-store behaviour kept: folders are not created (mkdir is a no-op: a "folder" exists
  once a key under it does), a rename is copy + delete, orbax takes its GCS code path
  (commit_success.txt markers instead of atomic renames). Not kept: a folder emptied by deletes
  still lists (on GCS it vanishes), and no latency or eventual-consistency effects. Yields
  `root`; restores everything on exit. Process-wide: one fake per process at a time.
  """
  import fsspec  # pylint: disable=import-outside-toplevel
  from etils.epath import backend as epath_backend  # pylint: disable=import-outside-toplevel
  from etils.epath import gpath  # pylint: disable=import-outside-toplevel
  from fsspec.implementations.dirfs import DirFileSystem  # pylint: disable=import-outside-toplevel
  from fsspec.implementations import local as fsspec_local  # pylint: disable=import-outside-toplevel
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=import-outside-toplevel
  registry = importlib.import_module("fsspec.registry")  # fsspec.registry is shadowed by a dict.
  root = pathlib.Path(root)

  class FakeGCSFileSystem(DirFileSystem):
    protocol = ("gs", "gcs")
    cachable = False

    def __init__(self, *args, **kwargs):  # epath passes gcsfs options (finalize_on_close).
      del args, kwargs
      super().__init__(path=str(root), fs=fsspec_local.LocalFileSystem(auto_mkdir=True))

    @classmethod
    def _strip_protocol(cls, path):
      path = os.fspath(path)
      for prefix in ("gs://", "gcs://"):
        path = path.removeprefix(prefix)
      return path.rstrip("/")

    def mkdir(self, path, create_parents=True, **kwargs):
      pass  # GCS has no folders; writing a key creates its prefix.

    def makedirs(self, path, exist_ok=False):
      pass

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
      if mode != "create":
        return super().pipe_file(path, value, **kwargs)
      # gcsfs sends mode='create' as an upload with ifGenerationMatch=0: GCS stores the object
      # only if none of that name exists (else 412 -> FileExistsError), and a reader sees the
      # whole object or none. Here: a complete temporary file hard-linked into place.
      full = pathlib.Path(self._join(path))
      full.parent.mkdir(parents=True, exist_ok=True)
      tmp = full.with_name(f".{full.name}.{os.getpid()}.{id(value)}.upload")
      tmp.write_bytes(value)
      try:
        os.link(tmp, full)
      finally:
        tmp.unlink()
      return None

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
      self.copy(path1, path2, recursive=recursive)  # GCS: copy each object, then delete.
      self.rm(path1, recursive=recursive)

  def kvstore_spec(path: str) -> dict:
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": str(root / bucket / key)}

  saved_registry = dict(registry._registry)  # pylint: disable=protected-access
  # pylint: disable=protected-access
  saved = (gpath._is_tf_installed, gcs_utils.get_kvstore_for_gcs,
           gcs_utils.is_hierarchical_namespace_enabled)
  for proto in FakeGCSFileSystem.protocol:
    fsspec.register_implementation(proto, FakeGCSFileSystem, clobber=True)
  gpath._is_tf_installed = lambda: False  # gs:// -> fsspec backend, not TF's real GCS client.
  gcs_utils.get_kvstore_for_gcs = kvstore_spec
  # A flat-namespace bucket; the real check asks the GCS API (google-cloud-storage).
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  try:
    yield root
  finally:
    registry._registry.clear()  # pylint: disable=protected-access
    registry._registry.update(saved_registry)  # pylint: disable=protected-access
    (gpath._is_tf_installed, gcs_utils.get_kvstore_for_gcs,  # pylint: disable=protected-access
     gcs_utils.is_hierarchical_namespace_enabled) = saved
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


# Compile options for a program a test compiles for a few hundred calls at most (compile_fast,
# fast_compile_options): no LLVM optimisation, and XLA's legacy CPU fusion emitters, which compile
# such programs in a fraction of the default's time on CPU (a tiny PixArt apply 1.0 -> 0.14 s; a
# toy SiD generator + critic step 8 -> 2.6 s, each step then ~2x slower to run; a small UNet's
# f-distill loss and gradient 8.6 -> 4.6 s at level 0 alone). Not for a program that must match
# a default-compiled one to the last bit (e.g. the sharded-equality runs of test_toy_engine).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_LEVEL_0 = {"xla_backend_optimization_level": 0}
# FAST_COMPILE with one LLVM module instead of parts for parallel codegen (~15 % less again on 2
# busy cores): for the benchmark tests, which compile whole runs through their own jits (conftest's
# `fast_compile` fixture) or in a child (as XLA_FLAGS); a tiny f-distill generator step compiles
# in 6 s of CPU instead of 18. They check no speed of the compiled code, and memory_plan's byte
# counts come out the same.
BENCHMARK_COMPILE = {**FAST_COMPILE, "xla_cpu_parallel_codegen_split_count": 1}


def fast_compile_options() -> dict:
  """FAST_COMPILE, or level 0 alone on an XLA that no longer has the emitter option; for
  compose.Run(..., compiler_options=...)."""
  return dict(FAST_COMPILE if _has_emitter_option() else _LEVEL_0)


@functools.cache
def _has_emitter_option() -> bool:
  """Whether this XLA takes FAST_COMPILE (tried once, on a trivial program)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  try:
    jax.jit(lambda x: x + 1).lower(jnp.zeros(1)).compile(FAST_COMPILE)
    return True
  except jax.errors.JaxRuntimeError as e:
    if "xla_cpu_use_fusion_emitters" not in str(e):
      raise
    return False


def compile_fast(lowered):
  """lowered.compile(fast_compile_options()) for a jax.jit(...).lower(...) result. Call the
  result with arguments of the lowered structure, shapes and dtypes."""
  return lowered.compile(fast_compile_options())


def engine_config(kind: str = "gmm", **blocks):
  """A partial config for a unit test of the engine: the top-level fields and blocks given
  (`seed=0, train=dict(grad_accum=2)`), each block with the optional fields that
  config_defaults.resolve fills in a config of teacher kind `kind` (config_defaults.table). The
  engine reads every field it uses and defaults none (issue 26), so it is handed resolved configs
  only, as main and compose hand it; only the blocks given are filled (a field of a block the
  test leaves out still fails naming it)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from fdistill_jax import config_defaults  # pylint: disable=import-outside-toplevel
  return config_defaults.resolve(ml_collections.ConfigDict(blocks), kind=kind)
