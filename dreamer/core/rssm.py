"""Recurrent state-space model: a deterministic GRU path and a stochastic latent.

Gaussian latents (PlaNet, Dreamer V1) or categorical latents with straight-through gradients
(DreamerV2) are one config switch, `model.latent`, which picks the distribution object of
`dreamer.core.latents` that every step uses. The Linen module holds only the one-step cell; the
sequence functions (`observe`, `imagine`) are pure functions of the parameters that scan the
cell with `lax.scan`, so every agent calls the same code with explicit PRNG keys.

A state is a dict of arrays with leading batch dims:
  deter [..., D], stoch [..., S] (categorical: S = variables * classes, one-hot),
  and the distribution's parameters: mean, std [..., S] (Gaussian) or logits [..., V, C].
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dreamer.core.config import ModelConfig
from dreamer.core.latents import Latent, make_latent
from dreamer.core.nets import GRU, BlockGRU, Dense, DreamerV2GRU, NormAct, kernel_init

State = dict[str, jax.Array]
ActionFn = Callable[[jax.Array, jax.Array], jax.Array]  # (feat [N, F], key) -> action [N, A]


class RSSMCell(nn.Module):
    """One step of the RSSM: `prior` and `posterior` share the GRU's deterministic state."""

    cfg: ModelConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg, dt = self.cfg, self.dtype
        self.latent = make_latent(cfg)
        dist_size = self.latent.stats_size
        dense = lambda size: Dense(size, dtype=dt, kernel_init=kernel_init(cfg.init))  # noqa: E731
        if cfg.gru == "block":  # DreamerV3: its own input layers for deter, stoch and action
            self.core = BlockGRU(cfg.deter, cfg.hidden, cfg.gru_blocks, cfg.norm, cfg.activation, dt, cfg.init)
        else:
            self.img_in = dense(cfg.hidden)
            self.img_in_act = NormAct(cfg.norm, cfg.activation)
            # Keras' GRU has no normalisation inside; DreamerV2's normalises its gates.
            self.gru = (DreamerV2GRU(cfg.deter, dt, cfg.norm, cfg.init) if cfg.gru == "dreamerv2"
                        else GRU(cfg.deter, dt))
        self.img_hidden = [dense(cfg.hidden) for _ in range(cfg.prior_layers)]
        self.img_dist = dense(dist_size)
        self.obs_hidden = dense(cfg.hidden)
        self.obs_dist = dense(dist_size)
        # Normalisation (model.norm) and activation after each hidden layer.
        self.img_hidden_act = [NormAct(cfg.norm, cfg.activation) for _ in range(cfg.prior_layers)]
        self.obs_hidden_act = NormAct(cfg.norm, cfg.activation)

    def prior(self, state: State, action: jax.Array, key: jax.Array) -> State:
        """Prior p(s_t | s_{t-1}, a_{t-1}): [B, ...] -> [B, ...]."""
        if self.cfg.gru == "block":
            deter = self.core(state["deter"], state["stoch"], action)
        else:
            x = self.img_in_act(self.img_in(jnp.concatenate([state["stoch"], action], -1)))
            deter = self.gru(state["deter"], x)
        x = deter
        for layer, act in zip(self.img_hidden, self.img_hidden_act):
            x = act(layer(x))
        stats = self.img_dist(x).astype(jnp.float32)
        return {"deter": deter, **self._sample(stats, key)}

    def posterior(self, prior_deter: jax.Array, embed: jax.Array, key: jax.Array) -> State:
        """Posterior q(s_t | h_t, o_t) given the prior's deterministic state h_t."""
        x = self.obs_hidden_act(self.obs_hidden(jnp.concatenate([prior_deter, embed], -1)))
        stats = self.obs_dist(x).astype(jnp.float32)
        return {"deter": prior_deter, **self._sample(stats, key)}

    def _sample(self, stats: jax.Array, key: jax.Array) -> State:
        """The distribution's parameters and a sample from it."""
        params = self.latent.params(stats)
        return {"stoch": self.latent.sample(params, key), **params}

    def __call__(self, state: State, action: jax.Array, embed: jax.Array, key: jax.Array):
        """Used once by `init` to create every parameter."""
        k1, k2 = jax.random.split(key)
        prior = self.prior(state, action, k1)
        return self.posterior(prior["deter"], embed, k2)


class RSSM:
    """Pure functions over RSSM parameters. Every agent uses this one implementation."""

    def __init__(self, cfg: ModelConfig, action_size: int, dtype: jnp.dtype = jnp.float32):
        self.cfg = cfg
        self.action_size = action_size
        self.latent: Latent = make_latent(cfg)
        self.cell = RSSMCell(cfg, dtype=dtype)

    @property
    def stoch_size(self) -> int:
        return self.latent.stoch_size

    @property
    def feat_size(self) -> int:
        return self.cfg.deter + self.stoch_size

    def init(self, key: jax.Array, embed_size: int) -> dict:
        state = self.initial(1)
        action = jnp.zeros((1, self.action_size))
        k1, k2 = jax.random.split(key)
        return self.cell.init(k1, state, action, jnp.zeros((1, embed_size)), k2)

    def initial(self, batch: int) -> State:
        """The all-zero state used at episode starts: [batch, ...]."""
        return {"deter": jnp.zeros((batch, self.cfg.deter)), "stoch": jnp.zeros((batch, self.stoch_size)),
                **self.latent.initial(batch)}

    @staticmethod
    def get_feat(state: State) -> jax.Array:
        """[..., D + S] features that every head reads."""
        return jnp.concatenate([state["deter"], state["stoch"]], -1)

    def img_step(self, params, state: State, action: jax.Array, key: jax.Array) -> State:
        """One prior step: state [B, ...] and action [B, A] -> the next prior state."""
        return self.cell.apply(params, state, action, key, method=RSSMCell.prior)

    def obs_step(self, params, state: State, action: jax.Array, embed: jax.Array,
                 is_first: jax.Array, key: jax.Array) -> tuple[State, State]:
        """One filtering step; where `is_first` [B] is set, state and action reset to zero."""
        keep = 1.0 - is_first.astype(jnp.float32)
        state = jax.tree.map(lambda x, x0: _where_batch(keep, x, x0), state, self.initial(action.shape[0]))
        action = action * keep[:, None]
        k1, k2 = jax.random.split(key)
        prior = self.img_step(params, state, action, k1)
        post = self.cell.apply(params, prior["deter"], embed, k2, method=RSSMCell.posterior)
        return post, prior

    def observe(self, params, embed: jax.Array, action: jax.Array, is_first: jax.Array,
                key: jax.Array, state: State | None = None) -> tuple[State, State]:
        """Posterior and prior states along a sequence.

        embed [B, T, E]; action [B, T, A] (action[t] led to observation t); is_first [B, T].
        Returns (post, prior), each a state with arrays [B, T, ...].
        """
        batch, length = embed.shape[:2]
        state = self.initial(batch) if state is None else state
        keys = jax.random.split(key, length)

        def step(carry, inputs):
            emb, act, first, k = inputs
            post, prior = self.obs_step(params, carry, act, emb, first, k)
            return post, (post, prior)

        inputs = (_time_major(embed), _time_major(action), _time_major(is_first), keys)
        _, (post, prior) = jax.lax.scan(step, state, inputs)
        return jax.tree.map(_batch_major, post), jax.tree.map(_batch_major, prior)

    def imagine(self, params, start: State, key: jax.Array, *, horizon: int | None = None,
                policy: ActionFn | None = None, actions: jax.Array | None = None
                ) -> tuple[State, jax.Array]:
        """Prior rollout from `start` [N, ...], with a policy or a fixed action sequence.

        With `policy(feat, key) -> action`, runs `horizon` steps; with `actions` [N, H, A], runs
        H steps. Returns (states [N, H, ...] after each action, actions [N, H, A]).
        """
        if (policy is None) == (actions is None):
            raise ValueError("imagine needs exactly one of `policy` or `actions`")
        if actions is not None:
            horizon = actions.shape[1]
        keys = jax.random.split(key, horizon)

        def step(state, inputs):
            k, act = inputs
            k_act, k_step = jax.random.split(k)
            if policy is not None:
                # As in Dreamer: the actor's gradient flows through the action into the
                # dynamics, not back through the actor's own input.
                act = policy(jax.lax.stop_gradient(self.get_feat(state)), k_act)
            nxt = self.img_step(params, state, act, k_step)
            return nxt, (nxt, act)

        xs = (keys, _time_major(actions) if actions is not None else jnp.zeros((horizon, 0)))
        _, (states, acts) = jax.lax.scan(step, start, xs)
        return jax.tree.map(_batch_major, states), _batch_major(acts)

    def kl_loss(self, post: State, prior: State) -> tuple[jax.Array, jax.Array]:
        """KL term with free nats, split into its dynamics and representation parts; returns
        (loss, mean KL value).

        Both parts have the KL's value; the dynamics part (`kl_dyn_scale`) trains only the
        prior, towards the posterior, the representation part (`kl_rep_scale`) only the
        posterior (DreamerV2's balancing; 1 / 1 gives the plain KL's gradients, and counts its
        value twice). Free nats: no gradient where a part is under `free_nats`. Dreamer V1 / V2
        clip the batch/time mean; with
        `free_nats_per_step` each (batch, time) KL is clipped before the mean, as PlaNet,
        Plan2Explore and DreamerV3 do (PlaNet's `max(0, KL - free)` differs from
        `max(KL, free)` by the constant `free_nats` only: same gradients).
        """
        cfg, sg = self.cfg, jax.lax.stop_gradient
        kl = self.latent.kl

        def clipped(kl_steps: jax.Array) -> jax.Array:  # [B, T] -> scalar
            if cfg.free_nats_per_step:
                return jnp.maximum(kl_steps, cfg.free_nats).mean()
            return jnp.maximum(kl_steps.mean(), cfg.free_nats)

        dyn_steps = kl(jax.tree.map(sg, post), prior)  # [B, T]: the KL's value, gradient to the prior
        rep_steps = kl(post, jax.tree.map(sg, prior))  # the same value, gradient to the posterior
        loss = cfg.kl_dyn_scale * clipped(dyn_steps) + cfg.kl_rep_scale * clipped(rep_steps)
        return loss, sg(dyn_steps).mean()


def merge_batch_time(state: State) -> State:
    """States [B, T, ...] -> [B * T, ...]: every posterior state of a batch as a start state."""
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), state)


def _where_batch(mask: jax.Array, x: jax.Array, x0: jax.Array) -> jax.Array:
    mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return mask * x + (1.0 - mask) * x0


def _time_major(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 0, 1)


def _batch_major(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 0, 1)
