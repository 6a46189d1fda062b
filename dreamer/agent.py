"""Dreamer: an actor-critic learned purely in imagination on top of the shared world model."""

from __future__ import annotations

import jax

from dreamer.config import Config
from dreamer.core.actor_critic import ACState, ActorCritic
from dreamer.core.agent import TrainState, WorldModelAgent


class Dreamer(WorldModelAgent):
    def __init__(self, config: Config, action_size: int, discrete: bool):
        super().__init__(config, action_size, discrete)
        self.ac = ActorCritic(config.behavior, self.wm, action_size, discrete, config.model.act)

    def init_behavior(self, key: jax.Array) -> ACState:
        return self.ac.init(key)

    def train_behavior(self, behavior: ACState, wm_params, start, batch, key):
        def task_reward(seq):  # the learned reward head, on the imagined states
            return self.wm.reward(wm_params, seq["feat"][:, 1:])

        behavior, metrics = self.ac.update(behavior, wm_params, start, key, task_reward)
        return behavior, {f"behavior/{k}": v for k, v in metrics.items()}

    def choose_action(self, state: TrainState, pstate: dict, is_first: jax.Array, key: jax.Array,
                      mode: str) -> tuple[jax.Array, dict]:
        feat = self.wm.rssm.get_feat(pstate["latent"])
        if mode == "eval":
            return self.ac.mode(state.behavior.actor, feat), pstate
        k_sample, k_noise = jax.random.split(key)
        action = self.explore_noise(self.ac.sample(state.behavior.actor, feat, k_sample), k_noise)
        return action, pstate
