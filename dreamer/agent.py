"""Dreamer: an actor-critic learned purely in imagination on top of the shared world model."""

from __future__ import annotations

import jax

from dreamer.base_agent import TrainState, WorldModelAgent
from dreamer.core.actor_critic import ACState, ActorCritic
from dreamer.core.rssm import merge_batch_time


class Dreamer(WorldModelAgent):
    def __init__(self, config, action_size: int, discrete: bool):
        super().__init__(config, action_size, discrete)
        self.ac = ActorCritic(config.behavior, self.wm, action_size, discrete)

    def init_agent_state(self, key: jax.Array) -> ACState:
        return self.ac.init(key)

    def update_agent_state(self, agent_state: ACState, wm_params, post, batch, key):
        def task_reward(seq):  # the learned reward head, on the imagined states
            return self.wm.reward(wm_params, seq["feat"][:, 1:])

        agent_state, metrics = self.ac.update(agent_state, wm_params, merge_batch_time(post), key, task_reward)
        return agent_state, {f"behavior/{k}": v for k, v in metrics.items()}

    def choose_action(self, state: TrainState, pstate: dict, is_first: jax.Array, key: jax.Array,
                      mode: str) -> tuple[jax.Array, dict]:
        feat = self.wm.rssm.get_feat(pstate["latent"])
        if mode == "eval":
            return self.ac.mode(state.agent.actor, feat, key), pstate
        k_sample, k_noise = jax.random.split(key)
        action = self.explore_noise(self.ac.sample(state.agent.actor, feat, k_sample), k_noise)
        return action, pstate
