"""Plan2Explore (Sekar et al. 2020): explore by seeking the world model's disagreement.

The shared world model (trained by the base class) and two instances of the unchanged Dreamer
actor-critic, which differ only in the reward handed to `ActorCritic.update`:
  - the exploration actor-critic, on the intrinsic reward: the disagreement of an ensemble of
    one-step predictors of the next image embedding (or stochastic state) from the
    deterministic state the step arrives in and the action taken (Plan2Explore's code: the
    GRU state h_{t+1}, which the action already entered, and a_t). It collects data;
  - the task actor-critic, on the learned reward head. It is evaluated, and in few-shot mode
    takes over collection after `explore.steps` environment steps (`P2EState.phase`).
Environment rewards reach only the reward head; with `model.reward_grad: false` (the
plan2explore preset) not even the representation, so nothing the exploration policy or the
ensemble sees depends on them. In few-shot mode they train the representation too from the
switch on (the reference's adaptation phase).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dreamer.base_agent import TrainState, WorldModelAgent
from dreamer.core.actor_critic import ACState, ActorCritic
from dreamer.core.rssm import State, merge_batch_time
from explore.ensemble import Ensemble, EnsembleState, disagreement


class P2EState(NamedTuple):
    task: ACState
    explore: ACState
    ensemble: EnsembleState
    # Running normalisation ('running'): debiased EMA of the mean raw imagined disagreement.
    norm_ema: jax.Array  # float32 scalar
    norm_count: jax.Array  # float32 scalar, number of EMA updates
    phase: jax.Array  # int32 scalar: 0 the exploration policy collects, 1 the task policy


class Plan2Explore(WorldModelAgent):
    def __init__(self, config, action_size: int, discrete: bool, obs_space: dict | None = None):
        super().__init__(config, action_size, discrete, obs_space)
        self.cfg = config.explore
        make_ac = lambda: ActorCritic(config.behavior, self.wm, action_size, discrete)  # noqa: E731
        self.task_ac, self.explore_ac = make_ac(), make_ac()
        self.ensemble = Ensemble(self.cfg.ensemble, self.cfg.layers, self.cfg.units, self._target_size(),
                                 self.cfg.activation, self.cfg.lr, self.cfg.eps, self.cfg.grad_clip, self.cfg.bootstrap)

    def _target_size(self) -> int:
        if self.cfg.target == "stoch":
            return self.wm.rssm.stoch_size
        return self.wm.embed_size()

    def init_agent_state(self, key: jax.Array) -> P2EState:
        k_task, k_expl, k_ens = jax.random.split(key, 3)
        zero = jnp.zeros((), jnp.float32)
        ensemble = self.ensemble.init(k_ens, self.wm.cfg.deter, self.action_size if self.cfg.action_cond else None)
        return P2EState(self.task_ac.init(k_task), self.explore_ac.init(k_expl), ensemble, zero, zero,
                        jnp.zeros((), jnp.int32))

    def learned_parts(self, p2e: P2EState) -> dict:
        return {"task_actor": p2e.task.actor, "task_critic": p2e.task.critic, "explore_actor": p2e.explore.actor,
                "explore_critic": p2e.explore.critic, "ensemble": p2e.ensemble.params}

    def reward_grad(self, p2e: P2EState) -> jax.Array | None:
        """Few-shot: task rewards shape the representation from the switch on."""
        if self.cfg.mode != "few_shot" or self.wm.cfg.reward_grad:
            return None
        return p2e.phase > 0

    # ------------------------------------------------------------------ intrinsic reward

    def _action(self, action: jax.Array) -> jax.Array | None:
        return action if self.cfg.action_cond else None

    def _deter(self, feat: jax.Array) -> jax.Array:
        """The deterministic (GRU) part of latent features [..., F] -> [..., D]."""
        return feat[..., :self.wm.cfg.deter]

    def normaliser(self, p2e: P2EState) -> jax.Array:
        """What the raw disagreement is divided by: 1/scale, or its running mean magnitude."""
        if self.cfg.normalise == "scale":
            return jnp.asarray(1.0 / self.cfg.scale, jnp.float32)
        debias = 1.0 - self.cfg.momentum ** p2e.norm_count
        return jnp.where(p2e.norm_count > 0, p2e.norm_ema / jnp.maximum(debias, 1e-8), 1.0) + 1e-8

    def intrinsic_reward(self, ensemble_params: dict, normaliser: jax.Array, seq: dict) -> jax.Array:
        """seq = {'feat' [N, H+1, F], 'action' [N, H, A]} -> [N, H]: the disagreement about
        arriving at feat[:, t+1] by action[:, t], predicted from that state's deterministic
        part and the action. A function of the ensemble and the imagined sequence only: no
        environment reward. It passes no gradient to the sequence, as the reference's one-step
        models stop it at their inputs: the actor learns the disagreement through the
        exploration critic, and cannot chase the predictors' slopes directly."""
        deter, action = jax.lax.stop_gradient((self._deter(seq["feat"][:, 1:]), self._action(seq["action"])))
        return disagreement(self.ensemble.predict(ensemble_params, deter, action)) / normaliser

    # ------------------------------------------------------------------ training

    def _ensemble_data(self, wm_params: dict, post: State, batch: dict, key: jax.Array) -> dict:
        """Replayed data for the predictors [B, T, ...], all stop-gradient: the deterministic
        state at t and the action that led there (batch action[t]) -> the target at t. Episode
        starts carry no dynamics (the state was reset) and are masked."""
        if self.cfg.target == "stoch":
            target = post["stoch"]
        else:  # the encoder's embedding, by the world model before its step (its own image noise)
            target = self.wm.embed(wm_params, batch, key)
        data = {"state": post["deter"], "action": self._action(batch["action"]), "target": target,
                "mask": 1.0 - batch["is_first"].astype(jnp.float32)}
        return jax.lax.stop_gradient(jax.tree.map(lambda x: x.astype(jnp.float32), data))

    def update_agent_state(self, p2e: P2EState, wm_params, post, batch, key):
        start = merge_batch_time(post)  # every posterior state starts an imagined rollout
        k_task, k_expl, k_data, k_boot = jax.random.split(key, 4)
        ensemble, ens_metrics = self.ensemble.update(
            p2e.ensemble, self._ensemble_data(wm_params, post, batch, k_data), k_boot)

        def task_reward(seq):  # the learned reward head, as Dreamer
            return self.wm.reward(wm_params, seq["feat"][:, 1:])

        normaliser = self.normaliser(p2e)
        # The ensemble before its step, as the reference computes every loss before any update.
        intrinsic = lambda seq: self.intrinsic_reward(p2e.ensemble.params, normaliser, seq)  # noqa: E731
        task_replay = explore_replay = None
        if self.config.behavior.replay_value_scale > 0:  # DreamerV3's replay value loss, per reward
            feat = self.wm.rssm.get_feat(post)
            task_replay = {"feat": feat, "reward": batch["reward"], "is_terminal": batch["is_terminal"],
                           "is_last": batch["is_last"]}
            # The disagreement about arriving at replayed step t+1 by its action (batch action[t+1]).
            replayed = intrinsic({"feat": feat, "action": batch["action"][:, 1:]})  # [B, T-1]
            explore_replay = {**task_replay, "reward": jnp.pad(replayed, ((0, 0), (1, 0)))}
        task, task_metrics, task_wm_loss = self.task_ac.update(p2e.task, wm_params, start, k_task, task_reward,
                                                               task_replay)
        explore, expl_metrics, explore_wm_loss = self.explore_ac.update(p2e.explore, wm_params, start, k_expl,
                                                                        intrinsic, explore_replay)
        # Replay value losses train the representation as DreamerV3's does, the task critic's
        # only where task rewards may shape it (`model.reward_grad`, the few-shot switch).
        reward_grad = self.reward_grad(p2e)
        reward_grad = self.wm.cfg.reward_grad if reward_grad is None else reward_grad
        wm_loss = explore_wm_loss + jnp.where(reward_grad, task_wm_loss, 0.0)
        # 'imagined_reward' is the mean of what the reward function returned: undo the division.
        raw = expl_metrics["imagined_reward"] * normaliser
        m = self.cfg.momentum
        p2e = P2EState(task, explore, ensemble, m * p2e.norm_ema + (1 - m) * raw,
                       p2e.norm_count + 1, p2e.phase)
        expl_metrics["intrinsic_reward"] = expl_metrics.pop("imagined_reward")
        metrics = {f"behavior/{k}": v for k, v in task_metrics.items()}
        metrics.update({f"explore/{k}": v for k, v in {**expl_metrics, **ens_metrics}.items()})
        metrics.update({"explore/imagined_disagreement": raw, "explore/phase": p2e.phase})
        return p2e, metrics, wm_loss

    # ------------------------------------------------------------------ acting

    def on_env_steps(self, state: TrainState, env_steps: int) -> TrainState:
        """Few-shot: the task policy collects from `explore.steps` environment steps on. The
        phase lives in the state (so it is saved with it) and is read inside the jitted policy."""
        if self.cfg.mode != "few_shot":
            return state
        phase = jnp.asarray(int(env_steps >= self.cfg.steps), jnp.int32)
        return state._replace(agent=state.agent._replace(phase=phase))

    def choose_action(self, state: TrainState, pstate: dict, is_first: jax.Array, key: jax.Array,
                      mode: str) -> tuple[jax.Array, dict]:
        p2e: P2EState = state.agent
        feat = self.wm.rssm.get_feat(pstate["latent"])
        if mode == "eval":
            return self.task_ac.mode(p2e.task.actor, feat, key), pstate
        k_expl, k_task, k_noise = jax.random.split(key, 3)
        action = self.explore_ac.sample(p2e.explore.actor, feat, k_expl)
        if self.cfg.mode == "few_shot":
            task_action = self.task_ac.sample(p2e.task.actor, feat, k_task)
            action = jnp.where(p2e.phase > 0, task_action, action)
        return self.explore_noise(action, k_noise), pstate
