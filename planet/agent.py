"""PlaNet: model-predictive control with CEM over latent rollouts of the shared world model.

The world model is trained exactly as for Dreamer (the base class does it); acting replans
at every step from the current posterior state and executes the first action of the final
CEM mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamer.base_agent import TrainState, WorldModelAgent
from dreamer.errors import ConfigError
from planet.planner import Plan, cem, initial_plan, shift_plan


class PlaNet(WorldModelAgent):
    def __init__(self, config, action_size: int, discrete: bool, obs_space: dict | None = None):
        if discrete:
            raise ConfigError("agent 'planet' plans continuous actions; this environment has "
                              "discrete actions (use --agent dreamer)")
        if config.planet.top_k > config.planet.candidates:
            raise ConfigError(f"planet.top_k ({config.planet.top_k}) must not exceed "
                              f"planet.candidates ({config.planet.candidates})")
        super().__init__(config, action_size, discrete, obs_space)
        self.planner_cfg = config.planet

    def initial_policy_state(self, batch: int) -> dict:
        plan = initial_plan(self.planner_cfg.horizon, self.action_size)
        plans = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *x.shape)), plan)
        return {**super().initial_policy_state(batch), "plan": plans}

    def rollout_return(self, wm_params: dict, latent: dict, actions: jax.Array, key: jax.Array) -> jax.Array:
        """One candidate: sum of predicted rewards along the prior rollout of `actions` [H, A]
        from one posterior state (no batch dims) -> scalar."""
        # A batch of one for `imagine`, vmapped over candidates (see `plan`): each candidate
        # draws its own latent noise from its own key. One `imagine` call over all candidates
        # would draw other noise and change the plans a seed gives.
        start = jax.tree.map(lambda x: x[None], latent)
        states, _ = self.wm.rssm.imagine(wm_params["rssm"], start, key, actions=actions[None])
        return self.wm.reward(wm_params, self.wm.rssm.get_feat(states))[0].sum()

    def plan(self, wm_params: dict, latent: dict, previous: Plan, is_first: jax.Array, key: jax.Array) -> Plan:
        """CEM from one posterior state (no batch dim); candidates are vmapped rollouts."""
        cfg = self.planner_cfg
        start = initial_plan(cfg.horizon, self.action_size)
        if cfg.warm_start:
            start = jax.tree.map(lambda fresh, warm: jnp.where(is_first, fresh, warm), start, shift_plan(previous))

        def objective(actions: jax.Array, key: jax.Array) -> jax.Array:  # [N, H, A] -> [N]
            keys = jax.random.split(key, actions.shape[0])
            return jax.vmap(self.rollout_return, (None, None, 0, 0))(wm_params, latent, actions, keys)

        return cem(objective, key, start, iterations=cfg.iterations, candidates=cfg.candidates,
                   top_k=cfg.top_k)

    def choose_action(self, state: TrainState, pstate: dict, is_first: jax.Array, key: jax.Array,
                      mode: str) -> tuple[jax.Array, dict]:
        k_plan, k_noise = jax.random.split(key)
        keys = jax.random.split(k_plan, is_first.shape[0])
        plans = jax.vmap(self.plan, in_axes=(None, 0, 0, 0, 0))(
            state.wm, pstate["latent"], pstate["plan"], is_first, keys)
        action = plans.mean[:, 0]  # [N, A]
        if mode != "eval":
            action = self.explore_noise(action, k_noise, self.planner_cfg.expl_noise)
        return action, {**pstate, "plan": plans}
