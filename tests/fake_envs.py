"""Tiny gymnasium envs for the environment tests, registered on import.

Use them as `gym:<this module>:<id>` so that worker processes import this
module (and so register the ids) themselves.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class CounterEnv(gymnasium.Env):
    """Image observations that encode the step count; terminates at `terminate_at`.

    Discrete(3) actions; reward = action index + 1; `crash_at` raises in step.
    """

    metadata = {'render_modes': ['rgb_array'], 'render_fps': 30}

    def __init__(self, terminate_at: int | None = None, crash_at: int | None = None,
                 render_mode: str | None = None):
        self.observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.action_space = spaces.Discrete(3)
        self.render_mode = render_mode
        self.terminate_at, self.crash_at = terminate_at, crash_at
        self.t = 0
        self.actions: list[int] = []

    def _obs(self) -> np.ndarray:
        return np.full((8, 8, 3), self.t % 256, np.uint8)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        self.actions.append(int(action))
        if self.crash_at is not None and self.t >= self.crash_at:
            raise RuntimeError(f'boom at step {self.t}')
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return self._obs(), float(action) + 1.0, terminated, False, {}


class CrashOnceEnv(CounterEnv):
    """Episodes of 5 steps; raises at step 3 once per marker file named by the environment
    variable FAKE_CRASH_MARKER (a file, so that restarted worker processes see it too)."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(terminate_at=5, render_mode=render_mode)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        marker = os.environ.get('FAKE_CRASH_MARKER')
        if self.t == 2 and marker and not os.path.exists(marker):
            open(marker, 'w').close()
            raise RuntimeError('crashed once')
        return super().step(action)


class NaNRewardEnv(CounterEnv):
    """A CounterEnv whose rewards are NaN: every update on its data has a non-finite loss."""

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float('nan'), terminated, truncated, info


class RenderEnv(gymnasium.Env):
    """Vector observations; pixels only via render(). Box actions in [-2, 2] x [0, 10].

    The rendered 48x32 frame depends on a random initial state (seeded) and the last action.
    """

    metadata = {'render_modes': ['rgb_array'], 'render_fps': 30}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(np.array([-2, 0], np.float32), np.array([2, 10], np.float32))
        self.render_mode = render_mode
        self.state = np.zeros(2, np.float32)
        self.last_action = np.zeros(2, np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = self.np_random.uniform(0, 1, 2).astype(np.float32)
        return self.state.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.last_action = np.asarray(action, np.float32)
        self.state = self.state + 0.01 * self.last_action
        return self.state.copy(), 1.0, False, False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != 'rgb_array':
            return None
        frame = np.zeros((48, 32, 3), np.uint8)
        frame[..., 0] = int(self.state[0] * 200) % 256
        frame[..., 1] = int(self.state[1] * 200) % 256
        frame[:, :16, 2] = 255
        return frame


class NoPixelEnv(gymnasium.Env):
    """Vector observations and no rgb_array rendering."""

    metadata = {'render_modes': []}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, np.float32), 0.0, False, False, {}


class DictObsEnv(gymnasium.Env):
    """A Dict observation: a 3-vector 'pos' (the step count, then 1, -2), a Discrete(3) 'mode'
    (the step count mod 3) and an 8x8 image 'camera'; Box actions in [-1, 1]^2. With
    `nan_at`, 'pos' holds a NaN from that step on."""

    metadata = {'render_modes': []}

    def __init__(self, nan_at: int | None = None, render_mode: str | None = None):
        self.observation_space = spaces.Dict({
            'pos': spaces.Box(-np.inf, np.inf, (3,), np.float64),
            'mode': spaces.Discrete(3),
            'camera': spaces.Box(0, 255, (8, 8, 3), np.uint8)})
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.nan_at, self.t = nan_at, 0

    def _obs(self) -> dict:
        pos = np.array([self.t, 1.0, -2.0])
        if self.nan_at is not None and self.t >= self.nan_at:
            pos[0] = np.nan
        return {'pos': pos, 'mode': self.t % 3, 'camera': np.full((8, 8, 3), self.t % 256, np.uint8)}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), float(np.sum(action)), False, False, {}


class TextObsEnv(NoPixelEnv):
    """Text observations, which no encoder reads."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Text(8)


def _register(env_id: str, entry_point: type, **kwargs: Any) -> None:
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, entry_point=entry_point, **kwargs)


_register('FakeTerminate-v0', CounterEnv, kwargs={'terminate_at': 5})
_register('FakeTruncate-v0', CounterEnv, max_episode_steps=4)
_register('FakeEndless-v0', CounterEnv)
_register('FakeCrash-v0', CounterEnv, kwargs={'crash_at': 2})
_register('FakeRender-v0', RenderEnv)
_register('FakeCrashOnce-v0', CrashOnceEnv)
_register('FakeNaNReward-v0', NaNRewardEnv, max_episode_steps=200)
_register('FakeNoPixels-v0', NoPixelEnv)
_register('FakeDict-v0', DictObsEnv, max_episode_steps=50)
_register('FakeNaNObs-v0', DictObsEnv, kwargs={'nan_at': 3})
_register('FakeText-v0', TextObsEnv)
