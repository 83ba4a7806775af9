"""JAX's persistent compilation cache, on by default for training runs.

A resumed or re-run job with the same config, devices and jax version loads its compiled steps
from disk instead of recompiling (100+ s for the CIFAR-10/ImageNet-64 steps on a GPU). The
thresholds are lowered to zero so that CPU compiles (seconds) are cached too.

Where (`--compilation_cache=`):
* 'user' (default): a per-user, per-host folder outside the workdir,
  `$XDG_CACHE_HOME/fdistill_jax/jax_cache/<hostname>` (`~/.cache/...` without XDG_CACHE_HOME).
  The cache holds native executables that JAX loads and runs: anyone who can write the cache can
  run code on every host that reads it, so it should not sit in a workdir that is shared with
  other users (a team bucket, a shared scratch folder); the per-host part keeps hosts with other
  devices or jax builds apart.
* 'workdir': `<workdir>/jax_cache` (the old default; fine for a workdir only you can write).
* any other value: that directory (local or gs://; several runs may share one); '' turns it off.
"""
from __future__ import annotations

import os
import socket
from typing import Mapping

from etils import epath


def user_cache_dir(environ: Mapping[str, str] | None = None, host: str | None = None,
                   name: str = "jax_cache") -> str:
  """$XDG_CACHE_HOME (or ~/.cache)/fdistill_jax/<name>/<hostname>. Tools that empty their cache
  (benchmarks/gpu_suite.py) use another `name`, so they never wipe the runs' cache."""
  environ = os.environ if environ is None else environ
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "fdistill_jax", name, host or socket.gethostname())


def cache_dir(flag_value: str | None, workdir: str,
              environ: Mapping[str, str] | None = None) -> str | None:
  """The directory the flag asks for: None/'' -> off, 'user' -> user_cache_dir(), 'workdir' ->
  <workdir>/jax_cache, anything else -> that directory."""
  if not flag_value:
    return None
  if flag_value == "user":
    return user_cache_dir(environ)
  # JAX's cache itself reads and writes through etils epath, so gs:// works as is.
  return str(epath.Path(workdir) / "jax_cache") if flag_value == "workdir" else flag_value


def enable(directory: str) -> None:
  """Turns the persistent cache on in `directory` (local path or gs://) for this process."""
  import jax  # pylint: disable=import-outside-toplevel
  if "://" not in directory:  # A new local cache folder is readable and writable by its owner only.
    os.makedirs(directory, mode=0o700, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
