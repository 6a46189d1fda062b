"""Dreamer: an actor-critic learned purely in imagination on top of the shared world model."""

from __future__ import annotations

import jax

from dreamer.base_agent import TrainState, WorldModelAgent
from dreamer.core.actor_critic import ACState, ActorCritic
from dreamer.core.rssm import merge_batch_time


class Dreamer(WorldModelAgent):
    def __init__(self, config, action_size: int, discrete: bool, obs_space: dict | None = None):
        super().__init__(config, action_size, discrete, obs_space)
        self.ac = ActorCritic(config.behavior, self.wm, action_size, discrete)

    def init_agent_state(self, key: jax.Array) -> ACState:
        return self.ac.init(key)

    def learned_parts(self, agent_state: ACState) -> dict:
        return {"actor": agent_state.actor, "critic": agent_state.critic}

    def update_agent_state(self, agent_state: ACState, wm_params, post, batch, key):
        def task_reward(seq):  # the learned reward head, on the imagined states
            return self.wm.reward(wm_params, seq["feat"][:, 1:])

        replay = None
        if self.config.behavior.replay_value_scale > 0:  # DreamerV3's value loss on the replayed sequences
            replay = {"feat": self.wm.rssm.get_feat(post), "reward": batch["reward"],
                      "is_terminal": batch["is_terminal"], "is_last": batch["is_last"]}
        agent_state, metrics, wm_loss = self.ac.update(agent_state, wm_params, merge_batch_time(post), key,
                                                       task_reward, replay)
        return agent_state, {f"behavior/{k}": v for k, v in metrics.items()}, wm_loss

    def choose_action(self, state: TrainState, pstate: dict, is_first: jax.Array, key: jax.Array,
                      mode: str) -> tuple[jax.Array, dict]:
        feat = self.wm.rssm.get_feat(pstate["latent"])
        if mode == "eval":
            return self.ac.mode(state.agent.actor, feat, key), pstate
        k_sample, k_noise = jax.random.split(key)
        action = self.explore_noise(self.ac.sample(state.agent.actor, feat, k_sample), k_noise)
        return action, pstate
