"""DeepMind Control Suite tasks: pixels rendered with a cached MuJoCo camera, the suite's
proprioceptive observations as vectors, or both.

dm_control is imported lazily so that `MUJOCO_GL` (set in `dreamer.envs`)
is in place before its renderer is chosen.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from dreamer.envs.base import (IMAGE_KEY, Env, Obs, check_obs_mode, check_vector_names, image_space,
                               make_obs, rescale, vector_inputs)
from dreamer.errors import EnvError

PREFIX = 'dmc_'
FORMAT_HINT = ("environment names are 'dmc_<domain>_<task>' (dm_control suite, "
               "e.g. dmc_walker_walk) or 'gym:<id>' (gymnasium, e.g. gym:CartPole-v1)")
DEFAULT_CAMERAS = {'quadruped': 2}  # every other domain uses camera 0


def render_error(what: str, error: BaseException) -> EnvError:
    """An EnvError explaining how to get MuJoCo offscreen rendering to work."""
    backend = os.environ.get('MUJOCO_GL', '<unset>')
    return EnvError(
        f'{what} failed with MUJOCO_GL={backend} ({type(error).__name__}: {error}). '
        'MuJoCo needs an OpenGL backend for pixels: install EGL/Mesa '
        '(`apt-get install libegl1 libgl1`) for MUJOCO_GL=egl, or '
        '`apt-get install libosmesa6` and set MUJOCO_GL=osmesa for CPU rendering.')


def _suite() -> Any:
    """Imports dm_control.suite, turning renderer import failures into an EnvError."""
    try:
        from dm_control import suite
    except ImportError as error:
        if getattr(error, 'name', None) in ('dm_control', 'mujoco'):
            raise EnvError(f'dm_control is not installed ({error}): '
                           'pip install dm_control') from error
        raise render_error('importing dm_control', error) from error
    except (RuntimeError, OSError, AttributeError) as error:
        raise render_error('importing dm_control', error) from error
    return suite


def all_tasks() -> list[tuple[str, str]]:
    """All (domain, task) pairs of dm_control's `suite.ALL_TASKS`."""
    return [(domain, task) for domain, task in _suite().ALL_TASKS]


def task_name(domain: str, task: str) -> str:
    """'dmc_<domain>_<task>'."""
    return f'{PREFIX}{domain}_{task}'


@functools.lru_cache(maxsize=1)
def _default_table() -> dict[str, tuple[str, str]]:
    return {task_name(d, t): (d, t) for d, t in all_tasks()}


def close_matches(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to `name`, compared without the dmc_ prefix."""
    by_key = {known.removeprefix(PREFIX): known for known in names}
    found = difflib.get_close_matches(name.removeprefix(PREFIX), list(by_key), n=n, cutoff=0.6)
    return [by_key[key] for key in found]


def unknown_name_error(name: str, names: Iterable[str]) -> EnvError:
    """One-line EnvError: how names are formed plus the closest DMC tasks."""
    matches = close_matches(name, names)
    hint = f' Did you mean: {", ".join(matches)}?' if matches else ''
    return EnvError(f'Unknown environment {name!r}: {FORMAT_HINT}.{hint}')


def parse_dmc_name(name: str, tasks: Iterable[tuple[str, str]] | None = None) -> tuple[str, str]:
    """'dmc_ball_in_cup_catch' -> ('ball_in_cup', 'catch'), matched against the known tasks.

    `tasks` defaults to dm_control's `suite.ALL_TASKS`; pass a list to avoid the import.
    """
    table = _default_table() if tasks is None else {task_name(d, t): (d, t) for d, t in tasks}
    if name not in table:
        raise unknown_name_error(name, table)
    return table[name]


def default_camera(domain: str) -> int:
    """Camera id used when none is given: 2 for quadruped, else 0."""
    return DEFAULT_CAMERAS.get(domain, 0)


class DMCEnv(Env):
    """A dm_control suite task with our own time limit. `obs`: 'image' (pixels), 'vector'
    (each entry of the suite's observation dict flattened to float32 [D], under its own
    name; nothing is rendered) or 'both'."""

    discrete = False

    def __init__(self, domain: str, task: str, *, seed: int, action_repeat: int = 2,
                 size: int = 64, time_limit: int = 1000, camera: int | None = None,
                 fast_render: bool = False, obs: str = 'image'):
        super().__init__(action_repeat, size, time_limit)
        self.name = task_name(domain, task)
        check_obs_mode(self.name, obs)
        # dm_control's own limit is disabled: `time_limit` (env steps) is the only one.
        task_kwargs = {'random': seed, 'time_limit': float('inf')}
        self._env = _suite().load(domain, task, task_kwargs=task_kwargs)
        self._images, self._vectors = obs in ('image', 'both'), obs in ('vector', 'both')
        self.obs_space = image_space(size) if self._images else {}
        if self._vectors:
            spec = self._env.observation_spec()
            check_vector_names(self.name, spec)
            self.obs_space.update({key: ((int(np.prod(value.shape)),), np.dtype(np.float32))
                                   for key, value in spec.items()})
        self._observation: Any = None  # the suite's latest observation dict
        spec = self._env.action_spec()
        self._low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)  # [A]
        self._high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)  # [A]
        self.action_size = int(np.prod(spec.shape))
        self._camera_id = default_camera(domain) if camera is None else camera
        self._fast_render = fast_render
        self._camera: Any = None  # dm_control.mujoco.engine.Camera, built on first render

    @property
    def physics(self) -> Any:
        """The dm_control Physics (for tests and diagnostics)."""
        return self._env.physics

    def reset(self) -> Obs:
        self._observation = self._env.reset().observation
        self._start_episode()
        return make_obs(self._observe(), is_first=True)

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        return rescale(action, self._low, self._high)

    def _step_once(self, env_action: np.ndarray) -> tuple[float, bool, bool]:
        time_step = self._env.step(env_action)
        self._observation = time_step.observation
        terminal = time_step.last() and time_step.discount == 0.0
        return time_step.reward or 0.0, terminal, time_step.last()

    def _observe(self) -> dict[str, np.ndarray]:
        inputs = {IMAGE_KEY: self.render()} if self._images else {}
        if self._vectors:
            inputs.update(vector_inputs(self.name, self._observation))
        return inputs

    def render(self) -> np.ndarray:
        """uint8 [size, size, 3] view from the cached camera."""
        if self._camera is None:
            self._camera = self._make_camera()
        return np.array(self._camera.render())  # copy: render returns a view of its buffer

    def _make_camera(self) -> Any:
        """Builds the camera and renders one frame, turning GL failures into EnvError."""
        import mujoco
        from dm_control.mujoco.engine import Camera
        try:
            camera = Camera(self.physics, height=self._size, width=self._size,
                            camera_id=self._camera_id)
        except ValueError as error:  # bad camera id or size above the framebuffer
            raise EnvError(f'{self.name}: cannot render (camera={self._camera_id}, '
                           f'size={self._size}): {error}') from error
        except Exception as error:  # pylint: disable=broad-except
            raise render_error(f'Rendering {self.name}', error) from error
        if self._fast_render:
            flags = mujoco.mjtRndFlag
            for flag in (flags.mjRND_SHADOW, flags.mjRND_REFLECTION, flags.mjRND_SKYBOX):
                camera.scene.flags[flag] = 0
        try:
            camera.render()
        except Exception as error:  # pylint: disable=broad-except
            raise render_error(f'Rendering {self.name}', error) from error
        return camera

    def physics_state(self) -> np.ndarray:
        """float64 [nq + nv]: qpos then qvel."""
        data = self.physics.data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)

    def close(self) -> None:
        if self._camera is not None:
            self._camera.scene.free()
            self._camera = None
        self._env.close()
