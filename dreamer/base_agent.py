"""The agent layer above the model: `WorldModelAgent` turns the core's world model into an
agent of pure functions over an explicit train state: world-model training, the non-finite
guard, latent filtering, exploration noise and video reports. Agents subclass it and add what
they learn besides the world model and how they choose actions. Jitting and placement on
devices are `dreamer.device.DeviceAgent`'s, which the loop builds around an agent.

The loop sees this interface (through `DeviceAgent`, which jits the pure ones):
  state = agent.initial_state(key)                          # a pytree (TrainState)
  state, metrics, entries = agent.update(state, batch)      # pure; batch [B, T, ...]
  entries = agent.context(pstate["latent"])                 # what the replay stores per step
  action, pstate = agent.act(state, obs, pstate, key, mode) # pure; pstate {'latent', 'action', ...}
  pstate = agent.initial_policy_state(num_envs)
  state = agent.on_env_steps(state, env_steps)              # host side, after collection
  videos = agent.report(state, batch)                       # pure
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from dreamer.core.rssm import State
from dreamer.core.world_model import WorldModel
from dreamer.envs.base import image_space

if TYPE_CHECKING:
    from dreamer.config import Config

Batch = dict[str, jax.Array]


class TrainState(NamedTuple):
    wm: dict  # world-model parameters
    wm_opt: Any
    agent: Any  # what the agent learns besides the world model (actor-critic, ensemble, ...) or ()
    key: jax.Array
    applied_updates: jax.Array  # updates applied (a non-finite one is skipped), int32 scalar


class WorldModelAgent:
    """Base class: world-model training and latent filtering. Subclasses implement
    `choose_action`, and if they learn more than the world model, `init_agent_state` and
    `update_agent_state`."""

    def __init__(self, config: Config, action_size: int, discrete: bool, obs_space: dict | None = None):
        """`obs_space`: the observations' named inputs, key -> (shape, dtype), as the run's
        environments give them (`Env.obs_space`); None: an image of `env.size`, which needs
        `env.obs` image."""
        self.config = config
        self.action_size = action_size
        self.discrete = discrete
        if obs_space is None:
            if config.env.obs != "image":
                raise ValueError(f"env.obs is {config.env.obs!r}: pass the environments' obs_space")
            obs_space = image_space(config.env.size)
        self.obs_space = dict(obs_space)
        dtype = jnp.bfloat16 if config.run.precision == "bfloat16" else jnp.float32
        self.wm = WorldModel(config.model, action_size, self.obs_space, dtype=dtype)

    # ------------------------------------------------------------------ state

    def state_template(self) -> TrainState:
        """Shapes and dtypes of the train state, without computing it (to restore into)."""
        return jax.eval_shape(self.initial_state, jax.random.PRNGKey(0))

    def initial_state(self, key: jax.Array) -> TrainState:
        """The freshly initialised train state (pure)."""
        k_wm, k_agent, k_state = jax.random.split(key, 3)
        wm = self.wm.init(k_wm)
        return TrainState(wm, self.wm.optimizer.init(wm), self.init_agent_state(k_agent), k_state,
                          jnp.zeros((), jnp.int32))

    def parameter_counts(self) -> dict[str, int]:
        """Trained parameters per part, from shapes only: the world model's modules
        ('world_model/encoder', ...) and the agent's own (`learned_parts`); optimiser states
        and slow copies are not counted."""
        template = self.state_template()
        parts = {f"world_model/{name}": tree for name, tree in template.wm.items()}
        parts.update(self.learned_parts(template.agent))
        return {name: sum(leaf.size for leaf in jax.tree.leaves(tree)) for name, tree in parts.items()}

    def learned_parts(self, agent_state: Any) -> dict[str, Any]:
        """The agent's trained parameters by name, for `parameter_counts`; default: none."""
        return {}

    def initial_policy_state(self, batch: int) -> dict:
        """What the agent carries between steps: the latent state and the last action [N, ...]."""
        return {"latent": self.wm.rssm.initial(batch), "action": jnp.zeros((batch, self.action_size))}

    # ------------------------------------------------------------------ replay context

    def context_space(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The keys the replay stores with each step for `run.replay_context`, key ->
        (step shape, dtype): the latent state entering the step, i.e. the posterior of the
        step before (at an episode's first step it is ignored: the state resets there).
        Empty without replay context."""
        if not self.config.run.replay_context:
            return {}
        rssm = self.wm.rssm
        return {"context_deter": ((rssm.cfg.deter,), np.dtype(np.float32)),
                "context_stoch": ((rssm.stoch_size,), np.dtype(np.float32))}

    def context(self, latent: State) -> dict[str, jax.Array]:
        """`context_space`'s entries of latent states [..., ...]: the posterior a step leaves,
        which the replay stores with the step after it."""
        if not self.config.run.replay_context:
            return {}
        return {"context_deter": latent["deter"], "context_stoch": latent["stoch"]}

    def start_state(self, batch: Batch) -> State | None:
        """Where the batch's sequences start: the stored context of their first steps, or
        None (the zero state) without replay context."""
        if not self.config.run.replay_context:
            return None
        initial = self.wm.rssm.initial(batch["reward"].shape[0])
        return {**initial, "deter": batch["context_deter"][:, 0], "stoch": batch["context_stoch"][:, 0]}

    # ------------------------------------------------------------------ training

    def update(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict, dict]:
        """One update (pure): the world model on the batch [B, T, ...],
        and the agent's own parts from its posterior states. Every loss sees the world model's
        parameters from before this update, as in the Dreamer, DreamerV3 and Plan2Explore
        reference code, which computes all losses first and then applies the optimisers.
        A non-finite loss or gradient leaves the state as it was (see `skip_nonfinite`).
        Returns (state, metrics, entries): `context` of the posterior states [B, T, ...], for
        the replay to store with the steps after them (empty without replay context)."""
        key, k_wm, k_agent = jax.random.split(state.key, 3)

        def loss(wm_params):  # the world model's, plus what the agent adds to it
            wm_loss, (post, metrics) = self.wm.loss(wm_params, batch, k_wm, self.reward_grad(state.agent),
                                                    start=self.start_state(batch))
            agent, agent_metrics, agent_wm_loss = self.update_agent_state(state.agent, state.wm, post, batch,
                                                                          k_agent)
            entries = jax.lax.stop_gradient(self.context(post))
            return wm_loss + agent_wm_loss, (agent, metrics, agent_metrics, entries)

        grads, (agent, metrics, agent_metrics, entries) = jax.grad(loss, has_aux=True)(state.wm)
        wm, wm_opt, metrics["grad_norm"] = self.wm.apply_gradients(state.wm, state.wm_opt, grads)
        metrics = {f"model/{k}": v for k, v in metrics.items()}
        metrics.update(agent_metrics)
        new_state = TrainState(wm, wm_opt, agent, key, state.applied_updates + 1)
        return (*skip_nonfinite(state, new_state, metrics), entries)

    def init_agent_state(self, key: jax.Array) -> Any:
        """The agent's own learned parts (`TrainState.agent`); default: none."""
        return ()

    def reward_grad(self, agent_state: Any) -> jax.Array | None:
        """Whether the reward loss trains the representation in this update, as a traced
        bool, for agents that switch it mid-run; default None: `model.reward_grad` decides."""
        return None

    def update_agent_state(self, agent_state: Any, wm_params: dict, post: State, batch: Batch,
                           key: jax.Array) -> tuple[Any, dict, jax.Array]:
        """Train the agent's own parts: `post` are the posterior states of the batch
        [B, T, ...] under `wm_params`, the world model's parameters before this update's
        step. Returns (new agent state, metrics with their prefixes, a scalar loss that the
        world model's gradient also takes). `post` carries that gradient: what the agent
        learns from it stops the gradient; the returned loss may keep it (DreamerV3's replay
        value loss trains the representation so). Default: nothing learned, loss 0."""
        return agent_state, {}, jnp.zeros(())

    def on_env_steps(self, state: TrainState, env_steps: int) -> TrainState:
        """Host-side hook the train loop calls after each collection step with the run's
        environment step count, for schedules kept in the state (Plan2Explore's few-shot
        switch). Default: the state unchanged."""
        return state

    # ------------------------------------------------------------------ acting

    def act(self, state: TrainState, obs: dict, pstate: dict, key: jax.Array, mode: str):
        """One policy step (pure): filter the observation
        into the latent state, then choose actions. obs: the inputs of `obs_space` [N, ...]
        (e.g. image uint8 [N, H, W, 3]) and is_first [N]; mode 'train' (explore) or 'eval'.
        Returns (actions [N, A], new policy state)."""
        k_filter, k_act = jax.random.split(key)
        latent = self.wm.filter_step(state.wm, pstate["latent"], pstate["action"], obs,
                                     obs["is_first"], k_filter)
        action, pstate = self.choose_action(state, {**pstate, "latent": latent}, obs["is_first"], k_act, mode)
        return action, {**pstate, "action": action}

    def choose_action(self, state: TrainState, pstate: dict, is_first: jax.Array, key: jax.Array,
                      mode: str) -> tuple[jax.Array, dict]:
        """Actions [N, A] from the filtered `pstate['latent']`; may update agent-specific
        entries of `pstate` (e.g. a planner's previous plan)."""
        raise NotImplementedError

    def explore_noise(self, action: jax.Array, key: jax.Array, scale: float | None = None) -> jax.Array:
        """Gaussian exploration noise on continuous actions, clipped to [-1, 1]."""
        scale = self.config.behavior.expl_noise if scale is None else scale
        if self.discrete or scale == 0:
            return action
        return jnp.clip(action + scale * jax.random.normal(key, action.shape), -1.0, 1.0)

    # ------------------------------------------------------------------ reports

    def report(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """Videos for the logger (pure): the open-loop prediction (truth / model / error);
        none without an image input."""
        if self.wm.image_key is None:
            return {}
        key = jax.random.fold_in(state.key, 1)
        return {"openloop": self.wm.open_loop_video(state.wm, batch, key)}


def skip_nonfinite(old: TrainState, new: TrainState, metrics: dict) -> tuple[TrainState, dict]:
    """Apply the update only if every loss and gradient norm in `metrics` is finite.

    A non-finite update keeps the previous parameters and optimizer states (with the new key,
    so the next update sees other noise): one bad batch cannot poison the run. The flag
    `train/nonfinite` (0 or 1 per update) lets the train loop count and stop on repeats.
    """
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old._replace(key=new.key))
    return kept, {**metrics, "train/nonfinite": (~finite).astype(jnp.float32)}


__all__ = ["Batch", "TrainState", "WorldModelAgent", "skip_nonfinite"]
