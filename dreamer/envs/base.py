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
    """

    action_size: int
    discrete: bool
    obs_shape: tuple[int, int, int]

    @abc.abstractmethod
    def reset(self) -> Obs:
        """Starts a new episode; reward 0, is_first True."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> Obs:
        """Applies `action` (float32 [action_size]) for `action_repeat` env steps."""

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


def check_settings(action_repeat: int, size: int, time_limit: int) -> None:
    """Rejects non-positive action repeat, image size or time limit."""
    settings = {'action_repeat': action_repeat, 'size': size, 'time_limit': time_limit}
    for key, value in settings.items():
        if int(value) != value or value < 1:
            raise EnvError(f'{key} must be a positive integer, got {value!r}')
