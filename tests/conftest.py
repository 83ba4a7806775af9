"""Test setup: 8 fake CPU devices and a persistent JAX compilation cache (both set before jax is
imported), the most expensive files scheduled first, and the reference fixtures
(tests/data, plus ../shared/fixtures where present)."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent JAX compilation cache, shared by the session's xdist workers and the
# subprocesses the tests start (they inherit the environment) and kept between sessions in
# .jax_test_cache/ beside the tests (git-ignored): several tests compile the same programs, and
# compiling is most of the quick tier's time on CPU. Entries are keyed by the compiled program
# (HLO), the compile options and the jax/jaxlib versions, so changed code compiles afresh;
# loading an executable instead of compiling it changes no numerics. Set FDISTILL_TEST_JAX_CACHE
# to another folder (a new one measures a cold run), or to '' to turn the cache off.
# JAX's own size limit is left off (-1): with a limit, every write lists, stats and reads the
# access time of every entry under one lock shared by all processes, quadratic in the entries
# (a cold full run writes ~4,000), which doubled the suite's time. The folder is instead trimmed
# once, before the session starts, to its newest _CACHE_KEEP_BYTES (testing.trim_cache).
_CACHE_ENV = "FDISTILL_TEST_JAX_CACHE"
_CACHE_MAX_BYTES, _CACHE_KEEP_BYTES = 1 << 30, 1 << 29
os.environ.setdefault(_CACHE_ENV, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".jax_test_cache"))
if os.environ[_CACHE_ENV]:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ[_CACHE_ENV])
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")

import pytest  # noqa: E402

from fdistill_jax import testing  # noqa: E402

if os.environ[_CACHE_ENV] and "PYTEST_XDIST_WORKER" not in os.environ:  # Controller, once.
  testing.trim_cache(os.environ["JAX_COMPILATION_CACHE_DIR"], _CACHE_MAX_BYTES, _CACHE_KEEP_BYTES)

# Files in the order xdist should start them (pytest.ini: --dist=loadfile, no reorder): the longest
# first, so that the two CI workers finish together instead of one waiting on a late long file.
# (full suite, quick tier `-m "not slow"`) seconds per file: half the per-file sums of --durations
# of cold runs under -n 2 on 2 CPU cores, 2026-12-07 night; only the schedule depends on them.
_SLOW_FILES = {
    "test_t2i_engine.py": (64, 29),
    "test_peer_methods_image.py": (60, 0),
    "test_image_engine.py": (58, 25),
    "test_resume_multiprocess.py": (55, 0),
    "test_gpu_suite.py": (39, 2),
    "test_toy_engine.py": (33, 0),
    "test_uni_instruct_parity.py": (33, 26),
    "test_t2i_text.py": (32, 13),
    "test_perf_benchmarks.py": (29, 2),
    "test_few_step.py": (29, 15),
    "test_edm_parity.py": (28, 22),
    "test_methods_dmd.py": (22, 0),
    "test_fid.py": (21, 15),
    "test_methods_uni.py": (20, 4),
    "test_conditioning.py": (18, 12),
    "test_edm_loaders.py": (16, 14),
    "test_flow_family.py": (15, 13),
    "test_pixart.py": (14, 11),
    "test_flow_dit.py": (13, 10),
    "test_methods_sim.py": (13, 3),
    "test_engine_mechanics.py": (12, 10),
    "test_torch_reference.py": (12, 8),
    "test_methods_sid.py": (11, 3),
    "test_cloud_storage.py": (11, 10),
}


def pytest_collection_modifyitems(config, items):
  quick = "not slow" in (config.getoption("markexpr") or "")
  order = {name: -cost[quick] for name, cost in _SLOW_FILES.items()}
  items.sort(key=lambda item: order.get(item.path.name, 0))  # Stable: keeps the rest in order.


_FIXTURE_SETS = testing.fixture_sets()


@pytest.fixture(scope="session", params=list(_FIXTURE_SETS))
def fixtures_path(request):
  """A reference-fixture folder (edm/, fastgen/): the repository's tests/data always, and the
  larger ../shared/fixtures as extra cases ([shared] in the test id) where it is present."""
  return _FIXTURE_SETS[request.param]


@pytest.fixture
def fast_compile(monkeypatch):
  """jax.jit with testing.BENCHMARK_COMPILE for every function jitted during the test: the code
  under test (loop.Run's steps, the benchmark stages, the samplers) builds its own jits. Only for
  tests that check no compiled-code speed and no float32-rounding parity."""
  import jax  # pylint: disable=import-outside-toplevel
  jit = jax.jit
  monkeypatch.setattr(jax, "jit", lambda *a, **kw: jit(
      *a, **{"compiler_options": testing.BENCHMARK_COMPILE, **kw}))


@pytest.fixture
def gcs_bucket(tmp_path):
  """A fake `gs://test-bucket` (see testing.fake_gcs) for the test; yields the bucket's URI.
  Its objects lie under tmp_path/fake_gcs/test-bucket, for asserting what was written."""
  with testing.fake_gcs(tmp_path / "fake_gcs"):
    yield "gs://test-bucket"
