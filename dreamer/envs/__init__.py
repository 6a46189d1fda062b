"""Environments with image and/or vector observations: dm_control suite tasks and gymnasium envs,
plus VectorEnv, which steps several together.

`MUJOCO_GL` defaults to 'egl' (headless GPU/Mesa rendering); it is set here,
before anything imports dm_control or mujoco.
"""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')

# pylint: disable=wrong-import-position
from dreamer.envs.base import Env, Obs  # noqa: E402
from dreamer.envs.dmc import parse_dmc_name  # noqa: E402
from dreamer.envs.make import env_names, make_env  # noqa: E402
from dreamer.envs.vector import VectorEnv  # noqa: E402

__all__ = ['Env', 'Obs', 'VectorEnv', 'env_names', 'make_env', 'parse_dmc_name']
