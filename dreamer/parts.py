"""What a training run is built from: `Parts`, the factories the driver (`dreamer.trainer.Trainer`)
takes as arguments, and `default_parts`, the command line's. Tests and benchmarks pass their own
(fake environments, a recording replay, ...)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from dreamer.collect import make_vector_env
from dreamer.config import Config
from dreamer.device import DeviceAgent
from dreamer.envs import VectorEnv
from dreamer.logger import Logger
from dreamer.registry import agent_class
from dreamer.replay import Replay
from dreamer.schedule import Schedule


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a run is built from. `default_parts` gives the command line's; tests and
    benchmarks pass their own (fake environments, a recording replay, ...)."""

    make_envs: Callable[[int], VectorEnv]  # seed -> the training environments
    make_eval_envs: Callable[[int], VectorEnv]  # seed -> one evaluation environment
    make_agent: Callable[[VectorEnv], DeviceAgent]  # the agent for these environments, on its devices
    make_replay: Callable[[Path, dict], Replay]  # (folder, episode signature) -> the replay
    make_logger: Callable[[Path, int | None], Logger]  # (logdir, purge step) -> the logger
    make_schedule: Callable[[], Schedule]


def default_parts(config: Config, parallel_envs: bool | None = None) -> Parts:
    """The parts of `config`: its environments (in worker processes if `parallel_envs`,
    default `env.parallel`), its agent on `config.devices` devices, its replay, a logger with
    TensorBoard files and its schedule."""
    run = config.run

    def make_agent(envs: VectorEnv) -> DeviceAgent:
        agent = agent_class(config.agent)(config, envs.action_size, envs.discrete, envs.obs_space)
        return DeviceAgent(agent, config.devices)

    return Parts(
        make_envs=lambda seed: make_vector_env(config, seed, parallel=parallel_envs),
        make_eval_envs=lambda seed: make_vector_env(config, seed, num_envs=1, parallel=False),
        make_agent=make_agent,
        make_replay=lambda folder, signature: Replay(
            folder, capacity=run.replay_capacity, seq_len=run.seq_len, seed=config.seed,
            signature=signature, cross_episodes=run.cross_episodes, online=run.online),
        make_logger=lambda logdir, purge_step: Logger(logdir, purge_step=purge_step),
        make_schedule=lambda: Schedule(run, config.env.action_repeat))
