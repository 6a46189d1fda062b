"""The RSSM's stochastic latent, one class per distribution.

Each holds what the rest of the model needs to know about its distribution: how many
statistics the networks must output, how they become the distribution's parameters, a
reparameterised sample, the KL divergence and the entropy. The RSSM and the world model call
these methods and never ask which distribution they have.

Parameters live in the RSSM state next to `deter` and `stoch`:
  Gaussian: mean, std [..., S];  categorical: logits [..., V, C] (stoch is V * C, one-hot).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dreamer.core.config import ModelConfig

Params = dict[str, jax.Array]


class GaussianLatent:
    """Diagonal Gaussian (PlaNet, Dreamer V1): softplus std with a floor."""

    def __init__(self, size: int, min_std: float):
        self.size, self.min_std = size, min_std
        self.stats_size = 2 * size  # mean and raw std
        self.stoch_size = size

    def params(self, stats: jax.Array) -> Params:
        """Network outputs [..., 2S] -> {'mean', 'std'} [..., S]."""
        mean, raw_std = jnp.split(stats, 2, -1)
        return {"mean": mean, "std": jax.nn.softplus(raw_std) + self.min_std}

    def sample(self, params: Params, key: jax.Array) -> jax.Array:
        """Reparameterised sample [..., S]."""
        return params["mean"] + params["std"] * jax.random.normal(key, params["mean"].shape)

    def kl(self, lhs: Params, rhs: Params) -> jax.Array:
        """KL(lhs || rhs) summed over the latent dimensions: [...]."""
        var_ratio = (lhs["std"] / rhs["std"]) ** 2
        t1 = ((lhs["mean"] - rhs["mean"]) / rhs["std"]) ** 2
        return 0.5 * jnp.sum(var_ratio + t1 - 1.0 - jnp.log(var_ratio), -1)

    def entropy(self, params: Params) -> jax.Array:
        return jnp.sum(jnp.log(params["std"]) + 0.5 * jnp.log(2 * jnp.pi * jnp.e), -1)

    def initial(self, batch: int) -> Params:
        """The parameters of the all-zero episode-start state: [batch, S]."""
        return {"mean": jnp.zeros((batch, self.size)), "std": jnp.ones((batch, self.size))}


class CategoricalLatent:
    """`variables` one-hot categoricals of `classes` each (DreamerV2), sampled with
    straight-through gradients."""

    def __init__(self, variables: int, classes: int, unimix: float = 0.0):
        self.variables, self.classes, self.unimix = variables, classes, unimix
        self.stats_size = variables * classes  # logits
        self.stoch_size = variables * classes  # the one-hot samples, flattened

    def params(self, stats: jax.Array) -> Params:
        """Network outputs [..., V * C] -> {'logits'} [..., V, C]. With `unimix` u, the
        distribution is (1 - u) softmax + u uniform (DreamerV3: 1%), so no class's probability
        falls below u / C and the KL stays bounded; its logits are the log-probabilities."""
        logits = stats.reshape(*stats.shape[:-1], self.variables, self.classes)
        if self.unimix > 0:
            probs = (1.0 - self.unimix) * jax.nn.softmax(logits) + self.unimix / self.classes
            logits = jnp.log(probs)
        return {"logits": logits}

    def sample(self, params: Params, key: jax.Array) -> jax.Array:
        """One-hot sample [..., V * C] whose gradient is that of the probabilities."""
        logits = params["logits"]
        index = jax.random.categorical(key, logits)
        probs = jax.nn.softmax(logits)
        onehot = jax.nn.one_hot(index, self.classes)
        onehot = onehot + probs - jax.lax.stop_gradient(probs)  # straight-through gradient
        return onehot.reshape(*logits.shape[:-2], -1)

    def kl(self, lhs: Params, rhs: Params) -> jax.Array:
        """KL(lhs || rhs) summed over variables and classes: [...]."""
        logp = jax.nn.log_softmax(lhs["logits"])
        logq = jax.nn.log_softmax(rhs["logits"])
        return jnp.sum(jnp.exp(logp) * (logp - logq), (-2, -1))

    def entropy(self, params: Params) -> jax.Array:
        logp = jax.nn.log_softmax(params["logits"])
        return -jnp.sum(jnp.exp(logp) * logp, (-2, -1))

    def initial(self, batch: int) -> Params:
        return {"logits": jnp.zeros((batch, self.variables, self.classes))}


Latent = GaussianLatent | CategoricalLatent


def make_latent(cfg: ModelConfig) -> Latent:
    """The latent distribution `model.latent` names."""
    if cfg.latent == "categorical":
        return CategoricalLatent(cfg.stoch, cfg.classes, cfg.unimix)
    return GaussianLatent(cfg.stoch, cfg.min_std)


__all__ = ["CategoricalLatent", "GaussianLatent", "Latent", "make_latent"]
