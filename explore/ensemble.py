"""An ensemble of K one-step predictors held as ONE set of stacked parameters.

Every parameter leaf has a leading member axis [K, ...]; initialisation and prediction are
`jax.vmap` over that axis, so K members cost one batched matmul per layer instead of K
modules, and the optimizer state is stacked the same way.

Each member predicts the next image embedding (or stochastic state) from the deterministic
state it arrives in and the action that led there; as in Plan2Explore's code the action is
concatenated into every layer's input, and each member trains on its own bootstrap resample
of the batch's sequences. Their disagreement (the variance of the predictions across members,
averaged over target dimensions) is Plan2Explore's intrinsic reward: high where the model has
seen little data.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dreamer.core.nets import ACTIVATIONS, Dense, clipped_adam


class EnsembleState(NamedTuple):
    params: dict  # every leaf [K, ...]
    opt: optax.OptState


def disagreement(preds: jax.Array) -> jax.Array:
    """Member predictions [K, ..., D] -> variance across members, averaged over D: [...]."""
    return jnp.var(preds, axis=0).mean(-1)


class Predictor(nn.Module):
    """(state [..., S], action [..., A] or None) -> prediction [..., D]; the action is
    concatenated to the input of every layer, the output layer's included."""

    layers: int
    units: int
    out: int
    act: str = "relu"

    @nn.compact
    def __call__(self, state: jax.Array, action: jax.Array | None) -> jax.Array:
        with_action = lambda x: x if action is None else jnp.concatenate([x, action], -1)  # noqa: E731
        x = state
        for i in range(self.layers):
            x = ACTIVATIONS[self.act](Dense(self.units, name=f"linear{i}")(with_action(x)))
        return Dense(self.out, name="out")(with_action(x))


def bootstrap_indices(key: jax.Array, members: int, batch: int) -> jax.Array:
    """Each member's resample of a batch of `batch` sequences, drawn with replacement:
    int32 [members, batch]."""
    return jax.random.randint(key, (members, batch), 0, batch)


class Ensemble:
    def __init__(self, size: int, layers: int, units: int, out_size: int, act: str = "relu",
                 lr: float = 6e-4, eps: float = 1e-4, grad_clip: float = 100.0, bootstrap: bool = True):
        self.size = size
        self.bootstrap = bootstrap
        self.net = Predictor(layers, units, out_size, act)
        self.optimizer = clipped_adam(lr, eps, grad_clip)

    def init(self, key: jax.Array, state_size: int, action_size: int | None) -> EnsembleState:
        """K independently initialised members, stacked."""
        keys = jax.random.split(key, self.size)
        action = None if action_size is None else jnp.zeros((1, action_size))
        params = jax.vmap(self.net.init, in_axes=(0, None, None))(keys, jnp.zeros((1, state_size)), action)
        return EnsembleState(params, self.optimizer.init(params))

    def predict(self, params: dict, state: jax.Array, action: jax.Array | None) -> jax.Array:
        """state [..., S], action [..., A] or None -> every member's prediction [K, ..., D]."""
        return jax.vmap(self.net.apply, in_axes=(0, None, None))(params, state, action)

    def loss(self, params: dict, data: dict) -> tuple[jax.Array, jax.Array]:
        """Mean squared error per target dimension, as the reference, of each member on its
        own data. data: 'state' [K, B, T, S], 'action' [K, B, T, A] or None, 'target'
        [K, B, T, D], 'mask' [K, B, T] (0 drops a step). The members' losses are summed, so
        each member's gradient is its own loss's; returns (sum, per-member losses [K])."""
        preds = jax.vmap(self.net.apply)(params, data["state"], data["action"])  # [K, B, T, D]
        error = jnp.square(preds - data["target"]).mean(-1)  # [K, B, T]
        mask = data["mask"]
        per_member = (error * mask).sum((1, 2)) / jnp.maximum(mask.sum((1, 2)), 1.0)  # [K]
        return per_member.sum(), per_member

    def member_data(self, data: dict, key: jax.Array) -> dict:
        """Replayed data [B, T, ...] -> each member's [K, B, T, ...]: its bootstrap resample of
        the B sequences, or with `bootstrap` off, the same batch for all."""
        batch = data["target"].shape[0]
        if not self.bootstrap:
            return jax.tree.map(lambda x: jnp.broadcast_to(x, (self.size, *x.shape)), data)
        index = bootstrap_indices(key, self.size, batch)  # [K, B]
        return jax.tree.map(lambda x: x[index], data)

    def update(self, state: EnsembleState, data: dict, key: jax.Array) -> tuple[EnsembleState, dict]:
        """One gradient step of every member. data (stop-gradient): 'state' [B, T, S],
        'action' [B, T, A] or None, 'target' [B, T, D], 'mask' [B, T]."""
        data = jax.lax.stop_gradient(data)
        grads, per_member = jax.grad(self.loss, has_aux=True)(state.params, self.member_data(data, key))
        updates, opt = self.optimizer.update(grads, state.opt, state.params)
        preds = self.predict(state.params, data["state"], data["action"])  # [K, B, T, D]
        mask = data["mask"]
        disag = (disagreement(preds) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        metrics = {"ensemble_loss": per_member.mean(), "disagreement": disag,
                   "ensemble_grad_norm": optax.tree.norm(grads)}
        return EnsembleState(optax.apply_updates(state.params, updates), opt), metrics


__all__ = ["Ensemble", "EnsembleState", "Predictor", "bootstrap_indices", "disagreement"]
