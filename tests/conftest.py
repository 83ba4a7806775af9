"""Test setup: 8 fake CPU devices (set before jax is imported) and the fixtures locator."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from fdistill_jax import testing  # noqa: E402


@pytest.fixture(scope="session")
def fixtures_path():
  """Path of ../shared/fixtures; skips the test with the reason when it is absent."""
  path = testing.fixtures_dir()
  if path is None:
    pytest.skip(testing.missing_reason())
  return path


@pytest.fixture
def gcs_bucket(tmp_path):
  """A fake `gs://test-bucket` (see testing.fake_gcs) for the test; yields the bucket's URI.
  Its objects lie under tmp_path/fake_gcs/test-bucket, for asserting what was written."""
  with testing.fake_gcs(tmp_path / "fake_gcs"):
    yield "gs://test-bucket"
