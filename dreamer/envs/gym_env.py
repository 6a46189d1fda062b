"""Gymnasium environments as pixel environments with actions in [-1, 1]."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dreamer.envs.base import Env, Obs, make_obs, rescale
from dreamer.envs.image import resize, to_rgb
from dreamer.errors import EnvError

PREFIX = 'gym:'


def _is_image_space(space: Any) -> bool:
    """True for a uint8 Box of shape [H, W, 3]."""
    from gymnasium import spaces
    return (isinstance(space, spaces.Box) and space.dtype == np.uint8
            and len(space.shape) == 3 and space.shape[-1] == 3)


def _make(env_id: str) -> Any:
    """gymnasium.make(env_id, render_mode='rgb_array') with gymnasium errors as EnvError."""
    import gymnasium
    try:
        with warnings.catch_warnings():
            # An env without 'rgb_array' is rejected by GymEnv with a clearer message.
            warnings.filterwarnings('ignore', message='.*not in the possible render_modes')
            return gymnasium.make(env_id, render_mode='rgb_array')
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv,
            ModuleNotFoundError) as error:
        raise EnvError(f'Unknown gymnasium environment {env_id!r} (from name '
                       f"'{PREFIX}{env_id}'): {error}") from error
    except gymnasium.error.DependencyNotInstalled as error:
        raise EnvError(f'gymnasium environment {env_id!r} needs a missing dependency: '
                       f'{error}') from error


class GymEnv(Env):
    """A gymnasium env; pixels come from an image observation or from `render()`."""

    def __init__(self, env_id: str, *, seed: int, action_repeat: int = 2, size: int = 64,
                 time_limit: int = 1000):
        super().__init__(action_repeat, size, time_limit)
        self.name = PREFIX + env_id
        self._env = _make(env_id)
        self._image_obs = _is_image_space(self._env.observation_space)
        if not self._image_obs and 'rgb_array' not in self._env.metadata.get('render_modes', []):
            self._env.close()
            raise EnvError(f'{self.name} cannot give pixels: its observations are not uint8 '
                           "[H, W, 3] images and it does not support render_mode='rgb_array'")
        self._setup_actions(self._env.action_space)
        self._env.action_space.seed(seed)
        self._seed: int | None = seed  # used by the first reset only
        self._obs: Any = None  # the latest gymnasium observation

    @property
    def gym_env(self) -> Any:
        """The wrapped gymnasium env."""
        return self._env

    def _setup_actions(self, space: Any) -> None:
        """Sets action_size/discrete and the [-1, 1] -> space mapping."""
        from gymnasium import spaces
        if isinstance(space, spaces.Discrete):
            self.discrete, self.action_size = True, int(space.n)
            self._start = int(space.start)
        elif isinstance(space, spaces.Box):
            if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
                raise EnvError(f'{self.name}: Box action bounds must be finite to rescale [-1, 1]')
            self.discrete, self.action_size = False, int(np.prod(space.shape))
            self._low = space.low.astype(np.float64).reshape(-1)  # [A]
            self._high = space.high.astype(np.float64).reshape(-1)  # [A]
        else:
            raise EnvError(f'{self.name}: unsupported action space {space} (need Box or Discrete)')

    def _env_action(self, action: np.ndarray) -> Any:
        """Agent action float32 [A] in [-1, 1] -> the gymnasium action."""
        space = self._env.action_space
        if self.discrete:
            return self._start + int(np.argmax(action))
        return rescale(action, self._low, self._high).reshape(space.shape).astype(space.dtype)

    def _image(self, obs: Any) -> np.ndarray:
        """uint8 [size, size, 3] from the observation or a render() frame."""
        if self._image_obs:
            return resize(np.asarray(obs, np.uint8), self._size)
        try:
            frame = to_rgb(self._env.render())
        except Exception as error:  # pylint: disable=broad-except
            raise EnvError(f'{self.name} cannot give pixels: render() failed '
                           f'({type(error).__name__}: {error})') from error
        if frame is None:
            raise EnvError(f"{self.name} cannot give pixels: render() with render_mode='rgb_array' "
                           'did not return an [H, W, 3] image')
        return resize(frame, self._size)

    def reset(self) -> Obs:
        self._obs, _ = self._env.reset(seed=self._seed)
        self._seed = None
        self._start_episode()
        return make_obs(self._image(self._obs), is_first=True)

    def _step_once(self, env_action: Any) -> tuple[float, bool, bool]:
        self._obs, reward, terminated, truncated, _ = self._env.step(env_action)
        return float(reward), bool(terminated), bool(terminated or truncated)

    def _frame(self) -> np.ndarray:
        return self._image(self._obs)

    def close(self) -> None:
        self._env.close()
