"""launch/ scripts: every --dry-run prints the exact commands for a fixed set of names, a missing
name fails naming it, the queued-resource relaunch loop follows a canned state sequence, and all
scripts are shellcheck-clean. Only bash runs (no gcloud, Slurm or GPUs); a few seconds in all."""
import os
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh")) + sorted(LAUNCH.glob("*.sbatch"))
JAX = re.search(r'"jax==([0-9.]+)"', (REPO / "setup.py").read_text()).group(1)

TPU = ["--tpu-name=tpu1", "--zone=us-east5-a", "--project=proj"]
SCOPE = ["--zone=us-east5-a", "--project=proj"]
CREATE = ["--accelerator-type=v5p-64", "--runtime-version=v2-alpha-tpuv5"]
RUN = ["--config=configs/cifar10_js.py", "--workdir=gs://bkt/runs/r"]
MAIN = ("python -m fdistill_jax.main --distributed --config=configs/cifar10_js.py "
        "--workdir=gs://bkt/runs/r")
SETUP_TAIL = ("; [ -d ~/fdistill_venv ] || python3 -m venv ~/fdistill_venv; "
              ". ~/fdistill_venv/bin/activate; pip install -q -e ~/fdistill\\[gcs\\] jax\\[tpu\\]==" + JAX)
RUN_HEAD = ("cd ~/fdistill && . ~/fdistill_venv/bin/activate && mkdir -p ~/fdistill_logs && "
            "set -o pipefail; ")
TEE = " 2>&1 | tee ~/fdistill_logs/$(hostname).log; rc=$?"
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tpu1", *SCOPE, "--worker=all", "--command"]
QR_CREATE = ["gcloud", "compute", "tpus", "queued-resources", "create", "tpu1", "--node-id=tpu1",
             *SCOPE, "--accelerator-type=v5p-64", "--runtime-version=v2-alpha-tpuv5", "--spot"]
QR_DELETE = ["gcloud", "compute", "tpus", "queued-resources", "delete", "tpu1", *SCOPE, "--force",
             "--quiet"]
# script -> the first name it needs, with the flags that precede it.
NEEDS = {"tpu_create.sh": "TPU_NAME", "tpu_setup.sh": "TPU_NAME", "tpu_run.sh": "TPU_NAME",
         "tpu_teardown.sh": "TPU_NAME", "tpu_relaunch.sh": "TPU_NAME",
         "multinode_gpu.sh": "COORDINATOR", "slurm_gpu.sbatch": "CONFIG"}
NEEDS_LATER = [("tpu_create.sh", TPU, "ACCEL"), ("tpu_create.sh", TPU + CREATE[:1], "RUNTIME"),
               ("tpu_run.sh", TPU, "CONFIG"), ("tpu_run.sh", TPU + RUN[:1], "WORKDIR"),
               ("tpu_setup.sh", TPU + ["--git-ref=v1"], "GIT_URL"),
               ("tpu_relaunch.sh", TPU + RUN, "ACCEL"),
               ("multinode_gpu.sh", ["--coordinator=h:1", "--num-processes=2"], "PROCESS_ID"),
               ("slurm_gpu.sbatch", RUN, "SLURM_JOB_NODELIST")]


@pytest.fixture(name="env")
def _env(tmp_path):
  """A bare environment whose PATH starts with tmp_path/bin (fake gcloud/scontrol go there)."""
  (tmp_path / "bin").mkdir()
  env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path),
         "TMPDIR": str(tmp_path)}
  # A dry run must never reach a real gcloud/srun (one may be installed): these fail loudly.
  for tool in ("gcloud", "srun", "scontrol"):
    _fake(env, tool, f'echo "{tool} called in a test: $*" >&2; exit 97\n')
  return env


def _fake(env, name, body):
  path = pathlib.Path(env["PATH"].split(":")[0]) / name
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(0o755)


def _bash(script, args, env, ok=True):
  r = subprocess.run(["bash", str(LAUNCH / script), *args], env=env, capture_output=True,
                     text=True, timeout=30, check=False)
  assert (r.returncode == 0) == ok, (r.returncode, r.stdout, r.stderr)
  return r


def _dry(script, args, env):
  """The commands a dry run prints, each split back into its argv."""
  out = _bash(script, ["--dry-run", *args], env).stdout  # first: after `--` it goes to main.py
  return [shlex.split(line) for line in out.splitlines()]


def _tar_scp(env):
  tgz = f"{env['TMPDIR']}/fdistill_src_tpu1.tgz"
  return [["tar", "-C", str(REPO), "--exclude=.venv", "--exclude=runs", "--exclude=.git", "-czf",
           tgz, "."],
          ["gcloud", "compute", "tpus", "tpu-vm", "scp", tgz, "tpu1:fdistill_src.tgz", *SCOPE,
           "--worker=all"],
          [*SSH, "set -e; mkdir -p ~/fdistill && tar -C ~/fdistill -xzf ~/fdistill_src.tgz"
           + SETUP_TAIL]]


def _run_gs(extra=""):
  return [*SSH, RUN_HEAD + MAIN + extra + TEE
          + "; gcloud storage cp ~/fdistill_logs/$(hostname).log gs://bkt/runs/r/logs/; exit $rc"]


def test_tpu_create(env):
  vm = ["gcloud", "compute", "tpus", "tpu-vm", "create", "tpu1", *SCOPE,
        "--accelerator-type=v5p-64", "--version=v2-alpha-tpuv5"]
  assert _dry("tpu_create.sh", TPU + CREATE, env) == [vm]
  assert _dry("tpu_create.sh", TPU + CREATE + ["--spot"], env) == [vm + ["--spot"]]
  assert _dry("tpu_create.sh", TPU + CREATE + ["--preemptible"], env) == [vm + ["--preemptible"]]
  assert _dry("tpu_create.sh", TPU + CREATE + ["--queued", "--spot"], env) == [QR_CREATE]
  r = _bash("tpu_create.sh", TPU + CREATE + ["--queued", "--preemptible", "--dry-run"], env,
            ok=False)
  assert "--spot" in r.stderr


def test_names_from_environment(env):
  env = dict(env, TPU_NAME="tpu1", ZONE="us-east5-a", PROJECT="proj", ACCEL="v5p-64",
             RUNTIME="v2-alpha-tpuv5", QUEUED="1", SPOT="1")
  assert _dry("tpu_create.sh", [], env) == [QR_CREATE]


def test_tpu_setup_copies_checkout_or_clones_ref(env):
  assert _dry("tpu_setup.sh", TPU, env) == _tar_scp(env)
  clone = ("set -e; { [ -d ~/fdistill/.git ] || git clone --quiet https://h/r.git ~/fdistill; } && "
           "git -C ~/fdistill fetch --quiet origin v1 && "
           "git -C ~/fdistill checkout --quiet --force FETCH_HEAD" + SETUP_TAIL)
  assert _dry("tpu_setup.sh", TPU + ["--git-url=https://h/r.git", "--git-ref=v1"], env) == [
      [*SSH, clone]]
  prep = "gcloud storage cp gs://bkt/edm/t.pkl /tmp/fd/"
  assert _dry("tpu_setup.sh", TPU + [f"--prep-command={prep}"], env)[-1] == [
      *SSH, _tar_scp(env)[-1][-1] + "; " + prep]


def test_tpu_run_all_workers_and_logs(env):
  extra = ["--", "--config.teacher.checkpoint=gs://bkt/edm/t.pkl",
           "--config.dataset.data_dir=gs://bkt/tfds"]
  assert _dry("tpu_run.sh", TPU + RUN + extra, env) == [_run_gs(
      " --config.teacher.checkpoint=gs://bkt/edm/t.pkl --config.dataset.data_dir=gs://bkt/tfds")]
  logs = str(env["TMPDIR"]) + "/logs"
  assert _dry("tpu_run.sh", TPU + RUN + [f"--log-dir={logs}"], env) == [
      [*SSH, RUN_HEAD + MAIN + TEE + "; exit $rc"], ["mkdir", "-p", logs],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", "tpu1:fdistill_logs/*", logs + "/", *SCOPE,
       "--worker=all"]]


def test_tpu_run_for_real_returns_status_and_collects_logs(env):
  """Without --dry-run the same argv runs: a failing run still copies the logs, and its status
  is the script's."""
  calls = pathlib.Path(env["HOME"]) / "calls"
  _fake(env, "gcloud", f'printf "%s\\n" "$*" >> {calls}; [[ $4 != ssh ]] || exit 3\n')
  logs = str(env["TMPDIR"]) + "/logs"
  r = _bash("tpu_run.sh", TPU + RUN + [f"--log-dir={logs}"], env, ok=False)
  assert r.returncode == 3 and pathlib.Path(logs).is_dir()
  got = calls.read_text().splitlines()
  tpu_vm = ["compute", "tpus", "tpu-vm"]
  assert [c.split()[:5] for c in got] == [[*tpu_vm, "ssh", "tpu1"],
                                          [*tpu_vm, "scp", "tpu1:fdistill_logs/*"]]
  assert "--worker=all" in got[0] and "--distributed" in got[0] and got[1].endswith("--worker=all")


def test_tpu_teardown(env):
  assert _dry("tpu_teardown.sh", TPU, env) == [
      ["gcloud", "compute", "tpus", "tpu-vm", "delete", "tpu1", *SCOPE, "--quiet"]]
  assert _dry("tpu_teardown.sh", TPU + ["--queued"], env) == [QR_DELETE]


def _canned_states(env, states):
  """A fake gcloud answering `queued-resources describe` with the next state (empty: not found);
  any other call is recorded as a failure (a dry run must not run it)."""
  d = pathlib.Path(env["HOME"])
  (d / "states").write_text("".join(s + "\n" for s in states))
  _fake(env, "gcloud", f"""
want="compute tpus queued-resources describe tpu1 --zone=us-east5-a --project=proj"
if [[ $* != "$want --format=value(state.state)" ]]; then echo "$*" >> {d}/unexpected; exit 1; fi
n=$(( $(cat {d}/n 2>/dev/null || echo 0) + 1 )); echo $n > {d}/n
s=$(sed -n "${{n}}p" {d}/states); [[ -n $s ]] || exit 1; echo "$s"
""")
  return d


def test_tpu_relaunch_recreates_after_preemption(env):
  d = _canned_states(env, ["", "WAITING_FOR_RESOURCES", "ACTIVE", "SUSPENDED", "ACTIVE", "ACTIVE"])
  got = _dry("tpu_relaunch.sh", TPU + CREATE + RUN + ["--spot", "--poll-seconds=7",
                                                      "--delete-when-done"], env)
  attempt = [*_tar_scp(env), _run_gs()]
  assert got == [QR_CREATE, ["sleep", "7"], *attempt, QR_DELETE, QR_CREATE, *attempt, QR_DELETE]
  assert (d / "n").read_text().strip() == "6" and not (d / "unexpected").exists()


def test_tpu_relaunch_reuses_an_existing_resource(env):
  _canned_states(env, ["ACTIVE", "ACTIVE", "ACTIVE"])  # a rerun of the script: nothing created
  assert _dry("tpu_relaunch.sh", TPU + CREATE + RUN, env) == [*_tar_scp(env), _run_gs()]


def test_tpu_relaunch_bounded_by_max_restarts(env):
  d = _canned_states(env, ["", "", "FAILED"])  # created; not found (recreated, no delete); failed
  r = _bash("tpu_relaunch.sh", TPU + CREATE + RUN + ["--spot", "--max-restarts=1", "--dry-run"],
            env, ok=False)
  assert [shlex.split(x) for x in r.stdout.splitlines()] == [QR_CREATE, QR_CREATE]
  assert "FAILED after 1 restarts" in r.stderr and "--max-restarts" in r.stderr
  assert not (d / "unexpected").exists()


def test_multinode_gpu(env):
  args = ["--coordinator=node0:12355", "--num-processes=4", "--process-id=2", *RUN]
  assert _dry("multinode_gpu.sh", [*args, "--", "--mode=eval"], env) == [
      ["env", "JAX_COORDINATOR_ADDRESS=node0:12355", "JAX_NUM_PROCESSES=4", "JAX_PROCESS_ID=2",
       *shlex.split(MAIN), "--mode=eval"]]


def test_slurm_gpu_coordinator_from_slurm(env):
  _fake(env, "scontrol",
        '[[ $* == "show hostnames gpu-a[01-02]" ]] && printf "gpu-a01\\ngpu-a02\\n"\n')
  env = dict(env, SLURM_JOB_NODELIST="gpu-a[01-02]", SLURM_NTASKS="16", SLURM_SUBMIT_DIR=str(REPO))
  assert _dry("slurm_gpu.sbatch", RUN, env) == [
      ["export", "JAX_COORDINATOR_ADDRESS=gpu-a01:12355", "JAX_NUM_PROCESSES=16"],
      ["export", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9"],
      ["srun", "--kill-on-bad-exit=1", "bash", "-c",
       'export JAX_PROCESS_ID=$SLURM_PROCID CUDA_VISIBLE_DEVICES=$SLURM_LOCALID; exec "$@"',
       "fdistill", *shlex.split(MAIN)]]


@pytest.mark.parametrize("name,var", sorted(NEEDS.items()))
def test_missing_name_fails_naming_it(name, var, env):
  r = _bash(name, ["--dry-run"], env, ok=False)
  assert var in r.stderr, r.stderr


@pytest.mark.parametrize("name,args,var", NEEDS_LATER)
def test_missing_later_name_fails_naming_it(name, args, var, env):
  r = _bash(name, [*args, "--dry-run"], env, ok=False)
  assert f"missing {var}" in r.stderr, r.stderr


def test_unknown_flag_and_help(env):
  r = _bash("tpu_run.sh", ["--zonee=x"], env, ok=False)
  assert "unknown flag --zonee" in r.stderr
  r = _bash("tpu_run.sh", TPU + RUN + ["--", "--dry-run"], env, ok=False)  # would run for real
  assert "--dry-run must come before --" in r.stderr
  for script in SCRIPTS:
    if script.name != "common.sh":
      out = _bash(script.name, ["--help"], env).stdout
      assert out.startswith("Usage:") and "--dry-run" in out, (script.name, out)


def test_shellcheck_clean():
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck not installed (CI installs it from Debian's packages in .ci/run)")
  r = subprocess.run(["shellcheck", "-s", "bash", *map(str, SCRIPTS)], capture_output=True,
                     text=True, timeout=60, check=False)
  assert r.returncode == 0, r.stdout + r.stderr
