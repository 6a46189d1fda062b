"""Gymnasium environments with actions in [-1, 1] and named observations.

`obs='image'`: pixels, from an image observation (uint8 Box [H, W, 3], alone or one entry of
a Dict space) or else from `render()`. `obs='vector'`: the observation as float32 vectors: a
Box flattened under the key 'vector', a Dict space by its own keys (image entries left out),
Discrete as one-hot, MultiBinary as 0/1. `obs='both'`: the two together.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dreamer.envs.base import (IMAGE_KEY, Env, Obs, check_obs_mode, check_vector_names, image_space, make_obs,
                               rescale, vector_inputs)
from dreamer.envs.image import resize, to_rgb
from dreamer.errors import EnvError

PREFIX = 'gym:'
VECTOR_KEY = 'vector'  # the key of a non-Dict observation used as a vector


def _is_image_space(space: Any) -> bool:
    """True for a uint8 Box of shape [H, W, 3]."""
    from gymnasium import spaces
    return (isinstance(space, spaces.Box) and space.dtype == np.uint8
            and len(space.shape) == 3 and space.shape[-1] == 3)


def _vector_size(key: str, space: Any, env_name: str) -> int:
    """The length of the float32 vector an observation (sub)space becomes, or an EnvError
    naming the key and space where no encoder can read it."""
    from gymnasium import spaces
    if isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.number):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.shape))
    raise EnvError(f'{env_name}: observation {key!r} has space {space}, which no encoder reads '
                   '(vectors come from Box, Discrete, MultiBinary or a Dict of them)')


def _as_vector(value: Any, space: Any) -> np.ndarray:
    """One observation (sub)value -> float32 [D] (Discrete as one-hot)."""
    from gymnasium import spaces
    if isinstance(space, spaces.Discrete):
        return np.eye(space.n, dtype=np.float32)[int(value) - int(space.start)]
    return np.asarray(value, np.float32).reshape(-1)


def _make(env_id: str) -> Any:
    """gymnasium.make(env_id, render_mode='rgb_array') with gymnasium errors as EnvError."""
    import gymnasium
    try:
        with warnings.catch_warnings():
            # An env without 'rgb_array' is rejected by GymEnv with a clearer message.
            warnings.filterwarnings('ignore', message='.*not in the possible render_modes')
            return gymnasium.make(env_id, render_mode='rgb_array')
    except ModuleNotFoundError as error:
        asked = env_id.partition(':')[0] if ':' in env_id else ''  # gym:module:Env-v0 imports module
        if error.name and not (asked == error.name or asked.startswith(f'{error.name}.')):
            hint = " (gymnasium's MuJoCo tasks: pip install 'dreamer-jax[gym-mujoco]')" if error.name in (
                'imageio', 'mujoco') else ''
            raise EnvError(f'gymnasium environment {env_id!r} needs the missing module {error.name!r}'
                           f'{hint}') from error
        raise EnvError(f'Unknown gymnasium environment {env_id!r} (from name '
                       f"'{PREFIX}{env_id}'): {error}") from error
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv) as error:
        raise EnvError(f'Unknown gymnasium environment {env_id!r} (from name '
                       f"'{PREFIX}{env_id}'): {error}") from error
    except gymnasium.error.DependencyNotInstalled as error:
        raise EnvError(f'gymnasium environment {env_id!r} needs a missing dependency: '
                       f'{error}') from error


class GymEnv(Env):
    """A gymnasium env: pixels from an image observation or from `render()`, vectors from the
    observation (see the module's docstring for `obs`)."""

    def __init__(self, env_id: str, *, seed: int, action_repeat: int = 2, size: int = 64,
                 time_limit: int = 1000, obs: str = 'image'):
        super().__init__(action_repeat, size, time_limit)
        self.name = PREFIX + env_id
        check_obs_mode(self.name, obs)
        self._env = _make(env_id)
        try:
            self._setup_observations(self._env.observation_space, obs)
        except EnvError:
            self._env.close()
            raise
        self._setup_actions(self._env.action_space)
        self._env.action_space.seed(seed)
        self._seed: int | None = seed  # used by the first reset only
        self._obs: Any = None  # the latest gymnasium observation

    @property
    def gym_env(self) -> Any:
        """The wrapped gymnasium env."""
        return self._env

    def _setup_observations(self, space: Any, obs: str) -> None:
        """Sets obs_space, where the image comes from (`_image_key`: an observation entry,
        '' for the whole observation, None for render()) and the vector entries."""
        from gymnasium import spaces
        entries = dict(space.spaces) if isinstance(space, spaces.Dict) else {'': space}
        images = [key for key, sub in entries.items() if _is_image_space(sub)]
        self.obs_space = {}
        self._image_key: str | None = None
        self._vector_spaces: dict[str, Any] = {}
        if obs in ('image', 'both'):
            if len(images) > 1:
                raise EnvError(f'{self.name}: observation entries {images} are all images; one is read')
            self._image_key = images[0] if images else None
            if self._image_key is None and 'rgb_array' not in self._env.metadata.get('render_modes', []):
                raise EnvError(f'{self.name} cannot give pixels: its observations are not uint8 '
                               "[H, W, 3] images and it does not support render_mode='rgb_array'")
            self.obs_space.update(image_space(self._size))
        if obs in ('vector', 'both'):
            self._vector_spaces = {key or VECTOR_KEY: sub for key, sub in entries.items()
                                   if key not in images}
            if not self._vector_spaces:
                raise EnvError(f'{self.name} has no vector observations: its observation space '
                               f'{space} is an image (use --env.obs image)')
            self.obs_space.update({key: ((_vector_size(key, sub, self.name),), np.dtype(np.float32))
                                   for key, sub in self._vector_spaces.items()})
            check_vector_names(self.name, self._vector_spaces)

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

    def _observe(self) -> dict[str, np.ndarray]:
        inputs = {} if IMAGE_KEY not in self.obs_space else {IMAGE_KEY: self._image(self._obs)}
        if self._vector_spaces:
            values = self._obs if isinstance(self._obs, dict) else {VECTOR_KEY: self._obs}
            inputs.update(vector_inputs(self.name, {key: _as_vector(values[key], sub)
                                                    for key, sub in self._vector_spaces.items()}))
        return inputs

    def _image(self, obs: Any) -> np.ndarray:
        """uint8 [size, size, 3] from the observation or a render() frame."""
        if self._image_key is not None:
            frame = obs[self._image_key] if self._image_key else obs
            return resize(np.asarray(frame, np.uint8), self._size)
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
        return make_obs(self._observe(), is_first=True)

    def _step_once(self, env_action: Any) -> tuple[float, bool, bool]:
        self._obs, reward, terminated, truncated, _ = self._env.step(env_action)
        return float(reward), bool(terminated), bool(terminated or truncated)

    def close(self) -> None:
        self._env.close()
