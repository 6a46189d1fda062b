"""The environment interface shared by all pixel environments (host-side numpy only)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from dreamer.errors import EnvError

Obs = dict[str, Any]
"""Observation dict: image uint8 [H, W, 3], reward np.float32, is_first/is_last/is_terminal bool."""

OBS_KEYS = ('image', 'reward', 'is_first', 'is_last', 'is_terminal')


def make_obs(image: np.ndarray, reward: float = 0.0, *, is_first: bool = False,
             is_last: bool = False, is_terminal: bool = False) -> Obs:
    """Builds an observation dict with the standard keys and dtypes."""
    return {
        'image': image,
        'reward': np.float32(reward),
        'is_first': bool(is_first),
        'is_last': bool(is_last),
        'is_terminal': bool(is_terminal),
    }


class Env(abc.ABC):
    """A pixel environment with actions in [-1, 1] and episodic time limits.

    `reset()` and `step()` return an `Obs` dict. `is_last` marks the end of an
    episode (termination or time limit); `is_terminal` only a true termination.
    After `is_last`, call `reset()` before stepping again.

    `step` repeats the action `action_repeat` times within the time limit; a simulator
    wrapper implements `_env_action` (the agent's action in the simulator's terms),
    `_step_once` (one simulator step) and `_frame` (the current image), and calls
    `_start_episode` from its `reset`.
    """

    name: str
    action_size: int
    discrete: bool
    obs_shape: tuple[int, int, int]

    @abc.abstractmethod
    def reset(self) -> Obs:
        """Starts a new episode; reward 0, is_first True."""

    def __init__(self, action_repeat: int, size: int, time_limit: int):
        check_settings(action_repeat, size, time_limit)
        self.obs_shape = (size, size, 3)
        self._size, self._repeat, self._limit = size, action_repeat, time_limit
        self._steps = 0
        self._done = True

    def _start_episode(self) -> None:
        self._steps, self._done = 0, False

    def step(self, action: np.ndarray) -> Obs:
        """Applies `action` (float32 [action_size]) for `action_repeat` env steps, summing
        the rewards, and stops early at the episode's end or the time limit."""
        if self._done:
            raise RuntimeError(f'{self.name}: the episode has ended, call reset() first')
        env_action = self._env_action(check_action(action, self.action_size))
        reward, terminal, last = 0.0, False, False
        for _ in range(self._repeat):
            step_reward, terminal, ended = self._step_once(env_action)
            self._steps += 1
            reward += step_reward
            last = ended or self._steps >= self._limit
            if last:
                break
        self._done = last
        return make_obs(self._frame(), reward, is_last=last, is_terminal=terminal)

    @abc.abstractmethod
    def _env_action(self, action: np.ndarray) -> Any:
        """float32 [action_size] in [-1, 1] -> the simulator's action."""

    @abc.abstractmethod
    def _step_once(self, env_action: Any) -> tuple[float, bool, bool]:
        """One simulator step -> (reward, terminal, episode ended)."""

    @abc.abstractmethod
    def _frame(self) -> np.ndarray:
        """The current image, uint8 [size, size, 3]."""

    def close(self) -> None:
        """Releases the simulator and renderer."""

    def physics_state(self) -> np.ndarray:
        """Low-dimensional simulator state (e.g. qpos, qvel); not every env has one."""
        raise NotImplementedError(f'{type(self).__name__} has no physics state')

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_action(action: np.ndarray, action_size: int) -> np.ndarray:
    """Returns `action` as float32 [action_size] clipped to [-1, 1]."""
    action = np.asarray(action, np.float32).reshape(-1)
    if action.shape != (action_size,):
        raise ValueError(f'expected an action of size {action_size}, got shape {action.shape}')
    return np.clip(action, -1.0, 1.0)


def rescale(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Actions in [-1, 1] -> [low, high], per dimension (float64)."""
    return low + (action + 1.0) / 2.0 * (high - low)


def check_settings(action_repeat: int, size: int, time_limit: int) -> None:
    """Rejects non-positive action repeat, image size or time limit."""
    settings = {'action_repeat': action_repeat, 'size': size, 'time_limit': time_limit}
    for key, value in settings.items():
        if int(value) != value or value < 1:
            raise EnvError(f'{key} must be a positive integer, got {value!r}')
