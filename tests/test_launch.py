"""launch/ scripts: shellcheck-clean, and a missing name fails with a message naming it.

(Issue 16's --dry-run command checks are still to come; these guard what exists.)
"""
import os
import pathlib
import shutil
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.sbatch"))
# script -> the first name it needs (from flags/env, never edited in).
NEEDS = {"tpu_create.sh": "TPU_NAME", "tpu_setup.sh": "TPU_NAME", "tpu_run.sh": "TPU_NAME",
         "tpu_teardown.sh": "TPU_NAME", "multinode_gpu.sh": "COORDINATOR"}


@pytest.mark.parametrize("name,var", sorted(NEEDS.items()))
def test_missing_name_fails_naming_it(name, var):
  env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
  r = subprocess.run(["bash", str(LAUNCH / name)], env=env, capture_output=True, text=True,
                     timeout=30, check=False)
  assert r.returncode != 0 and var in r.stderr, (r.returncode, r.stderr)


def test_shellcheck_clean():
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck not installed (CI installs it from Debian's packages in .ci/run)")
  r = subprocess.run(["shellcheck", "-s", "bash", *map(str, SCRIPTS)], capture_output=True,
                     text=True, timeout=60, check=False)
  assert r.returncode == 0, r.stdout + r.stderr
