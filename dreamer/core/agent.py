"""What every agent shares: a world model trained on replay, a latent filter for acting,
open-loop reports. Agents subclass `WorldModelAgent` and add how they choose actions.

The train loop only sees this interface:
  state = agent.init(key)                                   # a pytree (TrainState), replicated
                                                            # over `config.devices` devices
  state, metrics = agent.train(state, batch)                # jitted, traced once; the batch is
                                                            # split over devices (agent.parallel)
  action, pstate = agent.policy(state, obs, pstate, key, mode)   # jitted per mode
                                                            # pstate: {'latent', 'action', ...}
  pstate = agent.initial_policy_state(num_envs)
  state = agent.on_env_steps(state, env_steps)              # host side, after collection
  videos = agent.report(state, batch)
  agent.host_state() / agent.load_host_state(data)          # checkpointed Python-side state
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dreamer.config import Config
from dreamer.core.world_model import WorldModel
from dreamer.parallel import DataParallel

Batch = dict[str, jax.Array]


class TrainState(NamedTuple):
    wm: dict  # world-model parameters
    wm_opt: Any
    behavior: Any  # the agent's own learned parts (actor-critic, ensembles, ...) or ()
    key: jax.Array
    updates: jax.Array  # number of updates applied, int32 scalar


class WorldModelAgent:
    """Base class: world-model training and latent filtering. Subclasses implement
    `init_behavior`, `train_behavior` and `choose_action`."""

    def __init__(self, config: Config, action_size: int, discrete: bool):
        self.config = config
        self.action_size = action_size
        self.discrete = discrete
        dtype = jnp.bfloat16 if config.train.precision == "bfloat16" else jnp.float32
        self.wm = WorldModel(config.model, action_size, dtype=dtype)
        self.parallel = DataParallel(config.devices, config.train.batch_size)
        self.trace_count = 0  # incremented when `train` is traced; tests assert it stays 1
        self.policy_trace_count = 0  # likewise for `policy` (once per mode)
        self._train = jax.jit(self._train_impl, donate_argnums=0)
        self._policy = jax.jit(self._policy_impl, static_argnames="mode")
        self._report = jax.jit(self.wm.open_loop_video)

    # ------------------------------------------------------------------ state

    def init(self, key: jax.Array) -> TrainState:
        state = jax.jit(self._init_impl)(key)  # one compiled init instead of many eager ops
        return self.parallel.replicate(state)

    def state_template(self) -> TrainState:
        """Shapes and dtypes of the train state, without computing it (to restore into)."""
        return jax.eval_shape(self._init_impl, jax.random.PRNGKey(0))

    def host_state(self) -> dict:
        """JSON-serialisable state the agent keeps in Python attributes rather than in the
        train state, saved in checkpoints. The agents here keep everything that must survive
        a restart (Plan2Explore's phase included) in the train state, so: nothing."""
        return {}

    def load_host_state(self, data: dict) -> None:
        """Restore what `host_state` returned."""

    def _init_impl(self, key: jax.Array) -> TrainState:
        k_wm, k_beh, k_state = jax.random.split(key, 3)
        wm = self.wm.init(k_wm, (self.config.env.size, self.config.env.size, 3))
        return TrainState(wm, self.wm.optimizer.init(wm), self.init_behavior(k_beh), k_state,
                          jnp.zeros((), jnp.int32))

    def initial_policy_state(self, batch: int) -> dict:
        """What the agent carries between steps: the latent state and the last action [N, ...]."""
        return {"latent": self.wm.rssm.initial(batch), "action": jnp.zeros((batch, self.action_size))}

    # ------------------------------------------------------------------ training

    def train(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        return self._train(state, batch)

    def _train_impl(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        self.trace_count += 1
        key, k_wm, k_beh = jax.random.split(state.key, 3)
        wm, wm_opt, post, metrics = self.wm.update(state.wm, state.wm_opt, batch, k_wm)
        metrics = {f"model/{k}": v for k, v in metrics.items()}
        start = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), post)  # [B*T, ...]
        behavior, beh_metrics = self.train_behavior(state.behavior, wm, start, batch, k_beh)
        metrics.update(beh_metrics)
        new_state = TrainState(wm, wm_opt, behavior, key, state.updates + 1)
        new_state, metrics = _skip_nonfinite(state, new_state, metrics)
        return self.parallel.constrain_state(new_state), metrics

    def init_behavior(self, key: jax.Array) -> Any:
        return ()

    def train_behavior(self, behavior, wm_params, start, batch, key) -> tuple[Any, dict]:
        return behavior, {}

    def on_env_steps(self, state: TrainState, env_steps: int) -> TrainState:
        """Host-side hook the train loop calls after each collection step with the run's
        environment step count, for schedules kept in the state (Plan2Explore's few-shot
        switch). Default: the state unchanged."""
        return state

    # ------------------------------------------------------------------ acting

    def policy(self, state: TrainState, obs: dict, pstate, key: jax.Array, mode: str = "train"):
        """obs: image uint8 [N, H, W, 3], is_first [N]. mode: 'train' (explore) or 'eval'."""
        return self._policy(state, obs, pstate, key, mode=mode)

    def _policy_impl(self, state: TrainState, obs: dict, pstate: dict, key: jax.Array, mode: str):
        self.policy_trace_count += 1
        k_filter, k_act = jax.random.split(key)
        latent = self.wm.filter_step(state.wm, pstate["latent"], pstate["action"], obs["image"],
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
        """Videos for the logger: the open-loop prediction (truth / model / error)."""
        key = jax.random.fold_in(state.key, 1)
        return {"openloop": self._report(state.wm, batch, key)}


def _skip_nonfinite(old: TrainState, new: TrainState, metrics: dict) -> tuple[TrainState, dict]:
    """Apply the update only if every loss and gradient norm in `metrics` is finite.

    A non-finite update keeps the previous parameters and optimizer states (with the new key,
    so the next update sees other noise): one bad batch cannot poison the run. The flag
    `train/nonfinite` (0 or 1 per update) lets the train loop count and stop on repeats.
    """
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old._replace(key=new.key))
    return kept, {**metrics, "train/nonfinite": (~finite).astype(jnp.float32)}


def random_actions(rng: np.random.Generator, batch: int, action_size: int, discrete: bool):
    """Uniform random actions (host side, NumPy): for prefill and the random baseline."""
    if discrete:
        return np.eye(action_size, dtype=np.float32)[rng.integers(0, action_size, batch)]
    return rng.uniform(-1, 1, (batch, action_size)).astype(np.float32)


__all__ = ["TrainState", "WorldModelAgent", "random_actions"]
