"""DreamerV3's replay options: the replay context (sequences start from stored latent states,
which the collector records and each update writes back), the online queue and the prefill by
the untrained policy, from the agent's update to a whole run on a fake environment."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest

from dreamer.collect import Collector
from dreamer.config import build_config
from dreamer.envs import VectorEnv, make_env
from dreamer.overlapped import make_trainer
from dreamer.registry import agent_class
from dreamer.replay import read_episode
from dreamer.parts import default_parts
from tests.support import TINY

try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    import fake_envs
except ImportError:  # tests/ is a package
    from tests import fake_envs

VECTOR_SPACE = {"obs": ((3,), np.dtype(np.float32))}
CONTEXT = {**TINY, "env.obs": "vector", "run.replay_context": 1}


def test_the_collector_stores_what_follows_each_action_with_the_step_it_leads_to():
    chosen = []

    def act(obs):
        chosen.append(len(chosen))
        return np.eye(3, dtype=np.float32)[[0]]

    fns = [functools.partial(make_env, f"gym:{fake_envs.__name__}:FakeTerminate-v0", seed=0, action_repeat=1)]
    with VectorEnv(fns) as envs:
        collector = Collector(envs, 1, extras=lambda: {"mark": np.full(1, len(chosen), np.int32)})
        episodes = []
        while not episodes:
            episodes, _ = collector.step(act)
    np.testing.assert_array_equal(episodes[0]["mark"], np.arange(6))  # a reset, then 5 steps


@pytest.fixture(scope="module")
def agent():
    config = build_config(overrides=CONTEXT)
    return agent_class("dreamer")(config, 2, False, VECTOR_SPACE)


def context_batch(agent, seed: int, first: bool) -> dict:
    """A batch [2, 5] of vectors with random stored contexts; `first`: each sequence starts
    an episode."""
    rng = np.random.default_rng(seed)
    b, t = 2, 5
    batch = {"obs": rng.normal(size=(b, t, 3)), "action": rng.uniform(-1, 1, (b, t, 2)),
             "reward": rng.normal(size=(b, t)), "is_first": np.zeros((b, t), bool),
             "is_last": np.zeros((b, t), bool), "is_terminal": np.zeros((b, t), bool)}
    batch["is_first"][:, 0] = first
    for key, (shape, _) in agent.context_space().items():
        batch[key] = rng.normal(size=(b, t, *shape))
    return {key: np.asarray(value, np.float32) if value.dtype == np.float64 else value
            for key, value in batch.items()}


def world_model_loss(agent):
    """batch -> the world model's loss on it, from the sequences' start states (`start_state`)."""
    params = agent.wm.init(jax.random.PRNGKey(0))
    loss = jax.jit(lambda b: agent.wm.loss(params, b, jax.random.PRNGKey(1), start=agent.start_state(b))[0])
    return lambda batch: float(loss(batch))


def test_sequences_start_from_the_stored_context_of_their_first_step(agent):
    loss = world_model_loss(agent)
    batch = context_batch(agent, 0, first=False)
    moved = {**batch, "context_deter": batch["context_deter"] + 1.0}
    assert loss(batch) != loss(moved)
    later = {**batch, "context_deter": batch["context_deter"].copy()}
    later["context_deter"][:, 1:] += 1.0  # only the first step's context is read
    assert loss(batch) == loss(later)
    first = context_batch(agent, 0, first=True)  # an episode starts: the state resets, context unused
    assert loss(first) == loss({**first, "context_deter": first["context_deter"] + 1.0})
    assert {key: value.shape for key, value in agent.context(agent.wm.rssm.initial(3)).items()} == {
        "context_deter": (3, 8), "context_stoch": (3, 4)}  # TINY: deter 8, stoch 4


# A run on the fake environment: episodes of 25 steps, training from step 100 on, 6 updates
# each 100 steps, batch 2 x 4 (as tests/test_loop.py), with DreamerV3's three replay options.
RUN = {**CONTEXT, "env.name": f"gym:{fake_envs.__name__}:FakeDict-v0", "env.time_limit": 25,
       "env.action_repeat": 1, "steps": 200, "run.prefill": 100, "run.prefill_actions": "policy",
       "run.train_every": 100, "run.train_steps": 6, "run.seq_len": 4, "run.cross_episodes": True,
       "run.online": True, "run.eval_every": 200, "run.eval_episodes": 1, "run.log_every": 100,
       "run.video_every": 0, "run.checkpoint_minutes": 0, "run.checkpoint_every": 100}


class Spy:
    """Records what a replay's `sample_with_positions` and `overwrite` are called with."""

    def __init__(self):
        self.drawn, self.written = [], []

    def watch(self, replay):
        sample, overwrite = replay.sample_with_positions, replay.overwrite

        def sample_with_positions(*args, **kwargs):
            batch, positions = sample(*args, **kwargs)
            self.drawn.append(positions)
            return batch, positions

        def write(positions, values, shift=0):
            self.written.append((positions, {k: v.copy() for k, v in values.items()}, shift))
            return overwrite(positions, values, shift)

        replay.sample_with_positions, replay.overwrite = sample_with_positions, write
        return replay


def test_a_run_stores_replays_and_writes_back_the_context_and_trains_on_fresh_steps_first(tmp_path):
    config = build_config(overrides={**RUN, "logdir": str(tmp_path)})
    spy = Spy()
    base = default_parts(config)
    parts = dataclasses.replace(base, make_replay=lambda *args: spy.watch(base.make_replay(*args)))
    make_trainer(config, tmp_path, parts=parts).run()
    episodes = [read_episode(path) for path in sorted((tmp_path / "replay").glob("*.npz"))]
    assert len(episodes) == 8 and all(len(ep["reward"]) == 26 for ep in episodes)  # a reset + 25 steps
    # The untrained policy prefilled: its filtered states (with a sampled stoch part, never all
    # zero) are stored from the first episode on; random prefill actions would leave zeros.
    for episode in episodes:
        assert (np.abs(episode["context_stoch"][1:]).max(axis=-1) > 0).all()
    # Online: the first updates train on the first stored steps in order (global 0, 4, 8, ...).
    assert spy.drawn[0] == [(0, 0), (0, 4)] and spy.drawn[1] == [(0, 8), (0, 12)]
    # Each update's posteriors go back into the steps after the ones it trained on.
    assert len(spy.written) == 12 and all(shift == 1 for _, _, shift in spy.written)
    assert [positions for positions, _, _ in spy.written] == spy.drawn[:12]
    assert spy.written[0][1]["context_deter"].shape == (2, 4, 8)
