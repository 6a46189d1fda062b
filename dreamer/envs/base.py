"""The environment interface shared by all environments (host-side numpy only).

An environment's observations are a dict of named arrays, the model's inputs: an image
(uint8 [H, W, 3], key 'image') and/or vectors (float32 [D], one key each), plus the reward and
the episode flags. `Env.obs_space` describes the named arrays.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

import numpy as np

from dreamer.errors import EnvError

Obs = dict[str, Any]
"""Observation dict: the named inputs of `obs_space` (e.g. image uint8 [H, W, 3], position
float32 [D]), reward np.float32, is_first/is_last/is_terminal bool."""

ObsSpace = dict[str, tuple[tuple[int, ...], np.dtype]]
"""The named inputs of an environment's observations: key -> (shape, dtype)."""

IMAGE_KEY = 'image'
OBS_MODES = ('image', 'vector', 'both')  # `env.obs`: what the observations carry
STEP_KEYS = ('reward', 'is_first', 'is_last', 'is_terminal')
# Names an input cannot have: the step's own keys, the stored action, replay file names, and
# the continuation head's (an input's loss is logged as model/<key>_loss).
RESERVED_KEYS = frozenset({*STEP_KEYS, 'action', 'cont', 'file', 'allow_pickle'})


def make_obs(inputs: dict[str, np.ndarray], reward: float = 0.0, *, is_first: bool = False,
             is_last: bool = False, is_terminal: bool = False) -> Obs:
    """Builds an observation dict: the named inputs plus the standard step keys."""
    return {
        **inputs,
        'reward': np.float32(reward),
        'is_first': bool(is_first),
        'is_last': bool(is_last),
        'is_terminal': bool(is_terminal),
    }


def image_space(size: int) -> ObsSpace:
    """The space of a square RGB image observation."""
    return {IMAGE_KEY: ((size, size, 3), np.dtype(np.uint8))}


def is_image(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether an input of this shape and dtype is an image (uint8 [H, W, 3])."""
    return len(shape) == 3 and shape[-1] == 3 and np.dtype(dtype) == np.uint8


def space_key(space: ObsSpace) -> tuple:
    """A hashable, picklable form of `space` (sorted by key): for comparing and sending."""
    return tuple((key, tuple(shape), np.dtype(dtype).str) for key, (shape, dtype) in sorted(space.items()))


def space_from_key(items: tuple | list) -> ObsSpace:
    """The inverse of `space_key` (also reads its JSON form, lists for tuples)."""
    return {key: (tuple(int(n) for n in shape), np.dtype(dtype)) for key, shape, dtype in items}


def check_vectors(name: str, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Returns `vectors` unchanged if every value is finite, else raises an EnvError naming
    the first key with a NaN or infinite value (it would poison every update)."""
    for key, value in vectors.items():
        if not np.all(np.isfinite(value)):
            raise EnvError(f'{name}: observation {key!r} holds a NaN or infinite value '
                           f'({value.tolist()})')
    return vectors


class Env(abc.ABC):
    """An environment with named observations, actions in [-1, 1] and episodic time limits.

    `reset()` and `step()` return an `Obs` dict. `is_last` marks the end of an
    episode (termination or time limit); `is_terminal` only a true termination.
    After `is_last`, call `reset()` before stepping again.

    `step` repeats the action `action_repeat` times within the time limit; a simulator
    wrapper implements `_env_action` (the agent's action in the simulator's terms),
    `_step_once` (one simulator step) and `_observe` (the current named inputs), sets
    `obs_space`, and calls `_start_episode` from its `reset`.
    """

    name: str
    action_size: int
    discrete: bool
    obs_space: ObsSpace

    @abc.abstractmethod
    def reset(self) -> Obs:
        """Starts a new episode; reward 0, is_first True."""

    def __init__(self, action_repeat: int, size: int, time_limit: int):
        check_settings(action_repeat, size, time_limit)
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
        return make_obs(self._observe(), reward, is_last=last, is_terminal=terminal)

    @abc.abstractmethod
    def _env_action(self, action: np.ndarray) -> Any:
        """float32 [action_size] in [-1, 1] -> the simulator's action."""

    @abc.abstractmethod
    def _step_once(self, env_action: Any) -> tuple[float, bool, bool]:
        """One simulator step -> (reward, terminal, episode ended)."""

    @abc.abstractmethod
    def _observe(self) -> dict[str, np.ndarray]:
        """The current named inputs, as `obs_space` describes them."""

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


def check_obs_mode(name: str, obs: str) -> None:
    """Rejects an `env.obs` value other than image, vector or both."""
    if obs not in OBS_MODES:
        raise EnvError(f'{name}: observations must be one of {", ".join(OBS_MODES)}, got {obs!r}')


def check_vector_names(name: str, keys: Iterable[str]) -> None:
    """Refuses a vector observation named like the image or a step's own entries."""
    taken = RESERVED_KEYS | {IMAGE_KEY}
    for key in keys:
        if key in taken or not key.isidentifier():
            raise EnvError(f'{name}: observation key {key!r} is not usable as an input name (a Python '
                           f'identifier other than {", ".join(sorted(taken))})')


def vector_inputs(name: str, values: dict[str, Any]) -> dict[str, np.ndarray]:
    """Named observation values -> float32 [D] each (flattened; a scalar becomes [1]),
    checked to be finite."""
    check_vector_names(name, values)
    vectors = {key: np.asarray(value, np.float32).reshape(-1) for key, value in values.items()}
    return check_vectors(name, vectors)
