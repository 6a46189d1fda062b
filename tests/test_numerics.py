"""Numerical faults and determinism: a non-finite update is skipped inside the jitted update,
repeated ones stop the run with a clear message; the same seed gives the same losses."""

from __future__ import annotations

import re

import jax
import numpy as np

from dreamer.agent import Dreamer
from dreamer.logger import read_metrics
from tests.support import A, placed, random_batch, tiny_config, train_in_process
from tests.tracing import count_traces


def test_nonfinite_update_is_skipped_then_training_resumes():
    with count_traces(Dreamer, "update") as traces:
        agent = Dreamer(tiny_config(), A, False)
        placed(agent)  # its jits wrap the counting methods
    state = placed(agent).init(jax.random.PRNGKey(0))
    before = jax.tree.map(np.asarray, state)  # `update` donates its input
    bad = random_batch(seed=1)
    bad["reward"][0, 2] = np.nan  # one NaN reward poisons the loss and every gradient
    state, metrics, _ = placed(agent).update(state, bad)
    assert float(metrics["train/nonfinite"]) == 1.0
    assert not np.isfinite(float(metrics["model/loss"]))
    for old, new in zip(jax.tree.leaves(before.wm) + jax.tree.leaves(before.agent),
                        jax.tree.leaves(state.wm) + jax.tree.leaves(state.agent)):
        np.testing.assert_array_equal(old, new)  # parameters and optimizer states untouched
    assert int(state.applied_updates) == 0
    assert not np.array_equal(before.key, state.key)  # the next update draws new noise
    state, metrics, _ = placed(agent).update(state, random_batch(seed=1))
    assert float(metrics["train/nonfinite"]) == 0.0 and int(state.applied_updates) == 1
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))
    assert traces["update"] == 1  # the guard lives inside the one compiled update


def test_repeated_nonfinite_updates_stop_the_run(tmp_path):
    logdir = tmp_path / "run"
    result = train_in_process("--env", "gym:tests.fake_envs:FakeNaNReward-v0", "--configs", "debug",
                              "--steps", "3000", "--run.max_nonfinite", "3", "--logdir", str(logdir))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # Warnings may come first (NaN rewards are logged as such); the last line is the error.
    line = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: \d+ consecutive updates had a non-finite loss", line), line
    assert "run.max_nonfinite" in line
    assert "update(s) skipped for a non-finite loss" in result.stderr
    metrics = read_metrics(logdir / "metrics.jsonl")
    assert any("train/skipped_updates" in m for m in metrics)
    assert not any("model/loss" in m for m in metrics)  # stopped in the first burst, before a log


def test_same_seed_same_losses():
    """Same seed and config: identical losses for the first updates (CPU, float32)."""
    def losses(seed):
        agent = Dreamer(tiny_config(**{"seed": seed}), A, False)
        state = placed(agent).init(jax.random.PRNGKey(seed))
        out = []
        for i in range(3):
            state, metrics, _ = placed(agent).update(state, random_batch(seed=i))
            out.append(jax.device_get(metrics))
        return out

    first, second, other = losses(0), losses(0), losses(1)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert first[0]["model/loss"] != other[0]["model/loss"]
