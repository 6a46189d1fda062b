"""An ensemble of K one-step predictors held as ONE set of stacked parameters.

Every parameter leaf has a leading member axis [K, ...]; initialisation and prediction are
`jax.vmap` over that axis, so K members cost one batched matmul per layer instead of K
modules, and the optimizer state is stacked the same way.

Each member predicts the mean of a unit-variance Gaussian over the target; their
disagreement (the variance of the means across members, averaged over target dimensions)
is Plan2Explore's intrinsic reward: high where the model has seen little data.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dreamer.core.nets import MLP, clipped_adam


class EnsembleState(NamedTuple):
    params: dict  # every leaf [K, ...]
    opt: optax.OptState


def disagreement(preds: jax.Array) -> jax.Array:
    """Member means [K, ..., D] -> variance across members, averaged over D: [...]."""
    return jnp.var(preds, axis=0).mean(-1)


class Ensemble:
    def __init__(self, size: int, layers: int, units: int, out_size: int, act: str = "elu",
                 lr: float = 3e-4, eps: float = 1e-5, grad_clip: float = 100.0):
        self.size = size
        self.net = MLP(layers, units, out_size, act)
        self.optimizer = clipped_adam(lr, eps, grad_clip)

    def init(self, key: jax.Array, in_size: int) -> EnsembleState:
        """K independently initialised members, stacked: the only source of their diversity."""
        keys = jax.random.split(key, self.size)
        params = jax.vmap(self.net.init, in_axes=(0, None))(keys, jnp.zeros((1, in_size)))
        return EnsembleState(params, self.optimizer.init(params))

    def predict(self, params: dict, inputs: jax.Array) -> jax.Array:
        """inputs [..., I] -> every member's mean [K, ..., D]."""
        return jax.vmap(self.net.apply, in_axes=(0, None))(params, inputs)

    def loss(self, params: dict, inputs: jax.Array, targets: jax.Array,
             mask: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Unit-Gaussian negative log-likelihood (constants dropped) of the targets.

        inputs [N, I], targets [N, D], mask [N] (0 drops a pair). The members' losses are
        summed, so each member's gradient is its own loss's gradient; the mean over members
        is reported. Returns (loss, (mean member loss, predictions [K, N, D])).
        """
        preds = self.predict(params, inputs)  # [K, N, D]
        nll = 0.5 * jnp.square(preds - targets).sum(-1)  # [K, N]
        per_member = (nll * mask).sum(-1) / jnp.maximum(mask.sum(), 1.0)  # [K]
        return per_member.sum(), (per_member.mean(), preds)

    def update(self, state: EnsembleState, inputs: jax.Array, targets: jax.Array,
               mask: jax.Array) -> tuple[EnsembleState, dict]:
        """One gradient step of every member on the same (stop-gradient) data."""
        inputs, targets = jax.lax.stop_gradient((inputs, targets))
        grads, (loss, preds) = jax.grad(self.loss, has_aux=True)(state.params, inputs, targets, mask)
        updates, opt = self.optimizer.update(grads, state.opt, state.params)
        disag = (disagreement(preds) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        metrics = {"ensemble_loss": loss, "disagreement": disag,
                   "ensemble_grad_norm": optax.tree.norm(grads)}
        return EnsembleState(optax.apply_updates(state.params, updates), opt), metrics


__all__ = ["Ensemble", "EnsembleState", "disagreement"]
