"""Checkpoint integrity: checksums verified on restore, fallback past corrupt steps (moved to
corrupt/, never deleted), retention limits, one clear message instead of closed-loop noise."""
import glob
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax.engine import checkpoint as ckpt_lib


def _state(v: float) -> dict:
  """A tiny train-state-like pytree (random weights so zstd stores them nearly verbatim)."""
  w = np.random.default_rng(int(v)).normal(size=(64, 32)).astype(np.float32)
  return {"step": jnp.int32(v), "params": {"w": jnp.asarray(w), "b": jnp.full((8,), v)},
          "ema": {"0.99": {"w": jnp.asarray(w * 0.5, jnp.bfloat16)}},
          "nonfinite": {"total": jnp.int32(0)}}


ABSTRACT = jax.eval_shape(lambda: _state(0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A directory with good steps 1, 2, 3 (copied fresh into each test)."""
  d = str(tmp_path_factory.mktemp("ck") / "checkpoints")
  ck = ckpt_lib.Checkpointer(d, 3, async_save=False)
  for s in (1, 2, 3):
    ck.save(s, _state(s), {"pos": s})
  ck.close()
  return d


@pytest.fixture
def ckdir(saved, tmp_path):
  d = str(tmp_path / "checkpoints")
  shutil.copytree(saved, d)
  return d


def _restore(d, caplog=None):
  ck = ckpt_lib.Checkpointer(d, 3, async_save=False)
  try:
    return ck.restore(ABSTRACT)
  finally:
    ck.close()


def _largest_array_file(step_dir: str) -> str:
  return max(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True),
             key=os.path.getsize)


def test_good_checkpoint_round_trips(ckdir):
  state, data = _restore(ckdir)
  assert data == {"pos": 3}
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(_state(3))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flipped_bit_is_caught_and_falls_back(ckdir, caplog):
  f = _largest_array_file(os.path.join(ckdir, "3"))
  b = bytearray(open(f, "rb").read())
  b[len(b) // 2] ^= 0x10  # Inside zstd literals: orbax itself restores changed values silently.
  open(f, "wb").write(b)
  state, data = _restore(ckdir)
  assert data == {"pos": 2} and int(state["step"]) == 2
  assert "fails its checksum" in caplog.text and "fell back to step 2" in caplog.text
  assert os.path.isdir(os.path.join(ckdir, "corrupt", "3")) and not os.path.exists(
      os.path.join(ckdir, "3"))


def test_swapped_array_files_fail_the_checksum(ckdir):
  # Valid orbax data of another step under step 3's record: only the checksum can tell.
  shutil.rmtree(os.path.join(ckdir, "3", "state"))
  shutil.copytree(os.path.join(ckdir, "2", "state"), os.path.join(ckdir, "3", "state"))
  ck = ckpt_lib.Checkpointer(ckdir, 3, async_save=False)
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match=r"step 3 .*fails its checksum"):
    ck.restore(ABSTRACT, step=3)
  ck.close()


@pytest.mark.parametrize("damage", ["truncate", "half_delete", "empty_step", "no_integrity"])
def test_damaged_steps_are_named_and_skipped(ckdir, caplog, damage):
  step3 = os.path.join(ckdir, "3")
  if damage == "truncate":
    for f in glob.glob(os.path.join(step3, "state", "**", "d", "*"), recursive=True):
      open(f, "r+b").truncate(os.path.getsize(f) // 2)
  elif damage == "half_delete":
    shutil.rmtree(os.path.join(step3, "state"))
  elif damage == "empty_step":
    step3 = os.path.join(ckdir, "4")
    os.makedirs(step3)
  else:
    shutil.rmtree(os.path.join(step3, "integrity"))
  state, data = _restore(ckdir)
  assert data == {"pos": 2 if damage != "empty_step" else 3}
  bad = os.path.basename(step3)
  assert f"checkpoint step {bad}" in caplog.text
  assert os.path.isdir(os.path.join(ckdir, "corrupt", bad))


def test_all_steps_corrupt_raises_naming_each(ckdir):
  for s in ("1", "2", "3"):
    shutil.rmtree(os.path.join(ckdir, s, "state"))
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match="no checkpoint in .* verifies") as e:
    _restore(ckdir)
  assert all(f"step {s}" in str(e.value) for s in (1, 2, 3))
  assert sorted(os.listdir(os.path.join(ckdir, "corrupt"))) == ["1", "2", "3"]  # Kept.


def test_rotation_never_deletes_the_good_step_after_a_fallback(ckdir):
  f = _largest_array_file(os.path.join(ckdir, "3"))
  open(f, "r+b").truncate(10)
  ck = ckpt_lib.Checkpointer(ckdir, 2, async_save=False)
  state, _ = ck.restore(ABSTRACT)
  ck.save(4, _state(4), {"pos": 4})  # keep 2: {2, 4}; the corrupt 3 no longer counts.
  assert ck.mngr.all_steps() == [2, 4]
  ck.close()


def test_config_mismatch_is_not_corruption(ckdir):
  other = jax.eval_shape(lambda: {**_state(0), "params": {"w": jnp.zeros((64, 16)),
                                                          "b": _state(0)["params"]["b"]}})
  ck = ckpt_lib.Checkpointer(ckdir, 3, async_save=False)
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"1 leaves differ.*\['params'\]\['w'\]: checkpoint has \[\[64, 32\]"):
    ck.restore(other)
  ck.close()
  assert not os.path.exists(os.path.join(ckdir, "corrupt"))


def test_nonfinite_restored_state_is_refused(ckdir, monkeypatch):
  ck = ckpt_lib.Checkpointer(ckdir, 3, async_save=False)
  real = ck.mngr.restore

  def poisoned(step, args):
    out = real(step, args=args)
    if "state" in out:
      out["state"]["params"]["b"] = jnp.full((8,), jnp.nan)
    return out
  monkeypatch.setattr(ck.mngr, "restore", poisoned)
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match="fails its checksum|non-finite"):
    ck.restore(ABSTRACT, step=3)
  ck.close()


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_impossible_retention_is_refused(tmp_path, keep):
  with pytest.raises(ValueError, match="keep_checkpoints"):
    ckpt_lib.Checkpointer(str(tmp_path), keep, async_save=False)


def test_bad_checkpoint_gives_one_message_without_loop_noise(ckdir):
  for s in ("1", "2", "3"):
    for f in glob.glob(os.path.join(ckdir, s, "state", "**", "d", "*"), recursive=True):
      open(f, "r+b").truncate(1)
  code = textwrap.dedent(f"""
      import jax
      from tests.test_checkpoint_integrity import ABSTRACT
      from fdistill_jax.engine import checkpoint as c
      c.Checkpointer({ckdir!r}, 3, async_save=False).restore(ABSTRACT)""")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
  assert out.returncode != 0
  assert "Event loop is closed" not in out.stderr
  assert "NoVerifiedCheckpointError: no checkpoint in" in out.stderr  # A CorruptCheckpointError.


# ------------------------------------------------------------- damaged integrity records
def _record_path(ckdir, step="3"):
  return os.path.join(ckdir, step, "integrity", "metadata")


def _edit_record(ckdir, edit):
  p = _record_path(ckdir)
  text = open(p).read()
  new = edit(text)
  assert new != text
  open(p, "w").write(new)


RECORD_DAMAGE = {
    "missing": None,
    "garbled": lambda t: t[:len(t) // 3] + "\x00\x17" + t[len(t) // 3 + 2:],
    "truncated": lambda t: t[:len(t) // 2],
    "key_renamed": lambda t: t.replace('"leaves"', '"leaveS"'),
    "shape_digit": lambda t: t.replace("[64, 32]", "[64, 33]", 1),
    "leaf_path": lambda t: t.replace("['w']", "['x']", 1),
    "dtype": lambda t: t.replace('"bfloat16"', '"bfloat17"', 1),
    "leaf_entry_shortened": lambda t: t.replace('"int32", [', '"int32", 7, [', 1),
    "checksum_digit": lambda t: t.replace("[", "[1", 3),
}


@pytest.mark.parametrize("damage", sorted(RECORD_DAMAGE))
def test_damaged_integrity_record_falls_back_like_damaged_data(ckdir, caplog, damage):
  if RECORD_DAMAGE[damage] is None:
    os.remove(_record_path(ckdir))
  else:
    _edit_record(ckdir, RECORD_DAMAGE[damage])
  state, data = _restore(ckdir)  # Neither KeyError nor CheckpointMismatchError.
  assert data == {"pos": 2} and int(state["step"]) == 2
  assert "checkpoint step 3" in caplog.text and "fell back to step 2" in caplog.text
  assert os.path.isdir(os.path.join(ckdir, "corrupt", "3"))


def test_random_byte_flips_in_the_record_never_escape_as_other_errors(saved, tmp_path):
  rng = np.random.default_rng(0)
  for i in range(12):
    d = str(tmp_path / f"c{i}")
    shutil.copytree(saved, d)
    p = _record_path(d)
    b = bytearray(open(p, "rb").read())
    for _ in range(int(rng.integers(1, 4))):
      b[int(rng.integers(len(b)))] = int(rng.integers(256))
    open(p, "wb").write(b)
    state, data = _restore(d)  # A flip in whitespace changes nothing; any other falls back.
    assert data["pos"] in (2, 3) and int(state["step"]) == data["pos"]
    assert (data["pos"] == 2) == os.path.isdir(os.path.join(d, "corrupt", "3"))


def test_real_mismatch_is_still_a_mismatch_when_arrays_agree_with_the_record(ckdir):
  # The record and orbax's array metadata agree ([64, 32]); only the config differs.
  other = jax.eval_shape(lambda: {**_state(0), "ema": {"0.99": {"w": jnp.zeros((64, 32))}}})
  ck = ckpt_lib.Checkpointer(ckdir, 3, async_save=False)
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r"\['ema'\]\['0.99'\]\['w'\]"):
    ck.restore(other)
  ck.close()
  assert not os.path.exists(os.path.join(ckdir, "corrupt"))


# ------------------------------------------------- nothing verifies: stop, say how to go on
def test_nothing_verifies_names_moves_and_both_flags(ckdir):
  shutil.rmtree(os.path.join(ckdir, "3", "state"))
  for s in ("1", "2"):
    shutil.rmtree(os.path.join(ckdir, s, "integrity"))
  with pytest.raises(ckpt_lib.NoVerifiedCheckpointError) as e:
    _restore(ckdir)
  msg = str(e.value)
  assert "moved to" in msg and "corrupt" in msg and "step 3" in msg
  assert "steps [1, 2]" in msg and ckpt_lib.ADOPT_FLAG in msg and ckpt_lib.RESTART_FLAG in msg
  assert e.value.moved == [3] and sorted(e.value.unrecorded) == [1, 2]
  # Unrecorded steps stay where an adopting run finds them.
  assert os.path.isdir(os.path.join(ckdir, "2")) and os.listdir(os.path.join(ckdir, "corrupt")) == ["3"]


def test_unrecorded_step_is_adopted_verified_and_then_verifies(ckdir, caplog):
  for s in ("1", "2", "3"):
    shutil.rmtree(os.path.join(ckdir, s, "integrity"))
  ck = ckpt_lib.Checkpointer(ckdir, 3, async_save=False)
  state, data = ck.restore(ABSTRACT, adopt_unrecorded=True)
  ck.close()
  assert data == {"pos": 3} and "adopted checkpoint step 3" in caplog.text
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(_state(3))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _restore(ckdir)[1] == {"pos": 3}  # Its record now verifies without the flag.


def test_adoption_refuses_nonfinite_and_mismatched_steps(ckdir, monkeypatch):
  for s in ("1", "2", "3"):
    shutil.rmtree(os.path.join(ckdir, s, "integrity"))
  other = jax.eval_shape(lambda: {**_state(0), "params": {"w": jnp.zeros((64, 16)),
                                                          "b": _state(0)["params"]["b"]}})
  ck = ckpt_lib.Checkpointer(ckdir, 3, async_save=False)
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match="cannot be adopted"):
    ck.restore(other, adopt_unrecorded=True)
  real = ck.mngr.restore

  def poisoned(step, args):
    out = real(step, args=args)
    out["state"]["params"]["b"] = jnp.full((8,), jnp.nan)
    return out
  monkeypatch.setattr(ck.mngr, "restore", poisoned)
  with pytest.raises(ckpt_lib.CorruptCheckpointError, match="cannot be adopted.*non-finite"):
    ck.restore(ABSTRACT, step=3, adopt_unrecorded=True)
  ck.close()
  assert not os.path.exists(_record_path(ckdir))  # Nothing written for a refused step.
