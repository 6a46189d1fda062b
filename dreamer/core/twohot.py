"""DreamerV3's robust regression: symlog / symexp and two-hot discrete regression.

A scalar target y (a reward, a return) is predicted as a softmax over `bins` fixed values that
are exponentially spaced, symexp(linspace(-20, 20)), and the prediction is the expected bin
value. The loss is the cross-entropy against the two-hot encoding of y: the weight of the two
bins around y, split linearly by distance, so that the expected value of the encoding is y
itself. The gradient's size does not depend on the target's scale, which is what lets one set
of hyperparameters train across domains with rewards of any magnitude.

This is the official code's form (danijar/dreamerv3, `symexp_twohot`): bins exponentially
spaced in raw space and the two-hot interpolation in raw space. The first paper version
encoded symlog(y) over uniform bins and predicted symexp of the expectation instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def symlog(x: jax.Array) -> jax.Array:
    """sign(x) log(1 + |x|): compresses large magnitudes, identity-like near zero."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    """sign(x) (exp(|x|) - 1): the inverse of `symlog`."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def symexp_bins(count: int = 255, limit: float = 20.0) -> jax.Array:
    """`count` (odd) bin values, symexp of a uniform grid over [-limit, limit], exactly
    antisymmetric around a middle bin of 0: [count]."""
    if count % 2 == 0:
        raise ValueError(f"two-hot bins must be an odd count (a zero bin in the middle), got {count}")
    half = symexp(jnp.linspace(-limit, 0.0, (count + 1) // 2))
    return jnp.concatenate([half, -half[:-1][::-1]])


def twohot(target: jax.Array, bins: jax.Array) -> jax.Array:
    """Targets [...] -> two-hot weights [..., K] over sorted `bins` [K] whose expectation is the
    target (clipped to the bins' range)."""
    above = jnp.clip(jnp.searchsorted(bins, target, side="right"), 1, len(bins) - 1)  # first bin > y
    below = above - 1
    lo, hi = bins[below], bins[above]
    weight_above = jnp.clip((target - lo) / (hi - lo), 0.0, 1.0)
    return (jax.nn.one_hot(below, len(bins)) * (1.0 - weight_above)[..., None]
            + jax.nn.one_hot(above, len(bins)) * weight_above[..., None])


def twohot_mean(logits: jax.Array, bins: jax.Array) -> jax.Array:
    """Logits [..., K] -> the expected bin value [...], over bins symmetric around a middle 0.

    Summed in symmetric pairs, E = sum_j (p_{m+j} - p_{m-j}) b_{m+j}, with each difference
    computed from its two logits: 2 exp((l_+ + l_-)/2 - logsumexp) sinh((l_+ - l_-)/2), smooth
    and exactly 0 for equal logits however XLA vectorises the exponentials; where the half gap
    exceeds 20 (sinh would overflow), the same value as sign exp(max - logsumexp)
    (1 - exp(-|l_+ - l_-|)). Subtracting probabilities
    that were computed separately does not: bins reach 4.9e8, so a 1e-7 relative difference
    between two exponentials of equal inputs (which XLA's vectorised and scalar code paths
    produce) is worth 50 per pair, and a zero-initialised head would predict thousands.
    """
    middle = len(bins) // 2
    lse = jax.nn.logsumexp(logits, -1, keepdims=True)
    upper, lower = logits[..., middle + 1:], logits[..., :middle][..., ::-1]  # pairs m + j, m - j
    half_gap = (upper - lower) / 2
    close = jnp.abs(half_gap) < 20.0
    smooth = 2.0 * jnp.exp((upper + lower) / 2 - lse) * jnp.sinh(jnp.clip(half_gap, -20.0, 20.0))
    far = jnp.sign(half_gap) * jnp.exp(jnp.maximum(upper, lower) - lse) * -jnp.expm1(-2.0 * jnp.abs(half_gap))
    diff = jnp.where(close, smooth, far)
    return (diff * bins[middle + 1:]).sum(-1)


def twohot_loss(logits: jax.Array, target: jax.Array, bins: jax.Array) -> jax.Array:
    """Cross-entropy of logits [..., K] against the two-hot encoding of targets [...]: [...]."""
    return -(jax.lax.stop_gradient(twohot(target, bins)) * jax.nn.log_softmax(logits)).sum(-1)


class ScalarOutput:
    """How a head's outputs [..., size] become a scalar prediction and its loss: 'gaussian'
    (one output, the mean of a unit Gaussian; loss 0.5 squared error, constants dropped) or
    'twohot' (logits over `bins` symexp-spaced values, zero-initialised as in DreamerV3)."""

    def __init__(self, kind: str, bins: int):
        self.bins = symexp_bins(bins) if kind == "twohot" else None
        self.size = bins if kind == "twohot" else 1
        self.out_scale = 0.0 if kind == "twohot" else 1.0  # of the output layer's initial kernel

    def mean(self, out: jax.Array) -> jax.Array:
        """[..., size] -> the predicted value [...]."""
        return out[..., 0] if self.bins is None else twohot_mean(out, self.bins)

    def loss(self, out: jax.Array, target: jax.Array) -> jax.Array:
        """Per-element loss [...] of predicting `target` [...] (a constant) from out [..., size]."""
        target = jax.lax.stop_gradient(target)
        if self.bins is None:
            return 0.5 * jnp.square(out[..., 0] - target)
        return twohot_loss(out, target, self.bins)


__all__ = ["ScalarOutput", "symexp", "symexp_bins", "symlog", "twohot", "twohot_loss", "twohot_mean"]
