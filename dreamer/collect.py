"""Host-side collection: steps a VectorEnv with an agent's policy and assembles episodes.

Stored step t holds observation t and the action that led to it (zeros at an episode start),
the convention `WorldModel.loss` expects, and what the collector's `extras` gave after that
action was chosen (the agent's replay context).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import numpy as np

from dreamer.config import Config
from dreamer.envs import VectorEnv, make_env

# (obs dict of [N, ...] arrays, is_first [N]) -> actions float32 [N, A]
ActFn = Callable[[dict], np.ndarray]
ExtrasFn = Callable[[], dict]  # () -> per-step entries to store, dict of [N, ...] arrays


def env_factory(config: Config, seed: int) -> partial:
    """A picklable function that builds one environment of the run's settings."""
    env = config.env
    return partial(make_env, env.name, seed=seed, action_repeat=env.action_repeat, size=env.size,
                   time_limit=env.time_limit, camera=None if env.camera < 0 else env.camera,
                   fast_render=env.fast_render, obs=env.obs)


def make_vector_env(config: Config, seed: int, num_envs: int | None = None,
                    parallel: bool | None = None) -> VectorEnv:
    env = config.env
    num_envs = env.num_envs if num_envs is None else num_envs
    parallel = env.parallel if parallel is None else parallel
    fns = [env_factory(config, seed + i) for i in range(num_envs)]
    return VectorEnv(fns, parallel=parallel, max_restarts=env.max_restarts)


class Collector:
    """Steps `envs` one agent step at a time and returns the episodes that finish. `extras`,
    asked after each action, gives entries stored with the step that action leads to."""

    def __init__(self, envs: VectorEnv, action_repeat: int, extras: ExtrasFn = dict):
        self.envs = envs
        self.action_repeat = action_repeat
        self.extras = extras
        n = envs.num_envs
        self.obs = envs.step(np.zeros((n, envs.action_size), np.float32))  # resets every env
        self._episodes: list[list[dict]] = [[] for _ in range(n)]
        self._record(self.obs, np.zeros((n, envs.action_size), np.float32))

    def _record(self, obs: dict, action: np.ndarray) -> list[dict]:
        """Append step t to each env's episode; return the episodes that just ended."""
        done = []
        extras = {key: np.asarray(value) for key, value in self.extras().items()}
        for i, steps in enumerate(self._episodes):
            step = {key: value[i] for key, value in obs.items()}
            step.update({key: value[i] for key, value in extras.items()})
            step["action"] = np.zeros_like(action[i]) if obs["is_first"][i] else action[i]
            if obs["is_first"][i]:
                steps.clear()
            steps.append(step)
            if obs["is_last"][i]:
                done.append({key: np.stack([s[key] for s in steps]) for key in steps[0]})
        return done

    def step(self, act: ActFn) -> tuple[list[dict], int]:
        """One agent step in every env. Returns (finished episodes, environment steps taken)."""
        actions = np.asarray(act(self.obs), np.float32)
        stepped = int((~self.obs["is_last"]).sum())  # envs that end an episode are reset instead
        self.obs = self.envs.step(actions)
        return self._record(self.obs, actions), stepped * self.action_repeat


def episode_signature(envs: VectorEnv, extras_space: dict | None = None
                      ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The step shape and dtype of every key of the episodes the collector assembles from
    `envs` (and its `extras`, key -> (shape, dtype)): what the run's replay accepts."""
    flag = ((), np.dtype(bool))
    return {**envs.obs_space, "reward": ((), np.dtype(np.float32)),
            "is_first": flag, "is_last": flag, "is_terminal": flag,
            "action": ((envs.action_size,), np.dtype(np.float32)), **(extras_space or {})}


def random_actions(rng: np.random.Generator, batch: int, action_size: int, discrete: bool) -> np.ndarray:
    """Uniform random actions [batch, A] (host side, NumPy): for prefill and the random baseline;
    one-hot for discrete actions."""
    if discrete:
        return np.eye(action_size, dtype=np.float32)[rng.integers(0, action_size, batch)]
    return rng.uniform(-1, 1, (batch, action_size)).astype(np.float32)


class AgentActor:
    """Wraps an agent's jitted policy (`dreamer.device.DeviceAgent.policy`) with its recurrent
    state and a PRNG key (host side)."""

    def __init__(self, device, num_envs: int, seed: int, mode: str):
        self.device, self.mode = device, mode
        self.keys = (*device.agent.obs_space, "is_first")  # what the policy reads of an observation
        self.pstate = device.agent.initial_policy_state(num_envs)
        self.key = jax.random.PRNGKey(seed)

    def __call__(self, train_state, obs: dict) -> np.ndarray:
        self.key, key = jax.random.split(self.key)
        inputs = {name: obs[name] for name in self.keys}
        action, self.pstate = self.device.policy(train_state, inputs, self.pstate, key, self.mode)
        return np.asarray(action)

    def context(self) -> dict:
        """The agent's replay context of the latent state the last action came from [N, ...]
        (of the initial state before the first, and while random actions prefill)."""
        return self.device.agent.context(self.pstate["latent"])


def run_episodes(envs: VectorEnv, act: ActFn, action_repeat: int, episodes: int,
                 stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """Run `episodes` complete episodes (eval); returns them as dicts of stacked arrays, fewer
    if `stop()` turned true (it is asked after each episode)."""
    collector = Collector(envs, action_repeat)
    finished: list[dict] = []
    while len(finished) < episodes:
        done, _ = collector.step(act)
        finished += done
        if done and stop():
            break
    return finished[:episodes]
