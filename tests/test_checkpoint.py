"""Checkpoint files (in-process, tiny agents): bit-exact round trips of the train state,
atomic writes, keeping the newest K, skipping corrupted checkpoints, config and version checks
on resume, cutting metrics.jsonl back, the agent host-state hooks."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamer import checkpoint
from dreamer.agent import Dreamer
from dreamer.config import build_config
from dreamer.saved_config import RESUME_SAFE_KEYS, differing_keys, load_saved_config, save_config
from dreamer.errors import CheckpointError, ConfigError
from dreamer.logger import Logger, read_metrics, truncate_metrics
from tests.support import A, placed, random_batch, tiny_config

HOST = {"episodes": 3, "updates": 7, "rng": np.random.default_rng(0).bit_generator.state}


def trained_state(agent, updates: int = 2):
    """A state whose optimizer moments, key and update counter have all moved."""
    state = placed(agent).init(jax.random.PRNGKey(0))
    for seed in range(updates):
        state, _, _ = placed(agent).update(state, random_batch(seed))
    return state


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (where, x), y in zip(jax.tree.leaves_with_path(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(where)
        assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(where)  # bit for bit, NaNs too


@pytest.fixture(scope="module")
def dreamer_and_state():
    agent = Dreamer(tiny_config(), A, False)
    return agent, jax.device_get(trained_state(agent))


def save(root: Path, state, step: int, keep: int = 3) -> Path:
    return checkpoint.save(root, state, {**HOST, "step": step}, keep)


# ----------------------------------------------------------------------------- round trips

def test_round_trip_is_bit_exact(tmp_path, dreamer_and_state):
    agent, state = dreamer_and_state
    assert int(state.applied_updates) == 2 and int(state.wm_opt[1][0].count) == 2  # Adam moments moved
    path = save(tmp_path, state, 500)
    assert path.name == "ckpt-500" and {p.name for p in path.iterdir()} == {"state.msgpack", "host.json"}
    ckpt = checkpoint.find_latest(tmp_path).checkpoint
    assert ckpt.step == 500 and ckpt.host["episodes"] == 3 and ckpt.host["version"]
    assert ckpt.host["rng"] == HOST["rng"]  # the numpy generator state survives JSON exactly
    restored = checkpoint.restore_state(agent.state_template(), ckpt)
    assert_trees_equal(state, restored)  # parameters, optimizer states, PRNG key, counter
    # Training on from the restored state is training on from the saved one.
    a, metrics_a, _ = placed(agent).update(jax.tree.map(jnp.asarray, state), random_batch(5))
    b, metrics_b, _ = placed(agent).update(jax.device_put(restored), random_batch(5))
    assert_trees_equal(a, b)
    assert float(metrics_a["model/loss"]) == float(metrics_b["model/loss"])


def test_plan2explore_phase_round_trips(tmp_path):
    from tests.test_explore import tiny_agent
    agent = tiny_agent(**{"explore.mode": "few_shot", "explore.steps": 10})
    state = agent.on_env_steps(placed(agent).init(jax.random.PRNGKey(0)), 20)  # the task policy collects
    assert int(state.agent.phase) == 1  # the phase is in the state
    save(tmp_path, state, 20)
    restored = checkpoint.restore_state(agent.state_template(), checkpoint.find_latest(tmp_path).checkpoint)
    assert int(restored.agent.phase) == 1
    assert_trees_equal(jax.device_get(state), restored)


def test_state_of_another_agent_is_rejected(tmp_path, dreamer_and_state):
    _, state = dreamer_and_state
    save(tmp_path, state, 10)
    bigger = Dreamer(tiny_config(**{"model.deter": 16}), A, False)
    with pytest.raises(CheckpointError, match="does not fit|needs"):
        checkpoint.restore_state(bigger.state_template(), checkpoint.find_latest(tmp_path).checkpoint)


# ----------------------------------------------------------------------------- writing

def test_keeps_the_newest_k_and_no_temporary_directories(tmp_path, dreamer_and_state):
    _, state = dreamer_and_state
    for step in (100, 200, 300, 400, 500):
        save(tmp_path, state, step, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-300", "ckpt-400", "ckpt-500"]
    save(tmp_path, state, 500, keep=3)  # a second save at one step (an interrupt after a save)
    names = [p.name for _, p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["ckpt-400", "ckpt-500", "ckpt-500.1"]
    assert checkpoint.find_latest(tmp_path).checkpoint.path.name == "ckpt-500.1"


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, dreamer_and_state, monkeypatch):
    _, state = dreamer_and_state
    save(tmp_path, state, 100)

    def crash(name):  # an exception where a crash test kills the process
        if name == "checkpoint":
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "crash_point", crash)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, state, 200)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-100"]  # the tmp dir was removed


def test_leftovers_of_a_killed_write_are_ignored_then_removed(tmp_path, dreamer_and_state):
    _, state = dreamer_and_state
    save(tmp_path, state, 100)
    leftover = tmp_path / "tmp-0123abcd"  # what SIGKILL during a write leaves behind
    leftover.mkdir()
    (leftover / "state.msgpack").write_bytes(b"\x00" * 10)
    assert checkpoint.find_latest(tmp_path).checkpoint.step == 100
    save(tmp_path, state, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-100", "ckpt-200"]


# ----------------------------------------------------------------------------- corruption

def corrupt(path: Path, how: str) -> None:
    data = path / "state.msgpack"
    if how == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "flipped":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif how == "no-host":
        (path / "host.json").unlink()
    elif how == "bad-json":
        (path / "host.json").write_text('{"step": 1')


@pytest.mark.parametrize("how", ["truncated", "flipped", "no-host", "bad-json"])
def test_corrupted_newest_is_skipped_for_an_older_one(tmp_path, dreamer_and_state, how):
    _, state = dreamer_and_state
    save(tmp_path, state, 100)
    corrupt(save(tmp_path, state, 200), how)
    resume = checkpoint.find_latest(tmp_path)
    assert resume.checkpoint.step == 100
    assert [p.name for p, _ in resume.skipped] == ["ckpt-200"]
    checkpoint.set_aside(resume.skipped)  # what a resumed run does before saving again
    assert [p.name for _, p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-100"]
    assert any(p.name.startswith("corrupted-ckpt-200") for p in tmp_path.iterdir())


def test_no_valid_checkpoint_is_an_error(tmp_path, dreamer_and_state):
    _, state = dreamer_and_state
    corrupt(save(tmp_path, state, 100), "truncated")
    with pytest.raises(CheckpointError, match="corrupted checkpoint .*ckpt-100.*digest"):
        checkpoint.find_latest(tmp_path)
    assert checkpoint.find_latest(tmp_path / "none").checkpoint is None  # no checkpoints: fresh


def test_other_library_version_is_an_error(tmp_path, dreamer_and_state):
    _, state = dreamer_and_state
    path = save(tmp_path, state, 100)
    host = json.loads((path / "host.json").read_text())
    (path / "host.json").write_text(json.dumps({**host, "version": "9.0.0"}))
    with pytest.raises(CheckpointError, match="dreamer-jax 9.0.0.*this is dreamer-jax"):
        checkpoint.find_latest(tmp_path)


# ----------------------------------------------------------------------------- config checks

def test_config_differences_name_the_keys(tmp_path):
    saved = build_config(["debug"], {"env.name": "dmc_cartpole_balance"})
    save_config(saved, tmp_path / "config.yaml")
    changed = build_config(["debug"], {"env.name": "dmc_cartpole_balance", "model.deter": "64", "seed": "3"})
    with pytest.raises(ConfigError) as info:
        checkpoint.prepare_resume(changed, tmp_path)
    message = str(info.value)
    assert "model.deter (saved 32, now 64)" in message and "seed (saved 0, now 3)" in message
    assert "\n" not in message


def test_safe_keys_may_change(tmp_path):
    saved = build_config(["debug"], {"env.name": "dmc_cartpole_balance"})
    save_config(saved, tmp_path / "config.yaml")
    safe = {"steps": "99", "run.log_every": "7", "run.eval_every": "9", "run.video_every": "0",
            "run.checkpoint_every": "5", "run.checkpoint_minutes": "0.5", "run.checkpoint_keep": "1",
            "run.max_nonfinite": "3", "env.max_restarts": "0", "env.parallel": "true",
            "logdir": "elsewhere", "run.eval_episodes": "2"}
    assert set(safe) <= RESUME_SAFE_KEYS
    new = build_config(["debug"], {"env.name": "dmc_cartpole_balance", **safe})
    assert differing_keys(saved, new) == []
    assert checkpoint.prepare_resume(new, tmp_path).checkpoint is None


def test_saved_config_without_a_safe_key_loads_with_its_default(tmp_path):
    """A run saved before a resume-safe key existed (here run.loop) can still resume."""
    saved = build_config(["debug"], {"env.name": "dmc_cartpole_balance", "run.loop": "overlapped"})
    save_config(saved, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.strip().startswith("loop:")]
    assert len(lines) == len(text.splitlines()) - 1
    (tmp_path / "config.yaml").write_text("\n".join(lines) + "\n")
    assert load_saved_config(tmp_path / "config.yaml").run.loop == "sync"
    new = build_config(["debug"], {"env.name": "dmc_cartpole_balance"})
    assert checkpoint.prepare_resume(new, tmp_path).checkpoint is None


# ----------------------------------------------------------------------------- metrics.jsonl

def test_truncate_metrics_drops_what_followed_the_checkpoint(tmp_path):
    with Logger(tmp_path, tensorboard=False) as logger:
        logger.scalar("a", 1.0)
        logger.write(100)
        size = logger.metrics_size()
        logger.scalar("a", 2.0)
        logger.write(200)
    truncate_metrics(tmp_path / "metrics.jsonl", size)
    assert read_metrics(tmp_path) == [{"step": 100, "a": 1.0}]
    truncate_metrics(tmp_path / "metrics.jsonl", 10**6)  # a longer length: nothing to cut
    assert read_metrics(tmp_path) == [{"step": 100, "a": 1.0}]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary left


@pytest.mark.parametrize("agent,presets,overrides", [
    ("dreamer", [], {}), ("dreamer", [], {"model.gru": "dreamerv2", "model.norm": "layer"}),
    ("dreamer", ["dreamerv3"], {"model.gru_blocks": 2, "model.deter": 16}), ("planet", [], {}),
    ("plan2explore", [], {})])
def test_every_stored_parameter_has_a_chosen_name_not_a_flax_counter(agent, presets, overrides):
    """A checkpoint's paths are its format: Flax's automatic names (Dense_0, MLP_1) would change
    with the order layers are built in."""
    import re

    from dreamer.registry import agent_class
    from tests.support import TINY

    space = {"image": ((64, 64, 3), np.dtype(np.uint8)), "position": ((2,), np.dtype(np.float32))}
    config = build_config(presets, {**TINY, **overrides}, agent=agent)
    template = agent_class(agent)(config, A, False, space).state_template()
    paths = ["/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
             for path, _ in jax.tree_util.tree_leaves_with_path(template)]
    assert len(paths) > 10
    assert [p for p in paths if re.search(r"(^|/)[A-Z]\w*_\d+(/|$)", p)] == []
