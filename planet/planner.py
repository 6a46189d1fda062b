"""Cross-entropy method over action sequences: a pure function with the objective injected.

The planner knows nothing about world models: it maximises any batched objective
`objective(actions [N, H, A], key) -> values [N]`. PlaNet passes the sum of predicted rewards
along latent rollouts; Plan2Explore could pass disagreement, others a value bootstrap.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

# Floor of the refitted variance, as PlaNet's code: the search never collapses to a point.
MIN_VARIANCE = 1e-6
Objective = Callable[[jax.Array, jax.Array], jax.Array]  # (actions [N, H, A], key) -> [N]


class Plan(NamedTuple):
    mean: jax.Array  # [H, A]
    std: jax.Array  # [H, A]


def initial_plan(horizon: int, action_size: int, std: float = 1.0) -> Plan:
    return Plan(jnp.zeros((horizon, action_size), jnp.float32), jnp.full((horizon, action_size), std, jnp.float32))


def cem(objective: Objective, key: jax.Array, plan: Plan, *, iterations: int, candidates: int,
        top_k: int) -> Plan:
    """Refit a diagonal Gaussian over action sequences to the `top_k` best of `candidates`.

    Iterations run as one `lax.scan`; all candidates are evaluated in one batched call.
    Candidate actions are clipped to [-1, 1]; the refitted std is sqrt(var + MIN_VARIANCE).
    Returns the final mean and std [H, A].
    """

    def iteration(plan: Plan, key: jax.Array) -> tuple[Plan, None]:
        k_sample, k_eval = jax.random.split(key)
        noise = jax.random.normal(k_sample, (candidates, *plan.mean.shape))
        actions = jnp.clip(plan.mean + plan.std * noise, -1.0, 1.0)  # [N, H, A]
        values = objective(actions, k_eval)  # [N]
        _, best = jax.lax.top_k(values, top_k)
        elites = actions[best]  # [K, H, A]
        return Plan(elites.mean(0), jnp.sqrt(elites.var(0) + MIN_VARIANCE)), None

    plan, _ = jax.lax.scan(iteration, plan, jax.random.split(key, iterations))
    return plan


def shift_plan(plan: Plan, init_std: float = 1.0) -> Plan:
    """Warm start: the previous mean shifted by the executed step (zeros appended); the std
    starts wide again so the search does not collapse onto a stale plan."""
    mean = jnp.concatenate([plan.mean[1:], jnp.zeros_like(plan.mean[:1])], 0)
    return Plan(mean, jnp.full_like(plan.std, init_std))
