"""Environment construction from names: 'dmc_<domain>_<task>' or 'gym:<id>'."""

from __future__ import annotations

from dreamer.envs import dmc, gym_env
from dreamer.envs.base import Env
from dreamer.errors import EnvError


def env_names() -> list[str]:
    """All 'dmc_<domain>_<task>' names of dm_control's `suite.ALL_TASKS`."""
    return [dmc.task_name(domain, task) for domain, task in dmc.all_tasks()]


def make_env(name: str, *, seed: int, action_repeat: int = 2, size: int = 64,
             time_limit: int = 1000, camera: int | None = None,
             fast_render: bool = False, obs: str = 'image') -> Env:
    """Builds the environment `name`.

    `obs`: 'image' (uint8 [size, size, 3] under 'image'), 'vector' (the env's own
    observations as float32 vectors) or 'both'. `time_limit` counts environment steps, action
    repeat included. `camera` and `fast_render` (no shadows, reflections or skybox) apply
    to DMC only.
    """
    if not isinstance(name, str):
        raise EnvError(f'environment name must be a string, got {name!r}')
    if name.startswith(gym_env.PREFIX):
        env_id = name[len(gym_env.PREFIX):]
        if not env_id:
            raise EnvError(f"Empty gymnasium id in {name!r}: use 'gym:<id>', e.g. gym:CartPole-v1")
        return gym_env.GymEnv(env_id, seed=seed, action_repeat=action_repeat, size=size,
                              time_limit=time_limit, obs=obs)
    if name.startswith(dmc.PREFIX):
        domain, task = dmc.parse_dmc_name(name)
        return dmc.DMCEnv(domain, task, seed=seed, action_repeat=action_repeat, size=size,
                          time_limit=time_limit, camera=camera, fast_render=fast_render, obs=obs)
    raise dmc.unknown_name_error(name, _names_for_hint())


def _names_for_hint() -> list[str]:
    """DMC names for suggestions; empty when dm_control cannot be imported."""
    try:
        return env_names()
    except EnvError:
        return []
