"""What the tests share: tiny model sizes, random batches, running the training command.

Imported by test modules and by the scripts some tests run in subprocesses (two virtual
devices); the fixtures built on them live in `conftest.py`."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from unittest import mock

import numpy as np

from dreamer import checkpoint
from dreamer.config import Config, build_config
from dreamer.device import DeviceAgent
from dreamer.errors import ConfigError
from dreamer.logger import read_metrics

ROOT = Path(__file__).resolve().parent.parent

# Every network a few units wide: each agent's update compiles and runs in seconds.
TINY = {"model.deter": 8, "model.stoch": 4, "model.classes": 3, "model.hidden": 8,
        "model.depth": 2, "model.head_units": 8, "behavior.horizon": 4,
        "behavior.actor_units": 8, "behavior.critic_units": 8, "run.batch_size": 2,
        "run.seq_len": 5, "planet.horizon": 3, "planet.iterations": 2,
        "planet.candidates": 16, "planet.top_k": 4, "explore.units": 8, "explore.layers": 1}
B, T, A, E = 2, 5, 3, 7  # batch, sequence length, action size, embedding size of the RSSM tests


def write(directory, name: str, text: str):
    """A preset file `directory/NAME.yaml` holding `text`."""
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def config_error(*args, **kwargs) -> str:
    """The one-line message of the ConfigError that `build_config(*args, **kwargs)` raises."""
    import pytest

    with pytest.raises(ConfigError) as info:
        build_config(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def tiny_config(agent: str = "dreamer", **overrides) -> Config:
    """The agent's config at TINY sizes (its own preset applied first, as on the command line)."""
    return build_config(overrides={**TINY, **overrides}, agent=agent)


_PLACED: dict[int, tuple] = {}


def placed(agent) -> DeviceAgent:
    """The agent jitted on its `devices` devices, as the training loop runs it; one per agent,
    so that a test compiles each function once. Its jits wrap the agent's methods as they are
    at the first call here (what `tests.tracing.count_traces` counts)."""
    if id(agent) not in _PLACED:
        _PLACED[id(agent)] = (agent, DeviceAgent(agent, agent.config.devices))
    return _PLACED[id(agent)][1]


def random_batch(seed: int = 0, b: int = B, t: int = T, reward: float | None = None) -> dict:
    """A replay batch [b, t, ...] of random images, actions in [-1, 1] and rewards (N(0, 1), or
    the constant `reward`); every sequence starts an episode."""
    rng = np.random.default_rng(seed)
    is_first = np.zeros((b, t), bool)
    is_first[:, 0] = True
    batch = {"image": rng.integers(0, 255, (b, t, 64, 64, 3), dtype=np.uint8),
             "action": rng.uniform(-1, 1, (b, t, A)).astype(np.float32)}
    rewards = rng.normal(size=(b, t)) if reward is None else np.full((b, t), reward)
    return {**batch, "reward": rewards.astype(np.float32), "is_first": is_first,
            "is_last": np.zeros((b, t), bool), "is_terminal": np.zeros((b, t), bool)}


def run_train(*args: str, timeout: int = 600, fault: str | None = None) -> subprocess.CompletedProcess:
    """`python -m dreamer.train ARGS` in a subprocess, from the checkout; `fault` is a
    `DREAMER_CRASH_AT` spec (dreamer/faults.py) to inject, none otherwise."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DREAMER_CRASH_AT", None)
    if fault:
        env["DREAMER_CRASH_AT"] = fault
    return subprocess.run([sys.executable, "-m", "dreamer.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def train_in_process(*args: str) -> subprocess.CompletedProcess:
    """`python -m dreamer.train ARGS` through `dreamer.train.main` in this process: its exit
    status and what it printed, as `run_train` returns them, without starting Python and JAX
    anew. An exception that would end the process prints its traceback and gives status 1,
    as Python does."""
    from dreamer import train

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = train.main(list(args))
        except Exception:  # noqa: BLE001 (what the interpreter would print)
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["dreamer.train", *args], code, out.getvalue(), err.getvalue())


# ----------------------------------------------------------------------------- training processes
# Training runs in subprocesses that tests stop, crash and resume (test_resume, test_overlapped).

TIMEOUT = 900  # per process; the machine may be shared


def start(logdir: Path, *args: str, crash_at: str | None = None) -> tuple[subprocess.Popen, Path]:
    """Start a training process; its stderr goes to a file (read while it runs)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DREAMER_CRASH_AT", None)
    if crash_at:
        env["DREAMER_CRASH_AT"] = crash_at
    log = logdir.parent / f"{logdir.name}-{len(list(logdir.parent.glob(logdir.name + '-*.log')))}.log"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "dreamer.train", *args, "--logdir", str(logdir)],
                                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    return process, log


def run(logdir: Path, *args: str, crash_at: str | None = None) -> tuple[int, str]:
    process, log = start(logdir, *args, crash_at=crash_at)
    return process.wait(timeout=TIMEOUT), log.read_text()


def wait_for(condition, process: subprocess.Popen, what: str) -> bool:
    """Poll until `condition()`; False if the process ended first."""
    deadline = time.time() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            return False
        if time.time() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return True


def logged_after(logdir: Path, step: int):
    def condition() -> bool:
        path = logdir / "metrics.jsonl"
        return path.exists() and any(m["step"] > step for m in read_metrics(path))
    return condition


def episode_files(logdir: Path) -> set[str]:
    return {p.name for p in (logdir / "replay").glob("*.npz")}


def latest(logdir: Path) -> checkpoint.Checkpoint:
    return checkpoint.find_latest(logdir / checkpoint.CHECKPOINT_DIR).checkpoint


def steps_by_key(metrics: list[dict]) -> dict[str, list[int]]:
    steps = defaultdict(list)
    for record in metrics:
        for key in record:
            if key != "step":
                steps[key].append(record["step"])
    return steps


def comparable(record: dict) -> dict:
    """Everything but wall-clock measurements."""
    return {k: v for k, v in record.items() if not k.startswith("perf/")}


def at_step(metrics: list[dict], step: int) -> dict:
    merged: dict = {}
    for record in metrics:
        if record["step"] == step:
            merged.update(comparable(record))
    return merged


# ----------------------------------------------------------------------------- parity tests


@contextlib.contextmanager
def recording_optimizers():
    """Agents built inside keep, in each optimiser's state, its last gradient and update:
    (inner state, grads, updates), for the parity tests to read."""
    import jax
    import jax.numpy as jnp
    import optax

    from dreamer.core import actor_critic, world_model

    def recording(make):
        def make_recording(*args, **kwargs):
            opt = make(*args, **kwargs)

            def init(params):
                zeros = jax.tree.map(jnp.zeros_like, params)
                return opt.init(params), zeros, zeros

            def update(grads, state, params=None):
                updates, inner = opt.update(grads, state[0], params)
                return updates, (inner, grads, updates)
            return optax.GradientTransformation(init, update)
        return make_recording

    with mock.patch.object(world_model, "make_optimizer", recording(world_model.make_optimizer)), \
            mock.patch.object(actor_critic, "make_optimizer", recording(actor_critic.make_optimizer)):
        yield


def section(arrays: dict, prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with `prefix`, by the rest of their names."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def tree_put(tree: dict, path: str, value) -> None:
    """Set the leaf at 'a/b/c' of a nested dict, creating the dicts on the way."""
    import jax.numpy as jnp

    *parents, name = path.split("/")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[name] = jnp.asarray(value)


def tree_get(tree: dict, path: str) -> np.ndarray:
    for part in path.split("/"):
        tree = tree[part]
    return np.asarray(tree)
