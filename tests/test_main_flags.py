"""main's workdir-facing flags: an empty --workdir is refused before anything runs; the
compilation cache defaults to a per-user, per-host folder outside the workdir."""
import os
import socket
import subprocess
import sys

from fdistill_jax.engine import compile_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_empty_workdir_is_refused_naming_the_flag(tmp_path):
  for wd in ("", "  "):
    out = subprocess.run([sys.executable, "-m", "fdistill_jax.main",
                          "--config=configs/toy2d_js.py", f"--workdir={wd}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})
    assert out.returncode != 0
    assert "--workdir is empty" in out.stderr, out.stderr[-2000:]
    assert os.listdir(tmp_path) == []  # Nothing written: no checkpoints/, lock or cache here.


def test_compile_cache_defaults_to_a_per_user_per_host_folder(tmp_path):
  env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
  got = compile_cache.cache_dir("user", "/shared/run", env)
  assert got == str(tmp_path / "xdg" / "fdistill_jax" / "jax_cache" / socket.gethostname())
  assert not got.startswith("/shared/run")
  home = compile_cache.cache_dir("user", "/shared/run", {})
  assert home == os.path.join(os.path.expanduser("~"), ".cache", "fdistill_jax", "jax_cache",
                              socket.gethostname())
  # The old choices keep working.
  assert compile_cache.cache_dir("workdir", "/w") == "/w/jax_cache"
  assert compile_cache.cache_dir("/c", "/w") == "/c" and compile_cache.cache_dir("", "/w") is None


def test_main_flag_default_is_the_user_cache():
  # In a fresh interpreter: main defines absl's global --config flag, which another module
  # imported earlier in this worker (a tool or benchmark) may already have defined.
  out = subprocess.run([sys.executable, "-c", "from fdistill_jax import main; "
                        "print(main._CACHE.default)"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == "user"
