"""Data-parallel training on 2 virtual CPU devices: the sharded update equals the single-device
update, checkpoints restore onto either device count, and the training command runs end to end
with --devices 2.

JAX fixes its device count when it starts, so both tests run in a fresh process with
XLA_FLAGS=--xla_force_host_platform_device_count=2.
"""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from dreamer.logger import read_metrics

pytestmark = pytest.mark.e2e  # processes with two virtual devices

ROOT = Path(__file__).resolve().parent.parent
TWO_DEVICES = {**os.environ, "PYTHONPATH": str(ROOT),
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}

CHECK = textwrap.dedent("""
    import jax, numpy as np
    from dreamer.agent import Dreamer
    from dreamer.device import DeviceAgent
    from tests.support import A, random_batch, tiny_config
    from tests.tracing import count_traces

    assert len(jax.devices()) == 2
    results = {}
    for devices in (1, 2):
        with count_traces(Dreamer, "update") as traces:
            agent = DeviceAgent(Dreamer(tiny_config(**{"devices": devices}), A, False), devices)
            state = agent.init(jax.random.PRNGKey(0))
            for seed in range(2):
                state, metrics, _ = agent.update(state, agent.shard(random_batch(seed, b=4)))
        assert traces["update"] == 1, traces  # the state keeps its sharding
        if devices == 2:
            leaf = jax.tree.leaves(state.wm)[0]
            assert leaf.sharding.is_fully_replicated and len(leaf.devices()) == 2
        results[devices] = jax.device_get((state, metrics))
    (s1, m1), (s2, m2) = results[1], results[2]
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    for key in m1:
        np.testing.assert_allclose(m1[key], m2[key], rtol=2e-4, atol=2e-5, err_msg=key)
    print("equal")
""")


def test_two_device_update_equals_one_device_update():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=TWO_DEVICES,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "equal" in result.stdout, result.stderr[-3000:]


RESTORE = textwrap.dedent("""
    import sys, jax
    from pathlib import Path
    from dreamer import checkpoint
    from dreamer.agent import Dreamer
    from dreamer.device import DeviceAgent
    from tests.support import A, random_batch, tiny_config
    from tests.tracing import count_traces

    root = Path(sys.argv[1])
    saver = DeviceAgent(Dreamer(tiny_config(**{"devices": 2}), A, False), 2)
    state, _, _ = saver.update(saver.init(jax.random.PRNGKey(0)), saver.shard(random_batch(0, b=4)))
    checkpoint.save(root, state, {"step": 1}, keep=1)
    saved = jax.device_get(state)
    for devices in (2, 1):  # a run saved on two devices resumes on two, or on one
        with count_traces(Dreamer, "update") as traces:
            agent = DeviceAgent(Dreamer(tiny_config(**{"devices": devices}), A, False), devices)
        host = checkpoint.restore_state(agent.agent.state_template(), checkpoint.find_latest(root).checkpoint)
        assert all((a == b).all() for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(host)))
        restored = agent.restore(host)  # as the trainer restores
        leaf = jax.tree.leaves(restored.wm)[0]
        assert leaf.sharding.is_fully_replicated and len(leaf.devices()) == devices
        for seed in (1, 2):
            restored, _, _ = agent.update(restored, agent.shard(random_batch(seed, b=4)))
        assert traces["update"] == 1, (devices, traces)  # placed as a fresh state is
    print("restored")
""")


def test_checkpoint_restores_onto_other_device_counts(tmp_path):
    result = subprocess.run([sys.executable, "-c", RESTORE, str(tmp_path)], cwd=ROOT, env=TWO_DEVICES,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "restored" in result.stdout, result.stderr[-3000:]


def test_train_command_with_two_devices(tmp_path):
    logdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dreamer.train", "--env", "dmc_cartpole_balance", "--configs", "debug",
         "--steps", "2000", "--devices", "2", "--logdir", str(logdir)],
        cwd=ROOT, env=TWO_DEVICES, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(logdir / "metrics.jsonl")
    assert max(m["step"] for m in metrics) == 2000
    assert any("model/loss" in m for m in metrics)


def test_too_many_devices_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dreamer.train", "--env", "dmc_cartpole_balance", "--configs", "debug",
         "--devices", "3", "--logdir", str(tmp_path / "run")],
        cwd=ROOT, env=TWO_DEVICES, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --devices 3 asks for more devices")
    assert not (tmp_path / "run").exists()
